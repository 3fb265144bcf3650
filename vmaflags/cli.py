"""The `vmaflags` command: eras, run (a script on the model), prove, conform, kernel."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from vmaflags.model import ERAS, ScriptError, era as era_by_id, parse_script

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The Linux VMA THP flag state machine: model, proofs, conformance.")
console = Console()


def fail(msg: str, code: int = 2) -> None:
    """A one-line error on stderr and a non-zero exit."""
    typer.echo(f"vmaflags: {msg}", err=True)
    raise typer.Exit(code)


def eras_or_fail(ids: Optional[List[str]]) -> list:
    try:
        return [era_by_id(i) for i in ids] if ids else list(ERAS.values())
    except ValueError as e:
        fail(str(e))
        raise  # unreachable


@app.command()
def eras() -> None:
    """List the kernel eras (semantics) with their kernel ranges and features."""
    import textwrap

    typer.echo(f"{'era':<20} {'kernels':<26} within-era features of")
    for e in ERAS.values():
        typer.echo(f"{e.id:<20} {e.kernels:<26} {e.kernel}")
        typer.echo(textwrap.fill(e.summary, 79, initial_indent=" " * 4,
                                 subsequent_indent=" " * 4, break_long_words=False))


@app.command()
def run(script: Path = typer.Argument(..., help="script file (conformance/SCRIPT.md), - for stdin"),
        era: str = typer.Option("mmf-except-advised", help="era id"),
        sysfs: str = typer.Option("madvise", help="starting sysfs THP mode")) -> None:
    """Run a script on the model and print what the executor would print."""
    from vmaflags.model import concrete
    from vmaflags.model.syscalls import SYSFS_MODES

    (e,) = eras_or_fail([era])
    if sysfs not in SYSFS_MODES:
        fail(f"unknown sysfs mode {sysfs!r}; valid: {', '.join(SYSFS_MODES)}")
    try:
        # bytes: a script need not be UTF-8 (SCRIPT.md), as the executor reads it
        text = sys.stdin.buffer.read() if str(script) == "-" else script.read_bytes()
        s = parse_script(text)
        outcomes = concrete.run(e, s, SYSFS_MODES.index(sysfs))
    except OSError as err:
        fail(f"{script}: {err.strerror}")
    except ScriptError as err:
        fail(f"{script}: {err}")
    for n, o in enumerate(outcomes, 1):
        if o.child is not None:
            typer.echo(f"{n}c {o.child.text()}")
        typer.echo(f"{n} {o.obs.text()}")


@app.command()
def prove(theorem: Optional[List[str]] = typer.Option(None, "--theorem", help="theorem id"),
          era: Optional[List[str]] = typer.Option(
              None, "--era", help="era id, or a row's era@kernel (repeatable)"),
          protocol: Optional[List[str]] = typer.Option(
              None, "--protocol", help="restore protocol or sequence (repeatable)"),
          concurrency: bool = typer.Option(
              False, "--concurrency", help="the interleaving obligations instead"),
          list_: bool = typer.Option(False, "--list", help="the theorems and their eras"),
          script: Optional[str] = typer.Option(
              None, "--script", help="write the counterexample of one --theorem, --era "
              "(and --protocol) as a replay file (- for stdout)"),
          json_out: bool = typer.Option(False, "--json", help="JSON on stdout"),
          ktap: bool = typer.Option(False, "--ktap", help="KTAP on stdout")) -> None:
    """Prove or refute the theorem catalogue, per era; non-zero if a verdict is unexpected."""
    from vmaflags.proofs.command import prove as run_prove

    if json_out and ktap:
        fail("choose one of --json and --ktap")
    if sum([json_out or ktap, list_, script is not None]) > 1:
        fail("--list and --script take no other output option: choose one")
    raise typer.Exit(run_prove(theorem, era or [], json_out, ktap, protocol, concurrency,
                               list_, script))


@app.command()
def conform(era: Optional[str] = typer.Option(None, help="era id (default: identify it)"),
            identify: bool = typer.Option(False, "--identify", help="only identify the era"),
            scenario: Optional[List[str]] = typer.Option(None, "--scenario", help="scenario name"),
            examples: Optional[int] = typer.Option(
                None, help="random sequences to check, exactly (default 2000; 0 with "
                "--scenario); a shard stops at its first divergence, and the scripts run to "
                "shrink it are counted apart"),
            seed: Optional[int] = typer.Option(None, help="seed for the random sequences"),
            json_out: bool = typer.Option(False, "--json", help="JSON on stdout"),
            ktap: bool = typer.Option(False, "--ktap", help="KTAP on stdout")) -> None:
    """Check this machine's kernel against the model; exit 0 iff nothing diverges."""
    from vmaflags.conformance.command import conform as run_conform

    e = eras_or_fail([era])[0] if era else None
    raise typer.Exit(run_conform(e, identify, scenario, examples, seed, json_out, ktap))


