"""A Debian root file system for test VMs that need userspace: the CRIU guest (criu.py).

`image(kernel, suite)` gives what `Guest(kernel, initrd=..., disk=...)` boots:
- the base: `debootstrap --variant=minbase --include=criu,kmod,iproute2,procps SUITE`, trimmed
  of documentation, locales and apt's caches; cached under vm/rootfs-SUITE-<hash>/ by suite and
  package list (needs root and Debian's mirror; about a minute, ~140 MB);
- the disk: the base plus the modules CRIU's checks want (netfilter, socket diag, tun, veth:
  what `criu check` asks for), the executor, busybox (reboot), /sbin/vmaflags-init and the CRIU
  case runner (criu-case.sh as /usr/local/sbin/vmaflags-criu); an ext4 image written by
  `mke2fs -d` (nothing is mounted on the host), cached by the hash of all of it;
- the initrd: busybox and the modules that reach the disk (virtio_pci, virtio_blk, ext4: all
  modules in Debian's standard kernels), whose /init mounts /dev/vda and switch_root's to
  /sbin/vmaflags-init, which ends as initramfs.py's /init does (READY, `executor --serve
  --guest` on ttyS1) and adds the CRIU version to READY.

Measured here (TCG, 2 shared cores): the rootfs as a 51 MB initramfs reached its /init in
9-18 s, the loader + ext4 disk in 11 s, so the disk it is; it also keeps the guest's RAM free.
Modules are loaded with insmod in an order computed here from each module's .modinfo
(`depends=`, and `softdep=pre:` through `alias=`), so no depmod is needed anywhere.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import lzma
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..build import cache_dir, executor_path
from . import initramfs
from .kernels import Kernel, Skip

MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("criu", "kmod", "iproute2", "procps")
TRIM = ("usr/share/doc", "usr/share/locale", "usr/share/man", "usr/share/info",
        "var/cache/apt", "var/lib/apt/lists")
BOOT_MODULES = ("virtio_pci", "virtio_blk", "ext4")
# What `criu check` probes for (sockets.c: the sock_diag families; net.c: nftables, tun,
# veth); without them it does not say "Looks good".
CRIU_MODULES = ("af_packet_diag", "nf_tables", "nft_ct", "nft_compat", "unix_diag",
                "inet_diag", "tcp_diag", "udp_diag", "raw_diag", "netlink_diag", "tun", "veth")
MEMORY = 2048  # MiB: CRIU's images live in the guest's /tmp (tmpfs)
CASE_RUNNER = pathlib.Path(__file__).with_name("criu-case.sh")
DEBOOTSTRAP_TIMEOUT = 1800

LOADER_INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in /modules/*.ko; do
    insmod "$m" || echo "vmaflags loader: insmod $m failed" >/dev/console
done
if ! mount -t ext4 /dev/vda /root; then
    echo "vmaflags loader: cannot mount /dev/vda" >/dev/console
    exit 1
fi
umount /proc /dev
exec switch_root /root /sbin/vmaflags-init
"""
LOADER_APPLETS = ("sh", "insmod", "mount", "umount", "switch_root", "echo")

SETUP = r"""mkdir -p /dev/pts && mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
for m in $(cat /etc/vmaflags/modules); do
    insmod "/lib/modules/$(uname -r)/$m" || echo "vmaflags-init: insmod $m failed" >/dev/ttyS0
done
ip link set lo up
"""
READY = " \"criu=$(criu --version 2>/dev/null | sed -n 's/^Version: //p')\""


@dataclass(frozen=True)
class Image:
    initrd: pathlib.Path
    disk: pathlib.Path
    suite: str
    memory: int = MEMORY


