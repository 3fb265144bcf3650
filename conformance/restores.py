"""The CRIU restores `vmaflags prove` quantifies over, run on the kernel under test.

criu-restore-original is checked for every dump of its bound (`proofs.restore.CRIU_SHAPE`:
2 PMDs of 2 cells, up to 4 VMAs).  Besides the cells' page bounds, what varies in a dump is
finite: per cell whether it is mapped, whether a VMA starts there, hg, nh and pre-dumped pages;
the mm's prctl state; the sysfs mode.  `dumps()` enumerates every combination the proof's
assumptions allow (the solver picks the bounds) and turns each into the theorem's own
counterexample form: the script that builds the dump and the protocol's restore, both taken
from the symbolic run the proof solves.  `run()` gives every pair to the kernel under test
(host.current(): this machine or a test VM) and to the model, and checks that the kernel
printed what the model predicts and that the restore ends where the dump did, in what the
theorem compares (PR_GET, and per VMA its range, hg/nh and THPeligible).

    vmaflags vm restores --kernel def-flags-clr-6.12 --era def-flags-clr

Without --kernel it runs on this machine (root: it sets THP `enabled` through the sysfs guard;
wrap it in `flock /run/vmaflags-live.lock`).  Exit 0 when every restore run is exact and the
kernel agrees with the model, 1 otherwise or when the kernel cannot be built or driven, 2 for
a bad argument, 4 when it cannot run here (SKIP).
"""
from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import z3

from vmaflags.model import arena
from vmaflags.model.backend import Z3
from vmaflags.model.eras import ERAS, Era
from vmaflags.model.state import cells
from vmaflags.model.syscalls import SYSFS_MODES, Script, parse_step
from vmaflags.proofs import restore
from vmaflags.proofs.protocols import PROTOCOLS

from . import driver, host
from .driver import Divergence


@dataclass
class Outcome:
    era: str
    protocol: str
    kernel: str
    dumps: int = 0  # dump/restore pairs run
    enumerated: int = 0  # dumps of the bound (every `every`-th was run)
    transitions: int = 0
    divergences: list[Divergence] = field(default_factory=list)  # kernel vs model
    inexact: list[list[dict]] = field(default_factory=list)  # restores that did not end as dumped
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.dumps > 0 and not self.divergences and not self.inexact


@functools.lru_cache(maxsize=8)
def dumps(era: Era, protocol: str) -> tuple[list[dict], ...]:
    """Every dump of criu-restore-original's bound for `protocol` in `era`, as the theorem's
    counterexample steps (processes "dump" and "restore"), one per distinct combination of
    the dump's finite inputs (2x2 in def-flags-clr: 14,406, about a minute of solving)."""
    return tuple(_dumps(era, protocol))


def _dumps(era: Era, protocol: str) -> Iterator[list[dict]]:
    shp = restore.CRIU_SHAPE
    dump, dump_ok, run, _ = restore.restore_run(era, protocol, shp)
    cs = cells(dump)
    dims = [dump.mm.def_nh, dump.mm.disable, dump.mm.except_adv]
    for c, v in zip(cs, arena.vma_views(Z3, cs)):
        dims += [c.mapped, *(z3.And(c.mapped, x) for x in (v.same, c.hg, c.nh, c.pop))]
    s = z3.Solver()
    s.add(dump_ok, *run.side)
    while s.check() == z3.sat:
        m = s.model()
        got = [d == m.eval(d, model_completion=True) for d in (*dims, dump.sysfs)]
        s.add(z3.Not(z3.And(*got)))
        yield restore._criu_cex(era, dump, run, m)


def _script(steps: list[dict], process: str) -> Script | None:
    """The script of `process`, or None when it made no call (a dump of nothing, no prctl)."""
    mine = [s for s in steps if s["process"] == process]
    return Script(tuple(parse_step(s["syscall"]) for s in mine), mine[0]["arena"]) if mine \
        else None


