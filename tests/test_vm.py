"""Test VMs (conformance/vm): Debian's 6.1 and 6.12 cloud kernels under qemu, checked like this
machine, and the pieces that need no VM.

Booting needs qemu-system-x86, busybox-static, apt access to Debian's kernel packages (a one-off
~35 MB download per kernel into the cache directory) and a C compiler; without them the VM
tests SKIP with the reason.  VMAFLAGS_VM=0 skips them on purpose.  A boot takes 2-5 s under TCG.
"""
from __future__ import annotations

import gzip
import os
import subprocess

import pytest
from typer.testing import CliRunner

from vmaflags.cli import app
from vmaflags.conformance import catalogue, driver, host
from vmaflags.conformance.build import executor_path
from vmaflags.conformance.vm import command, guest, initramfs, kernels

SEED = 20251126


def _vm_or_skip() -> None:
    if os.environ.get("VMAFLAGS_VM", "1") == "0":
        pytest.skip("VMAFLAGS_VM=0")
    why = guest.qemu_blocker()
    if why:
        pytest.skip(why)


def _problems(kr: command.KernelRun) -> list[str]:
    out = [kr.error] if kr.error else []
    run = kr.run
    if run is not None:
        out += [f"{r.name}: {r.reason}\n{r.divergence.side_by_side() if r.divergence else ''}"
                for r in run.scenarios if r.status != "pass"]
        if run.random is not None:
            out += [d["script"] + f"step {d['step']}:\n  model:  {d['model']}\n"
                    f"  kernel: {d['kernel']}" for d in run.random.divergences]
            out += run.random.errors
    return out


@pytest.mark.parametrize("spec,examples", [("debian-6.1", 0), ("debian-6.12", 300)])
def test_debian_kernel_in_vm_is_identified_and_agrees(spec: str, examples: int):
    _vm_or_skip()
    kr = command.check_kernel(spec, None, catalogue.load(), examples, SEED)
    if kr.skip:
        pytest.skip(f"{spec}: {kr.skip}")
    assert kr.run is not None, kr.error
    assert kr.run.kernel.startswith(spec.split("-")[1] + "."), kr.run.kernel
    assert kr.run.live_mode == "madvise"  # the command line's transparent_hugepage=madvise
    assert kr.identified == kr.expected_era == "mmf", kr.run.identification.as_dict()
    assert not _problems(kr), "\n\n".join(_problems(kr))
    if examples:
        assert kr.run.random is not None and kr.run.random.examples == examples


def test_guest_that_does_not_boot_in_time_is_an_error_with_the_console_tail():
    _vm_or_skip()
    try:
        k = kernels.resolve("debian-6.1")
    except kernels.Skip as e:
        pytest.skip(str(e))
    with pytest.raises(guest.VMError, match="did not boot within 0.3 s.*console tail"):
        guest.Guest(k, boot_timeout=0.3)


def test_a_file_that_is_no_kernel_is_an_error_not_a_hang(tmp_path):
    _vm_or_skip()
    bogus = tmp_path / "bzImage"
    bogus.write_bytes(b"not a kernel\n" * 100)
    with pytest.raises(guest.VMError, match="bzImage"):
        guest.Guest(kernels.resolve(str(bogus)), boot_timeout=60)


# ---- no VM needed -----------------------------------------------------------------------------

def test_unknown_kernel_is_one_line_listing_the_valid_ones():
    r = CliRunner().invoke(app, ["vm", "run", "--kernel", "nosuch"])
    assert r.exit_code == 2
    line = r.output.strip()
    assert "\n" not in line and "debian-6.1" in line and "debian-6.12" in line, line


def test_missing_image_path_is_one_line():
    r = CliRunner().invoke(app, ["vm", "run", "--kernel", "/nonexistent/bzImage"])
    assert r.exit_code == 2 and "no kernel image at /nonexistent/bzImage" in r.output


def test_no_qemu_is_a_skip_naming_the_debian_package(monkeypatch):
    monkeypatch.setattr(guest, "QEMU", "qemu-that-is-not-installed")
    monkeypatch.setattr(kernels, "resolve",
                        lambda spec, progress=True: kernels.Kernel(spec, spec, None, None))
    r = CliRunner().invoke(app, ["vm", "run", "--kernel", "debian-6.1", "--examples", "0"])
    assert r.exit_code == command.SKIP_EXIT
    assert "SKIP" in r.output and "apt-get install qemu-system-x86" in r.output


def test_mainline_era_of_a_kernel_release(monkeypatch):
    for release, era in (("6.18.44-x", "mmf-except-advised"), ("6.1.0-57-cloud-amd64", "mmf"),
                         ("4.12.0", "def-flags"), ("3.10.0", None)):
        monkeypatch.setattr(host, "kernel", lambda r=release: r)
        assert host.mainline_era() == era, release


def test_guest_control_lines_on_a_local_server():
    """The control lines of `executor --serve --guest` (clr, sysfs, run), against a server on
    this machine: what guest.Guest sends over the VM's serial port."""
    try:
        exe = executor_path()
    except RuntimeError as e:
        pytest.skip(str(e))
    proc = subprocess.Popen([str(exe), "--serve", "--guest"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ex = driver.Executor(proc)
    try:
        assert ex.control("clr 18") == ([], "0")
        assert ex.control("clr x") == ([], "22")
        assert ex.control("sysfs ../../etc/passwd")[1] == "22"
        assert ex.control("sysfs nosuch_tunable")[1] == "2"
        if not host.no_thp():
            lines, status = ex.control("sysfs enabled")
            assert status == "0" and lines == [open(
                "/sys/kernel/mm/transparent_hugepage/enabled").read().strip()]
        assert ex.control("run /bin/true") == ([], "0")
        assert ex.control("run /nonexistent")[1] == "127"
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0


def _read_cpio(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a newc archive (the trailer excluded)."""
    out, i = {}, 0
    while True:
        assert data[i:i + 6] == b"070701"
        f = [int(data[i + 6 + 8 * k:i + 14 + 8 * k], 16) for k in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[i + 110:i + 110 + namesize - 1].decode()
        i += 110 + namesize
        i += -i % 4
        body = data[i:i + size]
        i += size
        i += -i % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_cpio_writer_round_trips():
    c = initramfs.Cpio()
    c.dir("bin")
    c.file("bin/x", b"hello", 0o755)
    c.symlink("bin/sh", "busybox")
    c.chardev("dev/console", 5, 1)
    got = _read_cpio(gzip.decompress(c.gz()))
    assert got["bin/x"] == (0o100755, b"hello")
    assert got["bin/sh"] == (0o120777, b"busybox")
    assert got["bin"][0] == 0o040755 and got["dev/console"][0] == 0o020600


def test_initramfs_holds_executor_init_and_selftests(tmp_path):
    try:
        initramfs.busybox()
    except kernels.Skip as e:
        pytest.skip(str(e))
    st = tmp_path / "a_selftest"
    st.write_bytes(b"\x7fELF...")
    got = _read_cpio(gzip.decompress(initramfs.build({"a_selftest": st}).read_bytes()))
    assert got["bin/a_selftest"] == (0o100755, b"\x7fELF...")
    assert b"executor --serve --guest" in got["init"][1]
    assert got["bin/executor"][1] == executor_path().read_bytes()
