"""`vmaflags reproduce`: a proof's counterexample as C programs that run it on a kernel.

The obligation is solved as `vmaflags prove` solves it (proofs.command.run: the trace every
`prove` command prints for that row, byte for byte); its trace is split into processes (`#! process:` sections, replay.py),
and every step's observation is predicted by the model's concrete interpreter
(driver.run_model) for the era.  reproduce_c.py renders those steps and predictions as C: a
standalone program with KTAP output, and a kselftest_harness.h test.  The theorem's
refutation -- what the trace shows that the theorem denies -- is asserted at the end as
*facts*: properties of the recorded observations (a PR_GET value, the VmFlags at an offset, a
PMD that is a THP), each with the value the model gives it, found from the model's
observations by the theorem's own definition of what differs (proofs.restore.OBSERVATIONS for
the CRIU theorem).  Nothing here says what a kernel should answer: the model does.

This lives in conformance/ rather than proofs/: like replay.py it is where a counterexample
meets a kernel, and its C mirrors executor.c's observation (SCRIPT.md), which proofs/ knows
nothing of.
"""
from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass, field
from typing import Callable

from vmaflags.model import concrete, rules
from vmaflags.model.backend import PY
from vmaflags.model.eras import Era
from vmaflags.model.errno import ret_text
from vmaflags.model.observe import Observation, flag_text, observe
from vmaflags.model.state import State, empty_state
from vmaflags.model.syscalls import (PMD, SYSFS_MODES, Madvise, Script, ScriptError, Syscall,
                                     Sysfs, parse_script, parse_step)

from . import driver
from .replay import from_counterexample, split


class ReproduceError(ValueError):
    """Nothing to reproduce, or bad input: one line."""


@dataclass(frozen=True)
class Process:
    name: str
    script: Script
    sysfs: int  # the model's sysfs value the process starts (and runs) under


@dataclass(frozen=True)
class Check:
    """One KTAP test: the observation after a step (`label` "3"), of a fork child ("3c"), or of
    a process that made no call ("0": a fresh process), as the model predicts it."""

    number: int  # 1-based, in the order the program prints them
    process: str
    label: str
    step: Syscall | None
    want: Observation

    @property
    def what(self) -> str:
        if self.step is None:
            return f"{self.process} 0 (no step: a fresh process)"
        child = " (child)" if self.label.endswith("c") else ""
        return f"{self.process} {self.label} {self.step.text()}{child}"


# Properties of an observation a fact can assert (reproduce_c.py computes them the same way
# from the kernel's observation).  `at` is a byte offset in the arena, or a PMD index for
# pmd_thp; `fresh` reads a probe record: the VmFlags of a fresh anonymous mapping.
PROPS = ("get", "ret", "mapped", "flags", "hg", "nh", "boundary", "eligible", "pmd_thp",
         "fresh")


def prop(o: Observation, name: str, at: int = 0) -> str:
    """A property of an observation, as text (mirrored by vf_prop() in reproduce_c.py)."""
    if name == "get":
        return ret_text(o.get)
    if name == "ret":
        return ret_text(o.ret)
    if name == "boundary":
        return ("VMA boundary" if any(at in (v.start, v.end) for v in o.vmas)
                else "no VMA boundary")
    if name == "pmd_thp":
        lo, hi = at * PMD, (at + 1) * PMD
        v = next((v for v in o.vmas if v.start <= lo and hi <= v.end), None)
        return "huge" if v is not None and v.anon_huge_kb >= 2048 else "not huge"
    v = next((v for v in o.vmas if v.start <= at < v.end), None)
    if name == "mapped":
        return "mapped" if v else "unmapped"
    if v is None:
        return "unmapped"
    if name == "flags":
        return v.flags
    if name in ("hg", "nh"):
        return name if name in v.flags.split("+") else f"no {name}"
    if name == "eligible":
        return "-" if v.eligible is None else str(v.eligible)
    raise ValueError(f"unknown property {name!r}")


@dataclass(frozen=True)
class Term:
    record: int  # 0-based record: a check's (number - 1), or a probe's
    prop: str
    at: int
    want: str  # the model's value
    who: str  # "dump 4": whose observation, for messages


