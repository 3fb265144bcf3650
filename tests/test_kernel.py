"""kernel-patch/: the MADV_CLR_HUGEPAGE series, the build's cache key, `vmaflags kernel`.

Fast by default.  The series tests need the pristine linux-source-6.12 tree: cached by an
earlier build, or fetched once (`apt-get download`, 150 MB, ~15-40 s with the unpack); they
SKIP when it cannot be had.  Nothing here builds a kernel unless the build is cached or
VMAFLAGS_KERNEL_BUILD=1 (a cold build takes 3-5 min on 2 cores); VMAFLAGS_KERNEL_BUILD=0 skips
the build tests even when the build is cached.  The guest tests also need qemu and Debian's
6.12 cloud kernel (tests/test_vm.py); VMAFLAGS_VM=0 skips them.
"""
from __future__ import annotations

import dataclasses
import errno
import io
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from vmaflags.conformance import catalogue
from vmaflags.conformance.build import executor_path
from vmaflags.conformance.vm import command as vm
from vmaflags.conformance.vm import guest, kernels
from vmaflags.kernel import build as kbuild
from vmaflags.kernel import series, source, spec
from vmaflags.model import ERAS

K = spec.kernel("patched-6.12")


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = os.path.join(os.path.dirname(sys.executable), "vmaflags")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def pristine() -> pathlib.Path:
    try:
        return source.pristine(K.package, K.version)
    except source.Skip as e:
        pytest.skip(f"no {K.package}={K.version}: {e}")


# ---- the series ------------------------------------------------------------------------------

def test_series_applies_to_the_pristine_source(pristine: pathlib.Path):
    """git apply --check of the whole series, in order, against the untouched tree (which also
    shows that no build has written into it)."""
    res = subprocess.run(["git", "apply", "--check", *map(str, K.patches)], cwd=pristine,
                         env=series._git_env(pristine), capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr


def test_checkpatch_strict_is_clean_on_every_patch(pristine: pathlib.Path):
    log = io.StringIO()
    series.checkpatch(K.patches, pristine, log)
    text = log.getvalue()
    assert text.count("total: 0 errors, 0 warnings, 0 checks") == len(K.patches) - 1
    # the selftest patch adds a file: checkpatch asks about MAINTAINERS, which answers it
    assert "FILE_PATH_CHANGES answered: tools/testing/selftests/mm/madv_clr_hugepage.c" in text


def test_the_series_is_what_the_model_calls_mmf_clr():
    """26 in every uapi header that has MADV_COLLAPSE, as model/eras.py says."""
    assert ERAS["mmf-clr"].clr_hugepage == 26
    uapi = K.patches[0].read_text()
    for header in ("include/uapi/asm-generic/mman-common.h", "arch/alpha/include/uapi/asm/mman.h",
                   "arch/mips/include/uapi/asm/mman.h", "arch/parisc/include/uapi/asm/mman.h",
                   "arch/xtensa/include/uapi/asm/mman.h",
                   "tools/include/uapi/asm-generic/mman-common.h"):
        assert f"+++ b/{header}" in uapi
    assert uapi.count("+#define MADV_CLR_HUGEPAGE\t26\t") == 6


def test_a_patch_that_does_not_apply_names_the_patch_and_the_hunk(tmp_path: pathlib.Path):
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "madvise.c").write_text("nothing that the patch expects\n")
    with pytest.raises(series.PatchError) as e:
        series.apply([K.patches[1]], tree, io.StringIO())
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("clr-hugepage/0002-mm-madvise-add-MADV_CLR_HUGEPAGE.patch does not apply")
    assert "hunk @@ -" in msg or "mm/khugepaged.c" in msg, msg


# ---- the cache key -----------------------------------------------------------------------------

@pytest.fixture()
def inputs(tmp_path: pathlib.Path, monkeypatch) -> pathlib.Path:
    """A copy of series/ and config/ the key is computed from."""
    shutil.copytree(spec.SERIES_DIR, tmp_path / "series")
    shutil.copytree(spec.CONFIG_DIR, tmp_path / "config")
    monkeypatch.setattr(spec, "SERIES_DIR", tmp_path / "series")
    monkeypatch.setattr(spec, "CONFIG_DIR", tmp_path / "config")
    return tmp_path


