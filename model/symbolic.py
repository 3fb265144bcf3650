"""The Z3 encoding: states with symbolic fields, stepped by the very same step.py code.

A symbolic state has a fixed *shape*: how many cells each PMD block has.  Cell bounds, flags,
anon_vma ids, population, the mm bits and sysfs are Z3 variables; `wellformed` says which
valuations are states the concrete interpreter can be in.  `Step` builds the transition of one
syscall kind once; `Step.evaluate` plugs in a concrete state, which is how tests show that the
Z3 terms and the interpreter agree.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import z3

from . import step as S
from .backend import Z3
from .eras import Era
from .observe import cell_facts
from .rules import task_thp_status, thp_disable_value
from .state import Block, Cell, Mm, State, cells
from .syscalls import PMD_PAGES, Madvise, PrctlGet, PrctlSet, Syscall, Sysfs, UffdRegister

_ids = itertools.count()

BOOL_FIELDS = ("mapped", "brk", "hg", "nh", "um", "uw", "pop")


def shape(st: State) -> tuple[int, ...]:
    return tuple(len(b.cells) for b in st.blocks)


def state(shp: tuple[int, ...], name: str = "s") -> State:
    """A state of shape `shp` whose every field is a fresh Z3 variable."""
    n = next(_ids)
    blocks = []
    for k, m in enumerate(shp):
        cs = []
        for j in range(m):
            p = f"{name}{n}_b{k}c{j}_"
            cs.append(Cell(z3.Int(p + "start"), z3.Int(p + "end"), *(
                z3.Bool(p + f) for f in ("mapped", "brk", "hg", "nh", "um", "uw")),
                z3.Int(p + "av"), z3.Bool(p + "pop")))
        p = f"{name}{n}_b{k}_"
        blocks.append(Block(z3.Bool(p + "thp"), z3.Bool(p + "ptable"), z3.Bool(p + "cow"),
                            tuple(cs)))
    p = f"{name}{n}_"
    mm = Mm(*(z3.Bool(p + f) for f in Mm._fields))
    return State(tuple(blocks), mm, z3.Int(p + "sysfs"), z3.Int(p + "next_av"))


def wellformed(st: State) -> Any:
    """The structural invariants every state of the interpreter satisfies."""
    cs = cells(st)
    c = []
    for k, blk in enumerate(st.blocks):
        lo, hi = k * PMD_PAGES, (k + 1) * PMD_PAGES
        c += [blk.cells[0].start == lo, blk.cells[-1].end == hi]
        c += [x.end == y.start for x, y in zip(blk.cells, blk.cells[1:])]
        c += [z3.Implies(blk.thp, z3.And(z3.Not(blk.ptable),
                                         *(x.mapped for x in blk.cells),
                                         *(x.pop for x in blk.cells)))]
        # a present page has a PTE table or a PMD THP over it
        c += [z3.Implies(x.pop, z3.Or(blk.ptable, blk.thp)) for x in blk.cells]
        # a page table stays only while some VMA is in the PMD
        c += [z3.Implies(blk.ptable, z3.Or(*(x.mapped for x in blk.cells)))]
        c += [z3.Implies(blk.cow, z3.Or(blk.ptable, blk.thp))]
    for i, x in enumerate(cs):
        c += [x.start < x.end, x.av >= 0, x.av < st.next_av]
        c += [z3.Implies(z3.Not(x.mapped), z3.And(
            z3.Not(x.brk), z3.Not(x.hg), z3.Not(x.nh), z3.Not(x.um), z3.Not(x.uw),
            x.av == 0, z3.Not(x.pop)))]
        if i == 0:
            c += [x.brk == x.mapped]
        else:
            p = cs[i - 1]
            c += [z3.Implies(z3.And(x.mapped, z3.Not(p.mapped)), x.brk)]
            # cells of one VMA share its flags and anon_vma
            c += [z3.Implies(z3.And(x.mapped, z3.Not(x.brk)), z3.And(
                x.hg == p.hg, x.nh == p.nh, x.um == p.um, x.uw == p.uw, x.av == p.av))]
        c += [z3.Implies(x.pop, x.av > 0)]
    c += [st.sysfs >= 0, st.sysfs <= 2, st.next_av >= 1]
    return z3.And(*c)


def values(st: State) -> dict[str, Any]:
    """Field name -> value, flattened (for substitution and comparison)."""
    out: dict[str, Any] = {}
    for k, blk in enumerate(st.blocks):
        out[f"b{k}.thp"], out[f"b{k}.ptable"], out[f"b{k}.cow"] = blk.thp, blk.ptable, blk.cow
        for j, c in enumerate(blk.cells):
            for f in Cell._fields:
                out[f"b{k}c{j}.{f}"] = getattr(c, f)
    for f in Mm._fields:
        out[f"mm.{f}"] = getattr(st.mm, f)
    out["sysfs"], out["next_av"] = st.sysfs, st.next_av
    return out


def _lift(v: Any) -> Any:
    return z3.BoolVal(v) if isinstance(v, bool) else z3.IntVal(v)


def args_of(sc: Syscall, prefix: str) -> tuple[Any, ...]:
    """Symbolic arguments for a syscall of `sc`'s kind (see step.transition)."""
    t = type(sc)
    if t in (PrctlSet, PrctlGet):
        return tuple(z3.Int(f"{prefix}_a{i}") for i in range(2, 6))
    if t is Sysfs:
        return (z3.Int(f"{prefix}_mode"),)
    if hasattr(sc, "off"):
        return (z3.Int(f"{prefix}_a"), z3.Int(f"{prefix}_b"))
    return ()