@dataclass(frozen=True)
class Fact:
    text: str
    terms: tuple[Term, ...]


@dataclass
class Program:
    """Everything both renderings need."""

    name: str  # theorem:protocol:era
    slug: str  # for file and test names
    command: str  # the command that regenerates it
    statement: str
    verdict: str  # "refuted, bounded [2x2]: differs in get"
    expected: str
    era: Era
    sysfs: str
    arena: int
    clr_hugepage: int
    trace_text: str  # the replay file
    processes: list[Process]
    checks: list[Check]
    facts: list[Fact]
    probes: dict[str, int] = field(default_factory=dict)  # process -> probe record (fresh mmap)

    @property
    def records(self) -> int:
        return len(self.checks) + len(self.probes)

    def steps(self, process: str) -> list[Check]:
        return [c for c in self.checks if c.process == process]

    def last(self, process: str) -> Check:
        """The process's last observation of its own (not a fork child's)."""
        return [c for c in self.steps(process) if not c.label.endswith("c")][-1]


# --- from a theorem to a trace ----------------------------------------------------------------

def row(theorem: str, era_key: str, protocol: str | None):  # -> proofs.command.Row
    """The obligation solved as `vmaflags prove` solves it; ReproduceError for bad input."""
    from vmaflags.model.eras import era as era_by_id
    from vmaflags.proofs.command import run
    from vmaflags.proofs.expected import EXPECTED
    from vmaflags.proofs.theorems import THEOREMS

    if theorem not in THEOREMS:
        raise ReproduceError(f"unknown theorem {theorem!r}; valid: {', '.join(THEOREMS)}")
    base = era_key.partition("@")[0]
    era_by_id(base)  # ValueError naming the valid eras
    t = THEOREMS[theorem]
    if t.protocols and protocol is None:
        have = [p for (tid, p) in EXPECTED if tid == theorem and era_key in EXPECTED[(tid, p)]]
        raise ReproduceError(f"{theorem} is proved per restore protocol: give --protocol "
                             f"({', '.join(have) or 'none has a row in ' + era_key})")
    if not t.protocols and protocol is not None:
        raise ReproduceError(f"{theorem} has no restore protocols: drop --protocol")
    rows = EXPECTED.get((theorem, protocol))
    if rows is None:
        from vmaflags.proofs.protocols import PROTOCOLS
        raise ReproduceError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if era_key not in rows:
        what = ":".join(filter(None, (theorem, protocol)))
        raise ReproduceError(f"{what} has no row in era {era_key}; its eras: "
                             f"{', '.join(rows)}")
    (r,) = run([(theorem, protocol, era_key)], show_progress=False)
    cex = r.counterexample
    if r.verdict not in ("refuted", "aborted") or not cex:
        raise ReproduceError(f"{r.name} is {r.verdict}: no counterexample to reproduce"
                             + (f" ({r.v.note})" if r.verdict == "unknown" and r.v.note else ""))
    if not all(isinstance(s, dict) and "syscall" in s for s in cex):
        raise ReproduceError(f"{r.name} is {r.verdict} ({r.v.label}) by input values, not by "
                             "a trace from a fresh process: nothing to run")
    return r


def processes(cex: list[dict], names: tuple[str, ...] = ()) -> list[Process]:
    """The trace's processes, each a script from a fresh process: `names` in that order (one
    that made no call has no step in the trace: an empty script), then any other."""
    out = []
    for name in dict.fromkeys([*names, *(s["process"] for s in cex)]):
        mine = [s for s in cex if s["process"] == name] or [{**cex[0], "syscall": None}]
        try:
            script = Script(tuple(parse_step(s["syscall"]) for s in mine if s["syscall"]),
                            mine[0]["arena"])
        except ScriptError as e:
            raise ReproduceError(f"{name}: {e}") from None
        out.append(Process(name, script, SYSFS_MODES.index(mine[0]["sysfs"])))
    return _runnable(out)


