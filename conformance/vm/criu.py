"""`vmaflags vm criu`: real CRIU dumps and restores a process in a test VM, and the model's
restore protocol (proofs/protocols.py) is checked against what CRIU did.

The guest (rootfs.py) is Debian with its `criu` package on a standard Debian kernel.  For each
case the guest's case runner (criu-case.sh) starts `executor --hold` on the case's script --
VMAs with and without MADV_HUGEPAGE/NOHUGEPAGE, fully and sparsely populated, with or without
PR_SET_THP_DISABLE --, dumps it with CRIU, restores it in one of the modes CRIU offers, lets
khugepaged scan twice, and reports the process's own observations (PR_GET, THP_enabled, smaps
in the executor's START-END:FLAGS:ELIG:AHP notation) before the dump and after the restore.

The model's side starts from the model's own run of the same script (which must agree with
the kernel's lines: otherwise the dump itself diverges), runs the protocol that models this
CRIU release and mode over the dumped state, then CRIU's lazy phase and one khugepaged scan.
The protocol's steps come from proofs/protocols.py itself: the guards and arguments it
computes from the dump, evaluated on this dump (`protocol_steps`), then replayed on the
interpreter.  Nothing here says what a restore should give.

What is compared (`agrees`), kernel against model: every step of the dumped process's script;
after the restore and CRIU's lazy phase, and again after two khugepaged scans, PR_GET,
THP_enabled and every VMA with its flags, THPeligible and AnonHugePages; just after `criu
restore` returned (the lazy-pages daemon may still be copying), PR_GET, THP_enabled and which
pages are mapped, hg and nh.  `criu_command.py` is the command.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import z3

from vmaflags.model import concrete
from vmaflags.model.eras import Era
from vmaflags.model.observe import Observation, observe
from vmaflags.model.state import Block, Cell, Mm, State, cells, empty_state
from vmaflags.model.syscalls import (PAGE, Khugepaged, PrctlSet, Script, Syscall, Touch,
                                     UffdClose, UffdCopy, parse_script)

from .. import driver, sysfs
from .guest import Guest

# --criu VALUE -> the Debian suite whose `criu` package is that release.
RELEASES = {"3.17": "bookworm", "4.1": "trixie"}
MODES = ("plain", "lazy", "lazy-parent")
RUNNER = "/usr/local/sbin/vmaflags-criu"
CASE_TIMEOUT = 900  # seconds for one case in the guest (its criu commands time out at 300)

# The one table to update when protocols.py changes: (first CRIU release, mode) -> protocol.
# A CRIU release uses the row with the highest first release not above it.  Citations are in
# protocols.py: 9d45bb398 (v3.5) and 21ce76263 (v3.19).
PROTOCOL = {
    ((3, 5), "plain"): "3.5-plain",
    ((3, 5), "lazy"): "3.5-lazy",
    ((3, 5), "lazy-parent"): "3.5-lazy-predump",
    ((3, 19), "plain"): "3.19-plain",
    ((3, 19), "lazy"): "3.19-lazy",
    ((3, 19), "lazy-parent"): "3.19-lazy-predump",
}


@dataclass(frozen=True)
class Case:
    """A dumped process: its script (the first `split` steps run before lazy-parent's
    pre-dump, the rest after it and before the dump) under THP `enabled` mode `sysfs`."""

    name: str
    text: str
    split: int
    sysfs: str = "madvise"

    @property
    def script(self) -> Script:
        return parse_script(self.text)


# Six 2 MiB VMAs side by side, neighbours differing in hg/nh so that no two merge: hg, nh and
# neither, first fully populated (touched after the advice: hg gets a THP at fault), then
# sparsely (two pages, touched before the advice).  After the pre-dump point, some pages are
# written again and some for the first time (soft-dirty: they go into the final dump, lazy).
_VMAS = """arena 6
mmap 0 2M
madvise 0 2M hugepage
touch 0 2M
mmap 2M 2M
madvise 2M 2M nohugepage
touch 2M 2M
mmap 4M 2M
touch 4M 2M
mmap 6M 2M
touch 6M 4K
touch 7M 4K
madvise 6M 2M hugepage
mmap 8M 2M
touch 8M 4K
touch 9M 4K
madvise 8M 2M nohugepage
mmap 10M 2M
touch 10M 4K
touch 11M 4K
"""
_AFTER = """touch 0 4K
touch 2M 4K
touch 6M 4K
touch 0x602000 4K
touch 0xa02000 4K
"""


def _case(name: str, prctl: bool, mode: str) -> Case:
    return Case(name, _VMAS + _AFTER + ("prctl_set 1 0 0 0\n" if prctl else ""),
                len(parse_script(_VMAS).steps), mode)


CASES = (_case("madvise", False, "madvise"), _case("madvise+prctl", True, "madvise"),
         _case("always", False, "always"), _case("always+prctl", True, "always"))


# ---- the model's side --------------------------------------------------------------------------

class MissingProtocol(LookupError):
    """proofs/protocols.py has no such protocol."""


def protocol_id(criu: str, mode: str) -> str:
    """The protocol (PROTOCOL) that models CRIU release `criu` ("3.17.1") in `mode`."""
    v = tuple(int(x) for x in criu.split(".")[:2])
    rows = [(first, p) for (first, m), p in PROTOCOL.items() if m == mode and first <= v]
    if not rows:
        raise ValueError(f"no protocol models CRIU {criu} {mode}")
    return max(rows)[1]


def _run_states(era: Era, steps: tuple[Syscall, ...], arena: int, sysfs_mode: int
                ) -> tuple[list[State], list[Observation]]:
    st = empty_state(arena, sysfs_mode)
    states, obs = [], []
    for sc in steps:
        r = concrete.run_syscall(era, st, sc)
        st = r.state
        states.append(st)
        obs.append(observe(era, st, r.ret))
    return states, obs


def _pages(sc: Syscall) -> tuple[int, int]:
    return sc.off // PAGE, -(-(sc.off + sc.len) // PAGE)


def restore_input(dump: State, before: State, after: tuple[Syscall, ...], mode: str) -> State:
    """The dumped state as a protocol takes it: `pop` marks the pages the restore writes before
    the lazy phase.  CRIU's page images (criu/mem.c generate_iovs, criu/page-xfer.c
    ppb_xfer_flags, v3.5+): a page of a private anonymous VMA is dumped with PE_LAZY; one that
    a pre-dump saved and nobody wrote since (soft-dirty clear) is a PE_PARENT hole.  A plain
    restore writes every dumped page; a lazy one skips PE_LAZY pages (restore_priv_vma_content:
    `opts.lazy_pages && pagemap_lazy(pe)`), so only the parent's are written.  `before` is the
    state at the pre-dump, `after` the steps between it and the dump (touches, which dirty
    pages, and prctl)."""
    if mode == "plain":
        return dump
    written: set[int] = set()
    if mode == "lazy-parent":
        if any(not isinstance(sc, (Touch, PrctlSet)) for sc in after):
            raise ValueError("after the pre-dump point a case may only touch pages and prctl")
        dirty = {p for sc in after if isinstance(sc, Touch) for p in range(*_pages(sc))}
        written = {p for c in cells(before) if c.pop for p in range(c.start, c.end)} - dirty
    edges = {p for p in written if p - 1 not in written} | {
        p + 1 for p in written if p + 1 not in written}
    st = concrete.split(dump, *sorted(edges))
    blocks = tuple(b._replace(cells=tuple(c._replace(pop=c.pop and c.start in written)
                                          for c in b.cells)) for b in st.blocks)
    return st._replace(blocks=blocks)


def _literal(dump: State) -> State:
    """The dump with every field a Z3 literal: what a protocol computes from it is a closed
    term, which simplifies to its value."""
    def lit(v: Any) -> Any:
        return z3.BoolVal(v) if isinstance(v, bool) else z3.IntVal(v)

    return State(tuple(Block(*(lit(x) for x in b[:3]), tuple(Cell(*map(lit, c)) for c in b.cells))
                       for b in dump.blocks), Mm(*map(lit, dump.mm)), lit(dump.sysfs),
                 lit(dump.next_av))


def _value(t: Any) -> Any:
    if isinstance(t, (bool, int)):
        return t
    v = z3.simplify(t)
    if z3.is_true(v) or z3.is_false(v):
        return z3.is_true(v)
    if z3.is_int_value(v):
        return v.as_long()
    raise ValueError(f"not a closed term: {t}")


class _Recorder:
    """Stands in for proofs.engine.Run under a protocol: each step's guard and arguments are
    closed terms over the concrete dump, and a step whose guard holds is recorded as the
    concrete syscall (engine.instantiate).  A protocol's steps depend on the dump only; one
    that looked at the restore's own states would find none here."""

    def __init__(self, era: Era) -> None:
        self.era = era
        self.steps: list[Syscall] = []

    def do(self, sc: Syscall, args: tuple[Any, ...], guard: Any = None) -> None:
        from vmaflags.proofs.engine import instantiate

        if guard is None or _value(guard):
            self.steps.append(instantiate(sc, [_value(a) for a in args]))


