"""Run what the report shows and gather it into one JSON-able dict (results.json).

Proof obligations run as `vmaflags prove` runs them (proofs.command.run: each batch in a
freshly forked worker), and so do the concurrency theorems here, one per worker, so that a
counterexample does not depend on what the process solved before.  Each row keeps the time it
took (`seconds`): the only part of a report that differs between two runs of the same code on
the same machine, apart from the live kernel's own results.
"""
from __future__ import annotations

import multiprocessing
import os
import pathlib
import time
from typing import Any, Callable

from vmaflags.model.eras import ERAS

# (what, done, total); total 0: the phase that starts now has a progress display of its own
Progress = Callable[[str, int, int], None]

FORMAT = 1  # of results.json


def _readme(package: str) -> str:
    import importlib

    mod = importlib.import_module(package)
    return (pathlib.Path(mod.__file__).resolve().parent / "README.md").read_text()


def not_modelled() -> list[str]:
    """The bullets of model/README.md's "What is not modelled" section, and the protocols'
    own "Not modelled" paragraph (proofs/protocols.py), one string each."""
    from vmaflags.proofs import protocols

    body = _readme("vmaflags.model").split("## What is not modelled", 1)[1].split("\n## ")[0]
    items: list[str] = []
    for line in body.splitlines()[1:]:
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    para = (protocols.__doc__ or "").split("Not modelled: ", 1)[1].split("\n\n")[0]
    items.append("CRIU's restore (proofs/protocols.py): " + " ".join(para.split()))
    return items


def row(r: Any) -> dict:
    """A proofs.command.Row as `prove --json` gives it, with its time."""
    return {**r.as_json(), "seconds": round(r.seconds, 2)}


def proofs(progress: Progress, eras: list | None = None) -> list[dict]:
    """The theorem catalogue (vmaflags prove --json), each row with its time."""
    from vmaflags.proofs.command import obligations, run

    jobs = obligations(None, eras or list(ERAS.values()))
    progress(f"proving {len(jobs)} obligations (vmaflags prove)", 0, 0)
    return [row(r) for r in run(jobs, show_progress=True)]


def _concurrency_one(key: tuple[str, str | None, str]) -> dict:
    from vmaflags.proofs import concurrency as C
    from vmaflags.proofs.command import Row

    theorem, protocol, era = key
    expected, reason = C.EXPECTED[key]
    t0 = time.perf_counter()
    v = C.check(theorem, protocol, ERAS[era])
    return row(Row(theorem, era, protocol, expected, reason, v, time.perf_counter() - t0))


def concurrency(progress: Progress, eras: list | None = None) -> list[dict]:
    """The concurrency theorems (proofs/concurrency.py EXPECTED), each in a fresh worker."""
    from vmaflags.proofs import concurrency as C

    ids = {e.id for e in eras or ERAS.values()}
    keys = [k for k in C.EXPECTED if k[2] in ids]
    ctx = multiprocessing.get_context("fork")
    out = []
    with ctx.Pool(max(1, min(len(keys), os.cpu_count() or 1)), maxtasksperchild=1) as pool:
        for n, r in enumerate(pool.imap(_concurrency_one, keys), 1):
            progress("concurrency theorems", n, len(keys))
            out.append(r)
    return out


def conformance_host(examples: int, seed: int, progress: Progress) -> dict:
    """This machine (vmaflags conform), as `vm matrix` runs it."""
    from vmaflags.conformance import catalogue
    from vmaflags.conformance.vm.command import _host_run

    progress(f"conformance of this machine ({examples} random sequences)", 0, 0)
    kr = _host_run(catalogue.load(), examples, seed)
    return {**kr.as_dict(), "source": "live",
            "command": f"vmaflags conform --examples {examples} --seed {seed} --json"}