def _runnable(out: list[Process]) -> list[Process]:
    """`out`, if a program can run it: one THP mode (which it does not set), one arena."""
    if len({p.sysfs for p in out}) > 1:
        raise ReproduceError("the trace's processes run under different sysfs modes")
    if any(isinstance(s, Sysfs) for p in out for s in p.script.steps):
        raise ReproduceError("the trace writes sysfs, which a reproducer never does: run it "
                             "with `vmaflags replay`")
    if len({p.script.arena for p in out}) > 1:
        raise ReproduceError("the trace's processes have different arenas")
    return out


def predict(era: Era, procs: list[Process]) -> list[Check]:
    """Every observation the program checks, numbered, with the model's prediction."""
    out: list[Check] = []
    for p in procs:
        if not p.script.steps:
            st = empty_state(p.script.arena, p.sysfs)
            out.append(Check(len(out) + 1, p.name, "0", None, observe(era, st, 0)))
            continue
        for label, obs in driver.run_model(era, p.script, p.sysfs):
            step = p.script.steps[int(label.rstrip("c")) - 1]
            out.append(Check(len(out) + 1, p.name, label, step, obs))
    return out


def final_state(era: Era, p: Process) -> State:
    st = empty_state(p.script.arena, p.sysfs)
    for sc in p.script.steps:
        st = concrete.run_syscall(era, st, sc).state
    return st


# --- the refutation, per theorem -------------------------------------------------------------

def _witness(a: Observation, b: Observation, name: str) -> int:
    """The first offset where property `name` of a and b differ (VMA edges are the candidates:
    the properties are constant between them)."""
    edges = sorted({0, *(x for o in (a, b) for v in o.vmas for x in (v.start, v.end))})
    for x in edges:
        if prop(a, name, x) != prop(b, name, x):
            return x
    raise ReproduceError(f"no offset where {name} differs")


def _differs(p: Program, name: str, ca: Check, cb: Check, what: str) -> Fact:
    x = _witness(ca.want, cb.want, name)
    ta = Term(ca.number - 1, name, x, prop(ca.want, name, x), f"{ca.process} {ca.label}")
    tb = Term(cb.number - 1, name, x, prop(cb.want, name, x), f"{cb.process} {cb.label}")
    return Fact(f"{what} at {x:#x}: {ca.process} {ta.want}, {cb.process} {tb.want}", (ta, tb))


# criu-restore-original's compared observations -> the property that shows each
_CRIU_PROPS = {"mapped": "mapped", "hg": "hg", "nh": "nh", "vma": "boundary",
               "eligible": "eligible"}


def _criu_restore_original(p: Program, r) -> list[Fact]:
    from vmaflags.proofs.restore import OBSERVATIONS

    if r.verdict == "aborted":
        failed = [c for c in p.steps("restore")
                  if not c.label.endswith("c") and c.want.ret != 0]
        if not failed:
            raise ReproduceError(f"no restore step fails in the model of {p.era.id}")
        c = failed[0]
        t = Term(c.number - 1, "ret", 0, prop(c.want, "ret"), f"restore {c.label}")
        return [Fact(f"restore step {c.label} ({c.step.text()}) returns {t.want}: CRIU "
                     "stops the restore", (t,))]
    dump, rest = p.last("dump"), p.last("restore")
    # what the solver found different (the theorem's note); with another era's predictions,
    # whatever of the compared observations differs there
    m = re.match(r"differs in ([a-z, ]+)$", r.v.note or "")
    own = p.era is _era_of(r)
    names = m.group(1).split(", ") if own and m else list(OBSERVATIONS)
    facts = []
    for name in names:
        if name == "get":
            ta = Term(dump.number - 1, "get", 0, prop(dump.want, "get"), f"dump {dump.label}")
            tb = Term(rest.number - 1, "get", 0, prop(rest.want, "get"),
                      f"restore {rest.label}")
            if ta.want != tb.want:
                facts.append(Fact(f"PR_GET_THP_DISABLE: dumped {ta.want}, restored {tb.want}",
                                  (ta, tb)))
            elif own:
                raise ReproduceError(f"the model of {p.era.id} restores PR_GET as dumped")
            continue
        try:
            facts.append(_differs(p, _CRIU_PROPS[name], dump, rest,
                                  {"vma": "VMA boundary", "eligible": "THPeligible"}.get(
                                      name, name)))
        except ReproduceError:
            if own:
                raise
    return facts


