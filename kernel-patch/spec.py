"""The kernels `vmaflags kernel build` knows, and the key their builds are cached under.

A kernel is a Debian source package at an exact version, a list of patch series applied in
order (each a directory of `git format-patch` files under series/), config fragments merged into
tinyconfig (config/*.config) and the kselftests to build static.  The cache key hashes exactly
these inputs plus the recipe version and the compiler's identity -- never the source tree.
"""
from __future__ import annotations

import hashlib
import pathlib
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

HERE = pathlib.Path(__file__).resolve().parent
SERIES_DIR = HERE / "series"
CONFIG_DIR = HERE / "config"

# Bump when the build steps change in a way that changes the outputs.
RECIPE = 1


@dataclass(frozen=True)
class Kernel:
    name: str
    package: str  # Debian source package
    version: str  # its exact Debian version
    series: tuple[str, ...]  # directories under series/, applied in this order
    era: str  # the model era `vmaflags vm` must identify it as
    config: tuple[str, ...] = ("guest",)  # fragments under config/, merged in this order
    selftests: tuple[str, ...] = ()  # "mm/madv_clr_hugepage": built static, by name

    @property
    def patches(self) -> list[pathlib.Path]:
        """Every patch of every series, in the order they are applied."""
        return [p for s in self.series for p in series_patches(s)]

    @property
    def fragments(self) -> list[pathlib.Path]:
        return [CONFIG_DIR / f"{c}.config" for c in self.config]


def series_patches(series: str) -> list[pathlib.Path]:
    d = SERIES_DIR / series
    if not d.is_dir():
        raise ValueError(f"no patch series {series!r} in {SERIES_DIR}")
    patches = sorted(d.glob("*.patch"))
    if not patches:
        raise ValueError(f"patch series {series!r} has no *.patch files")
    return patches


DEBIAN_6_12 = ("linux-source-6.12", "6.12.117-1~deb12u1")

KERNELS: dict[str, Kernel] = {k.name: k for k in (
    Kernel("patched-6.12", *DEBIAN_6_12, series=("clr-hugepage",), era="mmf-clr",
           selftests=("mm/madv_clr_hugepage",)),
    # Test stand-ins for the pre-4.13 eras: 6.12 with the v4.12 prctl (series/def-flags),
    # alone and under MADV_CLR_HUGEPAGE.
    Kernel("def-flags-6.12", *DEBIAN_6_12, series=("def-flags",), era="def-flags"),
    Kernel("def-flags-clr-6.12", *DEBIAN_6_12, series=("def-flags", "clr-hugepage"),
           era="def-flags-clr", selftests=("mm/madv_clr_hugepage",)),
)}


def kernel(name: str) -> Kernel:
    try:
        return KERNELS[name]
    except KeyError:
        raise ValueError(f"unknown kernel {name!r}; valid: {', '.join(KERNELS)}") from None


@lru_cache(maxsize=1)
def compiler() -> str:
    """The first line of `cc --version` ('' without a compiler: the build then Skips)."""
    cc = shutil.which("cc")
    if cc is None:
        return ""
    res = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False,
                         timeout=30)
    return (res.stdout.splitlines() or [""])[0]


def cache_key(k: Kernel) -> str:
    """A hash of what determines the build's outputs (16 hex digits)."""
    h = hashlib.sha256()

    def put(label: str, data: bytes) -> None:
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)

    put("recipe", str(RECIPE).encode())
    put("source", f"{k.package}={k.version}".encode())
    put("compiler", compiler().encode())
    for p in k.patches:
        put(f"patch {p.parent.name}/{p.name}", p.read_bytes())
    for f in k.fragments:
        put(f"config {f.name}", f.read_bytes())
    put("selftests", "\n".join(k.selftests).encode())
    return h.hexdigest()[:16]
