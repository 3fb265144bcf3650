"""Run executor scripts inside a qemu (TCG) guest booting a Debian kernel.

    run_scripts("6.12", [script_text, ...]) -> [[executor line, ...], ...]

Every call is ONE boot: the scripts go into a small second cpio archive appended to a cached base
initramfs (busybox-static, the static executor, /init), and /init runs the executor on each in
turn, printing each script's output between markers on the guest's second serial port (ttyS1,
a file on the host), away from the kernel's console messages on ttyS0.

Kernels: "6.1" and "6.12" name Debian's cloud kernels (through the meta packages in KERNELS,
resolved with apt-cache to the current concrete package); any other `linux-image-*` package name
or a path to a bzImage/vmlinuz file works too.  Packages are fetched with `apt-get download` and
unpacked with `dpkg-deb -x` (never installed); the vmlinuz and its config are cached under
~/.cache/vmaflags/vm/<package>/.  Without qemu, apt, network or a needed kernel option, the
functions raise `Skip` with the reason.

The guest boots with `transparent_hugepage=madvise` (Debian kernels default to `always`), and
/init resets `enabled` to each script's starting mode (madvise unless given) before every
script.  khugepaged is kept quiet (scan_sleep_millisecs an hour) except for scripts with a
`khugepaged` step, which get the fast tuning of vmaflags.conformance.sysfs.FAST_KHUGEPAGED as on
the host; a `keeper` process keeps khugepaged's mm list non-empty (see keeper.c).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

CACHE_DIR = pathlib.Path.home() / ".cache" / "vmaflags" / "vm"

# "6.1" / "6.12" -> the Debian meta package that depends on the current cloud kernel.
KERNELS = {"6.1": "linux-image-cloud-amd64", "6.12": "linux-image-6.12-cloud-amd64"}

QEMU = "qemu-system-x86_64"
QBOOT = pathlib.Path("/usr/share/qemu/qboot.rom")
# /dev/kvm here boots no stock kernel (design-notes): TCG only.
QEMU_ARGS = ("-accel", "tcg,thread=multi", "-cpu", "qemu64", "-m", "1024", "-smp", "1",
             "-no-reboot", "-nodefaults", "-display", "none", "-monitor", "none")
CMDLINE = ("console=ttyS0 transparent_hugepage=madvise panic=-1 oops=panic "
           "loglevel=4 rdinit=/init")
# 1 GiB, not 512 MiB: with less than 512 MiB of RAM (totalram, so -m 512 is too little) the
# kernel's hugepage_init() clears transparent_hugepage_flags -- enabled and defrag `never`,
# use_zero_page 0 -- whatever the command line says.
# Options the executor needs built in (=y: the initramfs has no modules).
NEEDED_CONFIG = ("CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_USERFAULTFD", "CONFIG_PROC_PAGE_MONITOR",
                 "CONFIG_BLK_DEV_INITRD", "CONFIG_RD_GZIP", "CONFIG_SERIAL_8250_CONSOLE",
                 "CONFIG_DEVTMPFS")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "mount", "mkdir", "cat", "echo", "timeout", "reboot", "uname", "sleep", "ls",
           "dmesg", "rm", "printf", "kill")
# khugepaged at its default tuning wakes every 10 s; in a guest that runs hundreds of scripts
# back to back it then collapses some script's hg block between two steps, which the model
# (khugepaged acts at `khugepaged` steps only) cannot predict.  With QUIET_KHUGEPAGED /init sets
# scan_sleep_millisecs to an hour for scripts without a `khugepaged` step.  (keeper.c keeps
# khugepaged's mm list non-empty, as other processes do on a host: see its comment.)
QUIET_KHUGEPAGED = True
SCRIPT_TIMEOUT = 120  # seconds per script inside the guest (khugepaged steps wait)
THP = "/sys/kernel/mm/transparent_hugepage"

MARK = "@@VMF"
ALIAS_TTL = 24 * 3600  # seconds


class Skip(Exception):
    """The VM cannot run here (no qemu, no kernel package, ...); str() is the reason."""


class VMError(RuntimeError):
    """The guest booted but did not deliver every script's result."""


# ---- kernels ----------------------------------------------------------------------------------

def _apt_depends(pkg: str) -> list[str]:
    try:
        res = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", pkg],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Skip(f"apt-cache unavailable: {e}") from None
    if res.returncode != 0 or not res.stdout.strip():
        raise Skip(f"no Debian package {pkg!r} (apt-cache: {res.stderr.strip() or 'unknown'}); "
                   "run `apt-get update`?")
    return re.findall(r"^\s*\|?Depends:\s*(\S+)", res.stdout, re.MULTILINE)


