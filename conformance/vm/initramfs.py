"""The test VM's initramfs: busybox-static, the static executor, kselftests, and /init.

/init mounts proc, sys and devtmpfs, reports what the kernel has (THP, userfaultfd, smaps) in a
READY line on the second serial port, and runs `executor --serve --guest` on that port: the
host then drives the guest with the same protocol as a local executor server (guest.py).
The archive is a newc cpio, gzip-compressed and written here (no `cpio` tool needed), cached by
the hash of its parts.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
import subprocess
import tempfile

from ..build import cache_dir, executor_path
from .kernels import Skip

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "mount", "cat", "echo", "stty", "reboot", "uname", "sleep")
MARK = "@@VMF"

# ttyS1 is opened once, read-write, for the whole life of the guest: bytes the host sends while
# no one has the port open are dropped, so it must be open (and raw) before READY goes out.
# @SETUP@ and @READY@ are empty here; rootfs.py's /init loads modules there and reports CRIU.
INIT_TEMPLATE = r"""#!/bin/sh
export PATH=@PATH@
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
@SETUP@exec 3<>/dev/ttyS1
stty -F /dev/ttyS1 raw -echo -echoe -echok -echoctl -echoke
has() { [ -e "$1" ] && echo 1 || echo 0; }
T=/sys/kernel/mm/transparent_hugepage
echo "@MARK@ READY release=$(uname -r) thp=$(has $T/enabled)" \
     "uffd=$(has /proc/sys/vm/unprivileged_userfaultfd) smaps=$(has /proc/self/smaps)" \
     "uptime=$(cat /proc/uptime | { read a b; echo $a; })"@READY@ >&3
/bin/executor --serve --guest <&3 >&3 2>/dev/ttyS0
echo "@MARK@ EXIT $?" >&3
@REBOOT@
"""


def init_script(path: str = "/bin", setup: str = "", ready: str = "",
                reboot: str = "reboot -f") -> str:
    """The guest's /init: `setup` (shell lines) runs before ttyS1 is opened, `ready` adds
    fields to the READY line (shell words), `reboot` ends the guest."""
    return (INIT_TEMPLATE.replace("@PATH@", path).replace("@SETUP@", setup)
            .replace("@READY@", ready).replace("@REBOOT@", reboot).replace("@MARK@", MARK))


class Cpio:
    """A newc cpio archive, written in memory."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1000

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        self.ino += 1
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0))
        self.buf.write(hdr.encode() + nb)
        self.buf.write(b"\0" * (-(110 + len(nb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def gz(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return gzip.compress(self.buf.getvalue(), compresslevel=6, mtime=0)


def busybox() -> pathlib.Path:
    for c in BUSYBOX_CANDIDATES:
        p = pathlib.Path(c)
        if p.is_file():
            try:  # must be static: the initramfs has no libc
                head = subprocess.run(["file", "-L", str(p)], capture_output=True, text=True,
                                      timeout=30, check=False).stdout
            except (OSError, subprocess.TimeoutExpired):
                head = ""
            if "dynamically linked" not in head:
                return p
    raise Skip("no static busybox (apt-get install busybox-static)")


def build(selftests: dict[str, pathlib.Path] | None = None) -> pathlib.Path:
    """The cached initramfs with these kselftests in /bin (name -> static binary)."""
    bb = busybox()
    try:
        exe = executor_path()
    except RuntimeError as e:
        raise Skip(str(e)) from None
    init = init_script()
    files = {"bin/busybox": bb, "bin/executor": exe,
             **{f"bin/{n}": p for n, p in sorted((selftests or {}).items())}}
    h = hashlib.sha256(init.encode() + " ".join(APPLETS).encode())
    for name, path in files.items():
        h.update(name.encode() + hashlib.sha256(path.read_bytes()).digest())
    out = cache_dir("vm") / f"initramfs-{h.hexdigest()[:16]}.cpio.gz"
    if out.is_file():
        return out
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.chardev("dev/ttyS0", 4, 64)
    c.chardev("dev/ttyS1", 4, 65)
    for name, path in files.items():
        c.file(name, path.read_bytes(), 0o755)
    for a in APPLETS:
        c.symlink(f"bin/{a}", "busybox")
    c.file("init", init.encode(), 0o755)
    fd, tmp = tempfile.mkstemp(prefix=".initramfs-", dir=out.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(c.gz())
    os.replace(tmp, out)
    return out