@app.command()
def replay(script: str = typer.Argument(..., help="replay file (a script, or `#! process:` "
                                                "sections), - for stdin"),
           era: Optional[str] = typer.Option(None, help="era id (default: identify it)"),
           kernel: Optional[str] = typer.Option(
               None, help="a test VM's SPEC (vmaflags vm) instead of this machine"),
           json_out: bool = typer.Option(False, "--json", help="JSON on stdout")) -> None:
    """Run a script (a proof's counterexample) on a kernel and on the model, side by side;
    exit 1 where they part."""
    from vmaflags.conformance.replay import command

    raise typer.Exit(command(script, era, kernel, json_out))


@app.command()
def reproduce(theorem: str = typer.Argument(..., help="theorem id (vmaflags prove)"),
              era: str = typer.Option(..., "--era", help="era id, or era@kernel as prove "
                                      "prints it"),
              protocol: Optional[str] = typer.Option(None, "--protocol",
                                                     help="restore protocol (CRIU theorems)"),
              out: Optional[Path] = typer.Option(
                  None, "--out", help="write the standalone program and the kselftest here "
                  "(default: the standalone program on stdout)")) -> None:
    """A refuted obligation's counterexample as C: a standalone program and a
    kselftest_harness.h test that run it on a kernel and check what the model predicts."""
    from vmaflags.conformance.reproduce import command

    raise typer.Exit(command(theorem, era, protocol, None if out is None else str(out)))


@app.command()
def stress(tries: int = typer.Option(500, help="tries per race (each in a fresh process)"),
           seconds: float = typer.Option(20.0, help="time limit per race"),
           json_out: bool = typer.Option(False, "--json", help="JSON on stdout")) -> None:
    """Try the races of the concurrency theorems on this kernel; exit 1 if one contradicts
    the model."""
    from vmaflags.conformance.stress import command

    raise typer.Exit(command(tries, seconds, json_out))


