"""Conformance inside qemu: Debian's 6.1 and 6.12 cloud kernels against the model.

One boot per kernel (about 5-10 s under TCG, plus a one-off ~35 MB download per kernel into
~/.cache/vmaflags/vm/).  The VM tests SKIP with the reason when qemu, busybox-static, apt or the
kernel package is unavailable, or when VMAFLAGS_VM=0.  The other tests here need nothing.
"""
from __future__ import annotations

import gzip
import os

import pytest
from vmaflags.conformance.vm import compare, runner

# Scenarios that run quickly and agree with the model on both kernels (the fork-then-collapse
# divergence, SCAN_PAGE_RO, is not among them: see conformance/vm/README.md).
SCENARIOS = ("collapse-errnos", "split-merge", "enomem-holes", "fork-execve-inherit",
             "prctl-matrix-completely", "thp-eligible")
PROBES = ("probe-uffd-hole-collapse", "probe-merge-after-write", "probe-fork-rewrite-collapse",
          "probe-fork-thp-collapse")


def _cases() -> list[compare.Case]:
    scen = {c.name: c for c in compare.scenario_cases()}
    probes = {c.name: c for c in compare.probe_cases()}
    # Scenarios may be renamed while the catalogue grows: run those that are there.
    return [scen[n] for n in SCENARIOS if n in scen] + [probes[n] for n in PROBES]


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_kernel_in_vm_agrees_with_model(kernel: str):
    if os.environ.get("VMAFLAGS_VM", "1") == "0":
        pytest.skip("VMAFLAGS_VM=0")
    cases = _cases()
    try:
        boot, outcomes = compare.check_boot(kernel, cases)
    except runner.Skip as e:
        pytest.skip(f"no VM for {kernel}: {e}")
    assert boot.enabled == "madvise", boot.boot_line
    assert boot.release.startswith(kernel + "."), boot.release
    problems = []
    for o in outcomes:
        if o.error:
            problems.append(f"{o.case.name}: {o.error}")
        elif o.divergence is not None:
            problems.append(f"{o.case.name}:\n{o.divergence.side_by_side()}")
    assert not problems, "\n".join(problems)


# ---- no VM needed -----------------------------------------------------------------------------

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
    c = runner.Cpio()
    c.dir("bin")
    c.file("bin/x", b"hello", 0o755)
    c.symlink("bin/sh", "busybox")
    c.chardev("dev/console", 5, 1)
    got = _read_cpio(gzip.decompress(c.gz()))
    assert got["bin/x"] == (0o100755, b"hello")
    assert got["bin/sh"] == (0o120777, b"busybox")
    assert got["bin"][0] == 0o040755 and got["dev/console"][0] == 0o020600


def test_scripts_archive_marks_khugepaged_scripts_fast():
    got = _read_cpio(gzip.decompress(runner.scripts_cpio(
        ["arena 1\nmmap 0 2M\n", "arena 1\nkhugepaged 100  # wait\n"], ["madvise", "always"])))
    assert got["scripts/00000.env"][1] == b"mode=madvise\nfast=0\n"
    assert got["scripts/00001.env"][1] == b"mode=always\nfast=1\n"
    assert got["scripts/00001.vmf"][1].startswith(b"arena 1\nkhugepaged")


def test_console_output_parsing():
    lines = [
        "garbage before",
        "@@VMF SYSFS defrag=always [madvise] never use_zero_page=1 max_ptes_none=511",
        "@@VMF BOOT release=6.1.0-56-cloud-amd64 uptime=3.10 0.00 enabled=always [madvise] never",
        "@@VMF CMDLINE console=ttyS0 transparent_hugepage=madvise",
        "@@VMF BEGIN 00001", "1 ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:0",
        "@@VMF STDERR 00001", "oops", "@@VMF END 00001 rc=0",
        "@@VMF DONE uptime=4.50 1.00", ""]
    out = "\r\n".join(lines)
    b = runner._parse(out, 3, "pkg", 5.0, "")
    assert (b.release, b.enabled, b.boot_seconds, b.guest_seconds) == (
        "6.1.0-56-cloud-amd64", "madvise", 3.10, 4.50)
    assert b.cmdline.endswith("transparent_hugepage=madvise")
    assert b.results[1].lines == ["1 ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:0"]
    assert b.results[1].stderr == "oops\n" and b.results[1].rc == 0
    assert b.results[0].rc is None and b.results[2].rc is None  # never reported


def test_era_for_debian_kernels():
    assert compare.era_for("6.12").kernel == "6.12"
    e61 = compare.era_for("6.1")
    assert e61.id == "mmf" and e61.kernel == "6.1" and not e61.collapse_none_ebusy
    assert compare.era_for("6.12").collapse_none_ebusy


def test_random_cases_are_reproducible():
    a = compare.random_cases(20)
    b = compare.random_cases(20)
    assert [c.text for c in a] == [c.text for c in b] and len(a) == 20
