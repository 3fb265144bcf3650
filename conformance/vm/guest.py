"""A test VM as a kernel under test: qemu (TCG) boots the kernel with the initramfs of
initramfs.py, whose /init runs `executor --serve --guest` on the guest's second serial port,
which qemu connects to its own stdin and stdout.  The host then talks to that server exactly as
to a local one (driver.Executor): scripts run in fresh children inside the guest, and the
control lines `clr`, `sysfs` and `run` choose the MADV_CLR_HUGEPAGE number, read and write the
guest's THP tunables, and run a kselftest.  Kernel messages go to the first serial port, a file
kept for error reports.

    with Guest(kernels.resolve("debian-6.1")) as g, host.use(g):
        ...                      # conformance code now tests the guest's kernel

A guest that panics (panic=-1 reboots, -no-reboot exits), hangs or stops answering becomes an
ExecutorError or VMError with the console's tail; qemu dies with this process.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

from .. import driver, sysfs
from ..build import DEFAULT_CLR_HUGEPAGE
from . import initramfs
from .kernels import Kernel, Skip

QEMU = "qemu-system-x86_64"
QBOOT = pathlib.Path("/usr/share/qemu/qboot.rom")
# /dev/kvm here boots no stock kernel (shared/design-notes.md): TCG only.
QEMU_ARGS = ("-accel", "tcg,thread=multi", "-cpu", "qemu64", "-smp", "1",
             "-no-reboot", "-nodefaults", "-display", "none", "-monitor", "none")
# MiB.  1024, not 512: with under 512 MiB of totalram hugepage_init() (mm/huge_memory.c) clears
# transparent_hugepage_flags -- enabled and defrag `never` -- whatever the command line says.
MEMORY = 1024
# Debian's kernels default to THP `always`; the host (and the model's default) is `madvise`.
CMDLINE = ("console=ttyS0 transparent_hugepage=madvise panic=-1 oops=panic "
           "loglevel=4 rdinit=/init")
BOOT_TIMEOUT = 120.0  # seconds from qemu's start to READY
# The model lets khugepaged act only at `khugepaged` steps.  On a host its default pass (4096
# pages every 10 s) is spread over many processes; in a guest it reaches a script's mm on
# every pass, between two steps.  So the guest's khugepaged sleeps an hour, except in scripts
# with `khugepaged` steps (their fast tuning, sysfs.FAST_KHUGEPAGED, is set through the guard).
QUIET = ("khugepaged/scan_sleep_millisecs", "3600000")


class VMError(RuntimeError):
    """The guest did not boot, or died; str() ends with the console's tail."""


def qemu_blocker() -> str | None:
    if shutil.which(QEMU) is None:
        return f"no {QEMU} (apt-get install qemu-system-x86)"
    if not QBOOT.is_file():
        return f"no {QBOOT} (apt-get install qemu-system-x86)"
    return None


