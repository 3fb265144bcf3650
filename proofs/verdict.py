"""A theorem's verdict, what it quantified over, and counterexample replay.

A verdict says how it was decided (`method`, `bound`) and over what (`quantified`: per input
dimension, how many of its values the assumptions allow).  A dimension with fewer values than
it should have (sysfs fixed to one mode, a prctl mode no state has, a step kind that never
succeeds) makes the check vacuous there, and the verdict `unknown`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import z3

from vmaflags.model import concrete
from vmaflags.model.eras import Era
from vmaflags.model.syscalls import SYSFS_MODES, Script, Syscall

from . import engine as E


@dataclass
class Verdict:
    verdict: str  # proved | refuted | aborted | unknown
    method: str  # induction | one-step | rule-level | bounded | unbounded (<argument>)
    bound: str | None = None  # the shape or search depth the method was applied to
    counterexample: Any = None  # list of replayed steps (dicts), or input values
    vacuity: list[str] = field(default_factory=list)  # empty: not vacuous
    note: str = ""
    quantified: dict[str, str] = field(default_factory=dict)  # dimension -> "k/n"
    argument: list[str] = field(default_factory=list)  # unbounded: the lemmas checked
    cross_check: str | None = None  # unbounded: the bounded run's verdict

    @property
    def label(self) -> str:
        return self.method + (f" [{self.bound}]" if self.bound else "")


class Vacuous(Exception):
    pass


def shape_text(shp: Sequence[int]) -> str:
    """[2, 2] -> "2x2": PMDs x cells per PMD (the shapes used are uniform)."""
    return f"{len(shp)}x{shp[0]}"


def sat_or_vacuous(what: str, *facts: Any) -> None:
    r, _ = E.check(*facts)
    if r != z3.sat:
        raise Vacuous(f"{what}: unsatisfiable")


def coverage(facts: list[Any], dims: list[tuple[str, Any, Sequence[Any]]]
             ) -> tuple[dict[str, str], list[str]]:
    """For each dimension (name, term, values): how many values the facts allow.  Returns the
    counts and a vacuity problem per dimension that misses a value."""
    counts, problems = {}, []
    found = iter(E.satisfiable_each(facts, [term == v for _, term, values in dims
                                            for v in values]))
    for name, term, values in dims:
        k = sum(next(found) for _ in values)
        counts[name] = f"{k}/{len(values)}"
        if k < len(values):
            problems.append(f"{name}: only {k} of {len(values)} values occur")
    return counts, problems


def enabled(facts: list[Any], choice: E.Choice, ret: Any) -> tuple[str, list[str]]:
    """Each option of a nondeterministic step succeeds (returns 0) from some state."""
    ok = E.satisfiable_each(facts, [z3.And(choice.pick == i, ret == 0)
                                    for i in range(len(choice.options))])
    bad = [sc.text() for sc, good in zip(choice.options, ok) if not good]
    n = len(choice.options)
    return f"{n - len(bad)}/{n}", [f"{b} never succeeds" for b in bad]


def replay(era: Era, steps: list[Syscall], sysfs: int, arena_blocks: int, process: str
           ) -> list[dict]:
    """Run a trace on the concrete interpreter from a fresh process; one dict per step."""
    script = Script(tuple(steps), arena_blocks)
    out = []
    for n, (sc, o) in enumerate(zip(steps, concrete.run(era, script, sysfs)), 1):
        d = {"process": process, "step": n, "syscall": sc.text(), "observation": o.obs.text(),
             "sysfs": SYSFS_MODES[sysfs], "arena": arena_blocks}
        if o.child is not None:
            d["child"] = o.child.text()
        out.append(d)
    return out
