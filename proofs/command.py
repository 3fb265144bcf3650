"""`vmaflags prove`: run the catalogue, compare with the expected verdicts, print the results.

Obligations run in worker processes (one per core), each batch in a freshly forked one, so a
verdict and its counterexample do not depend on which obligations a worker solved before
(Z3's choices follow its term ids): the same command prints the same bytes.  Table by default
(80 columns, counterexamples included), JSON or KTAP on request; `--list` prints the
theorems, `--script` a counterexample as a replay file, `--concurrency` the interleaving
obligations of concurrency.py instead of the catalogue.  The exit status is 1 when any
verdict is unexpected (a vacuous check is `unknown`, so it is unexpected too), 2 for bad
input.  Timings: bench/prove.py (and, for --concurrency, one line on stderr).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import textwrap
import time
from dataclasses import dataclass
from functools import lru_cache

from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from vmaflags.model.eras import ERAS, Era

from . import concurrency as C
from .expected import EXPECTED, PROTOCOL_ORDER
from .theorems import THEOREMS, run_one
from .verdict import Verdict


@lru_cache(maxsize=None)
def era_of(key: str) -> Era:
    """`mmf` -> ERAS["mmf"]; `def-flags@4.4` -> ERAS["def-flags"].at("4.4")."""
    base, _, kernel = key.partition("@")
    return ERAS[base].at(kernel) if kernel else ERAS[base]


def concurrency_rows() -> dict[tuple[str, str | None], dict[str, tuple[str, str]]]:
    """concurrency.EXPECTED in the shape of expected.EXPECTED: (theorem, protocol) -> era."""
    out: dict[tuple[str, str | None], dict[str, tuple[str, str]]] = {}
    for (tid, p, key), exp in C.EXPECTED.items():
        out.setdefault((tid, p), {})[key] = exp
    return out


@dataclass
class Row:
    theorem: str
    era: str
    protocol: str | None
    expected: str
    reason: str
    v: Verdict
    seconds: float  # for bench/prove.py; not printed (output is byte-for-byte repeatable)

    @property
    def ok(self) -> bool:
        return self.v.verdict == self.expected

    @property
    def verdict(self) -> str:
        return self.v.verdict

    @property
    def counterexample(self) -> list | None:
        return self.v.counterexample

    @property
    def kind(self) -> str:
        """`catalogue` (expected.py) or `concurrency` (concurrency.py, --concurrency)."""
        return "concurrency" if self.theorem in C.THEOREMS else "catalogue"

    @property
    def name(self) -> str:
        return ":".join(x for x in (self.theorem, self.protocol, self.era) if x)

    def as_json(self) -> dict:
        v = self.v
        return {"theorem": self.theorem, "era": self.era, "protocol": self.protocol,
                "kind": self.kind, "verdict": v.verdict, "expected": self.expected,
                "reason": self.reason, "method": v.label, "bound": v.bound,
                "argument": v.argument, "cross_check": v.cross_check,
                "quantified": v.quantified, "counterexample": v.counterexample,
                "minimal": v.minimal, "difference": v.difference, "vacuity": v.vacuity,
                "note": v.note}


Job = tuple[str, "str | None", str]


def _selected(key: str, eras: list[str]) -> bool:
    """An era id selects its rows and those of kernels inside it (`def-flags@4.4`); an
    `era@kernel` key selects only its own."""
    return key in eras or key.partition("@")[0] in eras


def obligations(theorems: list[str] | None, eras: list[Era] | list[str],
                protocols: list[str] | None = None) -> list[Job]:
    """(theorem, protocol, era key) in catalogue order, limited to the expected table's eras
    (an `era@kernel` row belongs to its era) and to `protocols`, with the theorems the chosen
    ones depend on."""
    ids = [e if isinstance(e, str) else e.id for e in eras]
    wanted = set(theorems or THEOREMS)
    wanted |= {d for t in wanted for d in THEOREMS[t].depends}
    out = []
    for tid in (t for t in THEOREMS if t in wanted):
        for p in (PROTOCOL_ORDER if THEOREMS[tid].protocols else (None,)):
            if p is not None and protocols and p not in protocols:
                continue
            rows = EXPECTED.get((tid, p), {})
            out += [(tid, p, key) for key in rows if _selected(key, ids)]
    return out


def concurrency_obligations(theorems: list[str] | None, eras: list[Era] | list[str],
                            protocols: list[str] | None = None) -> list[Job]:
    """The obligations of concurrency.EXPECTED, in its order, limited likewise."""
    ids = [e if isinstance(e, str) else e.id for e in eras]
    return [(tid, p, key) for tid, p, key in C.EXPECTED
            if (not theorems or tid in theorems) and (not protocols or p in protocols)
            and _selected(key, ids)]


def work(batch: list[Job]) -> list[Row]:
    out = []
    for tid, p, key in batch:
        t0 = time.perf_counter()
        if tid in C.THEOREMS:
            v = C.check(tid, p, era_of(key))
            exp, reason = C.EXPECTED[(tid, p, key)]
        else:
            v = run_one(THEOREMS[tid], era_of(key), p)
            exp, reason = EXPECTED[(tid, p)][key]
        out.append(Row(tid, key, p, exp, reason, v, time.perf_counter() - t0))
    return out


def _indexed(item: tuple[int, list[Job]]) -> tuple[int, list[Row]]:
    return item[0], work(item[1])


def _group(job: Job) -> list[Job]:
    """Every obligation solved in the same worker as `job`, whichever of them were asked for:
    the two CRIU theorems of one protocol and era (one symbolic run of the protocol for both),
    or the other theorems of one era (some share a symbolic step).  A counterexample follows
    the Z3 terms its worker made before, so a row is always solved within its whole group:
    `prove --theorem T --era E` prints the trace that `prove` prints for that row."""
    tid, p, key = job
    every = (concurrency_obligations if tid in C.THEOREMS else obligations)(None, [key])
    return [j for j in every if (j[1], j[2]) == (p, key)]


def run(jobs: list[Job], show_progress: bool) -> list[Row]:
    """Run the obligations on all cores, each group (_group) in a worker forked from a fresh
    server process (multiprocessing's forkserver), so that what the calling process did
    before does not change a counterexample either."""
    asked = set(jobs)
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault((job[1], job[2], job[0] in C.THEOREMS), None)
    batches = [_group(next(j for j in jobs if (j[1], j[2], j[0] in C.THEOREMS) == g))
               for g in groups]
    # Heavier batches first, so the pool does not end on a long one.
    batches.sort(key=len, reverse=True)
    workers = max(1, min(len(batches), os.cpu_count() or 1))
    results: dict[Job, Row] = {}
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    with ctx.Pool(workers, maxtasksperchild=1) as pool, \
            Progress(transient=True, disable=not show_progress) as progress:
        task = progress.add_task("proving", total=len(jobs))
        for n, rows in pool.imap_unordered(_indexed, enumerate(batches)):
            mine = [(j, r) for j, r in zip(batches[n], rows) if j in asked]
            results.update(mine)
            progress.advance(task, len(mine))
    return settle([results[j] for j in jobs])


def settle(rows: list[Row]) -> list[Row]:
    """An unbounded argument holds only if the theorems it uses are proved in its era; else
    the row says what was checked: its bounded run."""
    verdicts = {(r.theorem, r.era): r.v.verdict for r in rows if r.protocol is None}
    for r in rows:
        v = r.v
        if not v.method.startswith("unbounded"):
            continue
        missing = [f"{d}:{r.era}" for d in THEOREMS[r.theorem].depends
                   if verdicts.get((d, r.era)) != "proved"]
        if missing:
            v.method, v.bound = "bounded", v.cross_check.split("[")[1].split("]")[0]
            v.note = "; ".join(filter(None, [v.note, "no unbounded argument: "
                                             + ", ".join(missing) + " not proved"]))
            v.argument, v.cross_check = [], None
    return rows


def ktap(rows: list[Row]) -> str:
    lines = ["KTAP version 1", f"1..{len(rows)}"]
    for n, r in enumerate(rows, 1):
        v = r.v
        lines.append(f"# {r.name}: {v.verdict} ({v.label}; expected {r.expected}: {r.reason})")
        if v.quantified:
            lines.append("# quantified: " + ", ".join(f"{k} {c}"
                                                    for k, c in v.quantified.items()))
        lines += [f"# argument: {a}" for a in v.argument]
        if v.cross_check:
            lines.append(f"# cross-check: {v.cross_check}")
        if v.note:
            lines.append(f"# note: {v.note}")
        if v.minimal:
            lines.append(f"# minimal: {v.minimal}")
        lines += [f"# {v.verdict} by: {d}" for d in v.difference]
        lines += [f"# vacuous: {x}" for x in v.vacuity]
        lines.append(f"{'ok' if r.ok else 'not ok'} {n} {r.name}")
    return "\n".join(lines)


# --- the table and the counterexamples ---------------------------------------------------------

WIDTH = 80
LEGEND = ("method [PxC]: every state of P PMDs of C cells; [n steps, PxC]: shortest "
          "counterexample within n steps; unbounded (...): the argument, in --json/--ktap. "
          "An unexpected verdict is in capitals, with the expected one in its note.")
TRACE_LEGEND = (
    "Counterexamples: the least one the solver finds (by the measure printed), replayed on "
    "the model's interpreter; each process starts fresh, under the sysfs mode and in an "
    "arena of the number of 2 MiB PMDs its header gives.  A step: who takes it (process: "
    "the process the theorem is about; restorer: CRIU's restore; adversary: khugepaged or "
    "MADV_COLLAPSE from another process, on the restorer's mm, or a racing fault; observer: "
    "a step that ends both traces alike to make the difference visible), its "
    "script line "
    "(conformance/SCRIPT.md), then the state after it: ret= its return, get= "
    "PR_GET_THP_DISABLE, thp= status THP_enabled (- before 5.0), and one line per VMA of "
    "the arena, START-END:FLAGS:ELIG:AHP: offsets from the arena's base, FLAGS the VmFlags "
    "hg nh um uw (- for none), ELIG smaps THPeligible (- before 5.0), AHP AnonHugePages "
    "in kB.  `vmaflags prove --theorem T --era E [--protocol P] --script FILE` writes one "
    "as a replay file for `vmaflags replay FILE --era E`.")


CONCURRENCY_LEGEND = (
    "  In an interleaving, a step of khugepaged, MADV_COLLAPSE or a fault is one of its "
    "atomic micro-steps (model/locks.py), shown with the state it sees; [held: ...] are the "
    "locks a step holds (mmap: mmap_lock, vma: the per-VMA lock; R read, W write).")


def wrap(text: str, indent: str = "", first: str | None = None) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent if first is None else first,
                         subsequent_indent=indent, break_long_words=True,
                         break_on_hyphens=False) or [first or indent]


def table_lines(rows: list[Row]) -> list[str]:
    """obligation, era, verdict, method: a protocol's rows under their theorem's name; a
    method too long for its column wraps inside it; an unexpected verdict in capitals."""
    body = []
    current = None
    for r in rows:
        if r.protocol and r.theorem != current:
            body.append((r.theorem, None, None, None))
        current = r.theorem
        body.append((f"  {r.protocol}" if r.protocol else r.theorem, r.era,
                     r.v.verdict if r.ok else r.v.verdict.upper(), r.v.label))
    head = ("obligation", "era", "verdict", "method")
    w = [max(len(x[i]) for x in [head, *body] if x[1] is not None) for i in range(3)]
    rest = WIDTH - sum(w) - 3
    out = []
    for x in [head, *body]:
        if x[1] is None:
            out.append(x[0])
            continue
        lead = f"{x[0]:<{w[0]}} {x[1]:<{w[1]}} {x[2]:<{w[2]}} "
        method = textwrap.wrap(x[3], rest, break_on_hyphens=False) or [""]
        out += [(lead + method[0]).rstrip()] + [" " * len(lead) + m for m in method[1:]]
    return out


def table(rows: list[Row], console: Console) -> None:
    console.print(Text("\n".join(table_lines(rows))))
    console.print(Text("\n" + "\n".join(wrap(LEGEND))))
    for r in rows:
        if not r.ok:
            console.print(Text("\n" + "\n".join(wrap(f"{r.name}: {r.v.verdict}, expected "
                                                     f"{r.expected} ({r.reason}). {r.v.note}"))))
    shown = [r for r in rows if r.v.counterexample and r.v.verdict in ("refuted", "aborted")]
    if shown:
        legend = TRACE_LEGEND + (CONCURRENCY_LEGEND if any(r.kind == "concurrency"
                                                           for r in shown) else "")
        console.print(Text("\n" + "\n".join(wrap(legend))))
    for r in shown:
        console.print(Text("\n" + "\n".join(counterexample_lines(r))))


def counterexample_lines(r: Row) -> list[str]:
    """A counterexample as a reviewer quotes it: a header with what replays it (era, sysfs
    mode, arena), each step with its role and the state after it, and what refutes."""
    v = r.v
    head = f"{r.name}: {v.verdict}" + (", as expected" if r.ok else f", EXPECTED {r.expected}")
    out = wrap(f"{head} ({r.reason})", "  ", "")
    steps = v.counterexample
    if steps and "syscall" not in steps[0]:  # a rule-level refutation: the input values
        out += wrap(f"note: {v.note}", "  ") if v.note else []
        return out + [ln for s in steps for ln in wrap(
            "inputs: " + ", ".join(f"{k}={x}" for k, x in s.items()), "    ", "  ")]
    era = era_of(r.era)
    setting = dict.fromkeys((s["sysfs"], s["arena"]) for s in steps if s.get("sysfs"))
    where = "; ".join(f"sysfs {m}, arena {n} PMD{'s' if n > 1 else ''}" for m, n in setting)
    out += wrap(f"era {era.id} (as of {era.kernel}), {where}", "  ")
    if v.note:
        out += wrap(f"note: {v.note}", "  ")
    if v.minimal:
        out += wrap(f"minimal: {v.minimal}", "  ")
    width = max(len(s["process"]) for s in steps)
    for s in steps:
        out += step_lines(s, width)
    for d in v.difference:
        out += wrap(d, "    ", f"  {v.verdict} by: ")
    return out


def step_lines(s: dict, width: int) -> list[str]:
    """`  restorer  restore  3. madvise 0 2M hugepage`, then the state after it, one VMA per
    line, under the syscall."""
    role = s.get("role", "process")
    lead = f"  {role:<9} {s['process']:<{width}} {s['step']:>2}. "
    pad = " " * len(lead)
    out = wrap(s["syscall"], pad, lead)
    if s.get("locks"):
        held = f"[held: {s['locks']}]"
        if len(out[-1]) + 1 + len(held) <= WIDTH:
            out[-1] += " " + held
        else:
            out.append(pad + held)
    out += state_lines(s["observation"], pad)
    if "child" in s:
        out += state_lines(s["child"], pad, "fork child: ")
    return out


def state_lines(obs: str, pad: str, label: str = "") -> list[str]:
    if not obs.startswith("ret=") or " vmas=" not in obs:
        return wrap(label + obs, pad)
    head, vmas = obs.split(" vmas=", 1)
    if not vmas:
        return wrap(f"{label}{head} (no VMA)", pad)
    return wrap(label + head, pad) + [pad + "  " + x for x in vmas.split(",")]


# --- what to run --------------------------------------------------------------------------------

class Usage(ValueError):
    pass


def _rows_of(tid: str) -> dict[tuple[str, str | None], dict[str, tuple[str, str]]]:
    table_ = concurrency_rows() if tid in C.THEOREMS else EXPECTED
    return {k: rows for k, rows in table_.items() if k[0] == tid}


def _era_keys() -> set[str]:
    keys = {k for rows in EXPECTED.values() for k in rows} | {k for _, _, k in C.EXPECTED}
    return keys | set(ERAS)


def check_request(theorems: list[str], eras: list[str], protocols: list[str]) -> None:
    """Usage unless every theorem, era and protocol named exists and every theorem (with the
    protocols named) has an expected verdict in every era named."""
    known = {**THEOREMS, **C.THEOREMS}
    for t in theorems:
        if t not in known:
            raise Usage(f"unknown theorem {t!r}; valid: {', '.join(known)} "
                        "(vmaflags prove --list)")
    for e in eras:
        if e not in _era_keys():
            raise Usage(f"unknown era {e!r}; valid eras: {', '.join(ERAS)}")
    every = [*PROTOCOL_ORDER, *(p for _, p, _ in C.EXPECTED if p and p not in PROTOCOL_ORDER)]
    for p in protocols:
        if p not in every:
            raise Usage(f"unknown protocol {p!r}; valid: {', '.join(dict.fromkeys(every))}")
    for t in theorems:
        rows = _rows_of(t)
        has = list(dict.fromkeys(p for _, p in rows))
        for p in protocols:
            if p not in has:
                raise Usage(f"{t} has no protocol {p!r}" + (
                    f"; it has {', '.join(x for x in has if x)}" if any(has) else
                    ": it takes no --protocol"))
        keys = list(dict.fromkeys(k for p in (protocols or has) for k in rows[(t, p)]))
        for e in eras:
            if not any(_selected(k, [e]) for k in keys):
                name = ":".join(filter(None, (t, *protocols)))
                raise Usage(f"{name} does not apply to {e}: it has expected verdicts for "
                            f"{', '.join(keys)}")


def list_theorems() -> list[str]:
    """Each theorem: id, statement, and the eras (per protocol) it has expected verdicts for,
    with the verdict expected there."""
    out = wrap("The theorems of `vmaflags prove` (expected verdicts: proofs/expected.py; "
               "methods and limits: proofs/README.md), then those of `vmaflags prove "
               "--concurrency` (proofs/concurrency.py).")
    for group, statements in (("catalogue", {t.id: t.statement for t in THEOREMS.values()}),
                              ("concurrency", C.STATEMENTS)):
        out += ["", f"{group}:" if group == "catalogue" else "--concurrency:"]
        for tid, statement in statements.items():
            out += ["", tid] + wrap(statement, "    ")
            for (_, p), rows in _rows_of(tid).items():
                eras = ", ".join(f"{k}\xa0{exp}" for k, (exp, _) in rows.items())
                out += [ln.replace("\xa0", " ") for ln in
                        wrap(eras, "        ", f"    {p}: " if p else "    eras: ")]
    return out


def script(rows: list[Row]) -> str:
    """The counterexample of the one row asked for, as a replay file (conformance/replay.py)."""
    from vmaflags.conformance.replay import from_counterexample
    from vmaflags.model.syscalls import ScriptError, parse_step

    (r,) = rows
    steps = r.v.counterexample
    if not steps or "syscall" not in steps[0]:
        raise Usage(f"{r.name} is {r.v.verdict}: no trace to write")
    try:
        for s in steps:
            parse_step(s["syscall"])
    except ScriptError:
        raise Usage(f"{r.name}: an interleaving of threads is not a script") from None
    return from_counterexample(r.name, steps)


def prove(theorems: list[str] | None, eras: list[Era] | list[str], json_out: bool,
          as_ktap: bool, protocols: list[str] | None = None, concurrency: bool = False,
          listing: bool = False, script_to: str | None = None) -> int:
    import typer

    ids = [e if isinstance(e, str) else e.id for e in eras]
    try:
        check_request(theorems or [], ids, protocols or [])
        if listing:
            print("\n".join(list_theorems()))
            return 0
        if script_to is not None and (len(theorems or []) != 1 or len(ids) != 1):
            raise Usage("--script takes one --theorem and one --era")
        asked = set(theorems or [])
        concurrency = concurrency or bool(asked & set(C.THEOREMS))
        if concurrency and asked - set(C.THEOREMS):
            raise Usage(f"{', '.join(t for t in theorems or [] if t not in C.THEOREMS)}: "
                        "not a --concurrency theorem; run the catalogue apart")
        every = ids or list(ERAS)
        if script_to is not None:
            (tid,) = theorems or []
            p = (protocols or [None])[0]
            if len(protocols or []) > 1 or (p is None and any(_rows_of(tid).keys() - {
                    (tid, None)})):
                raise Usage(f"--script: give one --protocol of {tid}")
            if ids[0] not in _rows_of(tid)[(tid, p)]:
                raise Usage(f"--script: {ids[0]} is an era, not a row of {tid}: give one of "
                            f"{', '.join(_rows_of(tid)[(tid, p)])}")
            jobs = [(tid, p, ids[0])]
        elif concurrency:
            jobs = concurrency_obligations(theorems, every, protocols)
        else:
            jobs = obligations(theorems, every, protocols)
    except Usage as e:
        typer.echo(f"vmaflags: {e}", err=True)
        return 2
    console = Console(width=WIDTH, highlight=False)
    show = not (json_out or as_ktap or script_to is not None) and console.is_terminal
    t0 = time.perf_counter()
    rows = run(jobs, show_progress=show) if script_to is None else work(jobs)
    wall = time.perf_counter() - t0
    if script_to is not None:
        try:
            text = script(rows)
        except Usage as e:
            typer.echo(f"vmaflags: {e}", err=True)
            return 2
        if script_to == "-":
            sys.stdout.write(text)
        else:
            try:
                with open(script_to, "w") as f:
                    f.write(text)
            except OSError as e:
                typer.echo(f"vmaflags: {script_to}: {e.strerror}", err=True)
                return 2
        return 0
    if json_out:
        print(json.dumps({"results": [r.as_json() for r in rows]}, indent=1))
    elif as_ktap:
        print(ktap(rows))
    else:
        table(rows, console)
        bad = [r for r in rows if not r.ok]
        console.print(f"\n{len(rows)} obligation{'s' if len(rows) != 1 else ''}, "
                      f"{len(rows) - len(bad)} as expected, {len(bad)} not")
    if concurrency:  # on stderr: stdout stays the same bytes on every run
        typer.echo(f"{len(rows)} concurrency obligation{'s' if len(rows) != 1 else ''} in "
                   f"{wall:.1f} s wall", err=True)
    return 0 if all(r.ok for r in rows) else 1