def _die_with_parent() -> None:
    """In qemu's child: SIGKILL when the process that started it dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


class GuestExecutor(driver.Executor):
    """The guest's `executor --serve --guest`, behind qemu's stdio."""

    def __init__(self, guest: Guest, buf: bytes) -> None:
        super().__init__(guest.proc, buf)
        self.guest = guest

    def _stderr(self) -> str:
        return "guest console:\n" + self.guest.console_tail()

    def close(self, kill: bool = True) -> None:
        self.guest.close()


class Guest:
    """A booted test VM (see the module docstring); a host.Target.

    By default it boots the initramfs of initramfs.py with MEMORY MiB.  A guest with a root
    file system (rootfs.py: the CRIU guest) gives its own `initrd`, a `disk` image (attached
    as a virtio disk with snapshot=on: the image is never written) and more `memory`; its
    /init ends the same way, with READY and `executor --serve --guest` on ttyS1."""

    def __init__(self, kernel: Kernel, boot_timeout: float = BOOT_TIMEOUT, *,
                 initrd: pathlib.Path | None = None, disk: pathlib.Path | None = None,
                 memory: int = MEMORY, cmdline: str = CMDLINE) -> None:
        why = qemu_blocker()
        if why:
            raise Skip(why)
        self.k = kernel
        if initrd is None:
            initrd = initramfs.build(kernel.selftests)
        drive = [] if disk is None else [
            "-drive", f"file={disk},format=raw,if=virtio,snapshot=on"]
        self._tmp = tempfile.TemporaryDirectory(prefix="vmaflags-vm-")
        self.console = pathlib.Path(self._tmp.name) / "console.txt"
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [QEMU, *QEMU_ARGS, "-m", str(memory), "-bios", str(QBOOT),
             "-kernel", str(kernel.image), "-initrd", str(initrd), *drive,
             "-append", cmdline, "-serial", f"file:{self.console}", "-serial", "stdio"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent, env={**os.environ, "TMPDIR": self._tmp.name})
        self.info, rest = self._ready(boot_timeout)
        self.boot_seconds = time.monotonic() - self.t0
        self.ex = GuestExecutor(self, rest)
        self.clr: int | None = None
        self.saved: dict[str, str] = {}
        if not self.no_thp():
            self.saved = {n: self.read(n) for n in sysfs.TUNABLES}
            self.saved[QUIET[0]] = QUIET[1]
            self.write(*QUIET)

    def _ready(self, timeout: float) -> tuple[dict[str, str], bytes]:
        """Wait for /init's READY line: (its key=value fields, what followed it)."""
        out = self.proc.stdout.fileno()  # type: ignore[union-attr]
        buf, deadline = b"", time.monotonic() + timeout
        while True:
            at = buf.find(initramfs.MARK.encode() + b" READY ")
            nl = buf.find(b"\n", at)
            if at >= 0 and nl >= 0:
                fields = buf[at:nl].decode(errors="replace").split()[2:]
                return dict(f.split("=", 1) for f in fields if "=" in f), buf[nl + 1:]
            left = deadline - time.monotonic()
            chunk = os.read(out, 4096) if left > 0 and select.select([out], [], [], left)[0] \
                else None
            if not chunk:
                why = (f"did not boot within {timeout:g} s" if chunk is None else
                       f"qemu exited with status {self.proc.wait()} before the guest was ready")
                self.proc.kill()
                qerr = self.qemu_error()
                self.close()
                raise VMError(f"{self.k.name}: {why}; {qerr}{self.user_messages()}"
                              "console tail:\n" + self.console_tail())
            buf += chunk

    # ---- host.Target ---------------------------------------------------------------------

    def kernel(self) -> str:
        return self.info.get("release", "")

    def no_thp(self) -> str | None:
        for key, what in (("thp", "transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE)"),
                          ("uffd", "userfaultfd (CONFIG_USERFAULTFD)"),
                          ("smaps", "/proc/PID/smaps (CONFIG_PROC_PAGE_MONITOR)")):
            if self.info.get(key) != "1":
                return f"the guest kernel {self.kernel()} has no {what}"
        return None

    def read(self, name: str) -> str:
        lines, status = self.ex.control(f"sysfs {name}")
        if status != "0" or not lines:
            raise sysfs.SysfsError(f"guest: cannot read {name}: {os.strerror(int(status))}")
        return sysfs.value(lines[0])

    def write(self, name: str, value: str) -> None:
        _, status = self.ex.control(f"sysfs {name} {value}")
        if status != "0":
            raise sysfs.SysfsError(f"guest: cannot write {value!r} to {name}: "
                                   f"{os.strerror(int(status))}")

    def writable(self) -> str | None:
        return self.no_thp()

    def guard(self) -> GuestGuard:
        return GuestGuard(self)

    def keeper(self) -> contextlib.AbstractContextManager:
        """executor --serve keeps an mm of its own on khugepaged's list for its whole life."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def executor(self, clr_hugepage: int | None) -> Iterator[driver.Executor]:
        want = DEFAULT_CLR_HUGEPAGE if clr_hugepage is None else clr_hugepage
        if self.clr != want:
            _, status = self.ex.control(f"clr {want}")
            if status != "0":
                raise driver.ExecutorError(f"guest: clr {want}: status {status}")
            self.clr = want
        try:
            yield self.ex
        except Exception:
            self._drain()
            raise
        except BaseException:
            self.close()
            raise

    def _drain(self) -> None:
        """Read the answers to scripts still queued after a failure, so that the next caller
        finds the protocol in step; a guest that cannot answer is shut down."""
        while self.ex.queued and self.proc.poll() is None:
            try:
                self.ex._read_to_end()
            except driver.ExecutorError:
                self.close()

    # ---- the rest --------------------------------------------------------------------------

    def run_program(self, path: str, timeout: float = 600, args: tuple[str, ...] = ()
                    ) -> tuple[int, list[str]]:
        """Run a program of the guest (a kselftest) with `args` (no spaces or newlines in any):
        (exit status, its output lines); status -1 when it was killed at the guest's timeout."""
        if any(not a or " " in a or "\n" in a for a in (path, *args)):
            raise ValueError(f"run: empty, space or newline in {(path, *args)!r}")
        lines, status = self.ex.control(" ".join(("run", path, *args)), timeout)
        return int(status), lines

    def console_tail(self, n: int = 15) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.replace("\r", "").splitlines()[-n:]) or "(no console output)"

    def user_messages(self, n: int = 5) -> str:
        """The last console lines that are not the kernel's (an /init that failed before
        READY says why there, above the panic's backtrace), as "init said: ...; " or ""."""
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return ""
        said = [ln for ln in text.replace("\r", "").splitlines()
                if ln.strip() and not ln.startswith(("[", "Probing EDD"))]
        return f"init said: {' | '.join(said[-n:])}; " if said else ""

    def qemu_error(self) -> str:
        """The last line qemu printed on stderr (once it has exited), or ""."""
        if self.proc.wait() is None or self.proc.stderr is None or self.proc.stderr.closed:
            return ""
        err = self.proc.stderr.read().decode(errors="replace").strip()
        return f"{err.splitlines()[-1]}; " if err else ""

    def close(self, timeout: float = 30) -> None:
        """Ask the server to end (an empty line; /init then reboots, and qemu exits); kill qemu
        if it does not."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._tmp.cleanup()


class GuestGuard:
    """sysfs.SysfsGuard's interface for the guest's tunables (the guest dies with the run, so
    nothing outlives it): record at boot, set, put back."""

    def __init__(self, guest: Guest) -> None:
        self.g = guest
        self.saved = guest.saved

    def __enter__(self) -> GuestGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.g.proc.poll() is None:
            self.reset()

    def set(self, **values: str) -> None:
        self.set_many({k.replace("__", "/"): v for k, v in values.items()})

    def set_many(self, values: dict[str, str]) -> None:
        for n, v in values.items():
            if n not in self.saved:
                raise sysfs.SysfsError(f"{n} is not a recorded tunable")
            if self.g.read(n) != v:  # every write wakes khugepaged: only what differs
                self.g.write(n, v)

    def reset(self) -> None:
        self.set_many(self.saved)
