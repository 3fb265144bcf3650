"""`vmaflags prove`: run the catalogue, compare with the expected verdicts, print the results.

Obligations run in worker processes (one per core); each prints one line (rich table by
default, JSON or KTAP on request).  The exit status is 1 when any verdict is unexpected or any
check is vacuous.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from vmaflags.model.eras import ERAS, Era

from .expected import EXPECTED, PROTOCOL_ORDER
from .theorems import THEOREMS, run_one


@dataclass
class Row:
    theorem: str
    era: str
    protocol: str | None
    verdict: str
    expected: str
    reason: str
    method: str
    bound: str | None
    seconds: float
    counterexample: Any
    vacuity: list[str]
    note: str

    @property
    def ok(self) -> bool:
        return self.verdict == self.expected and not self.vacuity

    @property
    def name(self) -> str:
        return ":".join(x for x in (self.theorem, self.protocol, self.era) if x)

    def as_json(self) -> dict:
        return {"theorem": self.theorem, "era": self.era, "protocol": self.protocol,
                "verdict": self.verdict, "expected": self.expected, "reason": self.reason,
                "method": self.method, "bound": self.bound, "seconds": round(self.seconds, 3),
                "counterexample": self.counterexample, "vacuity": self.vacuity,
                "note": self.note}


def obligations(theorems: list[str] | None, eras: list[Era]) -> list[tuple[str, str | None, str]]:
    """(theorem, protocol, era) in catalogue order, limited to the expected table's eras."""
    ids = theorems or list(THEOREMS)
    out = []
    for tid in ids:
        protos = PROTOCOL_ORDER if THEOREMS[tid].protocols else (None,)
        for p in protos:
            rows = EXPECTED[(tid, p)]
            out += [(tid, p, e.id) for e in eras if e.id in rows]
    return out


def _work(batch: list[tuple[str, str | None, str]]) -> list[Row]:
    out = []
    for tid, p, eid in batch:
        v, secs = run_one(THEOREMS[tid], ERAS[eid], p)
        exp, reason = EXPECTED[(tid, p)][eid]
        out.append(Row(tid, eid, p, v.verdict, exp, reason, v.method, v.bound, secs,
                       v.counterexample, v.vacuity, v.note))
    return out


def run(jobs: list[tuple[str, str | None, str]], show_progress: bool) -> list[Row]:
    """Run the obligations on all cores.  The two CRIU theorems of one protocol and era go to
    the same worker, which builds the protocol's symbolic run once for both."""
    batches: dict[tuple, list[int]] = {}
    for i, (tid, p, eid) in enumerate(jobs):
        batches.setdefault((p, eid) if p else (tid, eid), []).append(i)
    # Heavier batches first, so the pool does not end on a long one.
    order = sorted(batches.values(), key=lambda b: len(b) + THEOREMS[jobs[b[0]][0]].protocols,
                   reverse=True)
    workers = min(len(order), os.cpu_count() or 1) or 1
    results: dict[int, Row] = {}
    with ProcessPoolExecutor(workers) as pool, \
            Progress(transient=True, disable=not show_progress) as progress:
        task = progress.add_task("proving", total=len(jobs))
        futures = {pool.submit(_work, [jobs[i] for i in b]): b for b in order}
        for fut in futures:
            for i, row in zip(futures[fut], fut.result()):
                results[i] = row
            progress.advance(task, len(futures[fut]))
    return [results[i] for i in range(len(jobs))]


def ktap(rows: list[Row]) -> str:
    lines = ["KTAP version 1", f"1..{len(rows)}"]
    for n, r in enumerate(rows, 1):
        lines.append(f"# {r.name}: {r.verdict} ({r.method}"
                     f"{', ' + r.bound if r.bound else ''}; expected {r.expected}: {r.reason})")
        for v in r.vacuity:
            lines.append(f"# vacuous: {v}")
        lines.append(f"{'ok' if r.ok else 'not ok'} {n} {r.name}")
    return "\n".join(lines)


def table(rows: list[Row], console: Console) -> None:
    t = Table("theorem", "protocol", "era", "verdict", "expected", "method", "s")
    for col in t.columns[:3]:
        col.no_wrap = True
    for r in rows:
        style = "" if r.ok else "bold red"
        verdict = r.verdict + (" (vacuous)" if r.vacuity else "")
        t.add_row(r.theorem, r.protocol or "", r.era, verdict, r.expected,
                  r.method + (f" [{r.bound}]" if r.bound else ""), f"{r.seconds:.2f}",
                  style=style)
    console.print(t)
    for r in rows:
        if r.counterexample and r.verdict == "refuted":
            console.print(f"\n[bold]{r.name}[/bold] refuted: {r.note or r.reason}")
            for step in r.counterexample:
                console.print("  " + render_step(step), highlight=False, markup=False)


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
    console = Console(width=None if Console().is_terminal else 150)
    rows = run(jobs, show_progress=not (json_out or as_ktap) and console.is_terminal)
    if json_out:
        print(json.dumps({"results": [r.as_json() for r in rows]}, indent=1))
    elif as_ktap:
        print(ktap(rows))
    else:
        table(rows, console)
        total = sum(r.seconds for r in rows)
        bad = [r for r in rows if not r.ok]
        console.print(f"\n{len(rows)} obligations, {len(rows) - len(bad)} as expected, "
                      f"{len(bad)} not; {total:.1f} s of solver work")
    return 0 if all(r.ok for r in rows) else 1
