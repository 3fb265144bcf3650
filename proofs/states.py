"""The symbolic states and inputs the theorems quantify over, and their coverage dimensions.

`sane` is what every reachable state satisfies (well formed, no VMA with both hg and nh:
hg-nh-exclusive proves it inductive); `era_mm` the prctl states an era allows, derived from
the model's own PR_SET_THP_DISABLE rather than restated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import z3

from vmaflags.model import rules, symbolic
from vmaflags.model.backend import PY, Z3
from vmaflags.model.eras import Era
from vmaflags.model.state import Flags, Mm, State, cells

from . import engine as E

def sane(st: State) -> Any:
    """Well formed and no VMA with both hg and nh (the invariant hg-nh-exclusive proves)."""
    return z3.And(symbolic.wellformed(st),
                  *(z3.Not(z3.And(c.hg, c.nh)) for c in cells(st)))


def _reachable_mms(era: Era) -> set[Mm]:
    """The prctl states PR_SET_THP_DISABLE (as the model has it) leads to from a fresh mm."""
    fresh = Mm(False, False, False, False)
    return {rules.prctl_set_thp_disable(PY, era, fresh, a2, a3, 0, 0)[1]
            for a2 in (0, 1) for a3 in (0, 1, 2)}


def era_mm(era: Era, mm: Mm) -> Any:
    """The prctl state an mm can be in, in this era.  The registration bit is free."""
    return z3.Or(*(z3.And(mm.def_nh == r.def_nh, mm.disable == r.disable,
                          mm.except_adv == r.except_adv) for r in _reachable_mms(era)))


def era_modes(era: Era) -> list[int]:
    """The PR_GET_THP_DISABLE values a process can have in the era."""
    return sorted({rules.thp_disable_value(PY, era, mm) for mm in _reachable_mms(era)})


def vm_flags(f: Any) -> Any:
    """hg / nh / neither as 1 / 2 / 0 (a coverage dimension)."""
    return Z3.ite(f.hg, 1, Z3.ite(f.nh, 2, 0))


def state_dims(era: Era, st: State) -> list[tuple[str, Any, list[int]]]:
    """What a state-level check must range over: every sysfs mode, every prctl mode of the
    era, and a mapped cell with each of hg / nh / neither."""
    c = cells(st)[0]
    return [("sysfs", st.sysfs, [0, 1, 2]),
            ("prctl mode", rules.thp_disable_value(Z3, era, st.mm), era_modes(era)),
            ("vm_flags", Z3.ite(c.mapped, vm_flags(c), -1), [0, 1, 2])]


def state(shp: tuple[int, ...], era: Era) -> tuple[State, Any]:
    st = symbolic.state(shp)
    return st, z3.And(sane(st), era_mm(era, st.mm))




@dataclass
class Inputs:
    """Symbolic inputs of the rules for one VMA: its flags, the mm, sysfs, whether it has an
    anon_vma and whether an aligned PMD fits in it; `ok`: a state the era allows."""

    f: Flags
    mm: Mm
    sysfs: Any
    anon: Any
    fits: Any
    ok: Any

    def dims(self, era: Era, sysfs: bool = True) -> list[tuple[str, Any, list[int]]]:
        d = [("vm_flags", vm_flags(self.f), [0, 1, 2]),
             ("prctl mode", rules.thp_disable_value(Z3, era, self.mm), era_modes(era)),
             ("anon_vma", Z3.ite(self.anon, 1, 0), [0, 1]),
             ("pmd fits", Z3.ite(self.fits, 1, 0), [0, 1])]
        return d + ([("sysfs", self.sysfs, [0, 1, 2])] if sysfs else [])

    def values(self, m: z3.ModelRef) -> dict:
        ev = lambda x: E.val(m, x)  # noqa: E731
        return {"vmflags": {k: ev(v) for k, v in self.f._asdict().items()},
                "mm": {k: ev(v) for k, v in self.mm._asdict().items()},
                "sysfs": ev(self.sysfs), "anon_vma": ev(self.anon), "pmd_fits": ev(self.fits)}


def inputs(era: Era) -> Inputs:
    n = E.fresh("in")
    f = Flags(*(z3.Bool(f"{n}_{x}") for x in Flags._fields))
    mm = Mm(*(z3.Bool(f"{n}_mm_{x}") for x in Mm._fields))
    sysfs, anon, fits = z3.Int(f"{n}_sysfs"), z3.Bool(f"{n}_anon"), z3.Bool(f"{n}_fits")
    ok = z3.And(z3.Not(z3.And(f.hg, f.nh)), era_mm(era, mm), sysfs >= 0, sysfs <= 2)
    return Inputs(f, mm, sysfs, anon, fits, ok)
