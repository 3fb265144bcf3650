"""The theorem catalogue: each theorem is a function of the era returning a verdict.

Every theorem drives the model's own transitions (step.transition) or rules with the Z3
backend.  "proved" means the negation is unsatisfiable over everything the method names:
`induction` (an inductive invariant: a fresh process has it and every step of every kind of the
language keeps it, so any number of steps), `one-step` (one step from every well-formed state
of the shape), `rule-level` (every input of a rule function: no arena), `bounded` (every state
or run of the printed shape), `unbounded (...)` (the named compositional argument, restore.py).
The bound is the arena shape: "1x2" = 1 PMD of 2 cells (README.md: what it covers).
"refuted" comes with a counterexample the solver found, shortest first, replayed through the
concrete interpreter (which must show the same violation).  Each check also reports what it
quantified over and proves every value of each input dimension occurs (verdict.coverage).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import z3

from vmaflags.model import concrete, rules
from vmaflags.model import step as S
from vmaflags.model import symbolic
from vmaflags.model.backend import PY, Z3
from vmaflags.model.eras import Era
from vmaflags.model.observe import flag_text, observe
from vmaflags.model.state import Flags, Mm, State, cells, empty_state
from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, MADV_COLLAPSE, MADV_NOHUGEPAGE,
                                     PMD_PAGES, Execve, Fork, Madvise, Mmap, PrctlSet, Syscall)

from . import engine as E
from .contract import (any_step, collapse_fills_holes, documented_returns, fork_and_exec,
                       pages_arrive, status_shows_prctl, sysfs_is_global,
                       uffd_leaves_no_trace)
from .frame import restore_frame
from .restore import criu_restore_original, no_collapse_window
from .states import Inputs, inputs, sane, state, state_dims
from .verdict import (Vacuous, Verdict, count, coverage, enabled, final, minimal_model,
                      observed, replay, sat_or_vacuous, shape_text, vma_difference, vma_text)

def _sysfs(m: z3.ModelRef, st: State) -> int:
    return E.val(m, st.sysfs)


# --- bounded search from the empty process ------------------------------------------------------

def readable(run: E.Run) -> list[Any]:
    """Among equally short runs: the fewest failing steps, sysfs `madvise` (the usual
    default, so a replay needs no sysfs write), cell bounds on 1 MiB boundaries, then ranges
    from the lowest addresses."""
    st0 = run.states[0]
    starts = [z3.If(c.pick == i, args[0], 0) for c in run.choices
              for i, args in enumerate(c.args) if len(args) == 2]
    return [count([z3.Not(r == 0) for r in run.rets if not isinstance(r, int)]),
            z3.If(st0.sysfs == 1, 0, 1),
            count([c.start % (PMD_PAGES // 2) != 0 for c in cells(st0)]),
            z3.Sum(*starts) if starts else z3.IntVal(0)]


def shortest(k: int) -> str:
    return f"fewest steps ({k}): none shorter from a fresh process"


def bmc(era: Era, shp: tuple[int, ...], depth: int, bad: Callable[[E.Run], Any],
        options: Callable[[bool], list[Syscall]]) -> tuple[E.Run, z3.ModelRef] | None:
    """Shortest run from a fresh process (any sysfs mode) whose last step makes `bad` true;
    `options(last)` gives the syscalls a step may take.  Among the shortest, a readable one."""
    for k in range(1, depth + 1):
        st0, wf = E.empty(shp)
        run = E.Run(era, [st0])
        for j in range(k):
            run.step(options(j == k - 1))
        facts = [wf, *run.side, bad(run)]
        if E.check(*facts)[0] == z3.sat:
            return run, minimal_model(facts, [], readable(run))[0]
    return None


def _trace(era: Era, run: E.Run, m: z3.ModelRef, shp: tuple[int, ...], process: str = "run"
           ) -> list[dict]:
    return replay(era, run.trace(m), _sysfs(m, run.states[0]), len(shp), process)


# --- the theorems -------------------------------------------------------------------------------

def hg_nh_exclusive(era: Era) -> Verdict:
    """Induction: a fresh process is well formed with no VMA holding both flags, and every
    step of every kind of the language keeps that, in the parent and in a fork child."""
    shp = (2,)
    st, pre, run, choice = any_step(era, shp)
    post, child = run.last, run.children[-1]
    facts = [pre, *run.side]
    sat_or_vacuous("pre-states", *facts)
    q, vac = coverage(facts, state_dims(era, st))
    q["step kinds"], bad = enabled(facts, choice, run.rets[-1])
    st0, wf0 = E.empty(shp)
    base, _ = E.check(wf0, z3.Not(sane(st0)))
    r, m = E.check(*facts, z3.Not(z3.And(sane(post), sane(child))))
    if base == z3.unsat and r == z3.unsat:
        return Verdict("proved", "induction", shape_text(shp), vacuity=vac + bad, quantified=q)
    found = bmc(era, shp, 4, lambda rn: z3.Or(*(z3.And(c.hg, c.nh) for c in cells(rn.last))),
                lambda last: E.alphabet(era))
    if found:
        rn, mm = found
        cex = _trace(era, rn, mm, shp)
        both = [vma_text(v) for v in final(era, cex, "run", 1, len(shp)).vmas
                if {"hg", "nh"} <= set(v.flags.split("+"))]
        return Verdict("refuted", "bounded", f"{len(rn.choices)} steps, {shape_text(shp)}",
                       cex, vac + bad, quantified=q, minimal=shortest(len(rn.choices)),
                       difference=[f"a VMA with both hg and nh: {', '.join(both)}"])
    return Verdict("unknown", "bounded", f"4 steps, {shape_text(shp)}", None, vac + bad,
                   "not inductive, and no violation within 4 steps", quantified=q)


def prctl_transparent(era: Era) -> Verdict:
    """Two runs of one sequence, the first with PR_SET_THP_DISABLE toggles added anywhere.
    Induction on the relation "same cells, same vm_flags, same def_flags" (the prctl's mm bits
    may differ); a violation is searched from a fresh process, shortest first."""
    shp = (2,)
    common = E.alphabet(era, [k for k in E.TEMPLATES if k is not PrctlSet])

    def related(a: State, b: State) -> Any:
        return z3.And(*(z3.And(x.start == y.start, x.end == y.end, E.flags_equal(x, y))
                        for x, y in zip(cells(a), cells(b))),
                      a.mm.def_nh == b.mm.def_nh)

    def product_step(ra: E.Run, rb: E.Run, toggle: Any) -> None:
        """Both runs take the same syscall, or (toggle) the first takes a prctl alone."""
        pa, pb = ra.last, rb.last
        ca = ra.step(common)
        rb.states.append(pb)
        rb.log.append(None)
        # the second run takes the first run's syscall with the same arguments
        post_b: Any = None
        for i, sc in enumerate(common):
            _, p, _ = S.transition(Z3, era, pb, sc, ca.args[i])
            post_b = p if post_b is None else E.merge(ca.pick == i, p, post_b)
        a_common, ret_common = ra.states.pop(), ra.rets.pop()
        ra.children.pop()
        ra.log.pop()
        a2 = [z3.Int(E.fresh("t")) for _ in range(4)]
        rt, pt = S.prctl_set(Z3, era, pa, *a2)
        ra.side.append(z3.And(*(z3.And(x >= 0, x <= 3) for x in a2)))
        ra.states.append(E.merge(toggle, pt, a_common))
        ra.rets.append(Z3.ite(toggle, rt, ret_common))
        ra.children.append(None)
        ra.log.append(("toggle", toggle, ca, a2))
        rb.states[-1] = E.merge(toggle, pb, post_b)

    # induction
    a, pre_a = state(shp, era)
    b, pre_b = state(shp, era)
    ra, rb = E.Run(era, [a]), E.Run(era, [b])
    toggle = z3.Bool(E.fresh("toggle"))
    product_step(ra, rb, toggle)
    pre = [pre_a, pre_b, related(a, b), a.sysfs == b.sysfs, *ra.side]
    sat_or_vacuous("related pre-states", *pre)
    q, vac = coverage(pre, state_dims(era, a))
    q["step kinds"], bad = enabled(pre, ra.log[-1][2], ra.rets[-1])
    vac += bad
    r, _ = E.check(*pre, z3.Not(related(ra.last, rb.last)))
    if r == z3.unsat:
        return Verdict("proved", "induction", shape_text(shp), vacuity=vac, quantified=q)

    # shortest violation from a fresh process
    for k in range(1, 5):
        st0, wf = E.empty(shp)
        ra, rb = E.Run(era, [st0]), E.Run(era, [st0])
        toggles = [z3.Bool(E.fresh("toggle")) for _ in range(k)]
        for t in toggles:
            product_step(ra, rb, t)
        facts = [wf, *ra.side, z3.Not(z3.And(*(E.flags_equal(x, y) for x, y in
                                                zip(cells(ra.last), cells(rb.last)))))]
        if E.check(*facts)[0] != z3.sat:
            continue
        m, _ = minimal_model(facts, [], readable(ra))
        cex = _two_runs(era, ra, m, shp)
        sysfs = _sysfs(m, st0)
        with_t, without = (final(era, cex, p, sysfs, len(shp))
                           for p in ("with toggles", "without toggles"))
        diff = vma_difference(("with toggles", "without"), with_t, without, eligible=False)
        bound = f"{k} steps, {shape_text(shp)}"
        if not diff:
            return Verdict("unknown", "bounded", bound, cex, vac, quantified=q,
                           note="the solver's counterexample does not replay")
        return Verdict("refuted", "bounded", bound, cex, vac, quantified=q,
                       minimal=shortest(k), difference=diff)
    return Verdict("unknown", "bounded", f"4 steps, {shape_text(shp)}", vacuity=vac,
                   quantified=q, note="not inductive; no violation found")


def _two_runs(era: Era, ra: E.Run, m: z3.ModelRef, shp: tuple[int, ...]) -> list[dict]:
    with_t, without = [], []
    for entry in ra.log:
        _, toggle, choice, a2 = entry
        if E.val(m, toggle):
            with_t.append(PrctlSet(*(E.val(m, x) for x in a2)))
        else:
            sc = choice.concrete(m)
            with_t.append(sc)
            without.append(sc)
    sysfs = _sysfs(m, ra.states[0])
    return (replay(era, with_t, sysfs, len(shp), "with toggles")
            + replay(era, without, sysfs, len(shp), "without toggles"))


def _user_elig(era: Era, f: Flags, mm: Mm, sysfs: Any, anon: Any, fits: Any) -> list[Any]:
    return [e for e in (rules.thp_vma_allowable(Z3, era, u, f, mm, sysfs, anon, fits)
                        for u in rules.USERS) if e is not None]


def _rule_level(era: Era, x: Inputs, claims: list[Any], sysfs: bool = True) -> Verdict:
    """Prove `claims` for every input the era allows; a refutation gives the input values."""
    sat_or_vacuous("inputs", x.ok)
    q, vac = coverage([x.ok], x.dims(era, sysfs))
    r, m = E.check(x.ok, z3.Not(z3.And(*claims)))
    if r == z3.unsat:
        return Verdict("proved", "rule-level", vacuity=vac, quantified=q)
    return Verdict("refuted", "rule-level", None, [x.values(m)], vac, quantified=q)


def clr_is_neutral(era: Era) -> Verdict:
    """For every VMA and process state: MADV_CLR_HUGEPAGE leaves the hg/nh of a fresh mmap
    (rules.new_vma_flags) and, for every user, the same eligibility.  Rule level; a
    refutation is also shown as a trace: mmap, advice, CLR."""
    x = inputs(era)
    cleared, _ = rules.hugepage_madvise(Z3, era, x.f, MADV_CLR_HUGEPAGE)
    fresh = rules.new_vma_flags(Z3, era, x.mm)._replace(um=x.f.um, uw=x.f.uw)
    same = [cleared.hg == fresh.hg, cleared.nh == fresh.nh,
            *(a == b for a, b in zip(_user_elig(era, cleared, x.mm, x.sysfs, x.anon, x.fits),
                                     _user_elig(era, fresh, x.mm, x.sysfs, x.anon, x.fits)))]
    v = _rule_level(era, x, same)
    if v.verdict != "refuted":
        return v
    shp = (1,)

    def bad(rn: E.Run) -> Any:
        c = cells(rn.last)[0]
        fr = rules.new_vma_flags(Z3, era, rn.last.mm)
        return z3.And(c.mapped, z3.Or(c.hg != fr.hg, c.nh != fr.nh))

    clr = [sc for sc in E.alphabet(era, [Madvise]) if sc.advice == MADV_CLR_HUGEPAGE]
    found = bmc(era, shp, 4, bad,
                lambda last: clr if last else E.alphabet(era, [Mmap, PrctlSet, Madvise]))
    if found is None:
        v.note = "the rule differs; no trace within 4 steps shows it"
        return v
    rn, m = found
    v.counterexample = _trace(era, rn, m, shp)
    v.minimal = shortest(len(rn.choices))
    # the replayed state: the VMA the CLR left, and what a fresh mmap would get now
    st = empty_state(len(shp), _sysfs(m, rn.states[0]))
    for sc in rn.trace(m):
        st = concrete.run_syscall(era, st, sc).state
    fresh = rules.new_vma_flags(PY, era, st.mm)
    after = [vma_text(x, eligible=False) for x in observe(era, st, 0).vmas]
    v.difference = [f"after MADV_CLR_HUGEPAGE: {', '.join(after)}; a fresh mmap now: "
                    f"{flag_text(fresh.hg, fresh.nh, False, False)}"]
    v.note = "after the CLR the VMA differs from a fresh mmap now"
    return v


def no_return_to_neither(era: Era) -> Verdict:
    """One madvise step, of each advice, from every well-formed state never takes a mapped
    cell from hg or nh to neither.  A violation is searched from a fresh process."""
    shp = (2,)
    st, pre = state(shp, era)
    run = E.Run(era, [st])
    madv = E.alphabet(era, [Madvise])
    choice = run.step(madv)
    facts = [pre, *run.side]
    sat_or_vacuous("pre-state", *facts)
    q, vac = coverage(facts, state_dims(era, st))
    q["advice"], bad_kinds = enabled(facts, choice, run.rets[-1])
    vac += bad_kinds
    keep = z3.And(*(z3.Implies(z3.And(a.mapped, z3.Or(a.hg, a.nh)), z3.Or(b.hg, b.nh))
                    for a, b in zip(cells(st), cells(run.last))))
    r, _ = E.check(*facts, z3.Not(keep))
    if r == z3.unsat:
        return Verdict("proved", "one-step", shape_text(shp), vacuity=vac, quantified=q)

    def bad(rn: E.Run) -> Any:
        return z3.Or(*(z3.And(a.mapped, z3.Or(a.hg, a.nh), b.mapped, z3.Not(b.hg),
                              z3.Not(b.nh))
                       for a, b in zip(cells(rn.states[-2]), cells(rn.last))))

    found = bmc(era, shp, 3, bad,
                lambda last: madv if last else E.alphabet(era, [Mmap, Madvise]))
    if found is None:
        return Verdict("unknown", "bounded", f"3 steps, {shape_text(shp)}", vacuity=vac,
                       quantified=q)
    rn, m = found
    cex = _trace(era, rn, m, shp)
    k = len(cex)
    before = (observed(cex[-2]) if k > 1 else
              observe(era, empty_state(len(shp), _sysfs(m, rn.states[0])), 0))
    return Verdict("refuted", "bounded", f"{len(rn.choices)} steps, {shape_text(shp)}", cex,
                   vac, quantified=q, minimal=shortest(len(rn.choices)),
                   difference=vma_difference((f"before step {k}", "after it"), before,
                                             observed(cex[-1]), eligible=False))


def eligibility_monotone(era: Era) -> Verdict:
    """For every user, VMA and process state: MADV_NOHUGEPAGE, or turning a prctl disable
    mode on (PR_SET_THP_DISABLE(1, 0) and, in 6.18, (1, EXCEPT_ADVISED)), never makes a THP
    allowed that was not.  In def-flags the prctl acts on VMAs created afterwards, so there
    the comparison is also on rules.new_vma_flags.  Rule level."""
    x = inputs(era)
    nohuge, _ = rules.hugepage_madvise(Z3, era, x.f, MADV_NOHUGEPAGE)
    elig = lambda f, mm: _user_elig(era, f, mm, x.sysfs, x.anon, x.fits)  # noqa: E731
    claims = [z3.Implies(a, b) for a, b in zip(elig(nohuge, x.mm), elig(x.f, x.mm))]
    for a3 in ((0, rules.PR_THP_DISABLE_EXCEPT_ADVISED) if era.except_advised else (0,)):
        _, off = rules.prctl_set_thp_disable(Z3, era, x.mm, 0, 0, 0, 0)
        _, on = rules.prctl_set_thp_disable(Z3, era, off, 1, a3, 0, 0)
        for g_on, g_off in ((x.f, x.f), (rules.new_vma_flags(Z3, era, on),
                                         rules.new_vma_flags(Z3, era, off))):
            claims += [z3.Implies(a, b) for a, b in zip(elig(g_on, on), elig(g_off, off))]
    return _rule_level(era, x, claims)


def except_advised_as_madvise(era: Era) -> Verdict:
    """Rule level, every VMA: EXCEPT_ADVISED under sysfs `always` allows a THP to the page
    fault and to khugepaged exactly when no prctl under sysfs `madvise` does."""
    x = inputs(era)
    plain = Mm(Z3.F, Z3.F, Z3.F, x.mm.registered)
    _, exc = rules.prctl_set_thp_disable(Z3, era, plain, 1, rules.PR_THP_DISABLE_EXCEPT_ADVISED,
                                         0, 0)
    sat_or_vacuous("EXCEPT_ADVISED", x.ok, exc.except_adv)
    claims = [rules.thp_vma_allowable(Z3, era, u, x.f, exc, rules.SYSFS_ALWAYS, x.anon, x.fits)
              == rules.thp_vma_allowable(Z3, era, u, x.f, plain, rules.SYSFS_MADVISE, x.anon,
                                         x.fits)
              for u in (rules.PAGEFAULT, rules.KHUGEPAGED)]
    return _rule_level(era, x, claims, sysfs=False)


def collapse_ignores_sysfs(era: Era) -> Verdict:
    """MADV_COLLAPSE from the same state under two sysfs modes: same return value, same new
    state.  Every state of the shape, every cell-aligned range."""
    shp = (2, 2)
    st, pre = state(shp, era)
    other = z3.Int(E.fresh("sysfs"))
    args, aok = E.arg_choices(st, Madvise(0, 0, MADV_COLLAPSE), E.fresh("c"))
    r1, p1 = S.madvise(Z3, era, st, *args, MADV_COLLAPSE)
    r2, p2 = S.madvise(Z3, era, st._replace(sysfs=other), *args, MADV_COLLAPSE)
    v1, v2 = symbolic.values(p1), symbolic.values(p2)
    same = z3.And(r1 == r2, *(_eq(v1[k], v2[k]) for k in v1 if k != "sysfs"))
    assumptions = [pre, aok, other >= 0, other <= 2, other != st.sysfs]
    sat_or_vacuous("a collapse", *assumptions, r1 == 0, z3.Or(*(b.thp for b in p1.blocks)))
    q, vac = coverage(assumptions, state_dims(era, st) + [("other sysfs", other, [0, 1, 2])])
    r, m = E.check(*assumptions, z3.Not(same))
    if r == z3.unsat:
        return Verdict("proved", "one-step", shape_text(shp), vacuity=vac, quantified=q)
    return Verdict("refuted", "one-step", shape_text(shp),
                   [{k: E.val(m, v) for k, v in symbolic.values(st).items()}], vac,
                   quantified=q)


def _eq(a: Any, b: Any) -> Any:
    return a == b if z3.is_expr(a) or z3.is_expr(b) else z3.BoolVal(a == b)


def disable_inherited(era: Era) -> Verdict:
    """From every state: a fork child and an exec'ed image read the same PR_GET_THP_DISABLE
    value; in the def-flags eras, while it reads 1, every VMA the new image maps has nh."""
    shp = (1,)
    st, pre = state(shp, era)
    get = rules.thp_disable_value(Z3, era, st.mm)
    _, _, child = S.transition(Z3, era, st, Fork(), ())
    _, img, _ = S.transition(Z3, era, st, Execve(), ())
    c0 = cells(img)[0]
    _, mapped, _ = S.transition(Z3, era, img, Mmap(0, 0), (c0.start, c0.end))
    claims = [rules.thp_disable_value(Z3, era, child.mm) == get,
              rules.thp_disable_value(Z3, era, img.mm) == get]
    if era.def_flags:
        claims.append(z3.Implies(get == 1, cells(mapped)[0].nh))
    sat_or_vacuous("states", pre)
    q, vac = coverage([pre], state_dims(era, st))
    r, m = E.check(pre, z3.Not(z3.And(*claims)))
    if r == z3.unsat:
        return Verdict("proved", "one-step", shape_text(shp), vacuity=vac, quantified=q)
    return Verdict("refuted", "one-step", shape_text(shp),
                   [{k: E.val(m, v) for k, v in symbolic.values(st).items()}], vac,
                   quantified=q)


@dataclass(frozen=True)
class Theorem:
    id: str
    statement: str
    check: Callable[..., Verdict]
    protocols: bool = False  # checked once per restore protocol
    depends: tuple[str, ...] = ()  # theorems its unbounded argument uses, in the same era


THEOREMS: dict[str, Theorem] = {t.id: t for t in (
    Theorem("hg-nh-exclusive", "no reachable state has a VMA with both hg and nh",
            hg_nh_exclusive),
    Theorem("prctl-transparent", "PR_SET_THP_DISABLE toggles anywhere leave every vm_flags as "
            "the same sequence without them", prctl_transparent),
    Theorem("criu-restore-original", "the restore completes and yields the dumped mappings, "
            "VmFlags hg/nh, VMA boundaries and PR_GET value", criu_restore_original,
            protocols=True, depends=("hg-nh-exclusive", "restore-frame")),
    Theorem("no-collapse-window", "no PMD still missing dumped pages can become a THP during "
            "the restore", no_collapse_window, protocols=True, depends=("restore-frame",)),
    Theorem("restore-frame", "the lemmas that take the CRIU theorems to any number of VMAs "
            "and PMDs", restore_frame),
    Theorem("clr-is-neutral", "after MADV_CLR_HUGEPAGE a VMA's flags and eligibility equal a "
            "fresh mmap's", clr_is_neutral),
    Theorem("no-return-to-neither", "without CLR no madvise takes a VMA with hg or nh back to "
            "neither", no_return_to_neither),
    Theorem("eligibility-monotone", "setting nh or a disable mode never raises eligibility for "
            "any user", eligibility_monotone),
    Theorem("except-advised-as-madvise", "EXCEPT_ADVISED under sysfs always = no prctl under "
            "madvise, for fault and khugepaged", except_advised_as_madvise),
    Theorem("collapse-ignores-sysfs", "MADV_COLLAPSE's result does not depend on the sysfs "
            "mode", collapse_ignores_sysfs),
    Theorem("disable-inherited", "fork and execve keep PR_GET; in def-flags the new image's "
            "VMAs have nh", disable_inherited),
    Theorem("fork-and-exec", "a fork child has the parent's VMAs, flags but uffd's, pages and "
            "khugepaged list; an exec'ed image none", fork_and_exec),
    Theorem("uffd-leaves-no-trace", "UFFDIO_REGISTER then UNREGISTER or close() leaves every "
            "VMA's flags as they were", uffd_leaves_no_trace),
    Theorem("documented-returns", "every step returns 0, an error its man page lists, PR_GET's "
            "value or a signal", documented_returns),
    Theorem("pages-arrive", "a write, and UFFDIO_COPY into a registered VMA, make the pages "
            "present", pages_arrive),
    Theorem("collapse-fills-holes", "khugepaged and MADV_COLLAPSE turn an unprotected PMD with "
            "holes into a THP", collapse_fills_holes),
    Theorem("sysfs-is-global", "a write to transparent_hugepage/enabled sets the mode and "
            "changes nothing else", sysfs_is_global),
    Theorem("status-shows-prctl", "/proc/PID/status THP_enabled is 0 exactly when the prctl "
            "disables THP completely", status_shows_prctl),
)}


def run_one(theorem: Theorem, era: Era, protocol: str | None) -> Verdict:
    """One obligation.  A vacuous check (assumptions unsatisfiable, or an input value that
    never occurs) is `unknown`, whatever the solver said about the claim."""
    try:
        v = theorem.check(era, protocol) if protocol else theorem.check(era)
    except Vacuous as e:
        return Verdict("unknown", "vacuous", vacuity=[str(e)])
    if v.vacuity:
        v.note = "; ".join(filter(None, [f"{v.verdict} but vacuous", v.note]))
        v.verdict = "unknown"
    return v
