"""The `vmaflags` command: eras, run (a script on the model), prove, conform, kernel."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

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
    t = Table("era", "kernels", "modelled as", "summary")
    for e in ERAS.values():
        t.add_row(e.id, e.kernels, e.kernel, e.summary)
    console.print(t)


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
        text = sys.stdin.read() if str(script) == "-" else script.read_text()
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
          era: Optional[List[str]] = typer.Option(None, "--era", help="era id (repeatable)"),
          json_out: bool = typer.Option(False, "--json", help="JSON on stdout"),
          ktap: bool = typer.Option(False, "--ktap", help="KTAP on stdout")) -> None:
    """Prove or refute the theorem catalogue, per era; non-zero if a verdict is unexpected."""
    from vmaflags.proofs.command import prove as run_prove

    raise typer.Exit(run_prove(theorem, eras_or_fail(era), json_out, ktap))


@app.command()
def conform(era: Optional[str] = typer.Option(None, help="era id (default: identify it)"),
            identify: bool = typer.Option(False, "--identify", help="only identify the era"),
            scenario: Optional[List[str]] = typer.Option(None, "--scenario", help="scenario name"),
            examples: Optional[int] = typer.Option(
                None, help="random sequences to run (default 2000; 0 with --scenario)"),
            seed: Optional[int] = typer.Option(None, help="seed for the random sequences"),
            json_out: bool = typer.Option(False, "--json", help="JSON on stdout"),
            ktap: bool = typer.Option(False, "--ktap", help="KTAP on stdout")) -> None:
    """Check this machine's kernel against the model; exit 0 iff nothing diverges."""
    from vmaflags.conformance.command import conform as run_conform

    e = eras_or_fail([era])[0] if era else None
    raise typer.Exit(run_conform(e, identify, scenario, examples, seed, json_out, ktap))


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
    app()
