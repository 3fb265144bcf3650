"""Return values as the model and the executor print them: 0, a value, -ENAME, or a signal."""
from __future__ import annotations

import errno as _errno

ENOENT, EAGAIN, ENOMEM, EFAULT, EBUSY, EEXIST, EINVAL = (
    _errno.ENOENT, _errno.EAGAIN, _errno.ENOMEM, _errno.EFAULT, _errno.EBUSY, _errno.EEXIST,
    _errno.EINVAL)

# `touch` reports the signal its write raised; the model encodes them below any errno.
SIGBUS = -1007
SIGSEGV = -1011
_SIGNALS = {SIGBUS: "SIGBUS", SIGSEGV: "SIGSEGV"}


def ret_text(ret: int) -> str:
    if ret in _SIGNALS:
        return _SIGNALS[ret]
    if ret < 0:
        return "-" + _errno.errorcode.get(-ret, f"E{-ret}")
    return str(ret)


def ret_parse(text: str) -> int:
    """Inverse of ret_text; ValueError on anything else."""
    for code, name in _SIGNALS.items():
        if text == name:
            return code
    if text.startswith("-E"):
        name = text[1:]
        if name[1:].isdigit():
            return -int(name[1:])
        code = getattr(_errno, name, None)
        if code is None:
            raise ValueError(f"unknown errno {text!r}")
        return -code
    return int(text)