@app.command()
def report(out: Path = typer.Option(..., "--out", help="directory for the report files"),
           from_file: Optional[Path] = typer.Option(
               None, "--from", help="render the results.json of an earlier report again "
               "(nothing runs)"),
           results: Optional[Path] = typer.Option(
               None, "--results", help="a directory of saved JSON (prove, conform, vm run, "
               "vm matrix, vm criu, stress --json) to include"),
           live: bool = typer.Option(True, "--live/--no-live",
                                     help="run conform and stress on this machine's kernel"),
           kernel: Optional[List[str]] = typer.Option(
               None, "--kernel", help="a test-VM kernel to run (vmaflags vm run; repeatable)"),
           examples: int = typer.Option(200, help="random sequences per kernel"),
           seed: int = typer.Option(20251130, help="seed for the random sequences"),
           tries: int = typer.Option(300, help="tries per live race"),
           seconds: float = typer.Option(20.0, help="time limit per live race")) -> None:
    """Write report.html, report.md and report.txt (and results.json, the replay files of the
    counterexamples and the state machines as SVG) from live and saved results."""
    import json
    import math

    from vmaflags.report import collect, render, saved

    if examples < 0 or tries < 1 or not 0 < seconds < math.inf:
        fail("--examples must be >= 0, --tries >= 1 and --seconds > 0")
    if from_file is not None and (results is not None or kernel):
        fail("--from renders saved results as they are: no --results or --kernel with it")
    try:
        if kernel:
            from vmaflags.conformance.vm import kernels
            for k in kernel:
                kernels.resolve_name(k)
        res = saved.load(from_file) if from_file is not None else None
        if res is not None and saved.kind(res) != "report":
            fail(f"{from_file}: not the results.json of vmaflags report")
        found = saved.load_dir(results) if results is not None else {}
    except (ValueError, saved.BadResults) as e:
        fail(str(e))
    progress = _ReportProgress(Console(stderr=True))
    try:
        if res is None:
            res = collect.collect(progress, live=live, examples=examples, seed=seed,
                                  kernels=tuple(kernel or ()), tries=tries, seconds=seconds,
                                  saved=found)
        progress("writing the report", 0, 1)
        out.mkdir(parents=True, exist_ok=True)
        # first: what was collected survives a failure to render
        (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
        files = render.write(res, out)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except OSError as e:
        fail(f"{e.filename or out}: {e.strerror}")
    finally:
        progress.stop()
    for f in files:
        typer.echo(str(f))


class _ReportProgress:
    """`vmaflags report`'s display on stderr: the phase, a bar when it counts, the time.  A
    phase with a display of its own (total 0: prove, conform, vm run) gets the terminal to
    itself, after one line naming it."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)

        self.console = console
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                            transient=True)
        self.task = self.bar.add_task("", total=None)
        self.live = False

    def __call__(self, what: str, done: int, total: int) -> None:
        if total == 0:
            self.stop()
            self.console.print(f"report: {what}", highlight=False)
            return
        if not self.live:
            self.bar.start()
            self.live = True
        if what != self.bar.tasks[0].description:  # a new phase: its own elapsed time
            self.bar.reset(self.task, description=what, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def stop(self) -> None:
        if self.live:
            self.bar.stop()
            self.live = False


vm_app = typer.Typer(no_args_is_help=True,
                     help="Test VMs: other kernels under qemu, checked like this machine.")
app.add_typer(vm_app, name="vm")


@vm_app.command("run")
def vm_run(kernel: str = typer.Option(..., "--kernel",
                                      help="debian-6.1, debian-6.12, patched-6.12 or a bzImage"),
           era: Optional[str] = typer.Option(None, help="era id (default: identify it)"),
           scenario: Optional[List[str]] = typer.Option(None, "--scenario",
                                                        help="scenario name"),
           examples: Optional[int] = typer.Option(
               None, help="random sequences (default 500; 0 with --scenario)"),
           seed: Optional[int] = typer.Option(None, help="seed for the random sequences"),
           json_out: bool = typer.Option(False, "--json", help="JSON on stdout"),
           ktap: bool = typer.Option(False, "--ktap", help="KTAP on stdout")) -> None:
    """Boot KERNEL in qemu and check it as `conform` checks this machine; then its kselftests.
    Exit 0 iff nothing diverges, 4 when it cannot run here (SKIP)."""
    from vmaflags.conformance.vm.command import run as vm_run_

    e = eras_or_fail([era])[0] if era else None
    raise typer.Exit(vm_run_(kernel, e, scenario, examples, seed, json_out, ktap))


@vm_app.command("matrix")
def vm_matrix(kernel: Optional[List[str]] = typer.Option(
                  None, "--kernel", help="kernels (default: every SPEC but -std)"),
              examples: Optional[int] = typer.Option(
                  None, help="random sequences per kernel (default 200)"),
              seed: Optional[int] = typer.Option(None, help="seed for the random sequences"),
              json_out: bool = typer.Option(False, "--json", help="JSON on stdout")) -> None:
    """This machine and every test-VM kernel: identified era, scenarios, random sequences."""
    from vmaflags.conformance.vm.command import matrix

    raise typer.Exit(matrix(kernel, examples, seed, json_out))


@vm_app.command("criu")
def vm_criu(kernel: Optional[str] = typer.Option(
                None, "--kernel", help="a standard Debian kernel: debian-6.1-std (default), "
                "debian-6.12-std"),
            criu: str = typer.Option("3.17", "--criu",
                                     help="CRIU release: 3.17 (bookworm), 4.1 (trixie)"),
            json_out: bool = typer.Option(False, "--json", help="JSON on stdout")) -> None:
    """Real CRIU dumps and restores processes in a test VM (plain, lazy, lazy with a
    pre-dump); each restore is compared with the model's protocol for that CRIU release.
    Exit 0 iff every case agrees, 4 when it cannot run here (SKIP)."""
    from vmaflags.conformance.vm.criu_command import run as criu_run

    raise typer.Exit(criu_run(kernel, criu, json_out))


@vm_app.command("restores")
def vm_restores(kernel: Optional[str] = typer.Option(
                    None, "--kernel", help="a test VM's SPEC (default: this machine)"),
                era: str = typer.Option(..., help="era whose proof's dumps are restored"),
                protocol: str = typer.Option("clr-2017", help="restore protocol (proofs)"),
                every: int = typer.Option(1, help="run every N-th dump only")) -> None:
    """Every CRIU restore criu-restore-original quantifies over (each dump of its bound) on a
    kernel and on the model: exit 0 iff the kernel agrees and every restore is exact."""
    from vmaflags.conformance.restores import command

    raise typer.Exit(command(kernel, eras_or_fail([era])[0], protocol, every))


kernel_app = typer.Typer(no_args_is_help=True,
                         help="Build the test kernels of kernel-patch/ (cached).")
app.add_typer(kernel_app, name="kernel")


@kernel_app.command("build")
def kernel_build(name: str = typer.Argument("patched-6.12", help="kernel name (kernel list)"),
                 jobs: Optional[int] = typer.Option(None, "--jobs", "-j",
                                                    help="make -j (default: every CPU)")) -> None:
    """Build a test kernel, its config and static kselftests; print where they are."""
    from vmaflags.kernel.command import build_command

    raise typer.Exit(build_command(name, jobs))


@kernel_app.command("list")
def kernel_list() -> None:
    """The test kernels: source version, patch series, and whether a build is cached."""
    from vmaflags.kernel.command import list_command

    raise typer.Exit(list_command())


def main() -> None:
    """The `vmaflags` command.  A usage error (unknown option, bad value, missing argument) is
    one line on stderr and exit 2, like every other bad input, rather than the framework's box;
    its classes differ between typer versions (click's, or typer's copy), hence the duck typing."""
    try:
        code = app(standalone_mode=False)
    except Exception as e:
        if not (hasattr(e, "format_message") and getattr(e, "exit_code", None) == 2):
            if type(e).__name__ == "Abort":  # end of input at a prompt
                sys.exit(1)
            raise
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `vmaflags` or `vmaflags vm`
            e.show()  # type: ignore[attr-defined]
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "vmaflags"
        msg = " ".join(e.format_message().split())  # type: ignore[attr-defined]
        typer.echo(f"{where}: {msg} (see {where} --help)", err=True)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)
