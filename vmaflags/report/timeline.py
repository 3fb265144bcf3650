"""The restore protocols of proofs/protocols.py as timelines, computed (never typed).

Each protocol restores one representative dump (DUMP: two PMDs, an `hg` and an `nh` VMA, each
with a page written before the pre-dump point and one after it, so that a restore with a
pre-dump writes the first before its lazy phase and leaves the second to it).  The protocol's
own steps come from protocols.py, with the guards and arguments it computes from the dump
evaluated on this one (as `vmaflags vm criu` does: conformance/vm/criu.py); each step is
labelled with the Restore method that issued it (its phase) and the comment on the protocol's
line that called it (CRIU's function).  The steps run on the interpreter; after each, every PMD
holding lazy pages is judged by what the no-collapse-window proof calls safe
(proofs/restore.py `pmd_guards`, the disjuncts of `_safe_pmd`), with the reasons it holds, and where it does not, whether
khugepaged or MADV_COLLAPSE would make the PMD a THP now (restore.py `_replays_thp`).
"""
from __future__ import annotations

import functools
import linecache
import sys
from dataclasses import dataclass, field


from vmaflags.model import concrete
from vmaflags.model.backend import PY
from vmaflags.model.eras import ERAS, Era
from vmaflags.model.observe import observe
from vmaflags.model.state import State, cells, empty_state
from vmaflags.model.syscalls import PMD_PAGES, SYSFS_MODES, Syscall

# The dumped process: a script whose first SPLIT steps run before the pre-dump point.
DUMP = """arena 2
mmap 0 2M
touch 0 4K
madvise 0 2M hugepage
mmap 2M 2M
touch 2M 4K
madvise 2M 2M nohugepage
touch 4K 4K
touch 2052K 4K
"""
SPLIT = 6
SYSFS = "madvise"
# The eras a protocol is shown in, in this order of preference: the first in which the
# expected table (proofs/expected.py) says its restore completes.
PREFERENCE = ("mmf", "mmf-except-advised", "mmf-clr", "def-flags", "def-flags-clr")
# What keeps a lazy PMD from becoming a THP: restore.pmd_guards, as a reader names them.
GUARDS = {
    "unmapped": "no VMA over the PMD yet",
    "split": "the PMD is not inside one VMA",
    "nh": "VM_NOHUGEPAGE (vma_thp_disabled)",
    "prctl": "the process's THP disable (vma_thp_disabled)",
    "no-ptes": "no page table: nothing to collapse",
    "uffd": "registered with userfaultfd (missing) and a page is absent",
}
OPEN = ("not safe, and WHO (MADV_COLLAPSE, khugepaged with the mm on its list) would make "
        "the PMD a THP now")
THP = "the PMD is a THP: its lazy pages are zero-filled, and UFFDIO_COPY fails with EEXIST"


@dataclass
class Step:
    n: int
    phase: str  # the Restore method that issued it (protocols.Restore)
    source: str  # the comment on the protocol's line that called it
    syscall: str
    observation: str  # after the step (the executor's line)
    get: int
    pmds: dict[int, str] = field(default_factory=dict)  # lazy PMD -> status


@dataclass
class Timeline:
    protocol: str
    summary: str
    citation: str  # the protocol function's docstring
    era: str
    lazy: bool
    parent: bool
    dumped: str  # the dump's observation line
    lazy_pmds: list[int]
    steps: list[Step]
    aborted: str = ""

    def windows(self) -> dict[int, str]:
        """Per lazy PMD: what protects it over the restore, as step ranges."""
        out = {}
        for k in self.lazy_pmds:
            spans: dict[str, list[list[int]]] = {}
            for s in self.steps:
                for label in s.pmds[k].split(","):
                    r = spans.setdefault(label, [])
                    if r and r[-1][1] == s.n - 1:
                        r[-1][1] = s.n
                    else:
                        r.append([s.n, s.n])
            out[k] = "; ".join(f"{label} " + ",".join(
                f"{a}" if a == b else f"{a}-{b}" for a, b in r) for label, r in spans.items())
        return out

    def as_dict(self) -> dict:
        return {"protocol": self.protocol, "summary": self.summary, "citation": self.citation,
                "era": self.era, "lazy": self.lazy, "parent": self.parent,
                "dumped": self.dumped, "lazy_pmds": self.lazy_pmds, "aborted": self.aborted,
                "windows": {str(k): v for k, v in self.windows().items()},
                "steps": [s.__dict__ for s in self.steps]}