def kind(sc: Syscall) -> tuple:
    """What the symbolic step is specialised on: the step kind and its Python-level parameters."""
    if isinstance(sc, Madvise):
        return (Madvise, sc.advice)
    if isinstance(sc, UffdRegister):
        return (UffdRegister, sc.missing, sc.wp)
    return (type(sc),)


@dataclass
class Step:
    """The symbolic transition of one syscall kind from states of one shape."""

    era: Era
    pre: State
    args: tuple[Any, ...]
    ret: Any
    post: State
    child: State | None

    @classmethod
    def build(cls, era: Era, shp: tuple[int, ...], sc: Syscall) -> Step:
        pre = state(shp)
        args = args_of(sc, f"arg{next(_ids)}")
        ret, post, child = S.transition(Z3, era, pre, sc, args)
        return cls(era, pre, args, ret, post, child)

    def evaluate(self, pre: State, args: tuple[Any, ...]) -> dict[str, Any]:
        """Plug a concrete state and arguments into the terms; Python values out."""
        subst = [(var, _lift(val)) for var, val in
                 zip(values(self.pre).values(), values(pre).values())]
        subst += [(var, _lift(val)) for var, val in zip(self.args, args)]
        out = outcome(Z3, self.era, self.ret, self.post, self.child)
        return {k: _value(z3.simplify(z3.substitute(v, *subst))) if z3.is_expr(v) else v
                for k, v in out.items()}


def outcome(B: Any, era: Era, ret: Any, post: State, child: State | None) -> dict[str, Any]:
    """Everything a step determines: its return value, the new state field by field, what
    /proc would show of it per cell, and the fork child's state."""
    out = {"ret": ret, **{f"post.{k}": v for k, v in values(post).items()},
           "obs.get": thp_disable_value(B, era, post.mm),
           "obs.thp_enabled": task_thp_status(B, era, post.mm)}
    for i, f in enumerate(cell_facts(B, era, post)):
        out[f"obs.cell{i}.vstart"], out[f"obs.cell{i}.vend"] = f.view.vstart, f.view.vend
        out[f"obs.cell{i}.eligible"], out[f"obs.cell{i}.ahp"] = f.eligible, f.anon_huge_kb
    if child is not None:
        out.update({f"child.{k}": v for k, v in values(child).items()})
    return out


def _value(e: Any) -> Any:
    if z3.is_true(e):
        return True
    if z3.is_false(e):
        return False
    if z3.is_int_value(e):
        return e.as_long()
    raise ValueError(f"term did not reduce to a value: {e}")