def protocol_steps(era: Era, protocol: str, dump: State) -> list[Syscall]:
    """The syscalls protocol `protocol` (proofs/protocols.py) makes to restore `dump`: its own
    steps, with the guards and arguments it computes from the dump evaluated on this one."""
    from vmaflags.proofs import protocols as P

    p = P.PROTOCOLS.get(protocol)
    if p is None or not hasattr(p, "steps"):
        raise MissingProtocol(f"protocol {protocol} is not in proofs/protocols.py (it has "
                              f"{', '.join(P.PROTOCOLS)}: issue 9's protocols are needed)")
    run = _Recorder(era)
    p.steps(P.Restore(run, _literal(dump), p))
    return run.steps


def lazy_phase(dump: State, restored: State) -> list[Syscall]:
    """What CRIU's lazy-pages daemon does once the restore has finished (criu/uffd.c
    handle_requests, v3.5+): UFFDIO_COPY of every dumped page the restore did not write
    (xfer_pages; per VMA, as its iovs are), then it closes the userfaultfd (lpi_put)."""
    out: list[Syscall] = []
    have = {p for c in cells(restored) if c.pop for p in range(c.start, c.end)}
    for c in cells(dump):
        if c.mapped and c.pop:
            run: list[int] = [p for p in range(c.start, c.end) if p not in have]
            while run:
                a = b = run[0]
                while b + 1 in run:
                    b += 1
                out.append(UffdCopy(a * PAGE, (b + 1 - a) * PAGE))
                run = [p for p in run if p > b]
    return out + [UffdClose()]


