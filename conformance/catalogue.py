"""The scenario catalogue: named scripts in conformance/scenarios/NAME.vmf, and running one.

A scenario is a script with `#! key: value` headers; the expected results are never written
down — the model is the oracle.  Headers:

    #! title: one line saying what the scenario shows             (required)
    #! source: where it comes from: seed thread, selftest, spec § (required)
    #! sysfs: always madvise never | live                          (default live: the mode the
               kernel is in; listed modes run once each, through the sysfs guard)
    #! needs: root                                                 (anything else it needs)
    #! probe: yes                                                  (part of era identification)

A script with `sysfs` steps, or a mode other than the live one, needs root; one with a
`khugepaged` step also gets the fast khugepaged tuning (sysfs.FAST_KHUGEPAGED).
"""
from __future__ import annotations

import contextlib
import pathlib
from dataclasses import dataclass

from vmaflags.model.eras import Era
from vmaflags.model.syscalls import (SYSFS_MODES, Khugepaged, Script, ScriptError, Sysfs,
                                     parse_script)

from . import driver, host, sysfs
from .driver import Divergence

SCENARIO_DIR = pathlib.Path(__file__).resolve().parent / "scenarios"
HEADERS = ("title", "source", "sysfs", "needs", "probe")
LIVE = "live"