def test_cache_key_hashes_exactly_the_inputs(inputs: pathlib.Path, monkeypatch):
    key = spec.cache_key(K)
    assert key == spec.cache_key(K) and len(key) == 16
    (inputs / "series" / "clr-hugepage" / "README").write_text("not a patch\n")
    assert spec.cache_key(K) == key  # only *.patch files are inputs
    patch = K.patches[1]
    patch.write_text(patch.read_text().replace("VM_NOHUGEPAGE);", "VM_NOHUGEPAGE );", 1))
    assert spec.cache_key(K) not in (key,)
    patch.write_text(patch.read_text().replace("VM_NOHUGEPAGE );", "VM_NOHUGEPAGE);", 1))
    assert spec.cache_key(K) == key
    frag = inputs / "config" / "guest.config"
    frag.write_text(frag.read_text() + "CONFIG_KSM=y\n")
    assert spec.cache_key(K) != key
    frag.write_text(frag.read_text().replace("CONFIG_KSM=y\n", ""))
    assert spec.cache_key(K) == key
    monkeypatch.setattr(spec, "RECIPE", spec.RECIPE + 1)
    assert spec.cache_key(K) != key


def test_cache_key_follows_the_order_of_the_series(inputs: pathlib.Path):
    """Issue 14's kernels apply two series: their order is part of the key."""
    other = inputs / "series" / "other"
    other.mkdir()
    (other / "0001-x.patch").write_text("x\n")
    a = spec.Kernel("a", *spec.DEBIAN_6_12, series=("other", "clr-hugepage"), era="mmf-clr")
    b = spec.Kernel("a", *spec.DEBIAN_6_12, series=("clr-hugepage", "other"), era="mmf-clr")
    assert [p.parent.name for p in a.patches] == ["other"] + ["clr-hugepage"] * 4
    assert spec.cache_key(a) != spec.cache_key(b)


