"""The model's syscall language: the steps of a script (conformance/SCRIPT.md), parsed and printed.

The same values drive the concrete interpreter, the Z3 encoding, the C executor (as text) and the
proofs' counterexamples, so every trace the solver finds can be replayed on a kernel.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import ClassVar, Union

PAGE = 4096
PMD = 2 << 20
PMD_PAGES = PMD // PAGE

MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_COLLAPSE = 25
MADV_CLR_HUGEPAGE = -1  # "the era's MADV_CLR_HUGEPAGE number" (eras.Era.clr_hugepage)
ADVICE_NAMES = {
    "hugepage": MADV_HUGEPAGE,
    "nohugepage": MADV_NOHUGEPAGE,
    "collapse": MADV_COLLAPSE,
    "clr_hugepage": MADV_CLR_HUGEPAGE,
}
SYSFS_MODES = ("always", "madvise", "never")  # index = the model's sysfs value


class ScriptError(ValueError):
    """A malformed script; str() is the one-line message."""


def _size(tok: str) -> int:
    m = re.fullmatch(r"(0x[0-9a-fA-F]+|\d+)([KM]?)", tok)
    if not m:
        raise ScriptError(f"bad size {tok!r}")
    return int(m.group(1), 0) * {"": 1, "K": 1 << 10, "M": 1 << 20}[m.group(2)]


def _fmt_size(n: int) -> str:
    if n and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n and n % (1 << 10) == 0:
        return f"{n >> 10}K"
    return str(n)


def _int(tok: str) -> int:
    try:
        return int(tok, 0)
    except ValueError:
        raise ScriptError(f"bad number {tok!r}") from None


@dataclass(frozen=True)
class Step:
    name: ClassVar[str]

    def text(self) -> str:
        return " ".join([self.name, *(self._arg(f.name) for f in fields(self))])

    def _arg(self, field: str) -> str:
        v = getattr(self, field)
        return _fmt_size(v) if field in ("off", "len") else str(v)


@dataclass(frozen=True)
class Ranged(Step):
    off: int
    len: int


@dataclass(frozen=True)
class Mmap(Ranged):
    name = "mmap"


@dataclass(frozen=True)
class Munmap(Ranged):
    name = "munmap"


@dataclass(frozen=True)
class Touch(Ranged):
    name = "touch"


@dataclass(frozen=True)
class Madvise(Ranged):
    advice: int
    name = "madvise"

    def _arg(self, field: str) -> str:
        if field == "advice":
            return next((k for k, v in ADVICE_NAMES.items() if v == self.advice), str(self.advice))
        return super()._arg(field)


@dataclass(frozen=True)
class PrctlSet(Step):
    a2: int = 0
    a3: int = 0
    a4: int = 0
    a5: int = 0
    name = "prctl_set"


@dataclass(frozen=True)
class PrctlGet(Step):
    a2: int = 0
    a3: int = 0
    a4: int = 0
    a5: int = 0
    name = "prctl_get"


@dataclass(frozen=True)
class UffdRegister(Ranged):
    missing: bool = True
    wp: bool = False
    name = "uffd_register"

    def _arg(self, field: str) -> str:
        if field == "missing":
            return "+".join(m for m, on in (("missing", self.missing), ("wp", self.wp)) if on)
        if field == "wp":
            return ""
        return super()._arg(field)

    def text(self) -> str:
        return super().text().rstrip()


@dataclass(frozen=True)
class UffdUnregister(Ranged):
    name = "uffd_unregister"


@dataclass(frozen=True)
class UffdCopy(Ranged):
    name = "uffd_copy"


@dataclass(frozen=True)
class UffdClose(Step):
    name = "uffd_close"


@dataclass(frozen=True)
class Fork(Step):
    name = "fork"


@dataclass(frozen=True)
class Execve(Step):
    name = "execve"


@dataclass(frozen=True)
class Sysfs(Step):
    mode: int  # index into SYSFS_MODES
    name = "sysfs"

    def _arg(self, field: str) -> str:
        return SYSFS_MODES[self.mode]


@dataclass(frozen=True)
class Khugepaged(Step):
    ms: int = 0
    name = "khugepaged"


Syscall = Union[Mmap, Munmap, Touch, Madvise, PrctlSet, PrctlGet, UffdRegister, UffdUnregister,
                UffdCopy, UffdClose, Fork, Execve, Sysfs, Khugepaged]
STEPS: dict[str, type] = {c.name: c for c in (Mmap, Munmap, Touch, Madvise, PrctlSet, PrctlGet,
                                              UffdRegister, UffdUnregister, UffdCopy, UffdClose,
                                              Fork, Execve, Sysfs, Khugepaged)}


def parse_step(line: str) -> Syscall:
    toks = line.split()
    cls = STEPS.get(toks[0])
    if cls is None:
        raise ScriptError(f"unknown step {toks[0]!r}")
    args = toks[1:]
    if cls in (PrctlSet, PrctlGet):
        if len(args) > 4:
            raise ScriptError(f"{cls.name} takes at most 4 arguments")
        return cls(*(_int(a) for a in args))
    if cls in (Mmap, Munmap, Touch, UffdUnregister, UffdCopy, Madvise, UffdRegister):
        want = 3 if cls in (Madvise, UffdRegister) else 2
        if len(args) != want:
            raise ScriptError(f"{cls.name} takes {want} arguments")
        off, ln = _size(args[0]), _size(args[1])
        if cls is Madvise:
            adv = ADVICE_NAMES.get(args[2])
            return Madvise(off, ln, adv if adv is not None else _int(args[2]))
        if cls is UffdRegister:
            modes = set(args[2].split("+"))
            if not modes <= {"missing", "wp"}:
                raise ScriptError(f"bad uffd mode {args[2]!r} (missing, wp or missing+wp)")
            return UffdRegister(off, ln, "missing" in modes, "wp" in modes)
        return cls(off, ln)
    if cls is Sysfs:
        if len(args) != 1 or args[0] not in SYSFS_MODES:
            raise ScriptError(f"sysfs takes one of {', '.join(SYSFS_MODES)}")
        return Sysfs(SYSFS_MODES.index(args[0]))
    if cls is Khugepaged:
        if len(args) > 1:
            raise ScriptError("khugepaged takes at most 1 argument")
        return Khugepaged(*(_int(a) for a in args))
    if args:
        raise ScriptError(f"{cls.name} takes no arguments")
    return cls()


@dataclass(frozen=True)
class Script:
    steps: tuple[Syscall, ...]
    arena: int = 4  # PMD blocks
    meta: tuple[tuple[str, str], ...] = ()  # `#! key: value` headers

    def text(self) -> str:
        head = [f"#! {k}: {v}" for k, v in self.meta]
        return "\n".join([*head, f"arena {self.arena}", *(s.text() for s in self.steps)]) + "\n"


def parse_script(text: str) -> Script:
    """Parse a script; ScriptError("line N: ...") on the first bad line."""
    steps: list[Syscall] = []
    arena, meta = 4, []
    for n, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("#!") and ":" in raw:
            k, v = raw[2:].split(":", 1)
            meta.append((k.strip(), v.strip()))
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            if line.split()[0] == "arena":
                if steps:
                    raise ScriptError("arena must come before the first step")
                toks = line.split()
                if len(toks) != 2 or not 1 <= _int(toks[1]) <= 64:
                    raise ScriptError("arena takes a block count from 1 to 64")
                arena = _int(toks[1])
                continue
            steps.append(parse_step(line))
        except ScriptError as e:
            raise ScriptError(f"line {n}: {e}") from None
    return Script(tuple(steps), arena, tuple(meta))
