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


# The lexical rules of SCRIPT.md, shared with executor.c's parser (tests/test_script_language.py
# feeds both the same scripts): ASCII only, so that no Unicode digit or space counts.
_BLANKS = re.compile(r"[ \t\r\v\f]+")
_NUM = r"(?:0x[0-9a-fA-F]+|[0-9]+)"
_SIZE = re.compile(rf"({_NUM})([KM]?)")
_INT = re.compile(rf"-?{_NUM}")
U64 = 1 << 64
INT_MAX = (1 << 31) - 1


def _q(tok: str, most: int = 40) -> str:
    """A token quoted for a message as executor.c quotes it: its first `most` UTF-8 bytes (then
    "..."), those outside printable ASCII as \\xNN (an undecoded byte of a bytes script is
    itself)."""
    try:
        raw = tok.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = tok.encode("utf-8", "backslashreplace")
    text = "".join(chr(c) if 0x20 <= c < 0x7f else f"\\x{c:02x}" for c in raw[:most])
    return f"'{text}'" + ("..." if len(raw) > most else "")


def _num(tok: str) -> int:
    return int(tok, 16) if tok.startswith("0x") else int(tok, 10)


def _size(tok: str) -> int:
    m = _SIZE.fullmatch(tok)
    if not m:
        raise ScriptError(f"bad size {_q(tok)}")
    v = _num(m.group(1)) << {"": 0, "K": 10, "M": 20}[m.group(2)]
    if v >= U64:
        raise ScriptError(f"size {_q(tok)} does not fit in 64 bits")
    return v


def _int(tok: str, lo: int, hi: int) -> int:
    """A number -?(0x HEX | DEC) within [lo, hi]."""
    if not _INT.fullmatch(tok):
        raise ScriptError(f"bad number {_q(tok)}")
    v = -_num(tok[1:]) if tok[0] == "-" else _num(tok)
    if not lo <= v <= hi:
        raise ScriptError(f"number {_q(tok)} out of range ({lo}..{hi})")
    return v


def tokens(line: str) -> list[str]:
    """A line's words, the comment (from `#`) dropped; ScriptError for a NUL before it."""
    line = line.split("#", 1)[0]
    if "\0" in line:
        raise ScriptError("NUL byte")
    return [t for t in _BLANKS.split(line) if t]


def _fmt_size(n: int) -> str:
    if n and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n and n % (1 << 10) == 0:
        return f"{n >> 10}K"
    return str(n)


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
    """One step line (SCRIPT.md); ScriptError on a malformed one.  Ranges are checked against
    the arena by parse_script, which knows it."""
    toks = tokens(line)
    if not toks:
        raise ScriptError("empty step")
    cls = STEPS.get(toks[0])
    if cls is None:
        raise ScriptError(f"unknown step {_q(toks[0])}")
    args = toks[1:]
    if cls in (PrctlSet, PrctlGet):
        if len(args) > 4:
            raise ScriptError(f"{cls.name} takes at most 4 arguments")
        # raw unsigned longs; a negative one is its two's complement, as in C
        return cls(*(_int(a, -(1 << 63), U64 - 1) for a in args))
    if issubclass(cls, Ranged):
        want = 3 if cls in (Madvise, UffdRegister) else 2
        if len(args) != want:
            raise ScriptError(f"{cls.name} takes {want} arguments")
        off, ln = _size(args[0]), _size(args[1])
        if cls is Madvise:
            adv = ADVICE_NAMES.get(args[2])
            # madvise()'s `int behavior`; no negative numbers (every kernel rejects them)
            return Madvise(off, ln, adv if adv is not None else _advice(args[2]))
        if cls is UffdRegister:
            modes = args[2].split("+")
            if not set(modes) <= {"missing", "wp"}:
                raise ScriptError(f"bad uffd mode {_q(args[2])} (missing, wp or missing+wp)")
            return UffdRegister(off, ln, "missing" in modes, "wp" in modes)
        return cls(off, ln)
    if cls is Sysfs:
        if len(args) != 1 or args[0] not in SYSFS_MODES:
            raise ScriptError(f"sysfs takes one of {', '.join(SYSFS_MODES)}")
        return Sysfs(SYSFS_MODES.index(args[0]))
    if cls is Khugepaged:
        if len(args) > 1:
            raise ScriptError("khugepaged takes at most 1 argument")
        return Khugepaged(*(_int(a, 0, U64 - 1) for a in args))
    if args:
        raise ScriptError(f"{cls.name} takes no arguments")
    return cls()


def _advice(tok: str) -> int:
    if tok.startswith("-"):
        raise ScriptError(f"bad advice {_q(tok)}")
    return _int(tok, 0, INT_MAX)


@dataclass(frozen=True)
class Script:
    steps: tuple[Syscall, ...]
    arena: int = 4  # PMD blocks
    meta: tuple[tuple[str, str], ...] = ()  # `#! key: value` headers

    def text(self) -> str:
        head = [f"#! {k}: {v}" for k, v in self.meta]
        return "\n".join([*head, f"arena {self.arena}", *(s.text() for s in self.steps)]) + "\n"


def parse_script(text: str | bytes) -> Script:
    """Parse a script; ScriptError("line N: ...") on the first bad line.  Bytes are decoded as
    UTF-8, an undecodable byte standing for itself (it can only be in a comment or an error)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    steps: list[Syscall] = []
    arena, arena_line, meta = 4, 0, []
    for n, raw in enumerate(text.split("\n"), 1):
        if raw.startswith("#!") and ":" in raw:
            k, v = raw[2:].split(":", 1)
            meta.append((k.strip(), v.strip()))
        try:
            toks = tokens(raw)
            if not toks:
                continue
            if toks[0] == "arena":
                if steps or arena_line:
                    raise ScriptError("arena comes once, before the first step")
                if len(toks) != 2:
                    raise ScriptError("arena takes a block count from 1 to 64")
                arena, arena_line = _int(toks[1], 1, 64), n
                continue
            step = parse_step(raw)
            if isinstance(step, Ranged) and step.off + step.len > arena * PMD:
                raise ScriptError(f"range {step.off:#x}+{step.len:#x} leaves the arena "
                                  f"({arena * PMD:#x} bytes)")
            steps.append(step)
        except ScriptError as e:
            raise ScriptError(f"line {n}: {e}") from None
    return Script(tuple(steps), arena, tuple(meta))