def _no_collapse_window(p: Program, r) -> list[Fact]:
    m = re.match(r"PMD (\d+) after restore step (\d+): (.+?)(;|$)", r.v.note or "")
    if not m:
        raise ReproduceError(f"cannot read the PMD from the note {r.v.note!r}")
    k, how = int(m.group(1)), {"khugepaged": "made one by khugepaged",
                                "collapse": "made one by MADV_COLLAPSE",
                                "is a THP": "already one"}.get(m.group(3), m.group(3))
    proc = next(x for x in p.processes if x.name == "restore")
    if not final_state(p.era, proc).blocks[k].thp:
        raise ReproduceError(f"in the model of {p.era.id} PMD {k} is not a THP at the end")
    c = p.last("restore")
    t = Term(c.number - 1, "pmd_thp", k, prop(c.want, "pmd_thp", k), f"restore {c.label}")
    return [Fact(f"PMD {k} ({k * PMD:#x}-{(k + 1) * PMD:#x}), still missing dumped pages, "
                 f"is a THP ({how} after restore step {m.group(2)}): the AnonHugePages of "
                 "its VMA", (t,))]


def _pmd_range(k: int) -> str:
    return f"PMD {k} ({k * PMD:#x}-{(k + 1) * PMD:#x})"


def _thp_gone(p: Program, r) -> list[Fact]:
    """criu-thp-kept, criu-khugepaged-registered: a PMD that is a THP in the dump's last
    observation is not one in the restore's (for the latter both end with a khugepaged scan,
    proofs/backing.py CLAIMS: the list itself is not visible from user space, what a scan does
    with it is)."""
    dump, rest = p.last("dump"), p.last("restore")
    lost = [k for k in range(p.arena) if prop(dump.want, "pmd_thp", k) == "huge"
            and prop(rest.want, "pmd_thp", k) == "not huge"]
    if not lost:
        raise ReproduceError(f"in the model of {p.era.id} no dumped THP is lost")
    k = lost[0]
    ta = Term(dump.number - 1, "pmd_thp", k, "huge", f"dump {dump.label}")
    tb = Term(rest.number - 1, "pmd_thp", k, "not huge", f"restore {rest.label}")
    if r.theorem == "criu-thp-kept":
        text = f"{_pmd_range(k)} is a THP in the dump, not after the restore"
    else:
        text = (f"after a khugepaged scan of each, {_pmd_range(k)} is a THP in the dump, "
                "not in the restored process (whose mm the model has off khugepaged's list)")
    return [Fact(text, (ta, tb))]


def _new_thp_in_nh(p: Program, r) -> list[Fact]:
    """criu-no-new-thp-in-nh: a PMD that is nh (or in a THP-disabled mm) and not a THP in the
    dump is one after some restore step -- the first such step, as the theorem looks at every
    point of the restore."""
    from vmaflags.proofs.backing import disabled_pmd

    dump = p.last("dump")
    state = final_state(p.era, next(x for x in p.processes if x.name == "dump"))
    off = [k for k in range(p.arena) if prop(dump.want, "pmd_thp", k) == "not huge"
           and disabled_pmd(PY, p.era, state, k)]
    for c in p.steps("restore"):
        k = next((k for k in off if not c.label.endswith("c")
                  and prop(c.want, "pmd_thp", k) == "huge"), None)
        if k is None:
            continue
        terms = [Term(dump.number - 1, "pmd_thp", k, "not huge", f"dump {dump.label}"),
                 Term(c.number - 1, "pmd_thp", k, "huge", f"restore {c.label}")]
        nh = next((v.start for v in dump.want.vmas if v.start < (k + 1) * PMD
                   and k * PMD < v.end and "nh" in v.flags.split("+")), None)
        if nh is not None:
            terms.insert(1, Term(dump.number - 1, "nh", nh, "nh", f"dump {dump.label}"))
            why = "nh"
        else:
            terms.insert(1, Term(dump.number - 1, "get", 0, prop(dump.want, "get"),
                                 f"dump {dump.label}"))
            why = "THP-disabled by the prctl"
        return [Fact(f"{_pmd_range(k)}, {why} and not a THP in the dump, is a THP after "
                     f"restore step {c.label} ({c.step.text()})", tuple(terms))]
    raise ReproduceError(f"in the model of {p.era.id} no restore step makes a THP where the "
                         "dump disabled it")


