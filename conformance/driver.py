"""Run a script on the kernel (the C executor) and on the model, and compare step by step.

`check` starts the executor first and computes the model's prediction while the kernel runs, so
the two overlap.  Every script runs in a fresh executor process: the prctl state is per mm and
survives fork and execve.
"""
from __future__ import annotations

import errno
import functools
import subprocess
import threading
import time
from dataclasses import dataclass, field

from vmaflags.model import concrete
from vmaflags.model.eras import Era
from vmaflags.model.errno import ret_parse, ret_text
from vmaflags.model.observe import Observation, Vma
from vmaflags.model.syscalls import SYSFS_MODES, Khugepaged, Script, Syscall

from .build import executor_path

Trace = list[tuple[str, Observation]]  # ("3", obs) or ("3c", the fork child's obs)


class ExecutorError(RuntimeError):
    """The executor failed or printed something we cannot parse."""


def parse_line(line: str) -> tuple[str, Observation]:
    """`3 ret=0 get=0 thp=1 vmas=...` -> ("3", Observation)."""
    label, rest = line.split(" ", 1)
    return label, _parse_observation(rest)


@functools.lru_cache(maxsize=1 << 16)
def _parse_observation(text: str) -> Observation:
    """Memoised: the same observation line comes back across scripts and steps."""
    kv = dict(f.split("=", 1) for f in text.split())
    vmas = []
    for item in filter(None, kv["vmas"].split(",")):
        rng, flags, elig, ahp = item.split(":")
        s, e = rng.split("-")
        vmas.append(Vma(int(s, 16), int(e, 16), flags, None if elig == "-" else int(elig),
                        int(ahp)))
    return Observation(ret_parse(kv["ret"]), ret_parse(kv["get"]),
                       None if kv["thp"] == "-" else int(kv["thp"]), tuple(vmas))


def clr_number(era: Era | None) -> int | None:
    """The MADV_CLR_HUGEPAGE number the executor should use for `era`'s `clr_hugepage`."""
    return None if era is None else era.clr_hugepage


@functools.cache
def _executor(clr_hugepage: int | None) -> str:
    return str(executor_path(clr_hugepage))  # hashes the source: once per process


@functools.lru_cache(maxsize=1 << 12)
def _step_text(step: Syscall) -> bytes:
    return step.text().encode() + b"\n"


def script_bytes(script: Script) -> bytes:
    """What the executor reads (Script.text() without the headers, steps memoised: the random
    run's scripts are drawn from a few hundred distinct steps)."""
    return b"arena %d\n" % script.arena + b"".join(map(_step_text, script.steps))