def test_cache_key_never_reads_the_source_tree(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the key must not need the source")
    monkeypatch.setattr(source, "pristine", boom)
    spec.cache_key(K)


def test_unknown_series_is_an_error():
    with pytest.raises(ValueError, match="no patch series 'nosuch'"):
        spec.Kernel("x", *spec.DEBIAN_6_12, series=("nosuch",), era="mmf").patches


def test_config_fragment_options_parse():
    opts = kbuild._options("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n# comment\n")
    assert opts == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"'}
    frag = kbuild._options((spec.CONFIG_DIR / "guest.config").read_text())
    for o in ("CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_USERFAULTFD", "CONFIG_PROC_PAGE_MONITOR",
              "CONFIG_ADVISE_SYSCALLS", "CONFIG_SMP", "CONFIG_PER_VMA_LOCK", *kernels.NEEDED_CONFIG):
        assert frag.get(o) == "y", o


def test_is_static():
    assert kbuild._is_static(executor_path(None)) if shutil.which("cc") else True
    assert not kbuild._is_static(pathlib.Path(sys.executable).resolve())


def test_a_missing_tool_is_a_skip_that_names_the_package(tmp_path: pathlib.Path, monkeypatch):
    real = shutil.which
    monkeypatch.setattr(kbuild.shutil, "which", lambda t: None if t == "flex" else real(t))
    assert "no `flex` (apt-get install flex)" in kbuild.blockers()
    monkeypatch.setattr(source, "cache_root", lambda: tmp_path)  # nothing cached there
    with pytest.raises(kbuild.Skip, match=r"cannot build a kernel here: .*apt-get install flex"):
        kbuild.build(K.name, progress=False)
    assert not (tmp_path / "builds").exists()


# ---- the command -------------------------------------------------------------------------------

def test_kernel_build_unknown_name():
    p = _cli("kernel", "build", "nosuch")
    assert p.returncode == 2
    assert p.stderr == ("vmaflags: unknown kernel 'nosuch'; valid: patched-6.12, def-flags-6.12, "
                        "def-flags-clr-6.12\n")
    assert p.stdout == ""


def test_kernel_build_bad_jobs():
    p = _cli("kernel", "build", "--jobs", "0")
    assert p.returncode == 2 and p.stderr == "vmaflags: --jobs must be >= 1\n"


def test_kernel_list():
    p = _cli("kernel", "list")
    assert p.returncode == 0
    assert "patched-6.12" in p.stdout and K.version in p.stdout and "clr-hugepage" in p.stdout
    assert max(len(ln) for ln in p.stdout.splitlines()) <= 80


# ---- the built kernel (cached, or VMAFLAGS_KERNEL_BUILD=1) ------------------------------------

@pytest.fixture(scope="module")
def built() -> kbuild.Built:
    switch = os.environ.get("VMAFLAGS_KERNEL_BUILD", "")
    if switch == "0":
        pytest.skip("VMAFLAGS_KERNEL_BUILD=0")
    if switch != "1" and kbuild.cached(K.name) is None:
        pytest.skip("patched-6.12 is not built (vmaflags kernel build, or VMAFLAGS_KERNEL_BUILD=1)")
    try:
        return kbuild.build(K.name, progress=False)
    except kbuild.Skip as e:
        pytest.skip(str(e))


def test_built_kernel(built: kbuild.Built):
    assert built.release == "6.12.117-patched-6.12"
    assert built.image.stat().st_size > 500_000
    config = kbuild._options(built.config.read_text())
    for o, v in kbuild._options((spec.CONFIG_DIR / "guest.config").read_text()).items():
        assert config.get(o, "n") == v, o
    assert set(built.selftests) == {"madv_clr_hugepage"}
    assert all(kbuild._is_static(p) for p in built.selftests.values())
    again = kbuild.build(K.name, progress=False)
    assert again.cached and again.seconds < 5 and again.image == built.image


SEED = 20251126


def _vm_or_skip() -> None:
    if os.environ.get("VMAFLAGS_VM", "1") == "0":
        pytest.skip("VMAFLAGS_VM=0")
    why = guest.qemu_blocker()
    if why:
        pytest.skip(why)


def test_patched_kernel_in_vm_is_mmf_clr_and_passes_its_kselftest(built: kbuild.Built):
    """`vmaflags vm run --kernel patched-6.12`: identified as mmf-clr by behaviour, every
    scenario as the model says, and madv_clr_hugepage 12/12."""
    _vm_or_skip()
    kr = vm.check_kernel("patched-6.12", None, catalogue.load(), 0, SEED)
    assert not kr.skip and not kr.error, kr.skip or kr.error
    assert kr.run.kernel == built.release
    assert kr.identified == kr.expected_era == "mmf-clr"
    bad = [f"{r.name}: {r.reason}" for r in kr.run.scenarios if r.status != "pass"]
    assert not bad, bad
    (t,) = kr.selftests
    assert (t["name"], t["status"], t["exit"]) == ("madv_clr_hugepage", "pass", 0), t["output"]
    assert t["output"][:2] == ["TAP version 13", "1..12"]
    assert "# Totals: pass:12 fail:0 xfail:0 xpass:0 skip:0 error:0" in t["output"]


def test_unpatched_kernel_rejects_the_advice(built: kbuild.Built):
    """clr-hugepage on Debian's 6.12, held against mmf-clr: EINVAL at the first CLR."""
    _vm_or_skip()
    kr = vm.check_kernel("debian-6.12", ERAS["mmf-clr"], catalogue.load(["clr-hugepage"]), 0,
                         SEED)
    if kr.skip:
        pytest.skip(kr.skip)
    (r,) = kr.run.scenarios
    assert r.status == "diverge" and r.divergence.step == "4", r.reason
    assert r.divergence.kernel.ret == -errno.EINVAL and r.divergence.model.ret == 0


def test_kselftest_skips_on_debian_6_12(built: kbuild.Built):
    _vm_or_skip()
    try:
        k = kernels.resolve("debian-6.12")
    except kernels.Skip as e:
        pytest.skip(str(e))
    k = dataclasses.replace(k, selftests=dict(built.selftests))
    with guest.Guest(k) as g:
        status, lines = g.run_program("/bin/madv_clr_hugepage")
    assert status == 4
    assert lines == ["TAP version 13", "1..0 # SKIP MADV_CLR_HUGEPAGE not supported"]