def _prctl_transparent(p: Program, r) -> list[Fact]:
    return [_differs(p, "flags", p.last("with toggles"), p.last("without toggles"),
                     "VmFlags")]


def _clr_is_neutral(p: Program, r) -> list[Fact]:
    (proc,) = p.processes
    c = p.last(proc.name)
    if not isinstance(c.step, Madvise):
        raise ReproduceError("the trace does not end with MADV_CLR_HUGEPAGE")
    x = c.step.off
    mm = final_state(p.era, proc).mm
    f = rules.new_vma_flags(PY, p.era, mm)
    fresh = flag_text(f.hg, f.nh, f.um, f.uw)
    cleared = prop(c.want, "flags", x)
    if cleared == fresh:
        raise ReproduceError(f"in the model of {p.era.id} the cleared VMA is as a fresh one")
    probe = p.probes.setdefault(proc.name, len(p.checks))
    return [Fact(f"after MADV_CLR_HUGEPAGE the VMA at {x:#x} has {cleared}, a fresh mmap now "
                 f"gets {fresh}", (Term(c.number - 1, "flags", x, cleared,
                                        f"{proc.name} {c.label}"),
                                   Term(probe, "fresh", 0, fresh, "a fresh mmap")))]


def _no_return_to_neither(p: Program, r) -> list[Fact]:
    (proc,) = p.processes
    own = [c for c in p.steps(proc.name) if not c.label.endswith("c")]
    if len(own) < 2:
        raise ReproduceError("the trace has no step before its last")
    before, after = own[-2], own[-1]
    for x in sorted({0, *(e for o in (before.want, after.want) for v in o.vmas
                          for e in (v.start, v.end))}):
        a, b = prop(before.want, "flags", x), prop(after.want, "flags", x)
        had = {"hg", "nh"} & set(a.split("+"))
        if had and not {"hg", "nh"} & set(b.split("+")) and b != "unmapped":
            return [Fact(f"{after.step.text()} takes {x:#x} from {a} to {b}",
                         (Term(before.number - 1, "flags", x, a, f"{proc.name} {before.label}"),
                          Term(after.number - 1, "flags", x, b, f"{proc.name} {after.label}")))]
    raise ReproduceError(f"in the model of {p.era.id} no VMA goes back to neither")


def _hg_nh_exclusive(p: Program, r) -> list[Fact]:
    (proc,) = p.processes
    c = p.last(proc.name)
    for v in c.want.vmas:
        if {"hg", "nh"} <= set(v.flags.split("+")):
            return [Fact(f"the VMA at {v.start:#x} has both hg and nh",
                         (Term(c.number - 1, "flags", v.start, v.flags,
                               f"{proc.name} {c.label}"),))]
    raise ReproduceError(f"in the model of {p.era.id} no VMA has both hg and nh")


# theorem -> (the processes its traces have, in order; a process that made no call is not in
# the trace, but runs: a fresh process), the facts of its refutation
REFUTATIONS: dict[str, tuple[tuple[str, ...], Callable[[Program, object], list[Fact]]]] = {
    "criu-restore-original": (("dump", "restore"), _criu_restore_original),
    "no-collapse-window": (("dump", "restore"), _no_collapse_window),
    "criu-thp-kept": (("dump", "restore"), _thp_gone),
    "criu-khugepaged-registered": (("dump", "restore"), _thp_gone),
    "criu-no-new-thp-in-nh": (("dump", "restore"), _new_thp_in_nh),
    "prctl-transparent": (("with toggles", "without toggles"), _prctl_transparent),
    "clr-is-neutral": (("run",), _clr_is_neutral),
    "no-return-to-neither": (("run",), _no_return_to_neither),
    "hg-nh-exclusive": (("run",), _hg_nh_exclusive),
}


def _era_of(r) -> Era:
    from vmaflags.proofs.command import era_of
    return era_of(r.era)


# --- the program ---------------------------------------------------------------------------