def conformance_vm(spec: str, examples: int, seed: int, progress: Progress) -> dict:
    from vmaflags.conformance import catalogue
    from vmaflags.conformance.vm.command import check_kernel

    progress(f"conformance of {spec} in a test VM", 0, 0)
    kr = check_kernel(spec, None, catalogue.load(), examples, seed)
    return {**kr.as_dict(), "source": "live",
            "command": f"vmaflags vm run --kernel {spec} --examples {examples} --seed {seed} "
                       "--json"}


def stress(tries: int, seconds: float, progress: Progress) -> dict:
    from dataclasses import asdict

    from vmaflags.conformance import host
    from vmaflags.conformance import stress as S

    progress("live races (vmaflags stress)", 0, 1)
    out = {"kernel": host.kernel(), "era": None, "races": [], "source": "live",
           "command": f"vmaflags stress --tries {tries} --seconds {seconds:g} --json"}
    why = host.no_thp() or host.no_executor()
    if why:
        return {**out, "skip": why}
    try:
        era, outcomes = S.run(tries, seconds)
    except (OSError, RuntimeError) as e:
        return {**out, "skip": f"stress failed: {e}"}
    return {**out, "era": era,
            "races": [{**asdict(o), "verdict": o.verdict} for o in outcomes]}


def statements() -> dict[str, str]:
    """Each theorem's statement: the catalogue's, and the concurrency theorems' docstrings
    (their first paragraph)."""
    from vmaflags.proofs import concurrency as C
    from vmaflags.proofs.theorems import THEOREMS

    out = {t.id: t.statement for t in THEOREMS.values()}
    for tid, f in C.THEOREMS.items():
        out[tid] = " ".join((f.__doc__ or "").split("\n\n")[0].split())
    return out


def replay_kernels() -> dict[str, str | None]:
    """Per era, where its counterexamples can be replayed: "" this machine, a test VM's SPEC,
    or None (no kernel of the era here)."""
    from vmaflags.conformance import host
    from vmaflags.conformance.vm import kernels

    out: dict[str, str | None] = {e: None for e in ERAS}
    try:
        from vmaflags.kernel.build import KERNELS
        built = {k: v.era for k, v in KERNELS.items()}
    except ImportError:
        built = {}
    for spec, era in [*kernels.EXPECTED_ERA.items(), *built.items()]:
        if out.get(era) is None:
            out[era] = spec
    mine = host.mainline_era()
    if mine and not host.no_thp():
        out[mine] = ""
    return out


def collect(progress: Progress, *, live: bool = True, examples: int = 200,
            seed: int = 20251130, kernels: tuple[str, ...] = (), tries: int = 300,
            seconds: float = 20.0, saved: dict[str, list] | None = None,
            eras: list | None = None) -> dict[str, Any]:
    """Everything the report shows: `saved` (saved.load_dir) where given, the rest live.
    `live` runs this machine's conformance and races (the live kernel's THP sysfs); `eras`
    limits the theorems to those eras."""
    from vmaflags.conformance import host

    saved = saved or {}
    res: dict[str, Any] = {
        "format": FORMAT,
        "host": host.kernel(),
        "eras": [{"id": e.id, "kernels": e.kernels, "kernel": e.kernel, "summary": e.summary}
                 for e in ERAS.values()],
    }
    if saved.get("proofs"):
        res["proofs"] = saved["proofs"][0]["rows"]
        res["proofs_command"] = saved["proofs"][0]["command"]
    else:
        res["proofs"] = proofs(progress, eras)
        res["proofs_command"] = "vmaflags prove --json"
    res["concurrency"] = concurrency(progress, eras)
    conf = []
    if live:
        conf.append(conformance_host(examples, seed, progress))
    conf += [conformance_vm(k, examples, seed, progress) for k in kernels]
    res["conformance"] = conf + saved.get("conformance", [])
    res["criu"] = saved.get("criu", [])
    res["stress"] = ([stress(tries, seconds, progress)] if live else []) + saved.get("stress", [])
    res["statements"] = statements()
    res["replay_kernels"] = replay_kernels()
    res["not_modelled"] = not_modelled()
    return res