def blocker() -> str | None:
    """Why no CRIU image can be built here, or None."""
    if os.geteuid() != 0:
        return "building the CRIU guest's root file system needs root (debootstrap)"
    for tool, pkg in (("debootstrap", "debootstrap"), ("mke2fs", "e2fsprogs")):
        if shutil.which(tool) is None:
            return f"no {tool} (apt-get install {pkg})"
    return None


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time (two debootstraps of the same suite would both download)."""
    with open(cache_dir("vm") / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ---- the base: debootstrap ---------------------------------------------------------------------

def base_key(suite: str) -> str:
    h = hashlib.sha256("\0".join(("minbase", suite, *sorted(PACKAGES), *TRIM)).encode())
    return f"rootfs-{suite}-{h.hexdigest()[:12]}"


def base(suite: str, progress: bool = True) -> pathlib.Path:
    """The trimmed debootstrap tree of `suite` (built on first use).  Skip when it cannot be."""
    d = cache_dir("vm") / base_key(suite)
    if (d / ".complete").is_file():
        return d
    why = blocker()
    if why:
        raise Skip(why)
    with _locked(d.name):
        if (d / ".complete").is_file():
            return d
        if progress:
            print(f"debootstrap {suite} with {', '.join(PACKAGES)} (about a minute) ...",
                  file=sys.stderr)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".rootfs-", dir=d.parent))
        try:
            res = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite,
                 str(tmp / "root"), MIRROR], capture_output=True, text=True,
                timeout=DEBOOTSTRAP_TIMEOUT, check=False)
            if res.returncode != 0:
                last = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
                raise Skip(f"debootstrap {suite} failed: {last[-1] if last else '?'}")
            root = tmp / "root"
            for t in TRIM:
                shutil.rmtree(root / t, ignore_errors=True)
                (root / t).mkdir(parents=True, exist_ok=True)
            if d.exists():
                shutil.rmtree(d)
            os.replace(root, d)
            (d / ".complete").write_text(suite + "\n")
        except subprocess.TimeoutExpired:
            raise Skip(f"debootstrap {suite} took over {DEBOOTSTRAP_TIMEOUT} s") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return d


# ---- kernel modules ----------------------------------------------------------------------------

def modinfo(data: bytes) -> dict[str, list[str]]:
    """The .modinfo section of an ELF64 little-endian module: key -> values (alias= repeats)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = secs[shstrndx][4]
    out: dict[str, list[str]] = {}
    for name, _, _, _, off, size in secs:
        end = data.index(b"\0", strtab + name)
        if data[strtab + name:end] == b".modinfo":
            for kv in data[off:off + size].split(b"\0"):
                k, eq, v = kv.decode(errors="replace").partition("=")
                if eq:
                    out.setdefault(k, []).append(v)
    return out


def read_module(path: pathlib.Path) -> bytes:
    """A module's ELF bytes (Debian's 6.12 modules are .ko.xz)."""
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def _module_name(path: pathlib.Path) -> str:
    return path.name.split(".ko")[0].replace("-", "_")


