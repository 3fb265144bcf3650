"""`vmaflags conform`: identify the era, run the scenario catalogue and random sequences against
this machine's kernel, and report.  Exit 0 iff nothing diverges, 1 on a divergence, 2 for a
usage error (malformed scenario, unknown scenario or era), 130 when interrupted."""
from __future__ import annotations

import contextlib
import os
import random as _random
import sys
import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn)

from vmaflags.model.eras import ERAS, Era

from . import catalogue, host, identify, report, sequences, sysfs
from .catalogue import CatalogueError

DEFAULT_EXAMPLES = 2000


def conform(era: Era | None, identify_only: bool, scenarios: list[str] | None,
            examples: int | None, seed: int | None, json_out: bool, ktap: bool,
            workers: int | None = None) -> int:
    if json_out and ktap:
        print("vmaflags: choose one of --json and --ktap", file=sys.stderr)
        return 2
    if examples is not None and examples < 0:
        print("vmaflags: --examples must be >= 0", file=sys.stderr)
        return 2
    err = Console(stderr=True)
    try:
        chosen = catalogue.load(scenarios)  # malformed or unknown: exit 2 before any run
    except CatalogueError as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 2
    if examples is None:
        examples = 0 if scenarios or identify_only else DEFAULT_EXAMPLES
    seed = _random.randrange(2**31) if seed is None else seed
    try:
        run = _run(era, identify_only, chosen, examples, seed, workers, err)
    except KeyboardInterrupt:
        print("vmaflags: interrupted; THP sysfs restored", file=sys.stderr)
        return 130
    except sysfs.SysfsError as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 1
    out = Console(highlight=False, soft_wrap=True)
    if json_out:
        print(report.to_json(run))
    elif ktap:
        sys.stdout.write(report.to_ktap(run))
    else:
        report.print_rich(run, out)
    return 0 if run.ok else 1


def _run(era: Era | None, identify_only: bool, chosen: list[catalogue.Scenario], examples: int,
         seed: int, workers: int | None, err: Console) -> report.Run:
    t0 = time.perf_counter()
    run = report.Run(host.kernel(), root=os.geteuid() == 0)
    if not host.no_thp():
        run.live_mode = sysfs.read("enabled")
    can_guard = sysfs.writable() is None and not identify_only  # probes need no guard
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True)
    with progress, (sysfs.SysfsGuard() if can_guard else contextlib.nullcontext()) as guard:
        if era is None or identify_only:
            task = progress.add_task("identifying the era", total=len(identify.probes()))
            run.identification = identify.identify(
                on_probe=lambda _: progress.advance(task))
            progress.remove_task(task)
        if identify_only:
            run.era = era.id if era else run.identification.era  # type: ignore[union-attr]
            run.expected_era = era.id if era else None
            run.seconds = time.perf_counter() - t0
            return run
        if era is None:
            ident = run.identification
            assert ident is not None
            if ident.matching:
                era = ERAS[ident.matching[0]]  # several: the first, reported as identified=None
            else:
                run.era_skip = why = ("no era to check against: " + (
                    "no model era matches this kernel" if ident.probes else
                    "the probes could not run (" + "; ".join(dict.fromkeys(
                        ident.skipped.values())) + ")"))
                run.scenarios = [catalogue.Result(n, "skip", why, len(sc.script.steps))
                                 for sc in chosen for n in catalogue.names(sc)]
                run.random_skip = why if examples else ""
        if era is not None:
            run.era = era.id
            task = progress.add_task("scenarios", total=len(chosen))
            for sc in chosen:
                run.scenarios += catalogue.run(sc, era, guard)
                progress.advance(task)
            progress.remove_task(task)
            if examples:
                why = host.no_thp() or host.no_executor()
                if why:
                    run.random_skip = why
                else:
                    live = sysfs.read("enabled")
                    others = [m for m in ("madvise", "always", "never") if m != live]
                    modes = [live] + (others if guard is not None else [])
                    task = progress.add_task(f"random sequences (seed {seed})", total=examples)
                    run.random = sequences.run(
                        era, examples, seed, modes, guard, workers,
                        on_shard=lambda r: progress.advance(task, r.shard.examples))
                    progress.remove_task(task)
    run.seconds = time.perf_counter() - t0
    return run
