"""What this machine can do for conformance: root, THP in the kernel, a C compiler, and the live
THP mode.  Each check returns None when fine, else the reason (used as the SKIP reason)."""
from __future__ import annotations

import os
import platform
import shutil

from vmaflags.model.syscalls import SYSFS_MODES

from . import sysfs
from .build import executor_path


def kernel() -> str:
    return platform.release()


def no_thp() -> str | None:
    if not (sysfs.THP / "enabled").exists():
        return f"no THP in this kernel ({sysfs.THP}/enabled missing)"
    return None


def not_root() -> str | None:
    return None if os.geteuid() == 0 else "not root"


def no_executor() -> str | None:
    """None if the executor is built (or can be), else why not."""
    try:
        executor_path()
    except RuntimeError as e:
        return str(e) if shutil.which("cc") else "no C compiler (cc) to build the executor"
    return None


def live_mode() -> int:
    """The kernel's THP `enabled` mode as the model's sysfs value (0 always, 1 madvise, 2 never)."""
    return SYSFS_MODES.index(sysfs.read("enabled"))
