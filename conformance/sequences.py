"""Model-based random testing: hypothesis draws syscall sequences (strategies.coded_scripts), each
runs in a fresh executor process and through the model, and a divergence is shrunk to a minimal
script.

The run is cut into shards (shard_sizes), each a `hypothesis.find` with its own seed derived
from the run's seed, sysfs mode and arena size; so `--seed S --examples N` draws the same scripts
however many workers run them (on a machine with the same privileges: without root only the
live sysfs mode is used).  Shards of one sysfs mode run concurrently in worker processes, one
mode after the other (the mode is global to the machine).  With the sysfs guard (root), the
last MACHINE_SHARE percent are shorter scripts that also switch `sysfs` and wait for
`khugepaged` (tuned fast), run one at a time in this process.  A divergence counts only if it
reproduces when the script is run again; one that does not is reported as flaky.  Each shard
checks exactly its share of the examples (a divergence ends it early); the re-runs and the
shrinking are counted apart.  A khugepaged
wait that times out (khugepaged stopped, e.g. under `never`) leaves that script inconclusive.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from hypothesis import HealthCheck, Phase, Verbosity, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from vmaflags.model.eras import Era, era_at
from vmaflags.model.syscalls import SYSFS_MODES, Script

from . import driver, host, sysfs
from .strategies import coded_scripts

SHARD = 48
MACHINE_SHARD = 12
MACHINE_SHARE = 2  # percent of the examples, when the guard allows sysfs/khugepaged steps
BATCH = 8  # scripts per hypothesis example: its fixed cost (~1-2 ms) is shared
BLOCKS = (2, 4, 1, 3)  # arena sizes, cycled through the shards


@dataclass(frozen=True)
class Shard:
    index: int
    seed: int
    mode: str  # the kernel's THP `enabled` when each script starts
    blocks: int
    examples: int
    machine: bool = False  # scripts with sysfs and khugepaged steps: one at a time, guarded


@dataclass
class ShardResult:
    shard: Shard
    examples: int = 0  # drawn scripts checked: shard.examples, unless a divergence ends it
    shrink_examples: int = 0  # scripts run to confirm and shrink a divergence
    transitions: int = 0
    divergence: dict | None = None  # Divergence.as_dict() of the minimal script
    flaky: list[str] = field(default_factory=list)  # scripts that diverged once only
    inconclusive: int = 0  # khugepaged did not finish two scans in time: nothing compared
    error: str = ""
    seconds: float = 0.0


@dataclass
class RandomResult:
    seed: int
    examples: int = 0
    shrink_examples: int = 0
    transitions: int = 0
    divergences: list[dict] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)
    inconclusive: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    modes: list[str] = field(default_factory=list)
    machine_examples: int = 0  # of `examples`, scripts with sysfs/khugepaged steps

    @property
    def per_second(self) -> float:
        return self.transitions / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"seed": self.seed, "examples": self.examples,
                "shrink_examples": self.shrink_examples, "transitions": self.transitions,
                "divergences": self.divergences, "flaky": self.flaky, "errors": self.errors,
                "inconclusive": self.inconclusive, "machine_examples": self.machine_examples,
                "modes": self.modes, "seconds": round(self.seconds, 3),
                "transitions_per_second": round(self.per_second)}


def shard_sizes(examples: int) -> list[int]:
    """SHARD examples per shard, but the last 2 * SHARD in shards of one BATCH: the workers
    then run out of work within a short shard of each other instead of a long one."""
    sizes = [SHARD] * (max(0, examples - 2 * SHARD) // SHARD)
    rest = examples - sum(sizes)
    return sizes + [min(BATCH, rest - k) for k in range(0, rest, BATCH)]


def plan(examples: int, seed: int, modes: list[str], machine: int = 0) -> list[Shard]:
    """`examples` scripts in shards (shard_sizes), cycling through modes and arena sizes; then
    `machine` scripts with sysfs/khugepaged steps in shards of MACHINE_SHARD."""
    shards = []
    for i, size in enumerate(shard_sizes(examples)):
        shards.append(Shard(i, (seed * 1_000_003 + i) % 2**32, modes[i % len(modes)],
                            BLOCKS[(i // len(modes)) % len(BLOCKS)], size))
    for j in range(-(-machine // MACHINE_SHARD)):
        i = len(shards)
        shards.append(Shard(i, (seed * 1_000_003 + i) % 2**32, modes[j % len(modes)],
                            BLOCKS[j % len(BLOCKS)],
                            min(MACHINE_SHARD, machine - j * MACHINE_SHARD), machine=True))
    return shards


def run_shard(era: Era, shard: Shard, guard: sysfs.SysfsGuard | None = None) -> ShardResult:
    """One shard, in this process.  The kernel must be in `shard.mode` already, except for a
    machine shard, which sets the mode (and fast khugepaged) through `guard` before each script."""
    t0 = time.perf_counter()
    res = ShardResult(shard)
    mode = SYSFS_MODES.index(shard.mode)
    if shard.machine and guard is None:
        res.error = f"shard {shard.index}: scripts with sysfs/khugepaged steps need the guard"
        return res
    live = host.read("enabled")
    if not shard.machine and live != shard.mode:
        res.error = f"shard {shard.index}: the kernel is in {live}, not {shard.mode}"
        return res

    def check(batch: list[Script]) -> list[driver.Checked]:
        if not shard.machine:
            return driver.check_many(era, batch, mode)
        out = []
        for script in batch:
            guard.reset()  # type: ignore[union-attr]
            guard.set(enabled=shard.mode)  # type: ignore[union-attr]
            guard.set_many(sysfs.FAST_KHUGEPAGED)  # type: ignore[union-attr]
            out.append(driver.check(era, script, mode))
        return out

    def diverging(batch: list[Script]) -> list[Script]:
        """The scripts of the batch that diverge, twice in a row.  Empty scripts (all of the
        first example hypothesis draws, and shrunk ones) are not run and not counted.  Until
        the first divergence only the shard's quota is checked; after it, hypothesis shrinks,
        and those scripts count apart."""
        nonlocal shrinking
        batch = [s for s in batch if s.steps]
        if shrinking:
            res.shrink_examples += len(batch)
        else:
            batch = batch[:shard.examples - res.examples]
            res.examples += len(batch)
        bad = []
        for script, c in zip(batch, check(batch)):
            res.transitions += c.transitions
            if c.divergence is None:
                continue
            if driver.khugepaged_timed_out(script, c.divergence):
                res.inconclusive += 1
                continue
            again = check([script])[0]
            res.shrink_examples += 1
            res.transitions += again.transitions
            if again.divergence is None:
                res.flaky.append(f"{script.text()}# diverged once at step {c.divergence.step}, "
                                 f"not on re-run\n")
            else:
                bad.append(script)
        shrinking = shrinking or bool(bad)
        return bad

    shrinking = False  # once a divergence is found
    keep: contextlib.AbstractContextManager = contextlib.nullcontext()
    if shard.machine:  # a registered mm throughout, whatever mode the scripts switch to
        guard.set(enabled="always")  # type: ignore[union-attr]
        keep = host.keeper()
    with keep:
        _find(res, shard, check, diverging)
    if guard is not None and shard.machine:
        guard.reset()
    res.seconds = time.perf_counter() - t0
    return res


def _find(res: ShardResult, shard: Shard, check: Callable, diverging: Callable) -> None:
    """Draw the shard's scripts until shard.examples are checked (diverging() keeps count);
    shrink the first divergence and record it in `res`."""
    batch = 1 if shard.machine else BATCH
    scripts = (coded_scripts(shard.blocks, 8, 48, machine=True) if shard.machine
               else coded_scripts(shard.blocks))
    rnd = random.Random(shard.seed)
    minimal = None
    while res.examples < shard.examples and minimal is None and not res.error:
        before = res.examples
        # +1: hypothesis starts with its simplest example, all zero bytes: empty scripts.  A
        # script drawn empty again leaves the quota short: another round draws the rest.
        examples = -(-(shard.examples - res.examples) // batch) + 1
        try:
            minimal = find(st.lists(scripts, min_size=batch, max_size=batch),
                           lambda b: bool(diverging(b)),
                           settings=settings(max_examples=examples, database=None,
                                             deadline=None, verbosity=Verbosity.quiet,
                                             phases=(Phase.generate, Phase.shrink),
                                             suppress_health_check=list(HealthCheck)),
                           random=rnd)
        except NoSuchExample:
            if res.examples == before:
                break  # nothing new to draw (cannot happen with byte strings)
        except driver.ExecutorError as e:
            res.error = f"shard {shard.index}: {e}"
    if minimal is not None:
        # shrinking empties the batch's other scripts; report the first that still diverges
        for script, c in zip(minimal, check(minimal)):
            if c.divergence is not None:
                res.divergence = c.divergence.as_dict()
                res.divergence["shard"] = shard.index
                break
        else:
            res.flaky.append("".join(s.text() for s in minimal if s.steps)
                             + "# the shrunk scripts no longer diverge\n")


@contextlib.contextmanager
def _rare_gc() -> Iterator[None]:
    """The model allocates millions of small tuples and keeps ~10^5 in its memo caches, none
    of them in reference cycles; at the default thresholds the cyclic collector walked them
    over and over (~10% of a random run's Python time)."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


@_rare_gc()
def run(era: Era, examples: int, seed: int, modes: list[str],
        guard: sysfs.SysfsGuard | None, workers: int | None = None,
        on_shard: Callable[[ShardResult], None] | None = None) -> RandomResult:
    """All shards, mode by mode (through `guard` for modes other than the live one).  With a
    guard, MACHINE_SHARE of the examples are scripts with sysfs and khugepaged steps, run last,
    one at a time."""
    machine = examples * MACHINE_SHARE // 100 if guard is not None else 0
    if host.current() is not None:
        workers = 1  # worker processes would test this machine, not the target
    out = RandomResult(seed, modes=list(modes), machine_examples=machine)
    t0 = time.perf_counter()
    shards = plan(examples - machine, seed, modes, machine)
    workers = min(workers or os.cpu_count() or 1, len(shards))
    pool = Pool(workers - 1) if workers > 1 else None
    try:
        for mode in modes:
            group = [s for s in shards if s.mode == mode and not s.machine]
            if not group:
                continue
            if guard is not None:
                guard.reset()
                guard.set(enabled=mode)
            results = (pool.map(era, group) if pool is not None
                       else (run_shard(era, s) for s in group))
            for r in results:
                _add(out, r)
                if on_shard:
                    on_shard(r)
            if guard is not None:
                guard.reset()
        if pool is not None:
            pool.close()
            pool = None
        for s in shards:
            if s.machine:
                r = run_shard(era, s, guard)
                _add(out, r)
                if on_shard:
                    on_shard(r)
    except BaseException:
        if pool is not None:
            pool.kill()
        raise
    finally:
        if pool is not None:
            pool.close()
    out.divergences.sort(key=lambda d: d["shard"])
    out.seconds = time.perf_counter() - t0
    return out


def _add(out: RandomResult, r: ShardResult) -> None:
    out.inconclusive += r.inconclusive
    out.examples += r.examples
    out.shrink_examples += r.shrink_examples
    out.transitions += r.transitions
    out.flaky += r.flaky
    if r.divergence is not None:
        out.divergences.append(r.divergence)
    if r.error:
        out.errors.append(r.error)


class Pool:
    """This process plus `n` worker processes (`python -m vmaflags.conformance.sequences`), one
    JSON line per shard each way.  Plain subprocesses rather than multiprocessing: they inherit
    no descriptors (the sysfs guardian's pipe must reach EOF when the runner dies) and need no
    __main__ guard in the caller.  This process runs shards itself between collecting results,
    so a 2-CPU machine starts one Python worker, not two (each costs ~1 s of imports)."""

    DEPTH = 2  # shards queued per worker, so that none idles while this process runs one

    def __init__(self, n: int) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-m", "vmaflags.conformance.sequences",
                                        str(os.getpid())],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                      for _ in range(n)]

    def map(self, era: Era, shards: list[Shard]) -> Iterator[ShardResult]:
        """Results in completion order."""
        todo = collections.deque(shards)
        by_fd = {p.stdout.fileno(): p for p in self.procs}  # type: ignore[union-attr]
        queued: dict[int, collections.deque[Shard]] = {fd: collections.deque() for fd in by_fd}
        buf = {fd: b"" for fd in by_fd}

        def fill() -> None:
            for fd, q in queued.items():
                while todo and len(q) < self.DEPTH:
                    q.append(todo.popleft())
                    job = {"era": era.id, "kernel": era.kernel, "shard": asdict(q[-1])}
                    by_fd[fd].stdin.write(json.dumps(job).encode() + b"\n")  # type: ignore
                    by_fd[fd].stdin.flush()  # type: ignore[union-attr]

        fill()
        while todo or any(queued.values()):
            waiting = [fd for fd, q in queued.items() if q]
            ready = select.select(waiting, [], [], 0 if todo else None)[0] if waiting else []
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"random-testing worker died (exit {by_fd[fd].wait()}) "
                                       f"in shard {queued[fd][0].index}")
                buf[fd] += chunk
                while b"\n" in buf[fd]:
                    line, buf[fd] = buf[fd].split(b"\n", 1)
                    queued[fd].popleft()
                    yield _result(json.loads(line))
            fill()
            if todo:
                yield run_shard(era, todo.popleft())
                fill()

    def kill(self) -> None:
        for p in self.procs:
            p.kill()

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _result(d: dict) -> ShardResult:
    d["shard"] = Shard(**d["shard"])
    return ShardResult(**d)


def _die_with(runner: int) -> None:
    """SIGKILL when the runner dies (PR_SET_PDEATHSIG), also if it died before we asked: a
    killed `vmaflags conform` must not leave a worker (and its executor server, whose output
    then has no reader) running out its shard.  A write to a runner gone away ends us silently."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if os.getppid() != runner:
        os._exit(1)


@_rare_gc()
def _worker() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides; it kills us if need be
    _die_with(int(sys.argv[1]))
    for line in sys.stdin:
        job = json.loads(line)
        r = run_shard(era_at(job["era"], job["kernel"]), Shard(**job["shard"]))
        sys.stdout.write(json.dumps(asdict(r)) + "\n")
        sys.stdout.flush()
    driver.close_servers()
    return 0


if __name__ == "__main__":
    # No interpreter teardown: freeing the model's memo caches takes the better part of a
    # second, while the runner waits for us.
    os._exit(_worker())
