"""CRIU in the loop (conformance/vm/criu.py, rootfs.py, criu-case.sh, executor --hold).

Without a VM: the module order of the guest's kernel modules, the image recipe and its hashing,
the executor's --hold mode and `run` with arguments, the case runner's output, the model's
side, and the model against recorded runs of real CRIU (tests/data/criu-*.txt: criu-case.sh's
output in a Debian 6.1 guest; `python -m vmaflags.conformance.vm.criu_command debian-6.1-std
3.17` prints it anew).

With a VM (test_criu_in_vm): one case in every mode through `vm criu`'s own code.  It needs
root, debootstrap, mke2fs, qemu and Debian's mirror; the first run builds the root file system
(debootstrap, about a minute) and downloads the standard 6.1 kernel (70 MB); then about 30 s.
VMAFLAGS_VM=0 or VMAFLAGS_CRIU=0 skip it on purpose.
"""
from __future__ import annotations

import gzip
import lzma
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

from vmaflags.cli import app
from vmaflags.conformance import driver
from vmaflags.conformance.build import executor_path
from vmaflags.conformance.vm import criu, criu_command, initramfs, kernels, rootfs
from vmaflags.model import concrete
from vmaflags.model.eras import era_at
from vmaflags.model.state import cells, empty_state
from vmaflags.model.observe import observe
from vmaflags.model.syscalls import (PAGE, SYSFS_MODES, UffdClose, UffdCopy, UffdRegister,
                                     parse_script)

DATA = pathlib.Path(__file__).parent / "data"
ERA_6_1 = era_at("mmf", "6.1")


def _missing_protocols(release: str) -> list[str]:
    from vmaflags.proofs import protocols as P
    ids = {criu.protocol_id(release, m) for m in criu.MODES}
    return sorted(i for i in ids if not hasattr(P.PROTOCOLS.get(i), "steps"))


def _need_protocols(release: str) -> None:
    missing = _missing_protocols(release)
    if missing:
        pytest.skip(f"proofs/protocols.py lacks {', '.join(missing)} (issue 9)")


# ---- kernel modules ---------------------------------------------------------------------------

def _module(tmp: pathlib.Path, rel: str, *info: str, xz: bool = False) -> None:
    """A relocatable ELF object with a .modinfo section, as the kernel's modules have."""
    src = tmp / "m.c"
    src.write_text("".join(
        f'static const char i{n}[] __attribute__((section(".modinfo"), used, aligned(1))) '
        f'= "{kv}";\n' for n, kv in enumerate(info)))
    out = tmp / "tree" / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cc", "-c", "-o", str(out), str(src)], check=True)
    if xz:
        out.with_name(out.name + ".xz").write_bytes(lzma.compress(out.read_bytes()))
        out.unlink()


