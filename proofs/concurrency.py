"""Concurrency: interleavings of a collapse (or a fault) with other threads' syscalls, under the
lock discipline of model/locks.py.

One thread runs a sequence of syscalls, each one atomic step of the model (step.transition)
under its locks (`locks.syscall_hold`): the restore protocols of protocols.py, or a single
prctl.  The other thread -- khugepaged or MADV_COLLAPSE collapsing one PMD, or a fault -- runs
a few atomic micro-steps (`locks.collapse_steps`, `locks.fault_steps`), each of which reads
the state through the model's rules.  An interleaving places micro-step j after sequence step
p_j (p_0 <= p_1 <= ...); it is allowed when no sequence step lands between two micro-steps of
one critical section while holding a lock that conflicts with the one kept there
(`locks.conflicts`).  The solver quantifies over every dump (for the restores), every
interleaving and the PMD.  Until the install (the first micro-step that changes the state) the
micro-steps only read, so the sequence's states are the protocol's own symbolic run.

What it shows: a protection (MADV_NOHUGEPAGE, PR_SET_THP_DISABLE, UFFDIO_REGISTER over a PMD
with holes) that has returned is seen by every collapse that installs afterwards, because the
install re-checks everything under the mmap write lock in the same critical section
(collapse_huge_page: hugepage_vma_revalidate, __collapse_huge_page_isolate); and what breaks
when the rules change (Vlastimil Babka's 2017 hypothesis; faults under per-VMA locks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import z3

from vmaflags.model import arena, locks, rules
from vmaflags.model.backend import Z3
from vmaflags.model.eras import Era
from vmaflags.model.locks import Discipline, Hold, MicroStep
from vmaflags.model.state import State, cells
from vmaflags.model.syscalls import (MADV_HUGEPAGE, MADV_NOHUGEPAGE, PAGE, PMD_PAGES, Madvise,
                                     Mmap, PrctlSet, Syscall, parse_script)

from . import engine as E
from .verdict import Verdict, replay, role_of

KERNEL = locks.KERNEL
# Vlastimil Babka's hypothesis (seed thread, 24 May 2017): "the racers will have mmap_sem for
# reading only" -- MADV_NOHUGEPAGE under the read lock -- and the collapse acts on what its
# scan saw ("khugepaged sees the vma is non-empty, collapses"): no revalidation after it.
VLASTIMIL = Discipline(madvise_hugepage_write=False, revalidate_under_write=False,
                       revalidate_under_read=False)


@dataclass
class Sequence:
    """The sequence thread: its states (S_0 .. S_n), and for each step its syscall, the lock it
    holds and the condition under which it runs (a restore step guarded by the dump)."""

    states: list[State]
    steps: list[tuple[Syscall, Hold, Any]]
    run: E.Run


def sequence(run: E.Run, era: Era, d: Discipline) -> Sequence:
    steps = []
    for entry in run.log:
        sc, _, guard = entry
        steps.append((sc, locks.syscall_hold(era, d, sc), True if guard is None else guard))
    return Sequence(run.states, steps, run)


@dataclass
class Interleaving:
    positions: list[Any]  # Int per micro-step: it runs after this many sequence steps
    facts: list[Any]  # ordering and lock constraints


def interleave(seq: Sequence, micro: tuple[MicroStep, ...], d: Discipline) -> Interleaving:
    """Positions for the micro-steps, ordered, with the lock rule for every critical section:
    a sequence step that runs between two micro-steps of one section must not conflict with
    the hold kept there (the earlier micro-step's)."""
    n = len(seq.steps)
    p = [z3.Int(E.fresh(f"at_{m.name}")) for m in micro]
    facts = [p[0] >= 0, p[-1] <= n] + [a <= b for a, b in zip(p, p[1:])]
    for j in range(len(micro) - 1):
        if micro[j].section != micro[j + 1].section:
            continue
        for s, (_, hold, guard) in enumerate(seq.steps, 1):  # step s: S_{s-1} -> S_s
            if locks.conflicts(d, micro[j].hold, hold):
                facts.append(z3.Not(z3.And(p[j] < s, s <= p[j + 1], guard)))
    return Interleaving(p, facts)


def at(seq: Sequence, pos: Any, f: Callable[[State], Any]) -> Any:
    """f of the sequence's state at position `pos` (after `pos` steps)."""
    return z3.Or(*(z3.And(pos == i, f(st)) for i, st in enumerate(seq.states)))


# ---- what the collapse's micro-steps check (the model's rules) ---------------------------------

def _block(st: State, k: int) -> tuple[Any, Any, Any]:
    blk = st.blocks[k]
    return blk, z3.Or(*(c.pop for c in blk.cells)), z3.And(*(c.pop for c in blk.cells))


def eligible(era: Era, khugepaged: bool, st: State, k: int) -> Any:
    """hugepage_vma_revalidate / the scan's VMA check for the VMA holding PMD k: the whole PMD
    in one VMA, and thp_vma_allowable for khugepaged (sysfs enforced) or MADV_COLLAPSE (not),
    which includes the mm-level disable (hpage_collapse_test_exit_or_disable) and anon_vma."""
    cs = cells(st)
    views = arena.vma_views(Z3, cs)
    i = arena.block_first(st)[k]
    c, v = cs[i], views[i]
    user = rules.KHUGEPAGED if khugepaged else rules.FORCED_COLLAPSE
    return z3.And(arena.in_one_vma(Z3, st.blocks[k].cells),
                  rules.thp_vma_allowable(Z3, era, user, c.flags, st.mm, st.sysfs,
                                          z3.Not(c.av == 0), v.fits))


def ptes_ok(era: Era, khugepaged: bool, st: State, k: int) -> Any:
    """hpage_collapse_scan_pmd / __collapse_huge_page_isolate: the PMD has a PTE table (not a
    THP already) whose PTEs allow a collapse: rules.collapse_pmd."""
    blk, any_pop, all_pop = _block(st, k)
    c0 = blk.cells[0]
    ok, _, _ = rules.collapse_pmd(Z3, era, khugepaged, z3.Or(c0.um, c0.uw), blk.thp,
                                  blk.ptable, blk.cow, any_pop, all_pop)
    return z3.And(ok, z3.Not(blk.thp), blk.ptable)


PROTECTIONS = ("MADV_NOHUGEPAGE", "PR_SET_THP_DISABLE", "UFFDIO_REGISTER")


def protections(st: State, k: int) -> dict[str, Any]:
    """The specification, not a rule: what protects PMD k against a collapse -- its VMA has
    VM_NOHUGEPAGE, the process has PR_SET_THP_DISABLE (MMF_DISABLE_THP; 6.18's _COMPLETELY;
    in the def-flags eras the prctl protects only through nh on new VMAs), or its VMA is
    registered with userfaultfd (missing) while the PMD has a hole."""
    blk, _, all_pop = _block(st, k)
    return {"MADV_NOHUGEPAGE": z3.Or(*(c.nh for c in blk.cells)),
            "PR_SET_THP_DISABLE": st.mm.disable,
            "UFFDIO_REGISTER": z3.And(z3.Or(*(c.um for c in blk.cells)), z3.Not(all_pop))}


def protected(st: State, k: int, which: tuple[str, ...] = PROTECTIONS) -> Any:
    p = protections(st, k)
    return z3.Or(*(p[w] for w in which))


def _collapse_checks(era: Era, khugepaged: bool, k: int) -> dict[str, Callable[[State], Any]]:
    elig = lambda st: eligible(era, khugepaged, st, k)  # noqa: E731
    ptes = lambda st: ptes_ok(era, khugepaged, st, k)  # noqa: E731
    return {"scan": elig, "scan_pmd": ptes, "revalidate": elig, "isolate": ptes}


# ---- the theorems --------------------------------------------------------------------------------

def _collapsers(era: Era) -> list[bool]:
    """khugepaged (True) and, where it exists, MADV_COLLAPSE from another process (False)."""
    return [True] + ([False] if era.madv_collapse else [])


# Sequences of one process, raced against a collapse of one of their PMDs (name -> script,
# PMD).  Vlastimil Babka's (seed thread, 24 May 2017) in a process that has run: a VMA with an
# anon_vma (a page written in its second PMD) that MADV_HUGEPAGE made khugepaged's, its first
# PMD still empty; then "you set MADV_NOHUGEPAGE on the vma; you start populating the vma".
# The stress-* ones are what `vmaflags stress` races on the live kernel: a PTE-mapped PMD
# (written under MADV_NOHUGEPAGE, then MADV_HUGEPAGE), then the protection.
SEQUENCES = {
    "vlastimil": ("arena 2\nmmap 0 4M\ntouch 2M 4K\nmadvise 0 4M hugepage\n"
                  "madvise 0 4M nohugepage\ntouch 0 2M\n", 0),
    "stress-nh": ("arena 1\nmmap 0 2M\nmadvise 0 2M nohugepage\ntouch 0 2M\n"
                  "madvise 0 2M hugepage\nmadvise 0 2M nohugepage\n", 0),
    "stress-prctl": ("arena 1\nmmap 0 2M\nmadvise 0 2M nohugepage\ntouch 0 2M\n"
                     "madvise 0 2M hugepage\nprctl_set 1 0 0 0\n", 0),
}


@dataclass
class Setting:
    """A sequence thread to race a collapse against: its run, its side conditions, the
    arena's shape, the dump it restores (or None) and the PMDs a collapse may target."""

    run: E.Run
    facts: list[Any]
    shape: tuple[int, ...]
    dump: State | None
    pmds: tuple[int, ...]


def _setting(era: Era, name: str) -> Setting:
    """A restore protocol over every dump (restore.restore_run), or a SEQUENCES script from a
    fresh process in any sysfs mode."""
    from .restore import CRIU_SHAPE, restore_run

    if name not in SEQUENCES:
        dump, dump_ok, run, _ = restore_run(era, name, CRIU_SHAPE)
        return Setting(run, [dump_ok, *run.side], CRIU_SHAPE, dump,
                       tuple(range(len(CRIU_SHAPE))))
    text, pmd = SEQUENCES[name]
    script = parse_script(text)
    ranges = [(sc.off // PAGE, (sc.off + sc.len) // PAGE) for sc in script.steps
              if hasattr(sc, "off")]
    # one cell per range edge: a symbolic range must start and end on cell edges
    edges = [sorted({k * PMD_PAGES, (k + 1) * PMD_PAGES, *(e for r in ranges for e in r
                                                           if k * PMD_PAGES < e < (k + 1) *
                                                           PMD_PAGES)})
             for k in range(script.arena)]
    st0, wf = E.empty(tuple(len(e) - 1 for e in edges))
    cut = [c.start == e for blk, es in zip(st0.blocks, edges) for c, e in zip(blk.cells, es)]
    run = E.Run(era, [st0])
    args = {PrctlSet: lambda sc: (sc.a2, sc.a3, sc.a4, sc.a5)}
    for sc in script.steps:
        run.do(sc, args[type(sc)](sc) if type(sc) in args else
               (sc.off // PAGE, (sc.off + sc.len) // PAGE))
    return Setting(run, [wf, *cut, st0.sysfs >= 0, st0.sysfs <= 2],
                   tuple(len(e) - 1 for e in edges), None, (pmd,))


def collapse_respects_nh(era: Era, protocol: str, d: Discipline = KERNEL,
                         which: tuple[str, ...] = PROTECTIONS) -> Verdict:
    """For every dump, every interleaving of one collapse of one PMD (khugepaged, or
    MADV_COLLAPSE by another process) with the restore, and every PMD: the collapse does not
    install a THP into a PMD that is protected at that moment (`protections`: `which`).
    khugepaged is assumed to have the mm on its list."""
    sg = _setting(era, protocol)
    seq = sequence(sg.run, era, d)
    shp = sg.shape
    what = "restore" if sg.dump is not None else "sequence"
    bound = (f"arena {len(shp)} PMD{'s' if len(shp) > 1 else ''}, {sum(shp)} cells, 1 collapse"
             f" x every interleaving with the {len(seq.steps)}-step {what}")
    reached, guarded = False, False
    for khugepaged in _collapsers(era):
        micro = locks.collapse_steps(era, d, khugepaged)
        for k in sg.pmds:
            il = interleave(seq, micro, d)
            checks = _collapse_checks(era, khugepaged, k)
            ok = [at(seq, il.positions[j], checks[m.checks])
                  for j, m in enumerate(micro) if m.checks]
            install = il.positions[-1]
            prot = at(seq, install, lambda st: protected(st, k, which))
            r, m = E.check(*sg.facts, *il.facts, *ok, prot)
            if r == z3.sat:
                m = canonical([*sg.facts, *il.facts, *ok, prot], il.positions,
                              *([sg.dump] if sg.dump is not None else []), seq.states[0])
                cex = _trace(era, seq, micro, il, m, k, khugepaged, sg)
                return Verdict("refuted", "bounded", bound, cex,
                               note=f"PMD {k}: {'khugepaged' if khugepaged else 'MADV_COLLAPSE'}"
                                    " installs a THP while it is protected",
                               difference=[cex[-1]["observation"]], minimal=CANONICAL)
            if r != z3.unsat:
                return Verdict("unknown", "bounded", bound, note=str(r))
            reached = reached or E.check(*sg.facts, *il.facts, *ok)[0] == z3.sat
            guarded = guarded or E.check(*sg.facts, *il.facts, prot)[0] == z3.sat
    vac = [] if reached else ["no interleaving reaches a collapse's install"]
    if not guarded:
        vac.append(f"no PMD is ever protected during the {what}")
    return Verdict("proved", "bounded", bound, vacuity=vac)


def collapse_race_if_madvise_read_locked(era: Era, protocol: str) -> Verdict:
    """collapse-respects-nh for the protection Vlastimil Babka asked about, MADV_NOHUGEPAGE,
    under his hypothesis (VLASTIMIL)."""
    return collapse_respects_nh(era, protocol, VLASTIMIL, ("MADV_NOHUGEPAGE",))


def fault_vs_prctl(era: Era, d: Discipline = KERNEL) -> Verdict:
    """A write fault into an empty PMD of a VMA, concurrent with prctl(PR_SET_THP_DISABLE, 1):
    no interleaving installs a THP after the prctl has returned.  Every state of one PMD whose
    VMA covers it (any flags, mm mode, sysfs), every interleaving."""
    st, pre = _fault_state(era)
    run = E.Run(era, [st])
    run.do(PrctlSet(), (1, 0, 0, 0))
    seq = sequence(run, era, d)
    micro = locks.fault_steps(era)
    il = interleave(seq, micro, d)
    check = at(seq, il.positions[0], lambda s: rules.fault_huge_pmd(
        Z3, era, s.blocks[0].cells[0].flags, s.mm, s.sysfs,
        z3.And(z3.Not(s.blocks[0].thp), z3.Not(s.blocks[0].ptable)),
        arena.in_one_vma(Z3, s.blocks[0].cells)))
    after = il.positions[1] == len(seq.steps)  # the install runs after the prctl step
    bound = "1 PMD x every interleaving of the fault's 2 steps with the prctl"
    facts = [pre, *run.side, *il.facts, check, run.rets[-1] == 0]
    r, m = E.check(*facts, after)
    vac = [] if E.check(*facts)[0] == z3.sat else ["the fault never takes the huge path"]
    if r == z3.sat:
        m = canonical([*facts, after], il.positions, st)
    if r == z3.unsat:
        return Verdict("proved", "bounded", bound, vacuity=vac)
    if r != z3.sat:
        return Verdict("unknown", "bounded", bound, note=str(r))
    cex = _fault_trace(era, seq, micro, il, m)
    return Verdict("refuted", "bounded", bound, cex, vac, difference=[cex[-1]["observation"]],
                   minimal=CANONICAL,
                   note=f"the fault checked before the prctl and installs after it "
                        f"({locks.fault_hold(era).text()} does not exclude the prctl's "
                        f"{locks.syscall_hold(era, d, PrctlSet()).text()})")


def _fault_state(era: Era) -> tuple[State, Any]:
    """One PMD mapped by one VMA, empty, in any mm mode of the era and any sysfs mode."""
    from .states import state as _state

    st, ok = _state((1,), era)
    blk = st.blocks[0]
    c = blk.cells[0]
    return st, z3.And(ok, c.mapped, z3.Not(blk.thp), z3.Not(blk.ptable), z3.Not(c.pop))


# ---- traces ------------------------------------------------------------------------------------

CANONICAL = ("the earliest interleaving (each step of the collapse or fault as early as it "
             "can be), then the least start state")


def canonical(facts: list[Any], positions: list[Any], *starts: State) -> z3.ModelRef:
    """The counterexample printed: the lexicographically least interleaving (every micro-step
    as early as it can be), then the least start state (fields in a fixed order, False before
    True), so that the same command prints the same trace."""
    from vmaflags.model import symbolic

    o = z3.Optimize()
    o.add(*facts)
    for p in positions:
        o.minimize(p)
    for _, v in (kv for st in starts for kv in sorted(symbolic.values(st).items())):
        if z3.is_expr(v) and z3.is_const(v) and v.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            o.minimize(z3.If(v, 1, 0) if z3.is_bool(v) else v)
    assert o.check() == z3.sat
    return o.model()


def _interleaved(seq: Sequence, micro: tuple[MicroStep, ...], il: Interleaving,
                 m: z3.ModelRef, thread: str, other: str, label: Callable[[MicroStep], str]
                 ) -> list[tuple[str, Any, Hold, str]]:
    """(thread, syscall or micro-step text, hold, kind) in the order the model chose, up to the
    last micro-step; the sequence's guarded-off steps left out."""
    pos = [E.val(m, p) for p in il.positions]
    out: list[tuple[str, Any, Hold, str]] = []
    for s in range(pos[-1] + 1):
        out += [(thread, label(mi), mi.hold, "micro") for mi, p in zip(micro, pos) if p == s]
        if s < pos[-1]:
            sc, hold, guard = seq.steps[s]
            if E.val(m, guard):
                _, args, _ = seq.run.log[s]
                out.append((other, E.instantiate(sc, [E.val(m, a) for a in args]), hold,
                            "syscall"))
    return out


def _render(era: Era, events: list[tuple[str, Any, Hold, str]], sysfs: int, blocks: int,
            prefix: list[Syscall], other: str, last: str) -> list[dict]:
    """One dict per event: thread, step, locks held, and the state after it (the sequence's
    steps, after the `prefix` that sets up its start state, replayed on the interpreter)."""
    events = [(other, sc, Hold(), "syscall") for sc in prefix] + events
    steps = [e[1] for e in events if e[3] == "syscall"]
    obs = replay(era, steps, sysfs, blocks, other)
    out, n, state = [], 0, ""
    for i, (thread, what, hold, kind) in enumerate(events, 1):
        if kind == "syscall":
            state = obs[n]["observation"]
            n += 1
            text = what.text()
        else:
            text = what
        out.append({"process": thread, "step": i, "syscall": text, "locks": hold.text(),
                    "observation": last if i == len(events) else state,
                    "sysfs": obs[0]["sysfs"] if obs else "", "arena": blocks,
                    "role": role_of(thread)})
    return out


def _trace(era: Era, seq: Sequence, micro: tuple[MicroStep, ...], il: Interleaving,
           m: z3.ModelRef, k: int, khugepaged: bool, sg: Setting) -> list[dict]:
    """The dumped process (a restore's), then the interleaving."""
    from .restore import _dump_script

    who = "khugepaged" if khugepaged else "collapse"
    other = "restore" if sg.dump is not None else "process"
    events = _interleaved(seq, micro, il, m, who, other, lambda mi: f"{mi.name} PMD {k}" + (
        " (no check)" if not mi.checks and mi.name.startswith("revalidate") else ""))
    st = seq.states[E.val(m, il.positions[-1])]
    why = [w for w, c in protections(st, k).items() if E.val(m, c)]
    sysfs = E.val(m, seq.states[0].sysfs)
    dumped = [] if sg.dump is None else replay(era, _dump_script(era, sg.dump, m), sysfs,
                                                len(sg.shape), "dump")
    return dumped + _render(era, events, sysfs, len(sg.shape), [], other,
                            f"THP installed in PMD {k}, protected by {', '.join(why)}")


def _fault_trace(era: Era, seq: Sequence, micro: tuple[MicroStep, ...], il: Interleaving,
                 m: z3.ModelRef) -> list[dict]:
    """The fault's VMA is set up first (a script that reaches the symbolic start state), then
    the interleaving."""
    st = seq.states[0]
    c = st.blocks[0].cells[0]
    setup: list[Syscall] = [Mmap(0, PMD_PAGES * PAGE)]
    if E.val(m, c.hg):
        setup.append(Madvise(0, PMD_PAGES * PAGE, MADV_HUGEPAGE))
    if E.val(m, c.nh):
        setup.append(Madvise(0, PMD_PAGES * PAGE, MADV_NOHUGEPAGE))
    if E.val(m, st.mm.except_adv):
        setup.append(PrctlSet(1, 2, 0, 0))
    events = _interleaved(seq, micro, il, m, "fault", "prctl", lambda mi: f"{mi.name} 0 4K")
    return _render(era, events, E.val(m, st.sysfs), 1, setup, "prctl",
                   "THP installed after the prctl returned")


# ---- the catalogue -------------------------------------------------------------------------------

_TARGETS = {"3.5-lazy-predump": ("def-flags", "mmf"),
            "3.19-lazy-predump": ("mmf", "mmf-except-advised"),
            "criu-fixed": ("mmf", "mmf-except-advised", "mmf-clr"),
            "clr-2017": ("def-flags-clr", "mmf-clr")}
# (theorem, protocol or sequence, era) -> (expected verdict, reason)
EXPECTED: dict[tuple[str, str | None, str], tuple[str, str]] = {
    **{("collapse-respects-nh", p, e): (
        "proved", "the install re-checks VMA, mm and PTEs under the write lock")
       for p, eras in _TARGETS.items() for e in eras},
    **{("collapse-race-if-madvise-read-locked", "vlastimil", e): (
        "refuted", "madvise inside khugepaged's scan, no re-check after it")
       for e in ("def-flags", "mmf", "mmf-except-advised", "mmf-clr")},
    **{("collapse-race-if-madvise-read-locked", "clr-2017", e): (
        "proved", "no anon_vma before MADV_NOHUGEPAGE: khugepaged skips the VMA")
       for e in ("def-flags-clr", "mmf-clr")},
    **{("fault-vs-prctl", None, e): (
        "refuted", "6.4+ faults hold the VMA lock, which the prctl does not take")
       for e in ("mmf", "mmf-except-advised", "mmf-clr")},
}
# What each claims (issue 12's statements), for `vmaflags prove --list`.
STATEMENTS = {
    "collapse-respects-nh": "for every interleaving of one collapse (khugepaged, or "
    "MADV_COLLAPSE from another process) with a restore protocol, no THP is installed in a "
    "PMD after the step that protects it (MADV_NOHUGEPAGE, the prctl, or UFFDIO_REGISTER "
    "over holes) has returned",
    "collapse-race-if-madvise-read-locked": "the same for MADV_NOHUGEPAGE, with madvise "
    "under the read lock and no revalidation under the write lock (Vlastimil Babka's "
    "hypothesis, 2017)",
    "fault-vs-prctl": "a page fault cannot install a THP after prctl(PR_SET_THP_DISABLE, 1) "
    "has returned",
}
THEOREMS = {"collapse-respects-nh": collapse_respects_nh,
            "collapse-race-if-madvise-read-locked": collapse_race_if_madvise_read_locked,
            "fault-vs-prctl": fault_vs_prctl}


def check(theorem: str, protocol: str | None, era: Era) -> Verdict:
    f = THEOREMS[theorem]
    return f(era) if protocol is None else f(era, protocol)
