"""Symbolic runs of the model: states, nondeterministic steps, solver calls and traces.

Everything here drives `vmaflags.model.step.transition` with the Z3 backend; no kernel rule is
restated.  A symbolic state has a fixed shape (cells per PMD block): every range a symbolic
step uses is a union of cells, which loses nothing for a sequence of n range steps on a shape of
2n + blocks cells (the cut points of the ranges), and for per-cell properties on any shape.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import z3

from vmaflags.model import step as S
from vmaflags.model import symbolic
from vmaflags.model.backend import Z3
from vmaflags.model.eras import Era
from vmaflags.model.state import Block, Cell, Mm, State, cells, hole
from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, MADV_COLLAPSE, MADV_HUGEPAGE,
                                     MADV_NOHUGEPAGE, PAGE, PMD_PAGES, STEPS, Execve, Fork,
                                     Khugepaged, Madvise, Mmap, Munmap, PrctlGet, PrctlSet,
                                     Syscall, Sysfs, Touch, UffdClose, UffdCopy, UffdRegister,
                                     UffdUnregister)

_ids = itertools.count()


def fresh(name: str) -> str:
    return f"{name}!{next(_ids)}"


def merge(c: Any, a: Any, b: Any) -> Any:
    """ite over whole states (same shape) or their parts."""
    if isinstance(a, tuple):
        return type(a)(*(merge(c, x, y) for x, y in zip(a, b))) if hasattr(a, "_fields") \
            else tuple(merge(c, x, y) for x, y in zip(a, b))
    return Z3.ite(c, a, b)


def empty(shp: tuple[int, ...], sysfs: Any = None) -> tuple[State, Any]:
    """A fresh process (nothing mapped, no prctl) whose cells have symbolic bounds; the
    constraint says the bounds are well formed.  sysfs is symbolic unless given."""
    st = symbolic.state(shp, "e")
    blank = tuple(Block(Z3.F, Z3.F, Z3.F, tuple(hole(c.start, c.end) for c in blk.cells))
                  for blk in st.blocks)
    mode = st.sysfs if sysfs is None else sysfs
    st0 = State(blank, Mm(Z3.F, Z3.F, Z3.F, Z3.F), mode, 1)
    return st0, symbolic.wellformed(st0)


def arg_choices(st: State, sc: Syscall, tag: str) -> tuple[tuple[Any, ...], Any]:
    """Symbolic arguments for `sc`'s kind, and what keeps them meaningful: ranges start at a
    cell start and end at a cell end; prctl arguments are small (0..3, so every EINVAL case
    of every era is reachable); sysfs is a mode."""
    args = symbolic.args_of(sc, tag)
    t = type(sc)
    if t in (PrctlSet, PrctlGet):
        return args, z3.And(*(z3.And(x >= 0, x <= 3) for x in args))
    if t is Sysfs:
        return args, z3.And(args[0] >= 0, args[0] <= 2)
    if not args:
        return args, z3.BoolVal(True)
    a, b = args
    cs = cells(st)
    return args, z3.And(z3.Or(*(a == c.start for c in cs)), z3.Or(*(b == c.end for c in cs)),
                        a < b)


# The alphabet of a nondeterministic step: per step kind of the script language
# (syscalls.STEPS), the templates of that kind an era has; arguments are symbolic.  A kind of the
# language missing here makes `alphabet` fail, so a new step kind cannot be left out of the
# inductions silently (tests/test_proofs.py checks the table against syscalls.STEPS).
_PAGE = (0, PAGE)
TEMPLATES: dict[type, Callable[[Era], list[Syscall]]] = {
    Mmap: lambda era: [Mmap(*_PAGE)],
    Munmap: lambda era: [Munmap(*_PAGE)],
    Touch: lambda era: [Touch(*_PAGE)],
    Madvise: lambda era: [Madvise(*_PAGE, a) for a in (MADV_HUGEPAGE, MADV_NOHUGEPAGE)]
    + ([Madvise(*_PAGE, MADV_COLLAPSE)] if era.madv_collapse else [])
    + ([Madvise(*_PAGE, MADV_CLR_HUGEPAGE)] if era.clr_hugepage is not None else []),
    PrctlSet: lambda era: [PrctlSet()],
    PrctlGet: lambda era: [PrctlGet()],
    UffdRegister: lambda era: [UffdRegister(*_PAGE, m, w)
                               for m, w in ((True, False), (False, True), (True, True))],
    UffdUnregister: lambda era: [UffdUnregister(*_PAGE)],
    UffdCopy: lambda era: [UffdCopy(*_PAGE)],
    UffdClose: lambda era: [UffdClose()],
    Fork: lambda era: [Fork()],
    Execve: lambda era: [Execve()],
    Sysfs: lambda era: [Sysfs(0)],
    Khugepaged: lambda era: [Khugepaged()],
}


def alphabet(era: Era, kinds: Sequence[type] | None = None) -> list[Syscall]:
    """Every template of every step kind of the language (or of `kinds`) in `era`."""
    missing = [name for name, k in STEPS.items() if k not in TEMPLATES]
    if missing:
        raise LookupError(f"step kinds without templates in proofs.engine: {', '.join(missing)}")
    return [sc for k in STEPS.values() if kinds is None or k in kinds for sc in TEMPLATES[k](era)]


@dataclass
class Choice:
    """One nondeterministic step: which template, with which arguments."""

    pick: Any  # Int: index into `options`
    options: list[Syscall]
    args: list[tuple[Any, ...]]

    def concrete(self, m: z3.ModelRef) -> Syscall:
        i = val(m, self.pick)
        return instantiate(self.options[i], [val(m, x) for x in self.args[i]])


def instantiate(template: Syscall, vals: list[int]) -> Syscall:
    """The concrete syscall of `template`'s kind with argument values from the solver."""
    t = type(template)
    if t in (PrctlSet, PrctlGet):
        return t(*vals)
    if t is Sysfs:
        return Sysfs(vals[0])
    if not vals:
        return template
    a, b = vals
    if t is Madvise:
        return Madvise(a * PAGE, (b - a) * PAGE, template.advice)
    if t is UffdRegister:
        return UffdRegister(a * PAGE, (b - a) * PAGE, template.missing, template.wp)
    return t(a * PAGE, (b - a) * PAGE)