def resolve_package(kernel: str) -> str:
    """The concrete linux-image package for "6.1", "6.12" or a package name (meta ones are
    followed).  Falls back to the last resolution cached for this name when apt cannot answer."""
    name = KERNELS.get(kernel, kernel)
    alias = CACHE_DIR / f"alias-{name}"
    # apt-cache takes over a second per call: trust a resolution younger than ALIAS_TTL whose
    # kernel is cached (a new Debian kernel is then picked up within a day).
    if alias.is_file() and time.time() - alias.stat().st_mtime < ALIAS_TTL:
        pkg = alias.read_text().strip()
        if (CACHE_DIR / pkg / "vmlinuz").is_file():
            return pkg
    try:
        pkg = name
        for _ in range(4):
            nxt = [d for d in _apt_depends(pkg) if d.startswith("linux-image-")
                   and not d.endswith(("-dbg", "-unsigned"))]
            if not nxt:
                break
            pkg = nxt[0]
    except Skip:
        if alias.is_file():
            return alias.read_text().strip()
        raise
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    alias.write_text(pkg + "\n")
    return pkg


@dataclass(frozen=True)
class Kernel:
    name: str  # package name or file path
    image: pathlib.Path
    config: pathlib.Path | None


def kernel_image(kernel: str) -> Kernel:
    """The kernel to boot: downloaded and cached on first use.  Skip if it cannot be had."""
    if os.sep in kernel or pathlib.Path(kernel).is_file():
        p = pathlib.Path(kernel)
        if not p.is_file():
            raise Skip(f"no kernel image at {p}")
        return Kernel(str(p), p, None)
    pkg = resolve_package(kernel)
    d = CACHE_DIR / pkg
    image, config = d / "vmlinuz", d / "config"
    if not image.is_file():
        _download(pkg, d)
    k = Kernel(pkg, image, config if config.is_file() else None)
    _check_config(k)
    return k


def _download(pkg: str, dest: pathlib.Path) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise Skip(f"no `{tool}` to fetch {pkg}")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix=".dl-") as tmp:
        # As root, apt drops to _apt for downloads, which cannot write a root-owned dir.
        res = subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg],
                             cwd=tmp, capture_output=True, text=True, timeout=600, check=False)
        debs = list(pathlib.Path(tmp).glob("*.deb"))
        if res.returncode != 0 or not debs:
            last = (res.stderr.strip().splitlines() or ["no .deb"])[-1]
            raise Skip(f"cannot download {pkg}: {last}")
        x = pathlib.Path(tmp) / "x"
        res = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(x)], capture_output=True,
                             text=True, timeout=300, check=False)
        if res.returncode != 0:
            raise Skip(f"cannot unpack {debs[0].name}: {res.stderr.strip()}")
        images = sorted((x / "boot").glob("vmlinuz-*"))
        if not images:
            raise Skip(f"{pkg} has no /boot/vmlinuz-*")
        stage = pathlib.Path(tmp) / "stage"
        stage.mkdir()
        shutil.copy(images[0], stage / "vmlinuz")
        configs = sorted((x / "boot").glob("config-*"))
        if configs:
            shutil.copy(configs[0], stage / "config")
        (stage / "deb").write_text(debs[0].name + "\n")
        if dest.exists():  # a concurrent download won
            return
        os.replace(stage, dest)


def _check_config(k: Kernel) -> None:
    if k.config is None:
        return
    text = k.config.read_text(errors="replace")
    missing = [o for o in NEEDED_CONFIG if not re.search(rf"^{o}=y$", text, re.MULTILINE)]
    if missing:
        raise Skip(f"{k.name} lacks built-in {', '.join(missing)}")


# ---- initramfs --------------------------------------------------------------------------------

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


INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
T=@THP@
OUT=/dev/ttyS1
K=$T/khugepaged
d_sleep=$(cat $K/scan_sleep_millisecs); d_alloc=$(cat $K/alloc_sleep_millisecs)
d_pages=$(cat $K/pages_to_scan)
echo "@MARK@ SYSFS defrag=$(cat $T/defrag) use_zero_page=$(cat $T/use_zero_page) max_ptes_none=$(cat $K/max_ptes_none)" > $OUT
echo "@MARK@ BOOT release=$(uname -r) uptime=$(cat /proc/uptime) enabled=$(cat $T/enabled)" > $OUT
echo "@MARK@ CMDLINE $(cat /proc/cmdline)" > $OUT
q_sleep=$d_sleep
[ "@QUIET@" = 1 ] && q_sleep=3600000
put() {  # write only what differs: every write to these files wakes khugepaged
  v=$(cat $1)
  case "$v" in *"[$2]"*|"$2") ;; *) echo $2 > $1; changed=1 ;; esac
}
/bin/keeper &
sleep 0.3
for f in /scripts/*.vmf; do
  [ -f "$f" ] || continue
  n=${f##*/}; n=${n%.vmf}
  mode=madvise; fast=0
  [ -f /scripts/$n.env ] && . /scripts/$n.env
  changed=0
  if [ "$fast" = 1 ]; then
    put $K/scan_sleep_millisecs 10; put $K/alloc_sleep_millisecs 10; put $K/pages_to_scan 32768
  else
    put $K/scan_sleep_millisecs $q_sleep; put $K/alloc_sleep_millisecs $d_alloc
    put $K/pages_to_scan $d_pages
  fi
  put $T/enabled $mode
  # a tunable write wakes khugepaged (and never -> madvise restarts it): let it settle first
  [ $changed = 1 ] && sleep 0.1
  timeout @TIMEOUT@ /bin/executor "$f" > /tmp/out 2> /tmp/err
  rc=$?
  read up _ < /proc/uptime
  { echo "@MARK@ BEGIN $n"; cat /tmp/out; echo "@MARK@ STDERR $n"; cat /tmp/err
    echo "@MARK@ END $n rc=$rc uptime=$up"; } > $OUT
