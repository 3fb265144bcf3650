"""The kernel under test: this machine, or a test VM installed with `use()`.

Conformance asks the same questions of either (`vmaflags conform` of this machine, `vmaflags vm
run` of a qemu guest): which kernel it is, whether it can run the executor, the THP sysfs
tunables (read, and changed through a guard that puts them back), a khugepaged keeper, and an
`executor --serve` to send scripts to (driver.executor).  Each check returns None when fine,
else the reason (used as the SKIP reason).  A target installed with `use()` implements the
methods of `Target`; this module's functions answer for it, or for this machine.
"""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
from collections.abc import Iterator
from typing import Any, Protocol

from vmaflags.model.eras import Era, era_at
from vmaflags.model.syscalls import SYSFS_MODES

from . import khugepaged, sysfs
from .build import executor_path


class Target(Protocol):
    """A kernel under test other than this machine's (conformance/vm/guest.py: a qemu guest)."""

    def kernel(self) -> str: ...  # uname -r
    def no_thp(self) -> str | None: ...
    def read(self, name: str) -> str: ...
    def writable(self) -> str | None: ...
    def guard(self) -> Any: ...  # a context manager yielding a guard like sysfs.SysfsGuard
    def keeper(self) -> Any: ...  # a context manager: an mm on khugepaged's list meanwhile
    def executor(self, clr_hugepage: int | None) -> Any: ...  # context manager: driver.Executor


_current: Target | None = None


def current() -> Target | None:
    """The target installed by use(), or None for this machine."""
    return _current


@contextlib.contextmanager
def use(target: Target) -> Iterator[Target]:
    global _current
    saved, _current = _current, target
    try:
        yield target
    finally:
        _current = saved


def kernel() -> str:
    return _current.kernel() if _current else platform.release()


def version() -> str | None:
    """major.minor of kernel(), or None if the release does not start with one."""
    parts = kernel().split("-")[0].split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and all(p.isdigit() for p in parts[:2]) \
        else None


def era(e: Era) -> Era:
    """`e` with the within-era features of the kernel under test (eras.Era.at): identification
    tells the eras' semantics apart by behaviour; what changed inside an era follows the
    version, e.g. Debian 6.1's MADV_COLLAPSE EINVAL where 6.4+ returns EBUSY."""
    v = version()
    return era_at(e.id, v) if v else e


def mainline_era() -> str | None:
    """The mainline era whose kernel range (Era.kernels, "4.13-6.17") holds version(): what
    this kernel is expected to be identified as."""
    from vmaflags.model.eras import ERAS, _version

    v = version()
    if v is None:
        return None
    for e in ERAS.values():
        lo, sep, hi = e.kernels.partition("-")
        if sep and " " not in e.kernels and _version(lo) <= _version(v) and (
                not hi or _version(v) <= _version(hi)):
            return e.id
    return None


def no_thp() -> str | None:
    if _current:
        return _current.no_thp()
    if not (sysfs.THP / "enabled").exists():
        return f"no THP in this kernel ({sysfs.THP}/enabled missing)"
    return None


def is_root() -> bool:
    return _current is not None or os.geteuid() == 0


def not_root() -> str | None:
    return None if is_root() else "not root"


def no_executor() -> str | None:
    """None if the executor is built (or can be), else why not."""
    try:
        executor_path()
    except RuntimeError as e:
        return str(e) if shutil.which("cc") else "no C compiler (cc) to build the executor"
    return None


def read(name: str) -> str:
    """A THP sysfs tunable, as sysfs.read gives it."""
    return _current.read(name) if _current else sysfs.read(name)


def writable() -> str | None:
    """None if a guard can change the THP tunables, else why not."""
    return _current.writable() if _current else sysfs.writable()


def guard() -> Any:
    return _current.guard() if _current else sysfs.SysfsGuard()


def keeper() -> Any:
    return _current.keeper() if _current else khugepaged.keeper()


def live_mode() -> int:
    """The kernel's THP `enabled` mode as the model's sysfs value (0 always, 1 madvise, 2 never)."""
    return SYSFS_MODES.index(read("enabled"))