@dataclass
class ModelRun:
    steps: list[Observation]  # the dumped process's script
    during: Observation | None  # after the protocol's last step
    restored: Observation | None  # after the lazy phase
    final: Observation | None  # after a khugepaged scan
    restore: list[Syscall] = field(default_factory=list)
    aborted: str = ""  # a restore syscall failed: CRIU stops there


def model_run(era: Era, case: Case, mode: str, protocol: str, sysfs_mode: int) -> ModelRun:
    s = case.script
    states, obs = _run_states(era, s.steps, s.arena, sysfs_mode)
    dump = states[-1]
    inp = restore_input(dump, states[case.split - 1], s.steps[case.split:], mode)
    steps = protocol_steps(era, protocol, inp)
    st = empty_state(s.arena, sysfs_mode)
    mr = ModelRun(obs, None, None, None, steps)
    for sc in steps:
        r = concrete.run_syscall(era, st, sc)
        if r.ret != 0:
            mr.aborted = f"{sc.text()} returns {observe(era, r.state, r.ret).text().split()[0]}"
            return mr
        st = r.state
    mr.during = observe(era, st, 0)
    lazy = lazy_phase(dump, st) if mode != "plain" else []
    mr.restore = steps + lazy + [Khugepaged()]
    for sc in lazy:
        r = concrete.run_syscall(era, st, sc)
        st = r.state
        if r.ret != 0:
            mr.aborted = f"{sc.text()} returns {observe(era, st, r.ret).text().split()[0]}"
            return mr
    mr.restored = observe(era, st, 0)
    mr.final = observe(era, concrete.run_syscall(era, st, Khugepaged()).state, 0)
    return mr


# ---- the guest's side --------------------------------------------------------------------------

@dataclass
class GuestRun:
    lines: list[str] = field(default_factory=list)  # as criu-case.sh printed them
    steps: list[Observation] = field(default_factory=list)
    seen: dict[str, Observation] = field(default_factory=dict)  # dumped, during, ..., khugepaged
    marks: dict[str, float] = field(default_factory=dict)  # phase -> guest uptime
    error: str = ""


def parse_runner(lines: list[str], into: GuestRun) -> GuestRun:
    """criu-case.sh's output lines into `into`."""
    into.lines += lines
    for ln in lines:
        word, _, rest = ln.partition(" ")
        if word == "step":
            into.steps.append(driver.parse_line(rest)[1])
        elif word in ("dumped", "during", "restored", "khugepaged"):
            into.seen[word] = driver.parse_line("0 " + rest)[1]
        elif word == "mark":
            name, t = rest.split()
            into.marks[name] = float(t)
        elif word in ("error", "log"):
            into.error += ("\n" if into.error else "") + ln
        elif ln.strip():
            raise ValueError(f"unexpected line from the case runner: {ln!r}")
    return into