done
echo "@MARK@ DONE uptime=$(cat /proc/uptime)" > $OUT
reboot -f
"""


def _busybox() -> pathlib.Path:
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


def keeper_path() -> pathlib.Path:
    """keeper.c built static (cc -static -O2) and cached beside the initramfs."""
    src = pathlib.Path(__file__).resolve().parent / "keeper.c"
    data = src.read_bytes()
    out = CACHE_DIR / f"keeper-{hashlib.sha256(data).hexdigest()[:16]}"
    if out.is_file():
        return out
    cc = shutil.which("cc")
    if cc is None:
        raise Skip("no C compiler `cc` to build the keeper")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keeper-", dir=CACHE_DIR)
    os.close(fd)
    try:
        res = subprocess.run([cc, "-static", "-O2", "-Wall", "-o", tmp, str(src)],
                             capture_output=True, text=True, timeout=300, check=False)
        if res.returncode != 0:
            raise Skip(f"cannot build keeper.c: {res.stderr.strip().splitlines()[-1:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        pathlib.Path(tmp).unlink(missing_ok=True)
    return out


def base_initramfs(clr_hugepage: int | None = None) -> pathlib.Path:
    """The cached base initramfs: busybox, the executor, /init, device nodes."""
    from vmaflags.conformance.build import executor_path

    bb = _busybox()
    try:
        exe = executor_path(clr_hugepage)
    except RuntimeError as e:
        raise Skip(str(e)) from None
    init = (INIT.replace("@THP@", THP).replace("@MARK@", MARK)
            .replace("@TIMEOUT@", str(SCRIPT_TIMEOUT))
            .replace("@QUIET@", str(int(QUIET_KHUGEPAGED))))
    h = hashlib.sha256()
    keeper = keeper_path()
    for part in (bb.read_bytes(), exe.read_bytes(), init.encode(), " ".join(APPLETS).encode(),
                 keeper.read_bytes()):
        h.update(hashlib.sha256(part).digest())
    out = CACHE_DIR / f"initramfs-{h.hexdigest()[:16]}.cpio.gz"
    if out.is_file():
        return out
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "scripts"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.chardev("dev/ttyS0", 4, 64)
    c.chardev("dev/ttyS1", 4, 65)
    c.file("bin/busybox", bb.read_bytes(), 0o755)
    for a in APPLETS:
        c.symlink(f"bin/{a}", "busybox")
    c.file("bin/executor", exe.read_bytes(), 0o755)
    c.file("init", init.encode(), 0o755)
    c.file("bin/keeper", keeper.read_bytes(), 0o755)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".initramfs-", dir=CACHE_DIR)
    with os.fdopen(fd, "wb") as f:
        f.write(c.gz())
    os.replace(tmp, out)
    return out


def _has_khugepaged_step(text: str) -> bool:
    return any(ln.split("#", 1)[0].split()[:1] == ["khugepaged"] for ln in text.splitlines())


def scripts_cpio(scripts: list[str], modes: list[str]) -> bytes:
    c = Cpio()
    for i, (text, mode) in enumerate(zip(scripts, modes)):
        c.file(f"scripts/{i:05d}.vmf", text.encode())
        env = f"mode={mode}\nfast={int(_has_khugepaged_step(text))}\n"
        c.file(f"scripts/{i:05d}.env", env.encode())
    return c.gz()


# ---- running ----------------------------------------------------------------------------------

@dataclass
class ScriptResult:
    lines: list[str]
    stderr: str = ""
    rc: int | None = None  # None: the guest never finished this script
    uptime: float | None = None  # guest uptime when it finished


@dataclass
class Boot:
    kernel: str  # the package (or image path) booted
    release: str  # uname -r in the guest
    enabled: str  # THP enabled mode the guest booted with
    results: list[ScriptResult]
    seconds: float  # qemu start to exit
    guest_seconds: float | None  # guest uptime at DONE
    boot_seconds: float | None  # guest uptime when /init started
    console: str = field(repr=False, default="")  # ttyS0: kernel messages
    cmdline: str = ""  # /proc/cmdline in the guest
    boot_line: str = ""
    sysfs: str = ""  # defrag, use_zero_page, max_ptes_none at boot


def qemu_blocker() -> str | None:
    if shutil.which(QEMU) is None:
        return f"no {QEMU} (apt-get install qemu-system-x86)"
    if not QBOOT.is_file():
        return f"no {QBOOT} (qemu-system-x86's qboot firmware)"
    return None


def boot(kernel: str, scripts: list[str], modes: list[str] | str = "madvise",
         clr_hugepage: int | None = None, timeout: float | None = None) -> Boot:
    """Boot `kernel` once and run every script (each in a fresh executor process) with THP
    `enabled` reset to its mode first.  Skip when the VM cannot run here; VMError when the
    guest did not run to the end (the results it delivered are on the exception's `.boot`)."""
    why = qemu_blocker()
    if why:
        raise Skip(why)
    k = kernel_image(kernel)
    base = base_initramfs(clr_hugepage)
    if isinstance(modes, str):
        modes = [modes] * len(scripts)
    if len(modes) != len(scripts):
        raise ValueError("one mode per script")
    if timeout is None:
        timeout = 120 + 5 * len(scripts) + sum(60 for s in scripts if _has_khugepaged_step(s))
    # The kernel unpacks concatenated (compressed) cpio archives in turn.
    initrd = base.read_bytes() + scripts_cpio(scripts, modes)
    return _boot_initrd(k, initrd, len(scripts), timeout, "scripts")


def _boot_initrd(k: Kernel, initrd: bytes, n: int, timeout: float, what: str) -> Boot:
    """Boot `k` with this initramfs; its /init reports n results on ttyS1 (see _parse)."""
    with tempfile.TemporaryDirectory(prefix="vmaflags-vm-") as tmp:
        t = pathlib.Path(tmp)
        (t / "initrd.cpio.gz").write_bytes(initrd)
        console, results = t / "console.txt", t / "results.txt"
        cmd = [QEMU, *QEMU_ARGS, "-bios", str(QBOOT), "-kernel", str(k.image),
               "-initrd", str(t / "initrd.cpio.gz"), "-append", CMDLINE,
               "-serial", f"file:{console}", "-serial", f"file:{results}"]
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=timeout, check=False)
            qerr = p.stderr.strip() if p.returncode else ""
        except subprocess.TimeoutExpired:
            qerr = f"qemu timed out after {timeout:g} s"
        seconds = time.monotonic() - t0
        out = results.read_text(errors="replace") if results.exists() else ""
        con = console.read_text(errors="replace") if console.exists() else ""
    b = _parse(out, n, k.name, seconds, con)
    missing = [i for i, r in enumerate(b.results) if r.rc is None]
    if missing or qerr:
        tail = "\n".join(con.replace("\r", "").splitlines()[-15:])
        e = VMError(f"{k.name}: {len(missing)} of {n} {what} without a result"
                    f"{' (' + qerr + ')' if qerr else ''}; console tail:\n{tail}")
        e.boot = b  # type: ignore[attr-defined]
        raise e
    return b


