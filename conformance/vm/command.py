"""`vmaflags vm run` and `vmaflags vm matrix`: conformance of test VMs.

`vm run --kernel SPEC` boots the kernel (guest.Guest) and runs exactly what `vmaflags conform`
runs on this machine -- era identification by behaviour, the scenario catalogue, random
sequences -- against the guest, then the kernel's kselftests (patched kernels); same report,
JSON fields and exit codes (0 nothing diverges, 1 a divergence or a failed kselftest, 2 bad
input, 4 cannot run here: SKIP, 130 interrupted).  `vm matrix` does the same for this machine
and every SPEC, and prints one table of kernels x scenarios.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from rich.text import Text

from vmaflags.model.eras import Era

from .. import command, driver, host, report, sysfs
from . import kernels
from .guest import Guest, VMError

SKIP_EXIT = 4  # kselftest's KSFT_SKIP
DEFAULT_EXAMPLES = 500  # random sequences per kernel (guests run ~10x slower than the host)
MATRIX_EXAMPLES = 200


class Failed(RuntimeError):
    """The kernel could not be built, booted or driven: one line (and the console's tail)."""


@dataclass
class KernelRun:
    """One kernel's run: the conformance report, and what the VM adds."""

    spec: str
    run: report.Run | None = None
    skip: str = ""  # why it could not run here
    error: str = ""  # a build, boot or guest failure
    expected_era: str | None = None
    boot_seconds: float = 0.0
    selftests: list[dict] = field(default_factory=list)  # name, status, exit, output

    @property
    def ok(self) -> bool:
        return (not self.error and self.run is not None and self.run.ok
                and all(t["status"] != "fail" for t in self.selftests)
                and (self.expected_era is None or self.identified == self.expected_era))

    @property
    def identified(self) -> str | None:
        i = self.run.identification if self.run else None
        return i.era if i else None

    def as_dict(self) -> dict:
        d = self.run.as_dict() if self.run else {"kernel": self.spec, "ok": False}
        d.update(spec=self.spec, expected_era=self.expected_era, skip=self.skip,
                 error=self.error, boot_seconds=round(self.boot_seconds, 3),
                 selftests=self.selftests, ok=self.ok)
        return d


def check_kernel(spec: str, era: Era | None, chosen: list, examples: int, seed: int,
                 identify_only: bool = False) -> KernelRun:
    """Build or fetch SPEC, boot it and run the conformance suite in it (see the module)."""
    kr = KernelRun(spec)
    try:
        k = kernels.resolve(spec)
    except kernels.Skip as e:
        kr.skip = str(e)
        return kr
    except Exception as e:  # noqa: BLE001 - a build failure: vmaflags.kernel.build.BuildError
        if type(e).__name__ != "BuildError":
            raise
        kr.error = f"build: {e}"
        return kr
    kr.expected_era = k.expected_era
    try:
        with Guest(k) as g, host.use(g):
            kr.boot_seconds = g.boot_seconds
            kr.run = command.execute(era, identify_only, chosen, examples, seed, workers=1)
            if not identify_only:
                kr.selftests = [_selftest(g, name) for name in sorted(k.selftests)]
    except kernels.Skip as e:
        kr.skip = str(e)
    except (VMError, driver.ExecutorError, sysfs.SysfsError) as e:
        kr.error = str(e)
    return kr


def _selftest(g: Guest, name: str) -> dict:
    status, lines = g.run_program(f"/bin/{name}")
    verdict = {0: "pass", SKIP_EXIT: "skip"}.get(status, "fail")
    return {"name": name, "status": verdict, "exit": status, "output": lines}


def run(spec: str, era: Era | None, scenarios: list[str] | None, examples: int | None,
        seed: int | None, json_out: bool, ktap: bool) -> int:
    try:
        chosen, examples, seed = command.prepare(scenarios, examples, seed, json_out, ktap,
                                                 default_examples=DEFAULT_EXAMPLES)
        kernels.resolve_name(spec)
    except (command.Usage, ValueError) as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 2
    try:
        kr = check_kernel(spec, era, chosen, examples, seed)
    except KeyboardInterrupt:
        print("vmaflags: interrupted", file=sys.stderr)
        return 130
    return render(kr, json_out, ktap)


def render(kr: KernelRun, json_out: bool, ktap: bool) -> int:
    if json_out:
        print(json.dumps(kr.as_dict(), indent=2))
    elif ktap:
        sys.stdout.write(_ktap(kr))
    else:
        _rich(kr, Console(highlight=False, soft_wrap=True))
    if kr.skip:
        return SKIP_EXIT
    return 0 if kr.ok else 1


def _ktap(kr: KernelRun) -> str:
    if kr.skip or kr.error or kr.run is None:
        why = kr.skip or kr.error
        return ("KTAP version 1\n1..1\n" + "".join(f"# {ln}\n" for ln in why.splitlines()[1:])
                + f"{'ok' if kr.skip else 'not ok'} 1 {kr.spec}"
                + (f" # SKIP {kr.skip}" if kr.skip else "") + "\n")
    lines = report.to_ktap(kr.run).splitlines()
    n = int(lines[1].split("..")[1])
    extra = []
    if kr.expected_era is not None:
        extra.append((kr.identified == kr.expected_era, "expected_era",
                      [f"# expected {kr.expected_era}, identified {kr.identified}"]))
    for t in kr.selftests:
        extra.append((t["status"] != "fail", f"kselftest_{t['name']}",
                      [f"# {ln}" for ln in t["output"]]))
    out = [lines[0], f"1..{n + len(extra)}", *lines[2:]]
    for i, (ok, name, diag) in enumerate(extra, n + 1):
        out += diag + [f"{'ok' if ok else 'not ok'} {i} {name}"]
    return "\n".join(out) + "\n"


def _rich(kr: KernelRun, console: Console) -> None:
    if kr.skip:
        console.print(f"{kr.spec}: [yellow]SKIP[/] {kr.skip}")
        return
    if kr.error:
        console.print("[red]ERROR[/] ", Text(kr.error))
        return
    assert kr.run is not None
    console.print(f"{kr.spec}: booted in {kr.boot_seconds:.1f} s")
    report.print_rich(kr.run, console)
    if kr.expected_era is not None and kr.identified != kr.expected_era:
        console.print(f"[red]expected era {kr.expected_era}[/], identified {kr.identified}")
    for t in kr.selftests:
        style = {"pass": "green", "skip": "yellow", "fail": "red"}[t["status"]]
        console.print(f"kselftest {t['name']}: [{style}]{t['status']}[/] (exit {t['exit']})")
        if t["status"] == "fail":
            console.print(Text("\n".join(t["output"][-30:])))


# ---- the matrix -------------------------------------------------------------------------------

def matrix(specs: list[str] | None, examples: int | None, seed: int | None,
           json_out: bool) -> int:
    specs = specs or kernels.matrix_specs()
    try:
        chosen, examples, seed = command.prepare(None, examples, seed, json_out, False,
                                                 default_examples=MATRIX_EXAMPLES)
        for s in specs:
            kernels.resolve_name(s)
    except (command.Usage, ValueError) as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 2
    err = Console(stderr=True)
    rows: list[KernelRun] = []
    try:
        t0 = time.perf_counter()
        err.print(f"this machine ({host.kernel()}) ...")
        rows.append(_host_run(chosen, examples, seed))
        for s in specs:
            err.print(f"{s} ...")
            rows.append(check_kernel(s, None, chosen, examples, seed))
    except KeyboardInterrupt:
        print("vmaflags: interrupted", file=sys.stderr)
        return 130
    if json_out:
        print(json.dumps({"seed": seed, "examples": examples,
                          "seconds": round(time.perf_counter() - t0, 3),
                          "kernels": [r.as_dict() for r in rows]}, indent=2))
    else:
        _matrix_rich(rows, seed, Console(highlight=False, soft_wrap=True))
    return 0 if all(r.ok or r.skip for r in rows) else 1


def _host_run(chosen: list, examples: int, seed: int) -> KernelRun:
    kr = KernelRun("host", expected_era=host.mainline_era())
    why = host.no_thp() or host.no_executor()
    if why:
        kr.skip = why
        return kr
    try:
        kr.run = command.execute(None, False, chosen, examples, seed)
    except sysfs.SysfsError as e:
        kr.error = str(e)
    return kr


def _mark(status: str) -> Text:
    return {"pass": Text("ok", style="green"), "diverge": Text("DIV", style="red"),
            "skip": Text("skip", style="yellow")}[status]


def _matrix_rich(rows: list[KernelRun], seed: int, console: Console) -> None:
    t = Table("", "kernel", "era identified", "scen.", "random", "ksft", "",
              title="kernels", title_justify="left")
    for i, r in enumerate(rows, 1):
        if r.skip or r.error or r.run is None:
            t.add_row(f"K{i}", r.spec, "", "", "", "",
                      Text("SKIP" if r.skip else "ERROR", style="yellow" if r.skip else "red"))
            continue
        sc = r.run.scenarios
        passed = sum(x.status == "pass" for x in sc)
        rr = r.run.random
        rnd = f"{rr.examples}/{len(rr.divergences)}" if rr else "-"
        era = r.identified or "none"
        if r.expected_era and r.expected_era != r.identified:
            era = Text(f"{era} (want {r.expected_era})", style="red")
        ks = ",".join(x["status"] for x in r.selftests) or "-"
        t.add_row(f"K{i}", r.spec, era, f"{passed}/{len(sc)}", rnd, ks,
                  Text("OK", style="green") if r.ok else Text("FAIL", style="red"))
    console.print(t)
    ran = [(i, r) for i, r in enumerate(rows, 1) if r.run is not None]
    names = list(dict.fromkeys(x.name for _, r in ran for x in r.run.scenarios))  # type: ignore
    if names:
        s = Table("scenario", *(f"K{i}" for i, _ in ran), title="scenarios",
                  title_justify="left")
        for n in names:
            cells = []
            for _, r in ran:
                got = [x for x in r.run.scenarios if x.name == n]  # type: ignore[union-attr]
                cells.append(_mark(got[0].status) if got else Text("-"))
            s.add_row(n, *cells)
        console.print(s)
    for i, r in enumerate(rows, 1):
        what = r.run.kernel if r.run is not None else (r.skip or r.error).splitlines()[0]
        console.print(f"K{i} {r.spec}: ", Text(what))
    console.print(f"scen.: scenario runs passed; random: sequences/divergences, seed {seed};\n"
                  "ksft: the kernel's kselftests in the guest")