def _mode(p: object) -> str:
    return "lazy-parent" if p.lazy and p.parent else "lazy" if p.lazy else "plain"


def era_for(protocol: str) -> Era:
    from vmaflags.proofs.expected import EXPECTED

    rows = EXPECTED.get(("criu-restore-original", protocol), {})
    for e in PREFERENCE:
        if e in rows and rows[e][0] != "aborted":
            return ERAS[e]
    raise ValueError(f"no era in which {protocol} completes")


def _recorded(era: Era, protocol: str, dump: State) -> list[tuple[Syscall, str, str]]:
    """The protocol's syscalls on `dump` (criu.protocol_steps), each with its phase and the
    comment on the protocol's calling line."""
    from vmaflags.conformance.vm import criu
    from vmaflags.proofs import protocols as P

    p = P.PROTOCOLS[protocol]
    methods = {f.__code__: name for name, f in vars(P.Restore).items()
               if callable(f) and name != "each_vma" and not name.startswith("_")}
    out: list[tuple[Syscall, str, str]] = []

    class Recorder(criu._Recorder):
        def do(self, sc, args, guard=None):  # type: ignore[no-untyped-def]
            n = len(self.steps)
            super().do(sc, args, guard)
            if len(self.steps) == n:
                return
            phase, frame = "", sys._getframe(1)
            while frame is not None and frame.f_code is not p.steps.__code__:
                phase = methods.get(frame.f_code, phase)
                frame = frame.f_back
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno) if frame else ""
            out.append((self.steps[-1], phase, line.partition("#")[2].strip()))

    p.steps(P.Restore(Recorder(era), criu._literal(dump), p))
    return out


def _status(era: Era, st: State, k: int, done: list[Syscall]) -> str:
    """PMD k after `done`: the reasons it is safe (GUARDS), or what makes it a THP."""
    from vmaflags.proofs import restore

    blk = st.blocks[k]
    if blk.thp:
        return "THP"
    c0, mapped = blk.cells[0], any(c.mapped for c in blk.cells)
    g = restore.pmd_guards(PY, era, st, k)
    # the guards as a reader names them; over nothing mapped only "unmapped" is worth saying
    reasons = [name for name, holds in (
        ("unmapped", not mapped),
        ("split", mapped and g["split"]),
        ("nh", c0.mapped and g["disabled"] and c0.nh),
        ("prctl", c0.mapped and g["disabled"] and not c0.nh),
        ("no-ptes", mapped and g["no-ptes"]),
        ("uffd", g["uffd"])) if holds]
    if reasons:
        return ",".join(reasons)
    opened = [w for w in ("collapse", "khugepaged")
              if (w != "collapse" or era.madv_collapse)
              and restore._replays_thp(era, done, st.sysfs, len(st.blocks), k, w)[0]]
    return "open:" + "+".join(opened) if opened else "unsafe"


@functools.cache
def timeline(protocol: str) -> Timeline:
    from vmaflags.conformance.vm import criu
    from vmaflags.proofs import protocols as P

    p = P.PROTOCOLS[protocol]
    era = era_for(protocol)
    case = criu.Case("timeline", DUMP, SPLIT, SYSFS)
    s = case.script
    sysfs = SYSFS_MODES.index(SYSFS)
    states, obs = criu._run_states(era, s.steps, s.arena, sysfs)
    inp = criu.restore_input(states[-1], states[SPLIT - 1], s.steps[SPLIT:], _mode(p))
    lazy = sorted({c.start // PMD_PAGES for c in cells(inp)
                   if p.lazy and c.mapped and not (p.parent and c.pop)})
    tl = Timeline(protocol, p.summary, " ".join((p.steps.__doc__ or "").split()), era.id,
                  p.lazy, p.parent, obs[-1].text(), lazy, [])
    st, done = empty_state(s.arena, sysfs), []
    for n, (sc, phase, source) in enumerate(_recorded(era, protocol, inp), 1):
        r = concrete.run_syscall(era, st, sc)
        st = r.state
        done.append(sc)
        o = observe(era, st, r.ret)
        tl.steps.append(Step(n, phase, source, sc.text(), o.text(), o.get,
                             {k: _status(era, st, k, done) for k in lazy}))
        if r.ret != 0:
            tl.aborted = f"step {n} ({sc.text()}) returns {o.text().split()[0][4:]}"
            break
    return tl


def timelines() -> list[Timeline]:
    from vmaflags.proofs.protocols import PROTOCOLS

    return [timeline(p) for p in PROTOCOLS]