PROGRAM_INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
OUT=/dev/ttyS1
echo "@MARK@ BOOT release=$(uname -r) uptime=$(cat /proc/uptime) enabled=$(cat @THP@/enabled)" > $OUT
echo "@MARK@ CMDLINE $(cat /proc/cmdline)" > $OUT
timeout @TIMEOUT@ /bin/program @ARGS@ > /tmp/out 2> /tmp/err
rc=$?
read up _ < /proc/uptime
{ echo "@MARK@ BEGIN 0"; cat /tmp/out; echo "@MARK@ STDERR 0"; cat /tmp/err
  echo "@MARK@ END 0 rc=$rc uptime=$up"; echo "@MARK@ DONE uptime=$up"; } > $OUT
reboot -f
"""


def run_program(kernel: str, program: pathlib.Path, args: tuple[str, ...] = (),
                timeout: float = 300) -> Boot:
    """Boot `kernel` and run one static `program` (a kselftest, say) as /bin/program, with
    busybox beside it; its stdout lines, stderr and exit status are `.results[0]`.  Skip when
    the VM cannot run here; VMError when the guest did not report the program's end."""
    why = qemu_blocker()
    if why:
        raise Skip(why)
    k = kernel_image(kernel)
    if any(not re.fullmatch(r"[\w.,=:/+-]+", a) for a in args):
        raise ValueError(f"program arguments must be plain words: {args}")
    init = (PROGRAM_INIT.replace("@THP@", THP).replace("@MARK@", MARK)
            .replace("@TIMEOUT@", str(int(timeout))).replace("@ARGS@", " ".join(args)))
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.chardev("dev/ttyS0", 4, 64)
    c.chardev("dev/ttyS1", 4, 65)
    c.file("bin/busybox", _busybox().read_bytes(), 0o755)
    for a in APPLETS:
        c.symlink(f"bin/{a}", "busybox")
    c.file("bin/program", program.read_bytes(), 0o755)
    c.file("init", init.encode(), 0o755)
    return _boot_initrd(k, c.gz(), 1, timeout + 120, "programs")


def _uptime(text: str) -> float | None:
    m = re.search(r"uptime=([\d.]+)", text)
    return float(m.group(1)) if m else None


def _parse(out: str, n: int, name: str, seconds: float, console: str) -> Boot:
    results = [ScriptResult([]) for _ in range(n)]
    release = enabled = cmdline = boot_line = sysfs_line = ""
    boot_s = guest_s = None
    cur: int | None = None
    in_err = False
    for raw in out.replace("\r", "").splitlines():
        if raw.startswith(MARK + " "):
            tok = raw.split()
            if tok[1] == "SYSFS":
                sysfs_line = raw.split(" ", 2)[2] if len(tok) > 2 else ""
            elif tok[1] == "CMDLINE":
                cmdline = raw.split(" ", 2)[2] if len(tok) > 2 else ""
            elif tok[1] == "BOOT":
                boot_line = raw
                kv = dict(x.split("=", 1) for x in tok[2:] if "=" in x)
                release = kv.get("release", "")
                m = re.search(r"enabled=.*\[(\w+)\]", raw)
                enabled = m.group(1) if m else ""
                boot_s = _uptime(raw)
            elif tok[1] == "BEGIN":
                cur, in_err = int(tok[2]), False
            elif tok[1] == "STDERR":
                in_err = True
            elif tok[1] == "END" and cur is not None:
                results[cur].rc = int(tok[3].split("=", 1)[1])
                results[cur].uptime = _uptime(raw)
                cur = None
            elif tok[1] == "DONE":
                guest_s = _uptime(raw)
            continue
        if cur is None:
            continue
        if in_err:
            results[cur].stderr += raw + "\n"
        elif raw.strip():
            results[cur].lines.append(raw.strip())
    return Boot(name, release, enabled, results, seconds, guest_s, boot_s, console, cmdline,
                boot_line, sysfs_line)


def run_scripts(kernel: str, scripts: list[str], modes: list[str] | str = "madvise",
                clr_hugepage: int | None = None) -> list[list[str]]:
    """The executor's output lines for each script, all run in one boot of `kernel` ("6.1",
    "6.12", a linux-image package or an image path).  Skip if the VM cannot run here;
    VMError if the guest died or a script's executor failed (exit status != 0)."""
    b = boot(kernel, scripts, modes, clr_hugepage)
    bad = [(i, r) for i, r in enumerate(b.results) if r.rc != 0]
    if bad:
        i, r = bad[0]
        raise VMError(f"script {i}: executor exited {r.rc}: {r.stderr.strip()}")
    return [r.lines for r in b.results]


__all__ = ["KERNELS", "Boot", "ScriptResult", "Skip", "VMError", "base_initramfs", "boot",
           "kernel_image", "qemu_blocker", "resolve_package", "run_program", "run_scripts"]
