"""Run what the report shows and gather it into one JSON-able dict (see __init__)."""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable

from vmaflags.model.eras import ERAS

def _model_readme() -> pathlib.Path:
    import vmaflags.model

    return pathlib.Path(vmaflags.model.__file__).resolve().parent / "README.md"


def not_modelled() -> list[str]:
    """The bullets of model/README.md's "What is not modelled" section, one string each."""
    text = _model_readme().read_text()
    body = text.split("## What is not modelled", 1)[1].split("\n## ", 1)[0]
    items: list[str] = []
    for line in body.splitlines()[1:]:
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    return items


def proofs(progress: Callable[[str], None]) -> list[dict]:
    """The theorem catalogue, every era (vmaflags prove --json)."""
    from vmaflags.proofs.command import obligations, run

    progress("proving the theorem catalogue")
    return [r.as_json() for r in run(obligations(None, list(ERAS.values())), False)]


def concurrency(progress: Callable[[str], None]) -> list[dict]:
    from vmaflags.proofs import concurrency as C

    rows = []
    for (theorem, protocol, era), (expected, reason) in C.EXPECTED.items():
        progress(f"concurrency: {theorem} {protocol or ''} {era}")
        t0 = time.perf_counter()
        v = C.check(theorem, protocol, ERAS[era])
        rows.append({"theorem": theorem, "era": era, "protocol": protocol,
                     "verdict": v.verdict, "expected": expected, "reason": reason,
                     "method": v.method + (f" [{v.bound}]" if v.bound else ""),
                     "counterexample": v.counterexample, "vacuity": v.vacuity,
                     "note": v.note, "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def conformance(examples: int, seed: int, kernels: list[str],
                progress: Callable[[str], None]) -> list[dict]:
    """This machine (vmaflags conform) and the test VMs asked for (vmaflags vm run)."""
    from vmaflags.conformance import catalogue, command, host
    from vmaflags.conformance.vm.command import KernelRun, check_kernel

    chosen = catalogue.load()
    progress(f"conformance of this machine ({examples} random sequences)")
    kr = KernelRun("host", expected_era=host.mainline_era())
    why = host.no_thp() or host.no_executor()
    if why:
        kr.skip = why
    else:
        kr.run = command.execute(None, False, chosen, examples, seed)
    out = [kr.as_dict()]
    for spec in kernels:
        progress(f"conformance of {spec} in a test VM")
        out.append(check_kernel(spec, None, chosen, examples, seed).as_dict())
    return out


def stress(tries: int, seconds: float, progress: Callable[[str], None]) -> dict:
    from dataclasses import asdict

    from vmaflags.conformance import host
    from vmaflags.conformance import stress as S

    progress("live races")
    why = host.no_thp() or host.no_executor()
    if why:
        return {"skip": why, "races": []}
    era, outcomes = S.run(tries, seconds)
    return {"kernel": host.kernel(), "era": era,
            "races": [{**asdict(o), "verdict": o.verdict} for o in outcomes]}


def collect(examples: int, seed: int, kernels: list[str], tries: int, seconds: float,
            progress: Callable[[str], None]) -> dict[str, Any]:
    from vmaflags.conformance import host

    return {
        "host": host.kernel(),
        "eras": [{"id": e.id, "kernels": e.kernels, "kernel": e.kernel, "summary": e.summary}
                 for e in ERAS.values()],
        "proofs": proofs(progress),
        "concurrency": concurrency(progress),
        "conformance": conformance(examples, seed, kernels, progress),
        "stress": stress(tries, seconds, progress),
        "not_modelled": not_modelled(),
        "commands": {
            "prove": "vmaflags prove --json",
            "conform": f"vmaflags conform --examples {examples} --seed {seed} --json",
            **{f"vm {k}": f"vmaflags vm run --kernel {k} --examples {examples} --seed {seed} "
               "--json" for k in kernels},
            "stress": f"vmaflags stress --tries {tries} --seconds {seconds:g} --json",
        },
    }


def load(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(path.read_text())