@pytest.fixture
def tree(tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    _module(tmp_path, "kernel/a.ko", "depends=b,c,d", "name=a")
    _module(tmp_path, "kernel/b.ko", "softdep=pre: crypto-foo", "depends=")
    _module(tmp_path, "kernel/c.ko", "depends=", xz=True)
    _module(tmp_path, "arch/foo-intel.ko", "alias=crypto-foo", "alias=foo")
    _module(tmp_path, "crypto/foo_generic.ko", "alias=crypto-foo-generic", "alias=crypto-foo")
    (tmp_path / "tree" / "modules.builtin").write_text("kernel/d.ko\n")
    return tmp_path / "tree"


def test_modules_come_dependencies_first_builtins_left_out(tree):
    m = rootfs.Modules(tree)
    assert m.info("a")["depends"] == ["b,c,d"]
    assert m.info("foo_intel")["alias"] == ["crypto-foo", "foo"]
    # b's softdep goes through the alias to the generic driver, not the SSE4.2 one
    assert m.order(("a",)) == ["foo_generic", "b", "c", "a"]
    assert m.order(("a",), skip=("b",)) == ["c", "a"]
    assert m.rel("c") == "kernel/c.ko"  # written decompressed


def test_a_missing_module_is_a_skip_naming_who_needs_it(tree):
    (tree / "kernel" / "c.ko.xz").unlink()
    with pytest.raises(kernels.Skip, match=r"no module c .*needed by a"):
        rootfs.Modules(tree).order(("a",))


def test_modinfo_rejects_what_is_no_elf_object():
    with pytest.raises(ValueError, match="ELF64"):
        rootfs.modinfo(b"not a module")


# ---- the image recipe -------------------------------------------------------------------------

def test_base_is_cached_by_suite_and_packages(monkeypatch):
    a, b = rootfs.base_key("bookworm"), rootfs.base_key("trixie")
    assert a != b and a.startswith("rootfs-bookworm-")
    monkeypatch.setattr(rootfs, "PACKAGES", (*rootfs.PACKAGES, "strace"))
    assert rootfs.base_key("bookworm") != a


def test_building_the_base_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in rootfs.blocker()


def test_image_holds_modules_runner_and_executor_and_is_rebuilt_when_they_change(
        tree, tmp_path, monkeypatch):
    for tool in ("mke2fs", "debugfs"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool}")
    try:
        initramfs.busybox()
        exe = executor_path()
    except (kernels.Skip, RuntimeError) as e:
        pytest.skip(str(e))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    base = tmp_path / "base"
    for d in ("etc", "usr/bin", "usr/sbin", "usr/lib", "usr/local/sbin"):
        (base / d).mkdir(parents=True)
    for link, to in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        (base / link).symlink_to(to)
    monkeypatch.setattr(rootfs, "base", lambda suite, progress=True: base)
    monkeypatch.setattr(rootfs, "BOOT_MODULES", ("c",))
    monkeypatch.setattr(rootfs, "CRIU_MODULES", ("a",))
    k = kernels.Kernel("debian-x-std", "linux-image-x", tree / "vmlinuz", None, modules=tree)

    img = rootfs.image(k, "bookworm", progress=False)
    assert rootfs.image(k, "bookworm", progress=False) == img  # cached

    def cat(path: str) -> bytes:
        return subprocess.run(["debugfs", "-R", f"cat {path}", str(img.disk)],
                              capture_output=True, check=True).stdout

    assert cat("/etc/vmaflags/modules") == b"crypto/foo_generic.ko\nkernel/b.ko\nkernel/a.ko\n"
    assert cat(f"/usr/lib/modules/{tree.name}/kernel/a.ko")[:4] == b"\x7fELF"
    assert cat("/usr/bin/executor") == exe.read_bytes()
    assert cat("/usr/local/sbin/vmaflags-criu") == rootfs.CASE_RUNNER.read_bytes()
    assert b"executor --serve --guest" in cat("/usr/sbin/vmaflags-init")
    loader = gzip.decompress(img.initrd.read_bytes())
    assert b"modules/00-c.ko" in loader and b"switch_root /root /sbin/vmaflags-init" in loader

    runner = tmp_path / "runner.sh"
    runner.write_text(rootfs.CASE_RUNNER.read_text() + "# changed\n")
    monkeypatch.setattr(rootfs, "CASE_RUNNER", runner)
    img2 = rootfs.image(k, "bookworm", progress=False)
    assert img2.disk != img.disk and img2.initrd == img.initrd
    assert not img.disk.exists()  # the image it replaces is removed


def test_vm_criu_wants_a_standard_kernel_and_a_known_release():
    r = CliRunner().invoke(app, ["vm", "criu", "--kernel", "debian-6.1"])
    assert r.exit_code == 2 and "debian-6.1-std" in r.output and r.output.count("\n") == 1
    r = CliRunner().invoke(app, ["vm", "criu", "--criu", "9.9"])
    assert r.exit_code == 2 and "valid: 3.17, 4.1" in r.output


# ---- the executor: --hold, run with arguments ---------------------------------------------------

def _exe() -> str:
    try:
        return str(executor_path())
    except RuntimeError as e:
        pytest.skip(str(e))


def _until(pred, secs: float = 10) -> None:
    end = time.monotonic() + secs
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_hold_runs_its_script_in_two_parts_and_reports_on_signals(tmp_path):
    script = tmp_path / "s.vmf"
    script.write_text("arena 1\nmmap 0 2M\nmadvise 0 2M nohugepage\ntouch 0 4K\n")
    report, out = tmp_path / "report", tmp_path / "out"
    r, w = os.pipe()  # a descriptor it inherits (in the guest: the serial port), and closes
    with open(out, "w") as f:
        p = subprocess.Popen([_exe(), "--hold", str(report), str(script), "2"],
                             stdin=subprocess.DEVNULL, stdout=f, stderr=f, pass_fds=(w,))
    os.close(w)
    try:
        _until(lambda: report.exists() and report.read_text() == "ready 1\n")
        assert out.read_text().splitlines()[-1].startswith("2 ret=0 ")
        assert os.getsid(p.pid) == p.pid  # a session of its own
        assert sorted(os.listdir(f"/proc/{p.pid}/fd")) == ["0", "1", "2"]
        p.send_signal(signal.SIGUSR1)
        _until(lambda: len(report.read_text().splitlines()) == 2)
        label, obs = driver.parse_line(report.read_text().splitlines()[1])
        assert label == "obs" and obs.vmas[0].flags == "nh"
        p.send_signal(signal.SIGUSR2)
        _until(lambda: report.read_text().endswith("ready 2\n"))
        assert out.read_text().splitlines()[-1].startswith("3 ret=0 ")
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        p.kill()
        p.wait()
        os.close(r)


def test_run_passes_arguments_and_no_control_stream():
    proc = subprocess.Popen([_exe(), "--serve", "--guest"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ex = driver.Executor(proc)
    try:
        assert ex.control("run /bin/echo a  b") == (["a  b"], "0")
        assert ex.control("run /bin/cat") == ([], "0")  # stdin is /dev/null, not our pipe
        assert ex.control("clr 18") == ([], "0")
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0


# ---- the case runner's output -------------------------------------------------------------------

def test_case_runner_is_posix_sh():
    subprocess.run(["sh", "-n", str(rootfs.CASE_RUNNER)], check=True)


def test_runner_lines_are_parsed_and_anything_else_is_an_error():
    gr = criu.parse_runner(["step 1 ret=0 get=0 thp=1 vmas=0x0-0x1000:-:0:0",
                            "dumped ret=0 get=1 thp=0 vmas=", "mark dump 3.50",
                            "error criu dump failed (exit 1)", "log dump.log: Error (x)"],
                           criu.GuestRun())
    assert len(gr.steps) == 1 and gr.seen["dumped"].get == 1 and gr.marks == {"dump": 3.5}
    assert gr.error == "error criu dump failed (exit 1)\nlog dump.log: Error (x)"
    with pytest.raises(ValueError, match="unexpected line"):
        criu.parse_runner(["Segmentation fault"], criu.GuestRun())


# ---- the model's side ---------------------------------------------------------------------------

def test_protocol_by_release_and_mode():
    assert criu.protocol_id("3.17.1", "lazy-parent") == "3.5-lazy-predump"
    assert criu.protocol_id("3.19", "plain") == "3.19-plain"
    assert criu.protocol_id("4.1.1", "lazy") == "3.19-lazy"
    with pytest.raises(ValueError, match="no protocol"):
        criu.protocol_id("3.4", "plain")


def _states(text: str) -> list:
    s = parse_script(text)
    st, out = empty_state(s.arena), []
    for sc in s.steps:
        st = concrete.run_syscall(ERA_6_1, st, sc).state
        out.append(st)
    return out


def _written(st) -> set[int]:
    return {p for c in cells(st) if c.mapped and c.pop for p in range(c.start, c.end)}


def test_restore_input_marks_the_pages_each_mode_writes_before_the_lazy_phase():
    text = "arena 1\nmmap 0 2M\ntouch 0 8K\ntouch 1M 4K\ntouch 4K 8K\n"
    states = _states(text)
    after = parse_script(text).steps[3:]
    dump, at_predump = states[-1], states[2]
    assert criu.restore_input(dump, at_predump, after, "plain") == dump
    assert _written(criu.restore_input(dump, at_predump, after, "lazy")) == set()
    # pre-dumped and not written since: page 0 and page 256 (1M); 1 and 2 are dirty
    got = criu.restore_input(dump, at_predump, after, "lazy-parent")
    assert _written(got) == {0, 256}
    assert [v.text() for v in observe(ERA_6_1, got, 0).vmas] == [
        v.text() for v in observe(ERA_6_1, dump, 0).vmas]
    with pytest.raises(ValueError, match="only touch pages and prctl"):
        criu.restore_input(dump, at_predump, parse_script("munmap 0 4K").steps, "lazy-parent")


def test_lazy_phase_copies_the_dumped_pages_not_written_then_closes():
    dump = _states("arena 1\nmmap 0 2M\ntouch 0 8K\ntouch 1M 4K\n")[-1]
    restored = _states("arena 1\nmmap 0 2M\ntouch 0 4K\n")[-1]
    assert criu.lazy_phase(dump, restored) == [UffdCopy(PAGE, PAGE), UffdCopy(256 * PAGE, PAGE),
                                               UffdClose()]


@pytest.mark.parametrize("mode", criu.MODES)
def test_protocol_steps_are_the_protocols_own(mode):
    """A plain restore registers nothing with userfaultfd, a lazy one every dumped VMA; the
    steps replay without error on the interpreter."""
    _need_protocols("3.17")
    case = criu.CASES[1]
    mr = criu.model_run(ERA_6_1, case, mode, criu.protocol_id("3.17", mode), 1)
    assert not mr.aborted and mr.final is not None
    regs = {(sc.off, sc.len) for sc in mr.restore if isinstance(sc, UffdRegister)}
    dumped = {(v.start, v.end - v.start) for v in mr.steps[-1].vmas}
    assert regs == (set() if mode == "plain" else dumped)


def _recorded(name: str) -> list[tuple[str, str, list[str]]]:
    out: list[tuple[str, str, list[str]]] = []
    for ln in (DATA / name).read_text().splitlines():
        if ln.startswith("## "):
            out.append((*ln[3:].split(), []))  # type: ignore[arg-type]
        elif not ln.startswith("#"):
            out[-1][2].append(ln)
    return out


@pytest.mark.parametrize("name,case,mode", [
    (n, c, m) for n in ("criu-6.1-3.17.txt", "criu-6.1-4.1.txt") for c, m, _ in _recorded(n)])
def test_model_agrees_with_recorded_criu(name, case, mode):
    release = name.removesuffix(".txt").split("-")[-1]
    _need_protocols(release)
    lines = next(ls for c, m, ls in _recorded(name) if (c, m) == (case, mode))
    the_case = next(c for c in criu.CASES if c.name == case)
    pid = criu.protocol_id(release, mode)
    mr = criu.model_run(ERA_6_1, the_case, mode, pid, SYSFS_MODES.index(the_case.sysfs))
    cr = criu.compare(the_case, mode, pid, criu.parse_runner(lines, criu.GuestRun()), mr)
    assert cr.agrees, "\n".join(cr.problems)


def test_a_dump_the_model_does_not_reproduce_is_reported():
    _need_protocols("3.17")
    _, _, lines = _recorded("criu-6.1-3.17.txt")[0]
    case = criu.CASES[0]
    mr = criu.model_run(ERA_6_1, case, "plain", "3.5-plain", 1)
    bad = [ln.replace("hg:1:2048", "hg:1:0", 1) if ln.startswith("step 3 ") else ln
           for ln in lines]
    cr = criu.compare(case, "plain", "3.5-plain", criu.parse_runner(bad, criu.GuestRun()), mr)
    assert not cr.agrees and "diverges from the model at step 3" in cr.problems[0]


def test_a_missing_protocol_is_reported_not_guessed(monkeypatch):
    from vmaflags.proofs import protocols as P
    monkeypatch.setattr(P, "PROTOCOLS", {})
    with pytest.raises(criu.MissingProtocol, match="3.5-plain is not in proofs/protocols.py"):
        criu.model_run(ERA_6_1, criu.CASES[0], "plain", "3.5-plain", 1)


def test_report_fits_80_columns_and_json_has_the_issues_fields():
    _need_protocols("4.1")
    rep = criu_command.Report("debian-6.1-std", "6.1.0-57-amd64", "4.1.1")
    for case, mode, lines in _recorded("criu-6.1-4.1.txt")[:3] + _recorded(
            "criu-6.1-4.1.txt")[-3:]:
        c = next(x for x in criu.CASES if x.name == case)
        # the last case against CRIU 3.17's protocol, which loses the dumped prctl: a DIFFERS
        pid = criu.protocol_id("3.17" if case.endswith("+prctl") and mode == "plain"
                               else "4.1", mode)
        mr = criu.model_run(ERA_6_1, c, mode, pid, SYSFS_MODES.index(c.sysfs))
        rep.cases.append(criu.compare(c, mode, pid, criu.parse_runner(lines, criu.GuestRun()),
                                      mr))
    text = criu_command.render_text(rep)
    assert max(map(len, text.splitlines())) <= 80, text
    assert "DIFFERS" in text and "agrees" in text
    d = rep.as_dict()
    assert set(d) == {"kernel", "criu", "cases"}
    assert set(d["cases"][0]) == {"name", "mode", "protocol", "dumped", "restored", "model",
                                  "agrees"}
    assert set(d["cases"][0]["dumped"]) == {"get", "thp_enabled", "vmas"}


# ---- in a VM ------------------------------------------------------------------------------------

def test_criu_in_vm():
    for var in ("VMAFLAGS_VM", "VMAFLAGS_CRIU"):
        if os.environ.get(var, "1") == "0":
            pytest.skip(f"{var}=0")
    _need_protocols("3.17")
    case = next(c for c in criu.CASES if c.name == "madvise+prctl")
    rep = criu_command.check("debian-6.1-std", "3.17", (case,), criu.MODES, progress=False)
    if rep.skip:
        pytest.skip(rep.skip)
    assert not rep.error, rep.error
    assert rep.criu.startswith("3.17.") and rep.kernel.startswith("6.1.")
    assert [c.mode for c in rep.cases] == list(criu.MODES)
    assert all(c.agrees for c in rep.cases), criu_command.render_text(rep)