def start_kernel(script: Script, clr_hugepage: int | None = None) -> subprocess.Popen:
    p = subprocess.Popen([_executor(clr_hugepage), "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(script_bytes(script))  # type: ignore[union-attr]
        p.stdin.close()  # type: ignore[union-attr]
    except BrokenPipeError:
        pass  # the executor rejected the script; its exit status says why
    return p


class _Watchdog:
    """Kills executors that outlive their deadline.  One thread per process, instead of a
    timer per run or communicate()'s poll loop: both cost more than a short script's kernel
    time."""

    def __init__(self) -> None:
        self.live: dict[int, tuple[subprocess.Popen, float]] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.killed: set[int] = set()

    def watch(self, p: subprocess.Popen, timeout: float) -> None:
        with self.lock:
            self.live[p.pid] = (p, time.monotonic() + timeout)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name="executor-watchdog")
                self.thread.start()

    def done(self, p: subprocess.Popen) -> bool:
        """Stop watching; True if the watchdog killed it."""
        with self.lock:
            self.live.pop(p.pid, None)
            if p.pid in self.killed:
                self.killed.discard(p.pid)
                return True
            return False

    def _run(self) -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self.lock:
                for pid, (p, deadline) in list(self.live.items()):
                    if now > deadline and p.poll() is None:
                        p.kill()
                        self.killed.add(pid)


_watchdog = _Watchdog()


def finish_kernel(p: subprocess.Popen, timeout: float = 60) -> Trace:
    _watchdog.watch(p, timeout)
    try:
        out = p.stdout.read().decode()  # type: ignore[union-attr]
        err = p.stderr.read().decode()  # type: ignore[union-attr]
        p.wait()
    finally:
        killed = _watchdog.done(p)
    if killed:
        raise ExecutorError(f"executor timed out after {timeout:g} s")
    if p.returncode != 0:
        raise ExecutorError(f"executor exited {p.returncode}: {err.strip()}")
    try:
        return [parse_line(ln) for ln in out.splitlines() if ln.strip()]
    except (ValueError, KeyError) as e:
        raise ExecutorError(f"unparsable executor output: {e}") from None


def run_kernel(script: Script, clr_hugepage: int | None = None, timeout: float = 60) -> Trace:
    return finish_kernel(start_kernel(script, clr_hugepage), timeout)


def run_model(era: Era, script: Script, sysfs: int) -> Trace:
    out = []
    for n, o in enumerate(concrete.run(era, script, sysfs), 1):
        if o.child is not None:
            out.append((f"{n}c", o.child))
        out.append((str(n), o.obs))
    return out


@dataclass
class Divergence:
    step: str  # "3" or "3c"
    syscall: str
    model: Observation | None
    kernel: Observation | None
    script: str = ""  # the whole script, as text
    era: str = ""
    sysfs: str = ""  # the starting sysfs mode

    def fields(self) -> list[str]:
        """Which parts of the observation differ: ret, get, thp, vmas."""
        if self.model is None or self.kernel is None:
            return ["missing line"]
        return [f for f in Observation._fields
                if getattr(self.model, f) != getattr(self.kernel, f)]

    def text(self) -> str:
        m = "-" if self.model is None else self.model.text()
        k = "-" if self.kernel is None else self.kernel.text()
        return (f"step {self.step} `{self.syscall}` ({', '.join(self.fields())} differ):\n"
                f"  model:  {m}\n  kernel: {k}")

    def side_by_side(self) -> str:
        """The differing step with the VMAs lined up, model left, kernel right."""
        lines = [f"step {self.step}: {self.syscall}"]
        if self.model is None or self.kernel is None:
            return self.text()
        w = 36
        lines.append(f"  {'':6}{'model':{w}}kernel")
        for f in ("ret", "get", "thp"):
            mv, kv = getattr(self.model, f), getattr(self.kernel, f)
            show = (lambda v: "-" if v is None else str(v)) if f == "thp" else ret_text
            mark = "" if mv == kv else "   <--"
            lines.append(f"  {f:6}{show(mv):{w}}{show(kv)}{mark}")
        mv, kv = self.model.vmas, self.kernel.vmas
        for i in range(max(len(mv), len(kv))):
            a = mv[i].text() if i < len(mv) else ""
            b = kv[i].text() if i < len(kv) else ""
            mark = "" if a == b else "   <--"
            lines.append(f"  {'vma' if i == 0 else '':6}{a:{w}}{b}{mark}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"step": self.step, "syscall": self.syscall, "differ": self.fields(),
                "model": None if self.model is None else self.model.text(),
                "kernel": None if self.kernel is None else self.kernel.text(),
                "era": self.era, "sysfs": self.sysfs, "script": self.script}


def compare(script: Script, model: Trace, kernel: Trace) -> Divergence | None:
    """The first step where model and kernel differ, or None."""
    for i in range(max(len(model), len(kernel))):
        m = model[i] if i < len(model) else None
        k = kernel[i] if i < len(kernel) else None
        if m != k:
            label = (m or k)[0]  # type: ignore[index]
            sc = script.steps[int(label.rstrip("c")) - 1].text()
            return Divergence(label, sc, m and m[1], k and k[1], script.text())
    return None


def khugepaged_timed_out(script: Script, d: Divergence) -> bool:
    """The divergence is a `khugepaged` step whose wait timed out (khugepaged not running or
    too slow): there is nothing to compare, rather than a difference."""
    step = script.steps[int(d.step.rstrip("c")) - 1]
    return (isinstance(step, Khugepaged) and d.kernel is not None
            and d.kernel.ret == -errno.ETIMEDOUT)


@dataclass
class Checked:
    """One script checked: its divergence (or None) and both traces."""

    divergence: Divergence | None
    model: Trace = field(default_factory=list)
    kernel: Trace = field(default_factory=list)

    @property
    def transitions(self) -> int:
        return len(self.kernel)


def check(era: Era, script: Script, sysfs: int, timeout: float = 60) -> Checked:
    """Run `script` on the kernel and the model (overlapped) and compare.  `sysfs` must be the
    kernel's THP `enabled` mode when the script starts (0 always, 1 madvise, 2 never)."""
    return check_many(era, [script], sysfs, timeout)[0]


def check_many(era: Era, scripts: list[Script], sysfs: int, timeout: float = 60
               ) -> list[Checked]:
    """Several scripts, each in its own executor, all started before the model runs."""
    procs = [start_kernel(s, clr_number(era)) for s in scripts]
    out = []
    try:
        for script, p in zip(scripts, procs):
            model = run_model(era, script, sysfs)
            kernel = finish_kernel(p, timeout)
            d = compare(script, model, kernel)
            if d is not None:
                d.era, d.sysfs = era.id, SYSFS_MODES[sysfs]
            out.append(Checked(d, model, kernel))
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        raise
    return out