class CatalogueError(ValueError):
    """A malformed scenario file or an unknown scenario name (one line)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    script: Script
    title: str = ""
    source: str = ""
    modes: tuple[str, ...] = (LIVE,)
    needs: frozenset[str] = frozenset()
    probe: bool = False

    @property
    def khugepaged(self) -> bool:
        return any(isinstance(s, Khugepaged) for s in self.script.steps)

    @property
    def sysfs_steps(self) -> bool:
        return any(isinstance(s, Sysfs) for s in self.script.steps)


def parse(name: str, text: str, strict: bool = True) -> Scenario:
    """A scenario from its text; CatalogueError naming the file on any problem.  `strict`
    demands title and source (catalogue files); replayed scripts may have neither."""
    try:
        script = parse_script(text)
    except ScriptError as e:
        raise CatalogueError(f"{name}: {e}") from None
    meta = dict(script.meta)
    unknown = set(meta) - set(HEADERS)
    if unknown:
        raise CatalogueError(f"{name}: unknown header {min(unknown)!r} "
                             f"(known: {', '.join(HEADERS)})")
    if strict:
        for k in ("title", "source"):
            if not meta.get(k):
                raise CatalogueError(f"{name}: missing `#! {k}:` header")
    modes = tuple(meta.get("sysfs", LIVE).split())
    for m in modes:
        if m != LIVE and m not in SYSFS_MODES:
            raise CatalogueError(f"{name}: bad sysfs mode {m!r} "
                                 f"(want {', '.join(SYSFS_MODES)} or {LIVE})")
    needs = frozenset(meta.get("needs", "").split())
    if needs - {"root"}:
        raise CatalogueError(f"{name}: unknown need {min(needs - {'root'})!r}")
    return Scenario(name, script, meta.get("title", ""), meta.get("source", ""), modes or (LIVE,),
                    needs, meta.get("probe", "").lower() in ("yes", "true", "1"))


def load(names: list[str] | None = None, directory: pathlib.Path | None = None
         ) -> list[Scenario]:
    """The catalogue in name order, or the named scenarios; CatalogueError for unknown names."""
    directory = SCENARIO_DIR if directory is None else directory
    paths = {p.stem: p for p in sorted(directory.glob("*.vmf"))}
    if names:
        missing = [n for n in names if n not in paths]
        if missing:
            raise CatalogueError(f"unknown scenario {missing[0]!r}; see {directory}")
        paths = {n: paths[n] for n in dict.fromkeys(names)}
    return [parse(n, p.read_text()) for n, p in paths.items()]


@dataclass
class Result:
    name: str  # NAME, or NAME@MODE when the scenario runs under several modes
    status: str  # "pass" | "diverge" | "skip"
    reason: str = ""
    steps: int = 0
    divergence: Divergence | None = None
    title: str = ""

    def as_dict(self) -> dict:
        d = {"name": self.name, "status": self.status, "reason": self.reason,
             "steps": self.steps}
        if self.divergence is not None:
            d["divergence"] = self.divergence.as_dict()
        return d


def blocker(sc: Scenario, mode: str, guard: sysfs.SysfsGuard | None) -> str | None:
    """Why `sc` cannot run under `mode` here, or None."""
    for why in (host.no_thp(), host.no_executor()):
        if why:
            return why
    if "root" in sc.needs and host.not_root():
        return "needs root"
    if mode != LIVE and mode != host.read("enabled") and guard is None:
        return f"needs root to set THP enabled={mode} ({host.writable() or 'no sysfs guard'})"
    if (sc.sysfs_steps or sc.khugepaged) and guard is None:
        what = "sysfs steps" if sc.sysfs_steps else "khugepaged tuning"
        return f"needs root for {what} ({host.writable() or 'no sysfs guard'})"
    return None


def names(sc: Scenario) -> list[str]:
    """NAME, or NAME@MODE for each mode when the scenario runs under several."""
    return [sc.name] if len(sc.modes) == 1 else [f"{sc.name}@{m}" for m in sc.modes]


def run(sc: Scenario, era: Era, guard: sysfs.SysfsGuard | None) -> list[Result]:
    """Run the scenario once per sysfs mode; one Result each."""
    out = []
    for mode, name in zip(sc.modes, names(sc)):
        why = blocker(sc, mode, guard)
        if why:
            out.append(Result(name, "skip", why, len(sc.script.steps), title=sc.title))
            continue
        out.append(_run_mode(sc, name, mode, era, guard))
    return out


def _run_mode(sc: Scenario, name: str, mode: str, era: Era,
              guard: sysfs.SysfsGuard | None) -> Result:
    n = len(sc.script.steps)
    try:
        first = _attempt(sc, mode, era, guard)
        if first is None:
            return Result(name, "pass", "", n, title=sc.title)
        timeout = _khugepaged_timeout(sc, first)
        if timeout:
            return Result(name, "skip", timeout, n, title=sc.title)
        # A divergence must reproduce: khugepaged and other kernel threads act on their own time.
        second = _attempt(sc, mode, era, guard)
    except driver.ExecutorError as e:
        return Result(name, "diverge", f"executor failed: {e}", n, title=sc.title)
    if second is None:
        return Result(name, "pass", f"passed on re-run; the first run diverged at step "
                      f"{first.step} ({', '.join(first.fields())})", n, first, sc.title)
    return Result(name, "diverge", f"step {second.step} `{second.syscall}`: "
                  f"{', '.join(second.fields())} differ", n, second, sc.title)


def _attempt(sc: Scenario, mode: str, era: Era, guard: sysfs.SysfsGuard | None
             ) -> Divergence | None:
    return check(sc, mode, era, guard).divergence


def check(sc: Scenario, mode: str, era: Era, guard: sysfs.SysfsGuard | None) -> driver.Checked:
    """Run the scenario once under `mode` (through the guard: the mode, and khugepaged's fast
    tuning with a keeper for a `khugepaged` step) on the kernel under test and on the model."""
    keep: contextlib.AbstractContextManager = contextlib.nullcontext()
    if guard is not None:
        guard.reset()
        if mode != LIVE:
            guard.set(enabled=mode)
        if sc.khugepaged:
            guard.set_many(sysfs.FAST_KHUGEPAGED)
            if host.read("enabled") != "never":
                keep = host.keeper()
    try:
        with keep:
            return driver.check(era, sc.script, host.live_mode())
    finally:
        if guard is not None:
            guard.reset()


def _khugepaged_timeout(sc: Scenario, d: Divergence) -> str | None:
    """A khugepaged step that timed out leaves nothing to compare: say so instead."""
    if not driver.khugepaged_timed_out(sc.script, d):
        return None
    step = sc.script.steps[int(d.step.rstrip("c")) - 1]
    return (f"khugepaged did not finish two full scans within "
            f"{getattr(step, 'ms', 0) or 20000} ms (step {d.step}); nothing to compare")


def replay(script_text: str, era: Era | str, guard: sysfs.SysfsGuard | None = None
           ) -> Divergence | None:
    """Run a script (e.g. a proof's counterexample) on this kernel and on the model for `era`;
    the first divergence, or None.  `#! sysfs:` headers and `sysfs`/`khugepaged` steps are
    honoured through the sysfs guard (opened here if not given; needs root).  Raises
    CatalogueError for a malformed script and RuntimeError when it cannot run here."""
    from vmaflags.model.eras import era as era_by_id

    e = era_by_id(era) if isinstance(era, str) else era
    sc = parse("replay", script_text, strict=False)
    needs_guard = (sc.sysfs_steps or sc.khugepaged
                   or any(m not in (LIVE, host.read("enabled")) for m in sc.modes))
    if needs_guard and guard is None:
        with host.guard() as g:
            return replay(script_text, e, g)
    results = run(sc, e, guard)
    for r in results:
        if r.status == "skip":
            raise RuntimeError(f"cannot replay here: {r.reason}")
    for r in results:
        if r.status == "diverge":
            if r.divergence is None:
                raise RuntimeError(r.reason)
            return r.divergence
    return None


__all__ = ["CatalogueError", "Result", "Scenario", "load", "parse", "replay", "run"]
