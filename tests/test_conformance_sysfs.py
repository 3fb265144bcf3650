"""The sysfs guard: every THP tunable comes back after a normal exit, an exception, SIGTERM, and
a SIGKILL of the runner (the guardian process restores them).  The fake-tree tests check the
logic on a temporary directory; the live tests change the real /sys/kernel/mm/transparent_hugepage
and need root."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vmaflags.conformance import sysfs

MACHINE_DEFAULTS = {"enabled": "madvise", "defrag": "madvise", "shmem_enabled": "never",
                    "khugepaged/scan_sleep_millisecs": "10000",
                    "khugepaged/alloc_sleep_millisecs": "60000",
                    "khugepaged/pages_to_scan": "4096", "khugepaged/max_ptes_none": "511"}
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="not root")
live_only = pytest.mark.skipif(sysfs.writable() is not None, reason=sysfs.writable() or "")


@pytest.fixture
def fake(tmp_path):
    (tmp_path / "khugepaged").mkdir()
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    (tmp_path / "defrag").write_text("always defer defer+madvise [madvise] never\n")
    (tmp_path / "shmem_enabled").write_text("always within_size advise [never] deny force\n")
    for n, v in (("scan_sleep_millisecs", "10000"), ("alloc_sleep_millisecs", "60000"),
                 ("pages_to_scan", "4096"), ("max_ptes_none", "511")):
        (tmp_path / "khugepaged" / n).write_text(v + "\n")
    return tmp_path


def _wait_unlocked(lock_path, timeout: float = 30) -> None:
    """The guardian holds the lock until it has restored everything."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError("the guardian never released the lock") from None
                time.sleep(0.05)
    finally:
        os.close(fd)


@root_only
def test_read_and_snapshot(fake):
    assert sysfs.read("enabled", fake) == "madvise"
    assert sysfs.snapshot(fake)["khugepaged/pages_to_scan"] == "4096"


@root_only
def test_restores_on_exit_and_on_exception(fake, tmp_path_factory):
    lock = tmp_path_factory.mktemp("lock") / "lock"
    before = sysfs.snapshot(fake)
    with sysfs.SysfsGuard(fake, lock) as g:
        g.set(enabled="always")
        g.set_many(sysfs.FAST_KHUGEPAGED)
        assert sysfs.read("enabled", fake) == "always"
    assert sysfs.snapshot(fake) == before
    with pytest.raises(RuntimeError), sysfs.SysfsGuard(fake, lock) as g:
        g.set(enabled="never")
        raise RuntimeError("boom")
    assert sysfs.snapshot(fake) == before


@root_only
def test_rejects_unknown_tunables(fake, tmp_path_factory):
    lock = tmp_path_factory.mktemp("lock") / "lock"
    with sysfs.SysfsGuard(fake, lock) as g, pytest.raises(sysfs.SysfsError):
        g.set_many({"hugepages-2048kB/enabled": "never"})


def _runner(root, lock, extra: str = "") -> subprocess.Popen:
    """A process that changes everything through the guard, says so, and sleeps."""
    code = textwrap.dedent(f"""
        import pathlib, sys, time
        from vmaflags.conformance import sysfs
        root, lock = pathlib.Path({str(root)!r}), pathlib.Path({str(lock)!r})
        with sysfs.SysfsGuard(root, lock) as g:
            g.set(enabled="never")
            g.set_many(sysfs.FAST_KHUGEPAGED)
            {extra}
            print("changed", flush=True)
            time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "changed"
    return p


@root_only
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_fake_tree_restored_after_signal(fake, tmp_path_factory, sig):
    lock = tmp_path_factory.mktemp("lock") / "lock"
    before = sysfs.snapshot(fake)
    p = _runner(fake, lock)
    assert sysfs.read("enabled", fake) == "never"
    p.send_signal(sig)
    p.wait(timeout=30)
    _wait_unlocked(lock)
    assert sysfs.snapshot(fake) == before


@live_only
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_live_sysfs_restored_after_signal(sig):
    before = sysfs.snapshot()
    p = _runner(sysfs.THP, sysfs.LOCK_PATH)
    assert sysfs.read("enabled") == "never"
    assert sysfs.read("khugepaged/scan_sleep_millisecs") == "10"
    p.send_signal(sig)
    p.wait(timeout=30)
    _wait_unlocked(sysfs.LOCK_PATH)
    assert sysfs.snapshot() == before


@live_only
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("phase", [
    [],  # the whole catalogue first: killed in a scenario under another mode or fast khugepaged
    ["--scenario", "clr-hugepage", "--examples", "300"],  # straight to the random run

])
def test_conform_run_killed_midway_leaves_nothing_changed(sig, phase, tagged):
    """Kill `vmaflags conform` while it has THP sysfs changed: a second later sysfs is back
    and none of its processes is left (the guardian included)."""
    before = sysfs.snapshot()
    exe = os.path.join(os.path.dirname(sys.executable), "vmaflags")
    p = subprocess.Popen([exe, "conform", "--examples", "2000", *phase, "--seed", "1", "--json"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=tagged.env)
    deadline = time.monotonic() + 120
    try:
        while sysfs.snapshot() == before:
            assert p.poll() is None, "conform ended before changing sysfs"
            assert time.monotonic() < deadline, "conform never changed sysfs"
            time.sleep(0.01)
        changed = sysfs.snapshot()
        p.send_signal(sig)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    time.sleep(1)
    assert tagged.alive() == {}
    _wait_unlocked(sysfs.LOCK_PATH)
    assert changed != before
    assert sysfs.snapshot() == before


@live_only
def test_machine_defaults_intact():
    """Checked last (file order): nothing in the suite left the machine's tunables changed."""
    _wait_unlocked(sysfs.LOCK_PATH)
    now = sysfs.snapshot()
    assert {k: now[k] for k in MACHINE_DEFAULTS if k in now} == {
        k: v for k, v in MACHINE_DEFAULTS.items() if k in now}