def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def build(r, era: Era | None = None, command: str = "") -> Program:
    """The program for row `r`.  Predictions are the model of `era`, by default the row's own
    (an other era's gives a program that checks what that era predicts for the same trace)."""
    from vmaflags.proofs.theorems import THEOREMS

    own = _era_of(r)
    era = era or own
    if r.theorem not in REFUTATIONS:
        raise ReproduceError(f"{r.name}: no refutation check is defined for {r.theorem}")
    names, refutation = REFUTATIONS[r.theorem]
    procs = processes(r.counterexample, names)
    checks = predict(era, procs)
    if era is own:  # the proof's own replay, by the same interpreter
        proof = [s["observation"] for s in r.counterexample]
        ours = [c.want.text() for c in checks if c.step is not None
                and not c.label.endswith("c")]
        if proof != ours:
            raise ReproduceError(f"{r.name}: the model's replay differs from the proof's trace")
    v = r.v
    verdict = f"{v.verdict}, {v.label}" + (f": {v.note}" if v.note else "")
    p = Program(
        name=r.name, slug=slug(r.name.replace(":", "-")) + ("" if era is own else
                                                            f"-as-{slug(era.id)}"),
        command=command or reproduce_command(r.theorem, r.era, r.protocol),
        statement=THEOREMS[r.theorem].statement, verdict=verdict,
        expected=f"{r.expected} ({r.reason})", era=era,
        sysfs=SYSFS_MODES[procs[0].sysfs], arena=procs[0].script.arena,
        clr_hugepage=clr_number(era), trace_text=from_counterexample(r.name, r.counterexample),
        processes=procs, checks=checks, facts=[])
    p.facts = refutation(p, r)
    if not p.facts:
        raise ReproduceError(f"in the model of {era.id} the trace refutes nothing")
    return p


def clr_number(era: Era) -> int:
    """MADV_CLR_HUGEPAGE's number: the era's, or where it has none the executor's
    (build.DEFAULT_CLR_HUGEPAGE, kernel-patch/'s), which such kernels answer with EINVAL."""
    from .build import DEFAULT_CLR_HUGEPAGE
    return era.clr_hugepage if era.clr_hugepage is not None else DEFAULT_CLR_HUGEPAGE


def script_program(name: str, text: str, era: Era, sysfs: str) -> Program:
    """Any script, or replay file with `#! process:` sections, as a program that checks every
    step against the model of `era` under THP mode `sysfs`, with no refutation to assert."""
    procs = []
    for pname, ptext in split(text):
        try:
            procs.append(Process(pname, parse_script(ptext), SYSFS_MODES.index(sysfs)))
        except ScriptError as e:
            raise ReproduceError(f"{pname}: {e}") from None
    procs = _runnable(procs)
    return Program(name=name, slug=slug(name), command="", statement="", verdict="",
                   expected="", era=era, sysfs=sysfs, arena=procs[0].script.arena,
                   clr_hugepage=clr_number(era), trace_text=text, processes=procs,
                   checks=predict(era, procs), facts=[])


def reproduce_command(theorem: str, era_key: str, protocol: str | None) -> str:
    return (f"vmaflags reproduce {theorem} --era {era_key}"
            + (f" --protocol {protocol}" if protocol else ""))


def command(theorem: str, era_key: str, protocol: str | None, out: str | None) -> int:
    """`vmaflags reproduce`: the standalone program on stdout, or both files into OUT."""
    import sys

    from . import reproduce_c

    try:
        p = build(row(theorem, era_key, protocol))
        if out is None:
            sys.stdout.write(reproduce_c.standalone(p))
            return 0
        d = pathlib.Path(out)
        d.mkdir(parents=True, exist_ok=True)
        files = {d / f"{p.slug}.c": reproduce_c.standalone(p),
                 d / f"{reproduce_c.kselftest_name(p)}.c": reproduce_c.kselftest(p)}
        for f, text in files.items():
            f.write_text(text)
    except ValueError as e:  # ReproduceError, an unknown era
        print(f"vmaflags: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"vmaflags: {out}: {e.strerror}", file=sys.stderr)
        return 2
    for f in files:
        print(f)
    return 0