def _end(c: driver.Checked | None) -> tuple:
    """What criu-restore-original compares, from the kernel's last line of a process; a
    process that made no call shows PR_GET 0 and nothing mapped."""
    names = tuple(restore.OBSERVATIONS)
    if c is None or not c.kernel:
        return restore._observed("ret=0 get=0 thp=- vmas=", names)
    return restore._observed(c.kernel[-1][1].text(), names)


def run(era: Era, protocol: str, every: int = 1,
        on_dump: Callable[[], None] | None = None) -> Outcome:
    """Every `every`-th dump of the bound and its restore on the kernel under test (host) and
    on the model of `era` at the kernel's version (host.era)."""
    t0 = time.perf_counter()
    out = Outcome(era.id, protocol, host.kernel())
    pairs = dumps(era, protocol)
    out.enumerated = len(pairs)
    judge = host.era(era)
    by_mode: dict[str, list[list[dict]]] = {}
    for cex in pairs[::every]:
        by_mode.setdefault(cex[0]["sysfs"], []).append(cex)
    with host.guard() as guard:
        for mode in SYSFS_MODES:
            group = by_mode.get(mode, [])
            if not group:
                continue
            guard.reset()
            guard.set(enabled=mode)
            scripts = [_script(cex, p) for cex in group for p in ("dump", "restore")]
            ran = iter(driver.check_many(judge, [x for x in scripts if x], host.live_mode()))
            checked = [next(ran) if x else None for x in scripts]
            for cex, dumped, restored in zip(group, checked[::2], checked[1::2]):
                out.dumps += 1
                for c in (dumped, restored):
                    if c is None:
                        continue
                    out.transitions += len(c.kernel)
                    if c.divergence is not None:
                        out.divergences.append(c.divergence)
                if _end(dumped) != _end(restored):
                    out.inexact.append(cex)
                if on_dump:
                    on_dump()
        guard.reset()
    out.seconds = time.perf_counter() - t0
    return out


def summary(o: Outcome) -> str:
    what = (f"{o.protocol} in {o.era} on {o.kernel}: {o.dumps} of {o.enumerated} dumps "
            f"restored, {o.transitions} transitions in {o.seconds:.1f} s; ")
    if o.ok:
        return what + "every restore exact, no divergence"
    return what + f"{len(o.divergences)} divergences, {len(o.inexact)} restores not exact"


def command(spec: str | None, era: Era, protocol: str, every: int) -> int:
    """`vmaflags vm restores`: run, print the summary and the first problems, exit status."""
    if protocol not in PROTOCOLS:
        print(f"vmaflags: unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}",
              file=sys.stderr)
        return 2
    if every < 1:
        print("vmaflags: --every must be >= 1", file=sys.stderr)
        return 2
    if spec is None:
        why = host.no_thp() or host.no_executor() or host.writable()
        if why:
            print(f"vmaflags: SKIP: {why}", file=sys.stderr)
            return 4
        o = run(era, protocol, every)
    else:
        from .vm import kernels
        from .vm.guest import Guest, VMError
        try:
            kernels.resolve_name(spec)
            k = kernels.resolve(spec)
        except ValueError as e:
            print(f"vmaflags: {e}", file=sys.stderr)
            return 2
        except kernels.Skip as e:
            print(f"vmaflags: SKIP: {e}", file=sys.stderr)
            return 4
        except Exception as e:  # noqa: BLE001 - vmaflags.kernel.build.BuildError
            if type(e).__name__ != "BuildError":
                raise
            print(f"vmaflags: build: {e}", file=sys.stderr)
            return 1
        try:
            with Guest(k) as g, host.use(g):
                o = run(era, protocol, every)
        except (VMError, driver.ExecutorError) as e:
            print(f"vmaflags: {str(e).splitlines()[0]}", file=sys.stderr)
            return 1
    print(summary(o))
    for d in o.divergences[:5]:
        print(d.text())
    for cex in o.inexact[:5]:
        print("not exact:", " / ".join(f"{s['process']}: {s['syscall']}" for s in cex))
    return 0 if o.ok else 1
