"""A theorem's verdict, what it quantified over, and counterexample replay.

A verdict says how it was decided (`method`, `bound`) and over what (`quantified`: per input
dimension, how many of its values the assumptions allow).  A dimension with fewer values than
it should have (sysfs fixed to one mode, a prctl mode no state has, a step kind that never
succeeds) makes the check vacuous there, and the verdict `unknown`.

A counterexample is the solver's model made concrete: `minimal_model` picks, among all the
models of the refutation, one that minimises the named measures in order (z3.Optimize,
lexicographic), so the trace is the shortest of the bound and the same on every run; `replay`
runs it on the interpreter, and the theorem states what refutes it (`difference`) from that
replay, not from the solver.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import z3

from vmaflags.model import concrete
from vmaflags.model.eras import Era
from vmaflags.model.observe import Observation, Vma, observe
from vmaflags.model.state import empty_state
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
    difference: list[str] = field(default_factory=list)  # what the replayed trace refutes
    minimal: str | None = None  # by what measure the counterexample is the least

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


# Who takes a step of a counterexample: the process the theorem is about (the dumped one, a
# run from a fresh process), CRIU's restorer, or an adversary that may act on the restorer's mm
# at any time (a khugepaged scan, MADV_COLLAPSE by another process: process_madvise) or race
# the process's own protection (a fault in another thread, fault-vs-prctl).  An observer's
# steps end both traces alike only to make a difference visible (criu-khugepaged-registered's
# khugepaged scan: the list itself cannot be read).
ROLES = {"restore": "restorer", "khugepaged": "adversary", "collapse": "adversary",
         "fault": "adversary"}


def role_of(process: str) -> str:
    return ROLES.get(process, "process")


def replay(era: Era, steps: list[Syscall], sysfs: int, arena_blocks: int, process: str,
           adversary: int = 0, observer: int = 0) -> list[dict]:
    """Run a trace on the concrete interpreter from a fresh process; one dict per step.  The
    last `adversary` (or `observer`) steps are an adversary's (an observer's), taken in the
    process's mm."""
    script = Script(tuple(steps), arena_blocks)
    out = []
    for n, (sc, o) in enumerate(zip(steps, concrete.run(era, script, sysfs)), 1):
        d = {"process": process, "step": n, "syscall": sc.text(), "observation": o.obs.text(),
             "sysfs": SYSFS_MODES[sysfs], "arena": arena_blocks,
             "role": ("observer" if n > len(steps) - observer else
                      "adversary" if n > len(steps) - adversary else role_of(process))}
        if o.child is not None:
            d["child"] = o.child.text()
        out.append(d)
    return out


def minimal_model(facts: list[Any], measures: list[tuple[str, Any]], prefer: Sequence[Any] = ()
                  ) -> tuple[z3.ModelRef, str]:
    """A model of `facts` that minimises each measure (name, Int term) in order, then each
    term of `prefer` (readability and a canonical choice among equally small models; not
    claimed), and the text saying by what measure it is the least."""
    o = z3.Optimize()
    o.set("timeout", 60000)
    # Simplified first, as E.check does (no variable is eliminated: the model stays whole)
    goal = z3.Goal()
    goal.add(*facts)
    o.add(z3.Then("simplify", "propagate-values")(goal)[0].as_expr())
    for _, term in measures:
        o.minimize(term)
    for term in prefer:
        o.minimize(term)
    if o.check() != z3.sat:  # the facts are satisfiable: only a timeout gets here
        raise RuntimeError(f"minimising a counterexample: {o.reason_unknown()}")
    m = o.model()
    assert z3.is_true(m.eval(z3.And(*facts), model_completion=True))
    text = ", then fewest ".join(filter(None, (
        ", ".join(f"{name} ({E.val(m, t)})" for name, t in part)
        for part in (measures[:1], measures[1:]))))
    return m, "fewest " + text if text else ""


def count(terms: Sequence[Any]) -> Any:
    """How many of the Bool terms hold (an Int term)."""
    return z3.Sum(*(z3.If(t, 1, 0) for t in terms)) if terms else z3.IntVal(0)


# --- what a replayed trace shows ----------------------------------------------------------

def observed(step: dict) -> Observation:
    from vmaflags.conformance.driver import parse_line

    return parse_line("0 " + step["observation"])[1]


def final(era: Era, trace: list[dict], process: str, sysfs: int, blocks: int) -> Observation:
    """What `process` shows after its last step of the trace (a fresh process if none)."""
    mine = [s for s in trace if s["process"] == process]
    return observed(mine[-1]) if mine else observe(era, empty_state(blocks, sysfs), 0)


def vma_text(v: Vma, uffd: bool = True, eligible: bool = True) -> str:
    """`0x0-0x200000 hg elig=1`; without uffd's um/uw if not `uffd`."""
    flags = v.flags if uffd else "+".join(f for f in v.flags.split("+")
                                          if f not in ("um", "uw")) or "-"
    e = f" elig={v.eligible}" if eligible and v.eligible is not None else ""
    return f"{v.start:#x}-{v.end:#x} {flags}{e}"


def vma_difference(names: tuple[str, str], a: Observation, b: Observation, uffd: bool = True,
                   eligible: bool = True) -> list[str]:
    """The VMAs one observation has and the other lacks (bounds, flags, THPeligible), as
    `NAME_A: ...; NAME_B: ...`; empty if they show the same VMAs."""
    ta = [vma_text(v, uffd, eligible) for v in a.vmas]
    tb = [vma_text(v, uffd, eligible) for v in b.vmas]
    only_a, only_b = [t for t in ta if t not in tb], [t for t in tb if t not in ta]
    if not only_a and not only_b:
        return []
    return [f"{names[0]}: {', '.join(only_a) or 'no VMA'}; "
            f"{names[1]}: {', '.join(only_b) or 'no VMA'}"]
