"""The results of a conformance run, and their three renderings: rich text, KTAP v1, JSON."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .catalogue import Result
from .identify import Identification
from .sequences import RandomResult


@dataclass
class Run:
    kernel: str
    live_mode: str = ""
    root: bool = False
    era: str | None = None  # the era checked against
    era_kernel: str | None = None  # ... with the within-era features of this version
    identification: Identification | None = None
    scenarios: list[Result] = field(default_factory=list)
    random: RandomResult | None = None
    random_skip: str = ""  # why the random run could not happen
    era_skip: str = ""  # why nothing could be checked (no era)
    expected_era: str | None = None  # --era given with --identify: it must be among the matches
    seconds: float = 0.0

    @property
    def transitions(self) -> int:
        n = sum(r.steps for r in self.scenarios if r.status != "skip")
        n += self.identification.transitions if self.identification else 0
        return n + (self.random.transitions if self.random else 0)

    @property
    def identify_failed(self) -> bool:
        i = self.identification
        if i is None or not i.probes:
            return False
        return not i.matching or (self.expected_era is not None
                                  and self.expected_era not in i.matching)

    @property
    def ok(self) -> bool:
        """No divergence anywhere (skips are not failures)."""
        if self.identify_failed:
            return False
        if any(r.status == "diverge" for r in self.scenarios):
            return False
        r = self.random
        return r is None or not (r.divergences or r.errors)

    def as_dict(self) -> dict:
        rnd: dict | None = None
        if self.random is not None:
            rnd = self.random.as_dict()
        elif self.random_skip:
            rnd = {"examples": 0, "transitions": 0, "divergences": [], "skip": self.random_skip}
        return {
            "kernel": self.kernel,
            "identified_era": self.identification.era if self.identification else None,
            "era": self.era,
            "era_kernel": self.era_kernel,
            "scenarios": [r.as_dict() for r in self.scenarios],
            "random": rnd,
            "seconds": round(self.seconds, 3),
            "transitions_per_second": round(self.transitions / self.seconds) if self.seconds else 0,
            "identification": self.identification.as_dict() if self.identification else None,
            "live_sysfs": self.live_mode,
            "ok": self.ok,
        }


def to_json(run: Run) -> str:
    return json.dumps(run.as_dict(), indent=2)


def _ktap_name(s: str) -> str:
    return s.replace("#", "_").replace(" ", "_")


def _diag(text: str) -> list[str]:
    return [f"# {ln}".rstrip() for ln in text.splitlines()]


def to_ktap(run: Run) -> str:
    """KTAP v1: header, plan, one result line per test, `# ` diagnostics before each result."""
    tests: list[tuple[bool, str, str, list[str]]] = []  # ok, name, directive, diagnostics
    i = run.identification
    if i is not None:
        diag = [f"probes: {', '.join(i.probes) or 'none'}"]
        diag += [f"probe {p} skipped: {why}" for p, why in i.skipped.items()]
        for v in i.verdicts:
            if v.matches:
                diag.append(f"era {v.era}: matches")
            elif v.divergence is not None:
                diag.append(f"era {v.era}: diverges in {v.probe}, step {v.divergence.step} "
                            f"`{v.divergence.syscall}` ({', '.join(v.divergence.fields())})")
        if not i.probes:
            why = "; ".join(dict.fromkeys(i.skipped.values()))
            tests.append((True, "identify", f"SKIP {why}", diag))
        else:
            if run.expected_era and run.expected_era not in i.matching:
                diag.append(f"expected era {run.expected_era} does not match")
            tests.append((not run.identify_failed, "identify", "", diag))
    for r in run.scenarios:
        diag = _diag(r.divergence.side_by_side()) if r.divergence and r.status == "diverge" else []
        if r.status == "skip":
            tests.append((True, r.name, f"SKIP {r.reason}", diag))
        else:
            if r.reason and r.status == "pass":
                diag = [f"# {r.reason}"]
            tests.append((r.status == "pass", r.name, "", diag))
    if run.random is not None:
        rr = run.random
        diag = [(f"# seed {rr.seed}: {rr.examples} sequences ({rr.machine_examples} with sysfs/"
                 f"khugepaged steps, {rr.inconclusive} inconclusive){_shrunk(rr)}, "
                 f"{rr.transitions} "
                 f"transitions, sysfs {', '.join(rr.modes)}, {rr.per_second:.0f} transitions/s")]
        for d in rr.divergences:
            diag += _diag("minimal divergent script:\n" + d["script"] + _side(d))
        diag += [f"# {e}" for e in rr.errors]
        diag += [f"# flaky: {f.splitlines()[-1]}" for f in rr.flaky]
        tests.append((not (rr.divergences or rr.errors), "random", "", diag))
    elif run.random_skip:
        tests.append((True, "random", f"SKIP {run.random_skip}", []))
    lines = ["KTAP version 1", f"1..{len(tests)}"]
    for n, (ok, name, directive, diag) in enumerate(tests, 1):
        lines += [d if d.startswith("#") else f"# {d}" for d in diag]
        line = f"{'ok' if ok else 'not ok'} {n} {_ktap_name(name)}"
        if directive:
            line += f" # {directive}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _side(d: dict) -> str:
    return f"step {d['step']} `{d['syscall']}`:\n  model:  {d['model']}\n  kernel: {d['kernel']}"


def print_rich(run: Run, console: Console) -> None:
    console.print(f"kernel [bold]{run.kernel}[/], THP enabled={run.live_mode}, "
                  f"{'root' if run.root else 'not root'}")
    i = run.identification
    if i is not None:
        t = Table("era", "verdict", "first divergence", title="era identification (by behaviour)")
        for v in i.verdicts:
            if v.matches:
                t.add_row(v.era, Text("matches", style="green"), "")
            elif v.divergence is not None:
                d = v.divergence
                t.add_row(v.era, Text("diverges", style="red"),
                          f"{v.probe} step {d.step} `{d.syscall}`: {', '.join(d.fields())}")
            else:
                t.add_row(v.era, "not checked", "")
        console.print(t)
        for p, why in i.skipped.items():
            console.print(f"probe {p} skipped: {why}")
    if run.era_skip:
        console.print(f"[yellow]nothing checked:[/] {run.era_skip}")
    if run.scenarios:
        title = "scenarios" + (f" (era {run.era} at {run.era_kernel})" if run.era else "")
        t = Table("scenario", "status", "steps", "note", title=title)
        style = {"pass": "green", "diverge": "red", "skip": "yellow"}
        for r in run.scenarios:
            t.add_row(r.name, Text(r.status, style=style[r.status]), str(r.steps), r.reason)
        console.print(t)
        for r in run.scenarios:
            if r.status == "diverge" and r.divergence is not None:
                console.print(f"[red]{r.name}[/] diverges:")
                console.print(Text(r.divergence.side_by_side()))
    rr = run.random
    if rr is not None:
        console.print(f"random: seed {rr.seed}, {rr.examples} sequences ({rr.machine_examples} "
                      f"with sysfs/khugepaged steps, {rr.inconclusive} inconclusive)"
                      f"{_shrunk(rr)}, "
                      f"{rr.transitions} transitions in {rr.seconds:.1f} s "
                      f"({rr.per_second:,.0f}/s), sysfs {', '.join(rr.modes)}: "
                      + ("[green]no divergence[/]" if not (rr.divergences or rr.errors)
                         else f"[red]{len(rr.divergences)} divergence(s)[/]"))
        for d in rr.divergences:
            console.print(f"[red]minimal divergent script[/] (era {d['era']}, sysfs {d['sysfs']}):")
            console.print(Text(d["script"] + _side(d)))
        for e in rr.errors:
            console.print(f"[red]error:[/] {e}")
        for f in rr.flaky:
            console.print("[yellow]flaky[/] (diverged once, not on re-run):")
            console.print(Text(f))
    elif run.random_skip:
        console.print(f"random: skipped ({run.random_skip})")
    console.print(f"{run.transitions} transitions checked in {run.seconds:.1f} s: "
                  + ("[green]OK[/]" if run.ok else "[red]DIVERGES[/]"))


def _shrunk(rr: RandomResult) -> str:
    """The scripts run beyond the N drawn ones, to confirm and shrink divergences."""
    return f" + {rr.shrink_examples} re-run or shrunk" if rr.shrink_examples else ""
