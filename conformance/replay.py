"""`vmaflags replay`: any script -- a proof's counterexample -- on a kernel and on the model, side
by side, and where they part.

A replay file is a script, or several: a `#! process: NAME` line starts the script of one
process (a CRIU counterexample has the dumped process and the restore), each run in a fresh
process.  Headers before the first `#! process:` (`#! sysfs:`) apply to every script.  The
kernel is this machine's, or a test VM's (`--kernel SPEC`); the era is identified by behaviour
unless given.  Exit 0 when the kernel does what the model says, 1 where they part, 2 for bad
input, 4 when it cannot run here (SKIP).
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import sys
from dataclasses import dataclass, field

from vmaflags.model.eras import ERAS, Era
from vmaflags.model.eras import era as era_by_id
from vmaflags.model.errno import ret_text
from vmaflags.model.observe import Observation

from . import catalogue, driver, host, identify, sysfs
from .catalogue import CatalogueError

LEGEND = ("a VMA of the arena: START-END (from the arena base) FLAGS (hg nh um uw of smaps\n"
          "VmFlags) elig= THPeligible ahp= AnonHugePages kB; thp= THP_enabled of the status")


class Usage(ValueError):
    pass


def split(text: str) -> list[tuple[str, str]]:
    """(process, script text) per `#! process:` section; the whole text is one process
    (`process`) when it has none.  A section's text keeps the file's line numbers (the other
    sections' lines are blanked), so that an error names the line of the file."""
    lines = text.split("\n")
    starts = [i for i, ln in enumerate(lines) if ln.startswith("#! process:")]
    if not starts:
        return [("process", text)]
    out = []
    for k, at in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        name = lines[at].split(":", 1)[1].strip() or f"process {k + 1}"
        kept = [ln if (i < starts[0] and ln.startswith("#!")) or at < i < end else ""
                for i, ln in enumerate(lines)]
        out.append((name, "\n".join(kept)))
    return out


def from_counterexample(name: str, steps: list[dict]) -> str:
    """The replay file of a proof's counterexample: `steps` as `vmaflags prove --json` gives
    them (one dict per replayed step: `process`, `syscall`, `arena`, `sysfs`), one `#! process:`
    section per process in their order, each with its trace's sysfs mode and arena."""
    out = [f"#! title: {name}", "#! source: vmaflags prove, the solver's counterexample"]
    for process in dict.fromkeys(s["process"] for s in steps):
        mine = [s for s in steps if s["process"] == process]
        out += [f"#! process: {process}", f"#! sysfs: {mine[0]['sysfs']}",
                f"arena {mine[0]['arena']}", *(s["syscall"] for s in mine)]
    return "\n".join(out) + "\n"


@dataclass
class Replayed:
    process: str
    sysfs: str
    skip: str = ""
    checked: driver.Checked | None = None
    steps: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return self.checked is not None and self.checked.divergence is None


def replay(text: str, era: Era | None) -> tuple[Era, list[Replayed]]:
    """Every process of the replay file, in every sysfs mode it names, on the kernel under
    test (host.current()) and on the model."""
    try:
        parts = [(n, catalogue.parse(n, t, strict=False)) for n, t in split(text)]
    except CatalogueError as e:
        raise Usage(str(e)) from None
    era = host.era(era) if era is not None else _identified()
    needs = any(sc.sysfs_steps or sc.khugepaged or any(
        m not in (catalogue.LIVE, host.read("enabled")) for m in sc.modes) for _, sc in parts)
    guard = host.guard() if needs and host.writable() is None else contextlib.nullcontext()
    out = []
    with guard as g:
        for name, sc in parts:
            for mode in sc.modes:
                shown = host.read("enabled") if mode == catalogue.LIVE else mode
                r = Replayed(name, shown, steps=[s.text() for s in sc.script.steps])
                r.skip = catalogue.blocker(sc, mode, g) or ""
                if not r.skip:
                    r.checked = catalogue.check(sc, mode, era, g)
                out.append(r)
    return era, out


def _identified() -> Era:
    ident = identify.identify([host.era(e) for e in ERAS.values()])
    if ident.era is None:
        why = (f"several eras match ({', '.join(ident.matching)})" if ident.matching else
               "no era matches" if ident.probes else
               "; ".join(dict.fromkeys(ident.skipped.values())) or "no probe ran")
        raise Usage(f"cannot identify the kernel's era ({why}): give --era")
    return host.era(ERAS[ident.era])


def _obs(o: Observation | None, indent: str) -> list[str]:
    if o is None:
        return [f"{indent}(no line)"]
    thp = "-" if o.thp is None else o.thp
    out = [f"{indent}ret={ret_text(o.ret)} get={ret_text(o.get)} thp={thp}"]
    for v in o.vmas:
        e = "-" if v.eligible is None else v.eligible
        out.append(f"{indent}{v.start:#x}-{v.end:#x} {v.flags} elig={e} ahp={v.anon_huge_kb}")
    return out or [f"{indent}(no VMA in the arena)"]


def text_lines(r: Replayed, era: Era) -> list[str]:
    """The side-by-side text of one process: every step with what both printed, up to the
    step where model and kernel part."""
    out = [f"{r.process} (sysfs {r.sysfs}, era {era.id} at {era.kernel})"]
    if r.skip:
        return out + [f"  SKIP: {r.skip}"]
    assert r.checked is not None
    model, kernel = r.checked.model, r.checked.kernel
    d = r.checked.divergence
    for i in range(max(len(model), len(kernel))):
        m = model[i] if i < len(model) else None
        k = kernel[i] if i < len(kernel) else None
        label = (m or k)[0]  # type: ignore[index]
        step = r.steps[int(label.rstrip("c")) - 1]
        what = f"{label:>3} {step}" + (" (child)" if label.endswith("c") else "")
        if m == k:
            out += [what] + _obs(m and m[1], " " * 6)
            continue
        out.append(f"{what:<48} <-- model and kernel part")
        out += ["      model:"] + _obs(m and m[1], " " * 8)
        out += ["      kernel:"] + _obs(k and k[1], " " * 8)
        rest = len(r.steps) - int(label.rstrip("c"))
        if rest:
            out.append(f"      ({rest} more step{'s' if rest > 1 else ''} not compared)")
        break
    out.append(f"  {'agrees with the model' if d is None else 'DIVERGES'}")
    return out


def as_dict(r: Replayed) -> dict:
    d: dict = {"process": r.process, "sysfs": r.sysfs, "skip": r.skip, "agrees": r.agrees}
    if r.checked is not None:
        d["divergence"] = r.checked.divergence.as_dict() if r.checked.divergence else None
        d["model"] = [f"{n} {o.text()}" for n, o in r.checked.model]
        d["kernel"] = [f"{n} {o.text()}" for n, o in r.checked.kernel]
    return d


def command(path: str, era_id: str | None, spec: str | None, json_out: bool) -> int:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else pathlib.Path(path).read_bytes()
        # bytes that are not UTF-8 stand for themselves, as the executor reads them (SCRIPT.md)
        text = raw.decode("utf-8", "surrogateescape")
        era = era_by_id(era_id) if era_id else None
        if spec is not None:
            from .vm import kernels
            kernels.resolve_name(spec)
    except OSError as e:
        print(f"vmaflags: {path}: {e.strerror}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 2
    try:
        if spec is None:
            why = host.no_thp() or host.no_executor()
            if why:
                raise _Skip(why)
            kernel, (era, rs) = host.kernel(), replay(text, era)
        else:
            kernel, era, rs = _in_vm(spec, text, era)
    except _Skip as e:
        print(f"vmaflags: SKIP: {e}", file=sys.stderr)
        return 4
    except Usage as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 2
    except (driver.ExecutorError, sysfs.SysfsError, RuntimeError) as e:
        print(f"vmaflags: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    if json_out:
        print(json.dumps({"kernel": kernel, "era": era.id, "era_kernel": era.kernel,
                          "processes": [as_dict(r) for r in rs]}, indent=2))
    else:
        print(f"kernel {kernel}")
        for r in rs:
            print("\n".join(text_lines(r, era)))
        print(LEGEND)
    if any(r.skip for r in rs) and not any(r.checked for r in rs):
        return 4
    return 0 if all(r.agrees or r.skip for r in rs) else 1


class _Skip(Exception):
    pass


def _in_vm(spec: str, text: str, era: Era | None) -> tuple[str, Era, list[Replayed]]:
    from .vm import kernels
    from .vm.guest import Guest, VMError

    try:
        k = kernels.resolve(spec)
        with Guest(k) as g, host.use(g):
            if g.no_thp():
                raise _Skip(g.no_thp())
            return g.kernel(), *replay(text, era)
    except kernels.Skip as e:
        raise _Skip(str(e)) from None
    except VMError as e:
        raise RuntimeError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - vmaflags.kernel.build.BuildError
        if type(e).__name__ != "BuildError":
            raise
        raise RuntimeError(f"build: {e}") from None