@dataclass
class Run:
    """A symbolic run from a start state: its states, steps and side conditions."""

    era: Era
    states: list[State]
    rets: list[Any] = field(default_factory=list)
    children: list[Any] = field(default_factory=list)  # fork child state or None, per step
    choices: list[Choice] = field(default_factory=list)
    side: list[Any] = field(default_factory=list)
    log: list[Any] = field(default_factory=list)  # per step: a Choice, or (template, args, guard)

    @property
    def last(self) -> State:
        return self.states[-1]

    def step(self, options: list[Syscall], guard: Any = None) -> Choice:
        """One step chosen among `options` (arguments symbolic)."""
        pre = self.last
        pick = z3.Int(fresh("pick"))
        self.side.append(z3.And(pick >= 0, pick < len(options)))
        post: State | None = None
        ret: Any = 0
        child: Any = None
        all_args = []
        for i, sc in enumerate(options):
            args, ok = arg_choices(pre, sc, fresh("arg"))
            all_args.append(args)
            self.side.append(z3.Implies(pick == i, ok))
            r, p, ch = S.transition(Z3, self.era, pre, sc, args)
            ch = ch if ch is not None else pre
            if post is None:
                post, ret, child = p, r, ch
            else:
                post, ret = merge(pick == i, p, post), Z3.ite(pick == i, r, ret)
                child = merge(pick == i, ch, child)
        assert post is not None
        if guard is not None:
            post, ret = merge(guard, post, pre), Z3.ite(guard, ret, 0)
        self.states.append(post)
        self.rets.append(ret)
        self.children.append(child)
        c = Choice(pick, options, all_args)
        self.choices.append(c)
        self.log.append(c if guard is None else (c, guard))
        return c

    def do(self, sc: Syscall, args: tuple[Any, ...], guard: Any = None) -> None:
        """A determined step (protocols): `sc`'s kind with the given argument terms, taken
        only where `guard` holds (else the state stays)."""
        pre = self.last
        r, p, ch = S.transition(Z3, self.era, pre, sc, args)
        if guard is not None:
            p, r = merge(guard, p, pre), Z3.ite(guard, r, 0)
        self.states.append(p)
        self.rets.append(r)
        self.children.append(ch)
        self.log.append((sc, args, guard))

    def trace(self, m: z3.ModelRef, upto: int | None = None) -> list[Syscall]:
        """The concrete syscalls the solver's model took (guarded-off steps left out)."""
        out = []
        for entry in self.log[:upto]:
            if isinstance(entry, Choice):
                out.append(entry.concrete(m))
            elif isinstance(entry[0], Choice):
                if val(m, entry[1]):
                    out.append(entry[0].concrete(m))
            else:
                sc, args, guard = entry
                if guard is None or val(m, guard):
                    out.append(instantiate(sc, [val(m, x) for x in args]))
        return out


def val(m: z3.ModelRef, x: Any) -> Any:
    """The Python value (bool or int) of a term, or of a constant, in the solver's model."""
    if isinstance(x, (bool, int)):
        return x
    v = m.eval(x, model_completion=True)
    return z3.is_true(v) if z3.is_bool(v) else v.as_long()


def check(*facts: Any, timeout_ms: int = 60000) -> tuple[z3.CheckSatResult, z3.ModelRef | None]:
    """Satisfiable?  The terms are mostly ite chains over equalities of cell fields, so
    propagating values and solving equations before SMT search pays (about 3x here)."""
    s = z3.Then("simplify", "propagate-values", "solve-eqs", "smt").solver()
    s.set("timeout", timeout_ms)
    s.add(*facts)
    r = s.check()
    return r, (s.model() if r == z3.sat else None)


def satisfiable_each(facts: list[Any], queries: list[Any]) -> list[bool]:
    """For each query: are the facts and it satisfiable?  One incremental solver for all
    (the queries are small additions to the same facts: coverage and vacuity checks).  Every
    check is made after a push, also for a query that is True: before the first push Z3 runs
    its non-incremental solver, 30x slower on a restore's facts."""
    s = z3.Solver()
    s.set("timeout", 60000)
    s.add(*facts)
    out = []
    for q in queries:
        if q is False:
            out.append(False)
            continue
        s.push()
        if q is not True:
            s.add(q)
        out.append(s.check() == z3.sat)
        s.pop()
    return out


def flags_equal(a: Cell, b: Cell) -> Any:
    return z3.And(a.mapped == b.mapped, a.hg == b.hg, a.nh == b.nh, a.um == b.um,
                  a.uw == b.uw)


def all_cells(st: State, pred: Callable[[Cell], Any]) -> Any:
    return z3.And(*(pred(c) for c in cells(st)))


def page_bytes(pages: int) -> int:
    return pages * PAGE


__all__ = ["Run", "Choice", "alphabet", "check", "empty", "merge", "instantiate", "fresh",
           "flags_equal", "all_cells", "PMD_PAGES", "page_bytes"]
