"""The kernels `vmaflags vm` boots, by SPEC: Debian's cloud and standard kernels, kernels built
from kernel-patch/ (vmaflags.kernel), or a path to a bzImage.

Debian kernels are fetched with `apt-get download` (the meta package followed to the current
concrete one with apt-cache) and unpacked with `dpkg-deb -x`, never installed; the vmlinuz and
its config are cached under the cache directory's vm/<package>/, and for the standard kernels
their modules too (vm/<package>/modules/: the CRIU guest of rootfs.py loads virtio, ext4,
netfilter and socket-diag modules, which the cloud kernels partly lack).  Built kernels come
from `vmaflags.kernel.build`, which caches them by source version, series and config.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from ..build import cache_dir

# SPEC -> the Debian meta package that depends on the current kernel of that series.
DEBIAN = {"debian-6.1": "linux-image-cloud-amd64", "debian-6.12": "linux-image-6.12-cloud-amd64",
          "debian-6.1-std": "linux-image-amd64", "debian-6.12-std": "linux-image-6.12-amd64"}
# The standard kernels: their modules are kept.  `vm matrix` leaves them out by default (the
# cloud kernels are the same source and era); `vm criu` needs them.
STANDARD = ("debian-6.1-std", "debian-6.12-std")
# The era each kernel is expected to be identified as (vmaflags vm matrix checks it).
EXPECTED_ERA = {spec: "mmf" for spec in DEBIAN}
# Options the guest needs built in (=y: the initramfs has no modules).
NEEDED_CONFIG = ("CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_USERFAULTFD", "CONFIG_PROC_PAGE_MONITOR",
                 "CONFIG_BLK_DEV_INITRD", "CONFIG_RD_GZIP", "CONFIG_SERIAL_8250_CONSOLE",
                 "CONFIG_DEVTMPFS", "CONFIG_BINFMT_SCRIPT")
ALIAS_TTL = 24 * 3600  # seconds: apt-cache costs over a second per call


class Skip(Exception):
    """The kernel cannot be had or booted here; str() is the reason."""


@dataclass(frozen=True)
class Kernel:
    spec: str  # as given: debian-6.1, patched-6.12, or a path
    name: str  # the package, build or file booted
    image: pathlib.Path
    config: pathlib.Path | None
    selftests: dict[str, pathlib.Path] = field(default_factory=dict)  # kselftests to run
    expected_era: str | None = None
    modules: pathlib.Path | None = None  # lib/modules/<release>/ of a standard kernel


def _built() -> dict:
    """The kernels kernel-patch/ can build (vmaflags.kernel.KERNELS), if that is installed."""
    try:
        from vmaflags.kernel import build
    except ImportError:
        return {}
    return build.KERNELS


def specs() -> list[str]:
    return [*DEBIAN, *_built()]


def matrix_specs() -> list[str]:
    """What `vm matrix` runs by default: every SPEC but the standard Debian kernels."""
    return [s for s in specs() if s not in STANDARD]


def resolve_name(spec: str) -> None:
    """ValueError (listing the valid SPECs) unless SPEC names a kernel; nothing is fetched."""
    if spec in DEBIAN or spec in _built():
        return
    if os.sep in spec or pathlib.Path(spec).exists():
        if not pathlib.Path(spec).is_file():
            raise ValueError(f"no kernel image at {spec}")
        return
    raise ValueError(f"unknown kernel {spec!r}; valid: {', '.join(specs())}, "
                     "or the path of a bzImage")


def resolve(spec: str, progress: bool = True) -> Kernel:
    """The kernel to boot for SPEC, downloaded or built (and cached) on first use.  ValueError
    for an unknown SPEC (the message lists the valid ones); Skip when it cannot be had here;
    vmaflags.kernel.build.BuildError when a build fails."""
    if spec in DEBIAN:
        k = _debian(spec)
    elif spec in _built():
        from vmaflags.kernel import build
        try:
            b = build.build(spec, progress=progress)
        except build.Skip as e:
            raise Skip(str(e)) from None
        k = Kernel(spec, b.name, b.image, b.config, dict(b.selftests),
                   getattr(build.KERNELS[spec], "era", None))
    else:
        resolve_name(spec)
        k = Kernel(spec, spec, pathlib.Path(spec), None)
    _check_config(k)
    return k


def _debian(spec: str) -> Kernel:
    pkg = _package(DEBIAN[spec])
    d = cache_dir("vm") / pkg
    image, config = d / "vmlinuz", d / "config"
    if not image.is_file():
        _download(pkg, d, spec in STANDARD)
    mods = sorted((d / "modules").glob("*")) if spec in STANDARD else []
    return Kernel(spec, pkg, image, config if config.is_file() else None,
                  expected_era=EXPECTED_ERA[spec], modules=mods[0] if mods else None)


def _apt_depends(pkg: str) -> list[str]:
    try:
        res = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", pkg],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Skip(f"apt-cache failed: {e}") from None
    if res.returncode != 0 or not res.stdout.strip():
        raise Skip(f"no Debian package {pkg!r} (apt-cache: {res.stderr.strip() or 'unknown'}); "
                   "run `apt-get update`?")
    return re.findall(r"^\s*\|?Depends:\s*(\S+)", res.stdout, re.MULTILINE)


def _package(meta: str) -> str:
    """The concrete linux-image package a meta package depends on.  A resolution younger than
    ALIAS_TTL whose kernel is cached is trusted (a new Debian kernel is picked up within a
    day); the last one is used when apt cannot answer."""
    cache = cache_dir("vm")
    alias = cache / f"alias-{meta}"
    if alias.is_file() and time.time() - alias.stat().st_mtime < ALIAS_TTL:
        pkg = alias.read_text().strip()
        if (cache / pkg / "vmlinuz").is_file():
            return pkg
    try:
        pkg = meta
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
    alias.write_text(pkg + "\n")
    return pkg


def _download(pkg: str, dest: pathlib.Path, modules: bool = False) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise Skip(f"no `{tool}` to fetch {pkg}")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".dl-") as tmp:
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
        if modules:
            trees = sorted((x / "lib" / "modules").glob("*"))
            if not trees:
                raise Skip(f"{pkg} has no /lib/modules")
            (stage / "modules").mkdir()
            os.replace(trees[0], stage / "modules" / trees[0].name)
        if dest.exists():  # a concurrent download won
            return
        os.replace(stage, dest)


def _check_config(k: Kernel) -> None:
    """Skip a kernel whose config lacks what the guest needs (kernels without a config are
    judged in the guest: it reports THP, userfaultfd and smaps)."""
    if k.config is None:
        return
    text = k.config.read_text(errors="replace")
    missing = [o for o in NEEDED_CONFIG if not re.search(rf"^{o}=y$", text, re.MULTILINE)]
    if missing:
        raise Skip(f"{k.name} lacks built-in {', '.join(missing)}")