def guest_run(g: Guest, case: Case, mode: str) -> GuestRun:
    s = case.script
    words = [f"arena {s.arena}", *(sc.text() for sc in s.steps)]
    args = ("case", mode, str(case.split), *";".join(words).split(" "))
    gr = GuestRun()
    with g.guard() as guard:
        guard.set(enabled=case.sysfs)
        status, lines = g.run_program(RUNNER, CASE_TIMEOUT, args)
        parse_runner(lines, gr)
        if status != 0:
            gr.error = gr.error or f"the case runner exited with {status}"
            return gr
        guard.set_many(sysfs.FAST_KHUGEPAGED)
        status, lines = g.run_program(RUNNER, 300, ("khugepaged",))
        parse_runner(lines, gr)
        if status != 0:
            gr.error = gr.error or f"the case runner exited with {status}"
    return gr


# ---- comparison and report ---------------------------------------------------------------------

def obs_dict(o: Observation | None) -> dict | None:
    if o is None:
        return None
    return {"get": o.get, "thp_enabled": o.thp, "vmas": [v.text() for v in o.vmas]}


def _ranges(o: Observation, flag: str | None) -> tuple:
    out: list[list[int]] = []
    for v in o.vmas:
        if flag is None or flag in v.flags.split("+"):
            if out and out[-1][1] == v.start:
                out[-1][1] = v.end
            else:
                out.append([v.start, v.end])
    return tuple(map(tuple, out))


def _coarse(o: Observation) -> tuple:
    """What is compared just after `criu restore` returned."""
    return o.get, o.thp, _ranges(o, None), _ranges(o, "hg"), _ranges(o, "nh")


@dataclass
class CaseResult:
    """One case in one mode.  `restored` is the kernel after the restore and CRIU's lazy
    phase, `khugepaged` after two khugepaged scans more; `model_*` the model's at the same
    points, `model` its last (what JSON calls "model", beside "restored" = `khugepaged`)."""

    name: str
    mode: str
    protocol: str
    sysfs: str
    dumped: Observation | None = None
    restored: Observation | None = None
    khugepaged: Observation | None = None
    model_dumped: Observation | None = None
    model_restored: Observation | None = None
    model: Observation | None = None
    problems: list[str] = field(default_factory=list)
    model_restore: tuple[str, ...] = ()  # the model's restore, lazy phase and scan, as steps
    seconds: float = 0.0  # on the host, guest and model
    phases: dict[str, float] = field(default_factory=dict)  # in the guest (criu_command.PHASES)

    @property
    def agrees(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"name": self.name, "mode": self.mode, "protocol": self.protocol,
                "dumped": obs_dict(self.dumped), "restored": obs_dict(self.khugepaged),
                "model": obs_dict(self.model), "agrees": self.agrees}


def compare(case: Case, mode: str, protocol: str, gr: GuestRun, mr: ModelRun | None,
            why: str = "") -> CaseResult:
    """The kernel's run against the model's (None: the model could not run, `why`)."""
    cr = CaseResult(case.name, mode, protocol, case.sysfs, gr.seen.get("dumped"),
                    gr.seen.get("restored"), gr.seen.get("khugepaged"))
    if gr.error:
        cr.problems.append(f"the guest: {gr.error}")
    if mr is None:
        cr.problems.append(f"no model: {why}")
        return cr
    cr.model_dumped = mr.steps[-1] if mr.steps else None
    cr.model_restored, cr.model = mr.restored, mr.final
    cr.model_restore = tuple(sc.text() for sc in mr.restore)
    for n, (k, m) in enumerate(zip(gr.steps, mr.steps), 1):
        if k != m:
            cr.problems.append(f"the dumped process diverges from the model at step {n}: "
                               f"kernel {k.text()}, model {m.text()}")
            break
    if not gr.error and len(gr.steps) != len(mr.steps):
        cr.problems.append(f"{len(gr.steps)} step lines for {len(mr.steps)} steps")
    if mr.aborted:
        cr.problems.append(f"the model's restore aborts: {mr.aborted}")
    during = gr.seen.get("during")
    if during is not None and mr.during is not None and _coarse(during) != _coarse(mr.during):
        cr.problems.append(f"just after `criu restore` (PR_GET, THP_enabled, mapped/hg/nh): "
                           f"kernel {during.text()}, model {mr.during.text()}")
    for what, k, m in (("dumped", cr.dumped, cr.model_dumped),
                       ("restored", cr.restored, cr.model_restored),
                       ("khugepaged", cr.khugepaged, cr.model)):
        if k is not None and m is not None and _full(k) != _full(m):
            cr.problems.append(f"{what}: the model differs (rows marked !)")
    return cr


def _full(o: Observation) -> tuple:
    return o.get, o.thp, o.vmas
