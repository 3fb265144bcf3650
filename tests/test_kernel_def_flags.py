"""kernel-patch/series/def-flags and its kernels def-flags-6.12, def-flags-clr-6.12 (issue 14).

The series gives Debian's 6.12 the v4.12 PR_SET_THP_DISABLE (mm->def_flags), a test stand-in
for the `def-flags` and `def-flags-clr` eras.  Fast by default: the series tests need the
pristine linux-source-6.12 tree (as tests/test_kernel.py: cached by an earlier build or fetched
once, SKIP when it cannot be had).  The built-kernel tests run when the build is cached or
VMAFLAGS_KERNEL_BUILD=1 (=0 skips them; a cold build takes 5-8 min on 2 cores), the guest
tests also need qemu (VMAFLAGS_VM=0 skips them).
"""
from __future__ import annotations

import functools
import io
import os
import pathlib
import re
import subprocess
import sys

import pytest
from vmaflags.conformance import catalogue, driver, host, restores
from vmaflags.conformance.replay import Replayed, from_counterexample, replay, split
from vmaflags.conformance.vm import command as vm
from vmaflags.conformance.vm import guest, kernels
from vmaflags.kernel import build as kbuild
from vmaflags.kernel import series, source, spec
from vmaflags.model import ERAS
from vmaflags.model.eras import era_at
from vmaflags.model.syscalls import SYSFS_MODES
from vmaflags.proofs.command import obligations, run

DEF_FLAGS = spec.kernel("def-flags-6.12")
DEF_FLAGS_CLR = spec.kernel("def-flags-clr-6.12")
SEED = 20251126


@pytest.fixture(scope="module")
def pristine() -> pathlib.Path:
    try:
        return source.pristine(DEF_FLAGS.package, DEF_FLAGS.version)
    except source.Skip as e:
        pytest.skip(f"no {DEF_FLAGS.package}={DEF_FLAGS.version}: {e}")


