"""The one way conformance changes /sys/kernel/mm/transparent_hugepage: a guard that records every
tunable first and puts all of them back — on normal exit, on an exception, on SIGINT/SIGTERM/
SIGHUP, and even when the runner is SIGKILLed.

For the last case a small guardian process holds the saved values and a pipe from the runner;
when the pipe reaches EOF without the runner's "done", the guardian restores the values itself.
It runs in its own session and ignores the terminal's and the group's signals.  An flock on
LOCK_PATH, shared by runner and guardian, keeps a second runner from recording the changed
values as "original" before the guardian has finished.

    with SysfsGuard() as g:
        g.set(enabled="always")
        ...
        g.reset()          # back to the recorded values, between scenarios
"""
from __future__ import annotations

import fcntl
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage")
# Every tunable conformance may change, plus those the model assumes (recorded and checked).
TUNABLES = ("enabled", "defrag", "shmem_enabled", "khugepaged/scan_sleep_millisecs",
            "khugepaged/alloc_sleep_millisecs", "khugepaged/pages_to_scan",
            "khugepaged/max_ptes_none")
# The kernel's khugepaged selftest tuning (tools/testing/selftests/mm/khugepaged.c), with a
# larger scan budget so that other processes' memory does not hold up our mm's turn: a full
# pass goes over every registered mm, and one qemu guest's MADV_HUGEPAGE RAM alone is 512
# PMDs per GiB.  With 64 PMDs' worth a wakeup (and a 10 ms sleep after each), this machine
# managed 1.8 full scans/s beside two guests; with 4096, 49/s.
FAST_KHUGEPAGED = {"khugepaged/scan_sleep_millisecs": "10",
                   "khugepaged/alloc_sleep_millisecs": "10",
                   "khugepaged/pages_to_scan": str(4096 * 512)}
LOCK_PATH = pathlib.Path("/run/vmaflags-sysfs.lock")


class SysfsError(RuntimeError):
    pass


def read(name: str, root: pathlib.Path = THP) -> str:
    """The current value: the bracketed choice of `always [madvise] never`, or the number."""
    return value((root / name).read_text())


def value(text: str) -> str:
    """A tunable's value from the file's text."""
    text = text.strip()
    if "[" in text:
        return text.split("[", 1)[1].split("]", 1)[0]
    return text


def write(name: str, value: str, root: pathlib.Path = THP) -> None:
    try:
        (root / name).write_text(value)
    except OSError as e:
        raise SysfsError(f"cannot write {value!r} to {root / name}: {e.strerror}") from None


def snapshot(root: pathlib.Path = THP) -> dict[str, str]:
    return {n: read(n, root) for n in TUNABLES if (root / n).exists()}


def restore(saved: dict[str, str], root: pathlib.Path = THP) -> list[str]:
    """Write back every value that differs; return the names still wrong afterwards."""
    for n, v in saved.items():
        try:
            if read(n, root) != v:
                write(n, v, root)
        except (OSError, SysfsError):
            pass  # reported by the verification below
    bad = []
    for n, v in saved.items():
        try:
            if read(n, root) != v:
                bad.append(n)
        except OSError:
            bad.append(n)
    return bad


def writable(root: pathlib.Path = THP) -> str | None:
    """None if the guard can work here, else the reason it cannot."""
    if not (root / "enabled").exists():
        return f"no THP in this kernel ({root}/enabled missing)"
    if os.geteuid() != 0:
        return "not root: cannot change THP sysfs"
    if not os.access(root / "enabled", os.W_OK):
        return f"{root}/enabled is not writable"
    return None


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class SysfsGuard:
    def __init__(self, root: pathlib.Path = THP, lock_path: pathlib.Path = LOCK_PATH,
                 wait: float = 600) -> None:
        self.root = root
        self.wait = wait
        self.lock_path = lock_path
        self.saved: dict[str, str] = {}
        self._guardian: subprocess.Popen | None = None
        self._lock_fd = -1
        self._old_handlers: dict[int, Any] = {}

    def __enter__(self) -> SysfsGuard:
        reason = writable(self.root)
        if reason:
            raise SysfsError(reason)
        self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._lock()
        except BaseException:
            self._release()
            raise
        try:
            self.saved = snapshot(self.root)
            self._guardian = subprocess.Popen(
                [sys.executable, "-m", "vmaflags.conformance.sysfs", "--guardian",
                 str(self.root), str(self._lock_fd)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                pass_fds=(self._lock_fd,), start_new_session=True)
            assert self._guardian.stdin and self._guardian.stdout
            self._guardian.stdin.write(json.dumps(self.saved) + "\n")
            self._guardian.stdin.flush()
            if self._guardian.stdout.readline().strip() != "ready":
                raise SysfsError("the sysfs guardian did not start")
        except BaseException:
            self._release()
            raise
        for s in (signal.SIGTERM, signal.SIGHUP):
            try:
                self._old_handlers[s] = signal.signal(s, _sigterm)
            except ValueError:  # not the main thread: SIGKILL-style cover only
                pass
        return self

    def _lock(self) -> None:
        """Wait for another runner (and its guardian) to be done with sysfs."""
        deadline = time.monotonic() + self.wait
        said = False
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SysfsError(f"another run holds {self.lock_path} "
                                     f"(waited {self.wait:g} s)") from None
                if not said:
                    print(f"vmaflags: waiting for another run to release {self.lock_path}",
                          file=sys.stderr)
                    said = True
                time.sleep(0.05)

    def set(self, **values: str) -> None:
        """enabled="always", khugepaged__pages_to_scan="..." (``__`` for ``/``)."""
        self.set_many({k.replace("__", "/"): v for k, v in values.items()})

    def set_many(self, values: dict[str, str]) -> None:
        for n, v in values.items():
            if n not in self.saved:
                raise SysfsError(f"{n} is not a recorded tunable")
            if read(n, self.root) != v:
                write(n, v, self.root)

    def reset(self) -> None:
        bad = restore(self.saved, self.root)
        if bad:
            raise SysfsError(f"could not restore {', '.join(bad)}")

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        try:
            self.reset()
        finally:
            self._release(done=True)

    def _release(self, done: bool = False) -> None:
        g = self._guardian
        if g is not None:
            try:
                if done and g.stdin:
                    g.stdin.write("done\n")
                g.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            g.wait()
            self._guardian = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _guardian(root: str, lock_fd: int) -> int:
    """Hold the saved values; restore them if stdin ends without "done"."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    saved = json.loads(sys.stdin.readline())
    print("ready", flush=True)
    done = False
    for line in sys.stdin:
        done = line.strip() == "done"
    if not done:
        bad = restore(saved, pathlib.Path(root))
        if bad:
            print(f"vmaflags guardian: could not restore {', '.join(bad)}", file=sys.stderr)
    os.close(lock_fd)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--guardian":
        sys.exit(_guardian(sys.argv[2], int(sys.argv[3])))
    sys.exit("usage: python -m vmaflags.conformance.sysfs --guardian ROOT LOCKFD")
