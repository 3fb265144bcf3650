"""`vmaflags prove`: run the catalogue, compare with the expected verdicts, print the results.

Obligations run in worker processes (one per core), each batch in a freshly forked one, so a
verdict and its counterexample do not depend on which obligations a worker solved before
(Z3's choices follow its term ids): the same command prints the same bytes.  Table by default
(80 columns), JSON or KTAP on request.  The exit status is 1 when any verdict is unexpected
(a vacuous check is `unknown`, so it is unexpected too).  Timings: bench/prove.py.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from functools import lru_cache

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from vmaflags.model.eras import ERAS, Era

from .expected import EXPECTED, PROTOCOL_ORDER
from .theorems import THEOREMS, run_one
from .verdict import Verdict


@lru_cache(maxsize=None)
def era_of(key: str) -> Era:
    """`mmf` -> ERAS["mmf"]; `def-flags@4.4` -> ERAS["def-flags"].at("4.4")."""
    base, _, kernel = key.partition("@")
    return ERAS[base].at(kernel) if kernel else ERAS[base]


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
    def name(self) -> str:
        return ":".join(x for x in (self.theorem, self.protocol, self.era) if x)

    def as_json(self) -> dict:
        v = self.v
        return {"theorem": self.theorem, "era": self.era, "protocol": self.protocol,
                "verdict": v.verdict, "expected": self.expected, "reason": self.reason,
                "method": v.label, "bound": v.bound, "argument": v.argument,
                "cross_check": v.cross_check, "quantified": v.quantified,
                "counterexample": v.counterexample, "vacuity": v.vacuity, "note": v.note}


Job = tuple[str, "str | None", str]


def obligations(theorems: list[str] | None, eras: list[Era]) -> list[Job]:
    """(theorem, protocol, era key) in catalogue order, limited to the expected table's eras
    (an `era@kernel` row belongs to its era), with the theorems the chosen ones depend on."""
    ids = {e.id for e in eras}
    wanted = set(theorems or THEOREMS)
    wanted |= {d for t in wanted for d in THEOREMS[t].depends}
    out = []
    for tid in (t for t in THEOREMS if t in wanted):
        for p in (PROTOCOL_ORDER if THEOREMS[tid].protocols else (None,)):
            rows = EXPECTED.get((tid, p), {})
            out += [(tid, p, key) for key in rows if key.partition("@")[0] in ids]
    return out


def work(batch: list[Job]) -> list[Row]:
    out = []
    for tid, p, key in batch:
        t0 = time.perf_counter()
        v = run_one(THEOREMS[tid], era_of(key), p)
        exp, reason = EXPECTED[(tid, p)][key]
        out.append(Row(tid, key, p, exp, reason, v, time.perf_counter() - t0))
    return out


def _indexed(item: tuple[int, list[Job]]) -> tuple[int, list[Row]]:
    return item[0], work(item[1])


def run(jobs: list[Job], show_progress: bool) -> list[Row]:
    """Run the obligations on all cores.  The two CRIU theorems of one protocol and era go to
    the same worker, which builds the protocol's symbolic run once for both; so do the other
    theorems of one era (some share a symbolic step)."""
    groups: dict[tuple, list[int]] = {}
    for i, (tid, p, key) in enumerate(jobs):
        groups.setdefault((p, key), []).append(i)
    # Heavier batches first, so the pool does not end on a long one.
    order = sorted(groups.values(), key=lambda b: (len(b), b[0]), reverse=True)
    batches = [(n, [jobs[i] for i in b]) for n, b in enumerate(order)]
    workers = max(1, min(len(batches), os.cpu_count() or 1))
    results: dict[int, Row] = {}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, maxtasksperchild=1) as pool, \
            Progress(transient=True, disable=not show_progress) as progress:
        task = progress.add_task("proving", total=len(jobs))
        for n, rows in pool.imap_unordered(_indexed, batches):
            for i, row in zip(order[n], rows):
                results[i] = row
            progress.advance(task, len(rows))
    return settle([results[i] for i in range(len(jobs))])


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
        lines += [f"# vacuous: {x}" for x in v.vacuity]
        lines.append(f"{'ok' if r.ok else 'not ok'} {n} {r.name}")
    return "\n".join(lines)


WIDTH = 80
LEGEND = ("method [PxC]: every state of P PMDs of C cells; [n steps, PxC]: shortest "
          "counterexample within n steps; unbounded (...): the argument, in --json/--ktap. "
          "An unexpected verdict is in capitals, with the expected one in its note.")


def table(rows: list[Row], console: Console) -> None:
    t = Table("obligation", "era", "verdict", "method", box=None, pad_edge=False,
              padding=(0, 1, 0, 0), show_edge=False)
    current = None
    for r in rows:
        if r.protocol and r.theorem != current:
            t.add_row(Text(r.theorem), "", "", "")
        current = r.theorem
        verdict = r.v.verdict if r.ok else r.v.verdict.upper()
        t.add_row(Text(f"  {r.protocol}" if r.protocol else r.theorem), Text(r.era),
                  Text(verdict), Text(r.v.label), style="" if r.ok else "bold red")
    console.print(t)
    console.print(Text("\n" + LEGEND))
    for r in rows:
        v = r.v
        if not r.ok:
            console.print(Text(f"\n{r.name}: {v.verdict}, expected {r.expected} "
                               f"({r.reason}). {v.note}"))
        if v.counterexample and v.verdict in ("refuted", "aborted") and r.ok:
            console.print(Text(f"\n{r.name} {v.verdict}: {v.note or r.reason}"),
                          style="bold")
            for step in v.counterexample:
                console.print(Text("  " + render_step(step)), soft_wrap=True)


def render_step(step: dict) -> str:
    if "syscall" not in step:
        return json.dumps(step)
    line = f"{step['process']:>15} {step['step']:>2}. {step['syscall']:<32} {step['observation']}"
    return line + (f"\n{'':>19}child: {step['child']}" if "child" in step else "")


def prove(theorems: list[str] | None, eras: list[Era], json_out: bool, as_ktap: bool) -> int:
    unknown = [t for t in theorems or [] if t not in THEOREMS]
    if unknown:
        import typer
        typer.echo(f"vmaflags: unknown theorem {unknown[0]!r}; valid: {', '.join(THEOREMS)}",
                   err=True)
        return 2
    jobs = obligations(theorems, eras)
    console = Console(width=WIDTH, highlight=False)
    rows = run(jobs, show_progress=not (json_out or as_ktap) and console.is_terminal)
    if json_out:
        print(json.dumps({"results": [r.as_json() for r in rows]}, indent=1))
    elif as_ktap:
        print(ktap(rows))
    else:
        table(rows, console)
        bad = [r for r in rows if not r.ok]
        console.print(f"\n{len(rows)} obligations, {len(rows) - len(bad)} as expected, "
                      f"{len(bad)} not")
    return 0 if all(r.ok for r in rows) else 1