class Modules:
    """A kernel's lib/modules/<release> tree: which module provides a name or alias, and in
    which order a set of modules must be inserted."""

    def __init__(self, tree: pathlib.Path):
        self.tree = tree
        self.paths = {_module_name(p): p for p in sorted(tree.rglob("*.ko*"))}
        self._info: dict[str, dict[str, list[str]]] = {}
        builtin = tree / "modules.builtin"
        self.builtin = {_module_name(pathlib.Path(ln)) for ln in
                        (builtin.read_text().split() if builtin.is_file() else [])}

    def info(self, name: str) -> dict[str, list[str]]:
        if name not in self._info:
            self._info[name] = modinfo(read_module(self.paths[name]))
        return self._info[name]

    def provider(self, alias: str) -> str | None:
        """The module for a softdep name: itself, or one with that alias=.  The crypto API's
        generic implementation (NAME_generic for crypto-NAME) is tried first: crc32c-intel
        needs SSE4.2, which TCG's qemu64 lacks; then every module's aliases."""
        n = alias.replace("-", "_")
        if n in self.paths or n in self.builtin:
            return n
        bare = n.removeprefix("crypto_")
        for m in (f"{bare}_generic", bare, *self.paths):
            if m in self.paths and alias in self.info(m).get("alias", []):
                return m
        return None

    def order(self, names: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
        """The modules `names` need, dependencies first, as paths relative to the tree;
        built-in ones and those in `skip` (already loaded) left out."""
        done: set[str] = set(skip)
        out: list[str] = []

        def visit(n: str, chain: tuple[str, ...]) -> None:
            n = n.replace("-", "_")
            if n in done or n in self.builtin:
                return
            if n not in self.paths:
                raise Skip(f"no module {n} in {self.tree} (needed by {' <- '.join(chain)})")
            done.add(n)
            inf = self.info(n)
            for d in ",".join(inf.get("depends", [])).split(","):
                if d:
                    visit(d, chain + (n,))
            for sd in inf.get("softdep", []):
                pre = sd.split("pre:", 1)[1].split("post:")[0].split() if "pre:" in sd else []
                for a in pre:
                    p = self.provider(a)
                    if p:
                        visit(p, chain + (n,))
            out.append(n)

        for n in names:
            visit(n, ())
        return out

    def rel(self, name: str) -> str:
        """The module's path in the image (decompressed: .ko)."""
        r = self.paths[name].relative_to(self.tree).as_posix()
        return r.split(".ko")[0] + ".ko"


# ---- the loader initrd and the disk ------------------------------------------------------------

def _digest(h: Any, *parts: bytes) -> None:
    for p in parts:
        h.update(len(p).to_bytes(8, "little") + p)


def init_text() -> str:
    return initramfs.init_script(path="/usr/sbin:/usr/bin:/sbin:/bin", setup=SETUP, ready=READY,
                                 reboot="/usr/local/bin/busybox reboot -f")


def image(kernel: Kernel, suite: str, progress: bool = True) -> Image:
    """The loader initrd and the disk for `kernel` (a standard Debian kernel: it needs its
    modules) with Debian `suite`'s CRIU.  Skip when they cannot be built here."""
    if kernel.modules is None:
        raise Skip(f"{kernel.spec} has no modules here: the CRIU guest needs a standard "
                   "Debian kernel (debian-6.1-std, debian-6.12-std)")
    root = base(suite, progress)
    mods = Modules(kernel.modules)
    boot = mods.order(BOOT_MODULES)
    criu = mods.order(CRIU_MODULES, skip=tuple(boot))
    bb = initramfs.busybox()
    try:
        exe = executor_path()
    except RuntimeError as e:
        raise Skip(str(e)) from None
    release = kernel.modules.name
    vm = cache_dir("vm")

    h = hashlib.sha256()
    _digest(h, LOADER_INIT.encode(), " ".join(LOADER_APPLETS).encode(), bb.read_bytes(),
            *(read_module(mods.paths[m]) for m in boot))
    initrd = vm / f"loader-{kernel.name}-{h.hexdigest()[:12]}.cpio.gz"
    if not initrd.is_file():
        c = initramfs.Cpio()
        for d in ("bin", "dev", "proc", "root", "modules"):
            c.dir(d)
        c.chardev("dev/console", 5, 1)
        c.file("bin/busybox", bb.read_bytes(), 0o755)
        for a in LOADER_APPLETS:
            c.symlink(f"bin/{a}", "busybox")
        for i, m in enumerate(boot):
            c.file(f"modules/{i:02d}-{m}.ko", read_module(mods.paths[m]))
        c.file("init", LOADER_INIT.encode(), 0o755)
        _write(initrd, c.gz())

    files = {"usr/bin/executor": (exe.read_bytes(), 0o755),
             "usr/local/bin/busybox": (bb.read_bytes(), 0o755),
             "sbin/vmaflags-init": (init_text().encode(), 0o755),
             "usr/local/sbin/vmaflags-criu": (CASE_RUNNER.read_bytes(), 0o755),
             "etc/vmaflags/modules": ("".join(f"{mods.rel(m)}\n" for m in criu).encode(), 0o644)}
    files.update({f"lib/modules/{release}/{mods.rel(m)}": (read_module(mods.paths[m]), 0o644)
                  for m in criu})
    h = hashlib.sha256(root.name.encode())
    for name, (data, mode) in sorted(files.items()):
        _digest(h, name.encode(), str(mode).encode(), data)
    prefix = f"criu-{suite}-{kernel.name}-"
    disk = vm / f"{prefix}{h.hexdigest()[:12]}.ext4"
    if not disk.is_file():
        with _locked(prefix):
            if not disk.is_file():
                _mkfs(root, files, disk)
        for old in vm.glob(f"{prefix}*.ext4"):  # an open image lives on until qemu exits
            if old != disk:
                old.unlink(missing_ok=True)
    return Image(initrd, disk, suite)


def _write(path: pathlib.Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _mkfs(root: pathlib.Path, files: dict[str, tuple[bytes, int]], out: pathlib.Path) -> None:
    """An ext4 image of `root` plus `files`, by `mke2fs -d` from a copy of the tree."""
    with tempfile.TemporaryDirectory(prefix=".disk-", dir=out.parent) as tmp:
        tree = pathlib.Path(tmp) / "tree"
        res = subprocess.run(["cp", "-a", str(root), str(tree)], capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            raise Skip(f"cannot copy the root file system: {res.stderr.strip()}")
        (tree / ".complete").unlink(missing_ok=True)
        for name, (data, mode) in files.items():
            p = tree / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.unlink(missing_ok=True)
            p.write_bytes(data)
            p.chmod(mode)
        used = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file() and not
                   f.is_symlink())
        mb = used * 5 // 4 // (1 << 20) + 64
        img = pathlib.Path(tmp) / "disk.ext4"
        res = subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal",
                              "-L", "vmaflags", "-d", str(tree), str(img), f"{mb}M"],
                             capture_output=True, text=True, timeout=600, check=False)
        if res.returncode != 0:
            raise Skip(f"mke2fs failed: {res.stderr.strip().splitlines()[-1:]}")
        os.replace(img, out)
