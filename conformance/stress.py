"""`vmaflags stress`: the races proofs/concurrency.py decides, tried on this machine's kernel.

For each race the model says whether the bad interleaving is possible (the theorem refuted) or
not (proved), for this kernel's era at its version; stress.c then tries it, each try in a fresh
process, bounded by a count and a time.  A sighting -- a THP that appeared after the protection
had returned -- shows that the interleaving happens on this kernel.  No sighting shows
nothing by itself: `windows` counts the tries in which the worker's fault or collapse was
still in flight when the protection returned, the only tries in which a sighting could occur.
`collapse-alone` is the control: without a protection every try must end with a THP, or the
collapse races test nothing.
"""
from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Callable

from vmaflags.model.eras import ERAS, Era

from . import host
from .build import stress_path


def _races() -> dict[str, tuple[str, Callable[[Era], object] | None]]:
    """race -> (theorem, the model's verdict for an era); None for the control."""
    from vmaflags.proofs import concurrency as C

    return {
        "fault-vs-prctl": ("fault-vs-prctl", C.fault_vs_prctl),
        "collapse-vs-nh": ("collapse-respects-nh", lambda e: C.collapse_respects_nh(
            e, "stress-nh", which=("MADV_NOHUGEPAGE",))),
        "collapse-vs-prctl": ("collapse-respects-nh", lambda e: C.collapse_respects_nh(
            e, "stress-prctl", which=("PR_SET_THP_DISABLE",))),
        "collapse-alone": ("", None),
    }


@dataclass
class Outcome:
    race: str
    theorem: str
    model: str  # "possible" | "impossible" | "" (the control)
    tries: int = 0
    windows: int = 0
    sightings: int = 0
    seconds: float = 0.0
    skip: str = ""

    @property
    def verdict(self) -> str:
        if self.skip:
            return "skip"
        if not self.model:
            return "control ok" if self.sightings == self.tries else "CONTROL FAILED"
        if self.model == "possible":
            return "seen" if self.sightings else "not seen"
        return f"0 in {self.tries}" if not self.sightings else "CONTRADICTS"

    @property
    def ok(self) -> bool:
        return self.verdict not in ("CONTRADICTS", "CONTROL FAILED")


def run(tries: int, seconds: float) -> tuple[str | None, list[Outcome]]:
    """Every race, each with at most `tries` tries and `seconds` seconds: (era, outcomes)."""
    eid = host.mainline_era()
    era = host.era(ERAS[eid]) if eid else None
    exe = stress_path()
    out = []
    for race, (theorem, model) in _races().items():
        o = Outcome(race, theorem, "")
        if model is not None:
            if era is None:
                o.skip = f"no era for kernel {host.kernel()}"
                out.append(o)
                continue
            o.model = "possible" if model(era).verdict == "refuted" else "impossible"
        if race == "fault-vs-prctl" and host.read("enabled") == "never":
            o.skip = "THP enabled=never: faults take no huge path (root sets madvise)"
        else:
            o.tries, o.windows, o.sightings, o.seconds = _try(exe, race, tries, seconds)
        out.append(o)
    return (era.id if era else None), out


def _try(exe: object, race: str, tries: int, seconds: float) -> tuple[int, int, int, float]:
    res = subprocess.run([str(exe), race, str(tries), str(seconds)], capture_output=True,
                         text=True, timeout=seconds + 60, check=False)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip() or f"stress exited {res.returncode}")
    kv = dict(f.split("=") for f in res.stdout.split()[1:])
    return int(kv["tries"]), int(kv["windows"]), int(kv["sightings"]), float(kv["seconds"])


def command(tries: int, seconds: float, json_out: bool) -> int:
    """Exit 0 when every race agrees with the model, 1 when one contradicts it (or the control
    failed), 2 for bad arguments, 4 when nothing could run (SKIP)."""
    if tries < 1 or not 0 < seconds < math.inf:  # nan too
        print("vmaflags: --tries must be >= 1 and --seconds > 0 (finite)", file=sys.stderr)
        return 2
    why = host.no_thp() or host.no_executor()
    if why:
        print(f"vmaflags: SKIP: {why}", file=sys.stderr)
        return 4
    # as root: enabled=madvise for the fault race (MADV_HUGEPAGE on its region), put back after
    guard = host.guard() if host.writable() is None else contextlib.nullcontext()
    try:
        with guard as g:
            if g is not None:
                g.set(enabled="madvise")
            era, outcomes = run(tries, seconds)
    except RuntimeError as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 1
    if json_out:
        print(json.dumps({"kernel": host.kernel(), "era": era,
                          "races": [{**asdict(o), "verdict": o.verdict} for o in outcomes]},
                         indent=2))
    else:
        _table(era, outcomes)
    return 0 if all(o.ok for o in outcomes) else 1


def _table(era: str | None, outcomes: list[Outcome]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table("race", "model", "tries", "windows", "seen", "verdict",
              title=f"live races on {host.kernel()} (era {era})", title_justify="left")
    for o in outcomes:
        t.add_row(o.race, o.model or "control", str(o.tries), str(o.windows), str(o.sightings),
                  o.skip or o.verdict)
    Console(highlight=False).print(t)
    print("model: the theorem's verdict (refuted = the interleaving is possible); windows: "
          "tries with the\nfault or collapse in flight when the protection returned; seen: a "
          "THP appeared after it")
