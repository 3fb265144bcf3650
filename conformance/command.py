"""`vmaflags conform`: identify the era, run the scenario catalogue and random sequences against
this machine's kernel, and report.  Exit 0 iff nothing diverges, 1 on a divergence, 2 for a
usage error (malformed scenario, unknown scenario or era), 130 when interrupted."""
from __future__ import annotations

import contextlib
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
MAX_EXAMPLES = 10_000_000  # hours of work; the shard plan is built up front


class Usage(ValueError):
    """A bad argument or scenario: one line, exit 2."""


def prepare(scenarios: list[str] | None, examples: int | None, seed: int | None,
            json_out: bool, ktap: bool, identify_only: bool = False,
            default_examples: int = DEFAULT_EXAMPLES
            ) -> tuple[list[catalogue.Scenario], int, int]:
    """Check the arguments before anything runs: (scenarios, examples, seed), or Usage."""
    if json_out and ktap:
        raise Usage("choose one of --json and --ktap")
    if examples is not None and not 0 <= examples <= MAX_EXAMPLES:
        raise Usage(f"--examples must be from 0 to {MAX_EXAMPLES:,}")
    try:
        chosen = catalogue.load(scenarios)  # malformed or unknown: exit 2 before any run
    except CatalogueError as e:
        raise Usage(str(e)) from None
    if examples is None:
        examples = 0 if scenarios or identify_only else default_examples
    return chosen, examples, _random.randrange(2**31) if seed is None else seed


def render(run: report.Run, json_out: bool, ktap: bool) -> int:
    """Print the run on stdout; the exit status: 0 iff nothing diverges."""
    if json_out:
        print(report.to_json(run))
    elif ktap:
        sys.stdout.write(report.to_ktap(run))
    else:
        report.print_rich(run, Console(highlight=False, soft_wrap=True))
    return 0 if run.ok else 1


def conform(era: Era | None, identify_only: bool, scenarios: list[str] | None,
            examples: int | None, seed: int | None, json_out: bool, ktap: bool,
            workers: int | None = None) -> int:
    try:
        chosen, examples, seed = prepare(scenarios, examples, seed, json_out, ktap,
                                         identify_only)
    except Usage as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 2
    try:
        run = execute(era, identify_only, chosen, examples, seed, workers)
    except KeyboardInterrupt:
        print("vmaflags: interrupted; THP sysfs restored", file=sys.stderr)
        return 130
    except sysfs.SysfsError as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 1
    return render(run, json_out, ktap)


def execute(era: Era | None, identify_only: bool, chosen: list[catalogue.Scenario],
            examples: int, seed: int, workers: int | None = None) -> report.Run:
    """Identify the era (unless given), run the scenarios and the random sequences against the
    kernel under test (host.current()), with a progress display on stderr."""
    err = Console(stderr=True)
    t0 = time.perf_counter()
    run = report.Run(host.kernel(), root=host.is_root())
    if not host.no_thp():
        run.live_mode = host.read("enabled")
    can_guard = host.writable() is None and not identify_only  # probes need no guard
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True)
    with progress, (host.guard() if can_guard else contextlib.nullcontext()) as guard:
        if era is None or identify_only:
            task = progress.add_task("identifying the era", total=len(identify.probes()))
            run.identification = identify.identify(
                [host.era(e) for e in ERAS.values()], on_probe=lambda _: progress.advance(task))
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
                era = host.era(ERAS[ident.matching[0]])  # several: the first, identified=None
            else:
                run.era_skip = why = ("no era to check against: " + (
                    "no model era matches this kernel" if ident.probes else
                    "the probes could not run (" + "; ".join(dict.fromkeys(
                        ident.skipped.values())) + ")"))
                run.scenarios = [catalogue.Result(n, "skip", why, len(sc.script.steps))
                                 for sc in chosen for n in catalogue.names(sc)]
                run.random_skip = why if examples else ""
        if era is not None:
            era = host.era(era)
            run.era = era.id
            run.era_kernel = era.kernel
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
                    live = host.read("enabled")
                    others = [m for m in ("madvise", "always", "never") if m != live]
                    modes = [live] + (others if guard is not None else [])
                    task = progress.add_task(f"random sequences (seed {seed})", total=examples)
                    run.random = sequences.run(
                        era, examples, seed, modes, guard, workers,
                        on_shard=lambda r: progress.advance(task, r.shard.examples))
                    progress.remove_task(task)
    run.seconds = time.perf_counter() - t0
    return run