# ---- the series ------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [DEF_FLAGS, DEF_FLAGS_CLR], ids=lambda k: k.name)
def test_series_apply_to_the_pristine_source_in_order(pristine: pathlib.Path, k: spec.Kernel):
    res = subprocess.run(["git", "apply", "--check", *map(str, k.patches)], cwd=pristine,
                         env=series._git_env(pristine), capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr


def test_checkpatch_strict_is_clean(pristine: pathlib.Path):
    patches = spec.series_patches("def-flags")
    log = io.StringIO()
    series.checkpatch(patches, pristine, log)
    assert log.getvalue().count("total: 0 errors, 0 warnings, 0 checks") == len(patches)


def _changed(patch: pathlib.Path, path: str, sign: str) -> list[str]:
    """The lines `patch` adds (sign "+") or removes ("-") in `path`, stripped."""
    text = patch.read_text()
    part = text.split(f"diff --git a/{path} b/{path}\n", 1)[1].split("\ndiff --git ", 1)[0]
    return [ln[1:].strip() for ln in part.splitlines()
            if ln.startswith(sign) and not ln.startswith(sign * 3)]


def test_the_series_puts_back_the_v4_12_prctl():
    """kernel/sys.c loses 6.12's three MMF_DISABLE_THP lines and gets back v4.12's, as the
    removed lines of the 4.13 patch ("mm: make PR_SET_THP_DISABLE immediately active") show
    them; nothing else in the kernel changes, and the message says it is a stand-in."""
    (patch,) = spec.series_patches("def-flags")
    assert _changed(patch, "kernel/sys.c", "-") == [
        "error = !!test_bit(MMF_DISABLE_THP, &me->mm->flags);",
        "set_bit(MMF_DISABLE_THP, &me->mm->flags);",
        "clear_bit(MMF_DISABLE_THP, &me->mm->flags);"]
    assert _changed(patch, "kernel/sys.c", "+") == [
        "error = !!(me->mm->def_flags & VM_NOHUGEPAGE);",
        "me->mm->def_flags |= VM_NOHUGEPAGE;",
        "me->mm->def_flags &= ~VM_NOHUGEPAGE;"]
    files = re.findall(r"^diff --git a/(\S+) ", patch.read_text(), re.MULTILINE)
    assert files == ["Documentation/filesystems/proc.rst", "kernel/sys.c"]
    assert "A TEST STAND-IN, NOT A PROPOSAL" in patch.read_text()


def test_the_stand_ins_are_kernels_of_their_eras():
    assert (DEF_FLAGS.series, DEF_FLAGS.era, DEF_FLAGS.selftests) == (
        ("def-flags",), "def-flags", ())
    assert (DEF_FLAGS_CLR.series, DEF_FLAGS_CLR.era, DEF_FLAGS_CLR.selftests) == (
        ("def-flags", "clr-hugepage"), "def-flags-clr", ("mm/madv_clr_hugepage",))
    assert {"def-flags-6.12", "def-flags-clr-6.12"} <= set(kernels.specs())
    keys = {spec.cache_key(spec.kernel(n)) for n in spec.KERNELS}
    assert len(keys) == len(spec.KERNELS)
    # what the executor passes as MADV_CLR_HUGEPAGE in a 6.12 guest: the series' 26, not 18
    assert ERAS["def-flags-clr"].at("6.12").clr_hugepage == 26


@functools.cache
def refuted(era_id: str) -> tuple:
    """The era's refuted rows of `vmaflags prove` whose counterexample is a trace."""
    rows = run(obligations(None, [ERAS[era_id]]), show_progress=False)
    return tuple(r for r in rows if r.verdict == "refuted" and isinstance(r.counterexample, list))


@pytest.mark.parametrize("era_id", ["def-flags", "def-flags-clr"])
def test_a_counterexample_becomes_a_replay_file_of_its_processes(era_id: str):
    rows = refuted(era_id)
    assert rows
    for row in rows:
        text = from_counterexample(row.name, row.counterexample)
        parts = split(text)
        procs = list(dict.fromkeys(s["process"] for s in row.counterexample))
        assert [name for name, _ in parts] == procs
        for name, body in parts:
            sc = catalogue.parse(name, body, strict=False)
            mine = [s for s in row.counterexample if s["process"] == name]
            assert sc.title == row.name
            assert sc.modes == (mine[0]["sysfs"],)
            assert sc.script.arena == mine[0]["arena"]
            assert [s.text() for s in sc.script.steps] == [s["syscall"] for s in mine]


@pytest.mark.parametrize("era_id", ["def-flags", "def-flags-clr"])
def test_the_counterexamples_mean_the_same_at_4_12_and_at_6_12(era_id: str):
    """What lets a 6.12 stand-in speak for the proofs at 4.12: on every counterexample of the
    era the model at 6.12 returns, reads PR_GET, and shows VMAs, flags and AnonHugePages as at
    4.12 (THPeligible and THP_enabled exist only at 6.12 and are left out)."""
    def seen(era, sc):
        mode = SYSFS_MODES.index(sc.modes[0])
        return [(n, o.ret, o.get, [(v.start, v.end, v.flags, v.anon_huge_kb) for v in o.vmas])
                for n, o in driver.run_model(era, sc.script, mode)]

    for row in refuted(era_id):
        for name, body in split(from_counterexample(row.name, row.counterexample)):
            sc = catalogue.parse(name, body, strict=False)
            assert seen(era_at(era_id, "4.12"), sc) == seen(era_at(era_id, "6.12"), sc), \
                (row.name, name)


@pytest.mark.parametrize("args,msg", [
    (["--kernel", "nosuch", "--era", "def-flags"], "unknown kernel 'nosuch'; valid: "),
    (["--era", "nosuch"], "unknown era"),
    (["--era", "def-flags", "--every", "0"], "--every must be >= 1"),
    (["--era", "def-flags", "--protocol", "nosuch"], "unknown protocol 'nosuch'; valid: "),
])
def test_restores_bad_input_is_one_line_and_exit_2(args, msg):
    exe = os.path.join(os.path.dirname(sys.executable), "vmaflags")
    p = subprocess.run([exe, "vm", "restores", *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and msg in p.stderr, p.stderr


# ---- the built kernels (cached, or VMAFLAGS_KERNEL_BUILD=1), booted --------------------------

def _built(name: str) -> kbuild.Built:
    switch = os.environ.get("VMAFLAGS_KERNEL_BUILD", "")
    if switch == "0":
        pytest.skip("VMAFLAGS_KERNEL_BUILD=0")
    if switch != "1" and kbuild.cached(name) is None:
        pytest.skip(f"{name} is not built (vmaflags kernel build {name}, or "
                    "VMAFLAGS_KERNEL_BUILD=1)")
    try:
        b = kbuild.build(name, progress=False)
    except kbuild.Skip as e:
        pytest.skip(str(e))
    if os.environ.get("VMAFLAGS_VM", "1") == "0":
        pytest.skip("VMAFLAGS_VM=0")
    why = guest.qemu_blocker()
    if why:
        pytest.skip(why)
    return b


@pytest.mark.parametrize("k", [DEF_FLAGS, DEF_FLAGS_CLR], ids=lambda k: k.name)
def test_stand_in_in_vm_is_identified_as_its_era(k: spec.Kernel):
    """`vmaflags vm run --kernel K`: identified by behaviour as the era the series stands in
    for (every other era diverges), every scenario as the model says at 6.12, and on
    def-flags-clr-6.12 the CLR kselftest passes under the v4.12 prctl."""
    b = _built(k.name)
    kr = vm.check_kernel(k.name, None, catalogue.load(), 0, SEED)
    assert not kr.skip and not kr.error, kr.skip or kr.error
    assert kr.run.kernel == b.release == f"6.12.117-{k.name}"
    assert kr.identified == kr.expected_era == k.era
    assert kr.run.era_kernel == "6.12"
    bad = [f"{r.name}: {r.reason}" for r in kr.run.scenarios if r.status != "pass"]
    assert not bad, bad
    assert [t["status"] for t in kr.selftests] == ["pass"] * len(k.selftests)
    for t in kr.selftests:
        assert "# Totals: pass:12 fail:0 xfail:0 xpass:0 skip:0 error:0" in t["output"]


def _in_guest(k: spec.Kernel, texts: list[str], era_id: str) -> list[list[Replayed]]:
    with guest.Guest(kernels.resolve(k.name, progress=False)) as g, host.use(g):
        return [replay(t, ERAS[era_id])[1] for t in texts]


def test_the_seed_defect_on_a_real_kernel():
    """seed-def-flags-defect on def-flags-6.12, the kernel's own lines: the VMA mapped while
    the prctl was set keeps nh after it is cleared (PR_GET 0), a VMA mapped afterwards has
    none, and only MADV_HUGEPAGE takes the nh away."""
    _built(DEF_FLAGS.name)
    text = (catalogue.SCENARIO_DIR / "seed-def-flags-defect.vmf").read_text()
    ((r,),) = _in_guest(DEF_FLAGS, [text], "def-flags")
    assert r.agrees, r.checked.divergence.text()
    got = [f"{n} {o.text()}" for n, o in r.checked.kernel]
    assert got[3:] == ["4 ret=0 get=0 thp=1 vmas=0x0-0x200000:nh:0:0",
                       "5 ret=0 get=0 thp=1 vmas=0x0-0x200000:nh:0:0",
                       "6 ret=0 get=0 thp=1 vmas=0x0-0x200000:nh:0:0,0x200000-0x400000:-:0:0",
                       "7 ret=0 get=0 thp=1 vmas=0x0-0x400000:hg:1:0"]


@pytest.mark.parametrize("k", [DEF_FLAGS, DEF_FLAGS_CLR], ids=lambda k: k.name)
def test_every_counterexample_of_the_era_replays_in_the_guest(k: spec.Kernel):
    """Each refutation of the era's rows of `vmaflags prove`, as a replay file (one process
    per section), runs on the stand-in exactly as the model says at 6.12."""
    _built(k.name)
    rows = refuted(k.era)
    assert rows
    results = _in_guest(k, [from_counterexample(r.name, r.counterexample)
                            for r in rows], k.era)
    bad = [f"{row.name} {p.process}: {p.skip or p.checked.divergence.text()}"
           for row, rs in zip(rows, results) for p in rs if not p.agrees]
    assert not bad, bad


def _restores(k: spec.Kernel, protocol: str) -> restores.Outcome:
    with guest.Guest(kernels.resolve(k.name, progress=False)) as g, host.use(g):
        return restores.run(ERAS[k.era], protocol, every=100)


def test_the_2017_proposal_restores_exactly_on_def_flags_clr_6_12():
    """Every 100th dump of criu-restore-original's bound, restored with clr-2017 on the
    stand-in: the kernel prints what the model says, and every restore ends as dumped."""
    _built(DEF_FLAGS_CLR.name)
    o = _restores(DEF_FLAGS_CLR, "clr-2017")
    assert o.enumerated > 10_000 and o.dumps == -(-o.enumerated // 100)
    assert not o.divergences, o.divergences[0].text()
    assert not o.inexact, o.inexact[0]


def test_criu_3_19_lazy_predump_leaves_nh_behind_on_def_flags_clr_6_12():
    """The same dumps restored as CRIU 3.19+ does with --lazy-pages and a pre-dump: the kernel agrees with the model, and a
    restore is not exact where a dumped VMA had no advice (the prctl(1) around the restore
    leaves it nh): the seed's defect, on running code."""
    _built(DEF_FLAGS_CLR.name)
    o = _restores(DEF_FLAGS_CLR, "3.19-lazy-predump")
    assert not o.divergences, o.divergences[0].text()
    assert 0 < len(o.inexact) < o.dumps
