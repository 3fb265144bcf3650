"""Run a script on the kernel (the C executor) and on the model, and compare step by step.

`check` hands the script to the executor first and computes the model's prediction while the
kernel runs, so the two overlap.  Every script runs in a fresh executor process (a child of an
`executor --serve`): the prctl state is per mm and survives fork and execve.
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import functools
import math
import os
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from vmaflags.model import concrete
from vmaflags.model.eras import Era
from vmaflags.model.errno import ret_parse, ret_text
from vmaflags.model.observe import Observation, Vma
from vmaflags.model.syscalls import SYSFS_MODES, Khugepaged, Script, Syscall

from . import host
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
    """`ret=R get=G thp=T vmas=V`, exactly as executor.c report() prints it.  Memoised, and
    so are its parts: the same lines and VMA lists come back across scripts and steps."""
    ret, get, thp, vmas = text.split(" ")
    if ret[:4] != "ret=" or get[:4] != "get=" or thp[:4] != "thp=" or vmas[:5] != "vmas=":
        raise ValueError(f"not an observation: {text!r}")
    return Observation(_ret(ret[4:]), _ret(get[4:]), None if thp == "thp=-" else int(thp[4:]),
                       _parse_vmas(vmas[5:]))


_ret = functools.lru_cache(maxsize=1 << 10)(ret_parse)


@functools.lru_cache(maxsize=1 << 16)
def _parse_vmas(text: str) -> tuple[Vma, ...]:
    vmas = []
    for item in filter(None, text.split(",")):
        rng, flags, elig, ahp = item.split(":")
        s, e = rng.split("-")
        vmas.append(Vma(int(s, 16), int(e, 16), flags, None if elig == "-" else int(elig),
                        int(ahp)))
    return tuple(vmas)


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


class Executor:
    """An `executor --serve` process: every script submitted runs in a fresh child of it, which
    starts as a freshly executed process would (the server never maps the arena or changes THP
    state; prctl state is per mm and survives fork and execve, so no script may inherit
    another's).  Cheaper than a fork+exec of this (large) Python process per script.  Scripts
    are pipelined: submit several, then collect their traces in order.

    The server reads a script only once the one before it has finished, so scripts queued
    behind the running one sit in the pipe.  Keeping them under PENDING bytes (less than a
    pipe holds) means a submit never blocks, so we are never stuck writing while the running
    script is stuck writing output that we would read next."""

    GRACE = 30.0  # seconds past a script's own timeout (enforced by the server) before we give up
    PENDING = 32 << 10

    def __init__(self, proc: subprocess.Popen, buf: bytes = b"") -> None:
        """Talk to a running server: `proc`'s stdin and stdout carry the protocol; `buf` is
        what was already read from its stdout."""
        self.proc = proc
        self.out = proc.stdout.fileno()  # type: ignore[union-attr]
        self.buf = buf
        self.queued: collections.deque[tuple[float, int]] = collections.deque()  # timeout, size

    @classmethod
    def spawn(cls, clr_hugepage: int | None) -> Executor:
        """An `executor --serve` on this machine."""
        proc = subprocess.Popen([_executor(clr_hugepage), "--serve"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.set_blocking(proc.stderr.fileno(), False)  # type: ignore[union-attr]
        return cls(proc)

    def room(self, script: Script) -> bool:
        """Whether `script` can be submitted now without risking a blocked write."""
        return not self.queued or (sum(n for _, n in self.queued) + len(script_bytes(script))
                                   <= self.PENDING)

    def submit(self, script: Script, timeout: float | None = None) -> None:
        body = script_bytes(script)
        timeout = script_timeout(script) if timeout is None else timeout
        data = b"script %d %d\n" % (len(body), math.ceil(timeout)) + body
        try:
            self.proc.stdin.write(data)  # type: ignore[union-attr]
        except BrokenPipeError:
            raise ExecutorError(f"executor --serve died: {self._stderr()}") from None
        self.queued.append((timeout, len(data)))

    def collect(self) -> Trace:
        """The trace of the oldest submitted script not collected yet."""
        try:
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except BrokenPipeError:
            raise ExecutorError(f"executor --serve died: {self._stderr()}") from None
        timeout = self.queued[0][0]
        body, status = self._read_to_end()
        if status == b"timeout":
            raise ExecutorError(f"executor timed out after {timeout:g} s")
        if status != b"0":
            raise ExecutorError(f"executor exited {status.decode()}: {self._stderr()}")
        try:
            return [parse_line(ln) for ln in body.decode().splitlines() if ln.strip()]
        except (ValueError, KeyError) as e:
            raise ExecutorError(f"unparsable executor output: {e}") from None

    def control(self, line: str, timeout: float = 30) -> tuple[list[str], str]:
        """A control line of `executor --serve --guest` (clr, sysfs, run): (the lines it
        printed, its "end" status).  Only between scripts."""
        assert not self.queued, "control lines go between scripts"
        try:
            self.proc.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except BrokenPipeError:
            raise ExecutorError(f"executor --serve died: {self._stderr()}") from None
        self.queued.append((timeout, 0))
        body, status = self._read_to_end()
        return body.decode(errors="replace").splitlines(), status.decode()

    def _read_to_end(self) -> tuple[bytes, bytes]:
        """The oldest queued answer: its lines and its "end" status."""
        timeout = self.queued.popleft()[0]
        deadline = time.monotonic() + timeout + self.GRACE
        while (end := self._end()) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.out], [], [], left)[0]:
                self.proc.kill()
                raise ExecutorError(f"executor --serve stopped answering: {self._stderr()}")
            chunk = os.read(self.out, 1 << 16)
            if not chunk:
                raise ExecutorError(f"executor --serve died (exit {self.proc.wait()}): "
                                    f"{self._stderr()}")
            self.buf += chunk
        at, nl = end
        body, status, self.buf = self.buf[:at], self.buf[at + 4:nl], self.buf[nl + 1:]
        return body, status

    def _end(self) -> tuple[int, int] | None:
        """Where the buffered "end <status>" line starts and ends, once it is complete."""
        at = 0 if self.buf.startswith(b"end ") else self.buf.find(b"\nend ") + 1
        if at == 0 and not self.buf.startswith(b"end "):
            return None
        nl = self.buf.find(b"\n", at)
        return None if nl < 0 else (at, nl)

    def _stderr(self) -> str:
        try:
            return os.read(self.proc.stderr.fileno(), 1 << 16).decode().strip()  # type: ignore
        except (BlockingIOError, OSError):
            return ""

    def close(self, kill: bool = True) -> None:
        """Kill the server, or (kill=False) let it see the end of its input and exit; killed
        all the same if a submitted script was not collected (its output could fill the pipe
        that nobody reads any more)."""
        if kill or self.queued:
            self.proc.kill()
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait()


_servers: dict[int | None, Executor] = {}


@atexit.register
def close_servers() -> None:
    """Wait for this process's servers to exit, so that their CPU time (and their children's)
    is accounted to us, as it was with one executor process per script."""
    while _servers:
        _servers.popitem()[1].close(kill=False)


@contextlib.contextmanager
def executor(clr_hugepage: int | None = None) -> Iterator[Executor]:
    """The server for `clr_hugepage` of the kernel under test: a target's (host.use), or this
    process's, started on first use.  A failure inside the block (ours or the server's) leaves
    traces in its pipe: it is then closed, to be restarted on next use."""
    target = host.current()
    if target is not None:
        with target.executor(clr_hugepage) as ex:
            yield ex
        return
    ex = _servers.get(clr_hugepage)
    if ex is None or ex.proc.poll() is not None:
        ex = _servers[clr_hugepage] = Executor.spawn(clr_hugepage)
    try:
        yield ex
    except BaseException:
        del _servers[clr_hugepage]
        ex.close()
        raise


def script_timeout(script: Script) -> float:
    """How long the server lets a script run: a minute for its syscalls, plus what each
    `khugepaged MS` step may wait (MS, or 20 s for 0): under load each wait can run its
    course, so a fixed limit would cut a script of several waits short."""
    waits = sum((s.ms or 20000) / 1000 for s in script.steps if isinstance(s, Khugepaged))
    return min(60 + waits, 2.0 ** 32)  # the server reads an unsigned long


def run_kernel(script: Script, clr_hugepage: int | None = None,
               timeout: float | None = None) -> Trace:
    with executor(clr_hugepage) as ex:
        ex.submit(script, timeout)
        return ex.collect()


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


def check(era: Era, script: Script, sysfs: int, timeout: float | None = None) -> Checked:
    """Run `script` on the kernel and the model (overlapped) and compare.  `sysfs` must be the
    kernel's THP `enabled` mode when the script starts (0 always, 1 madvise, 2 never)."""
    return check_many(era, [script], sysfs, timeout)[0]


def check_many(era: Era, scripts: list[Script], sysfs: int, timeout: float | None = None
               ) -> list[Checked]:
    """Several scripts, each in a fresh executor child, submitted ahead of the model (as many as
    Executor.room allows)."""
    out, sent = [], 0
    with executor(clr_number(era)) as ex:
        for script in scripts:
            while sent < len(scripts) and ex.room(scripts[sent]):
                ex.submit(scripts[sent], timeout)
                sent += 1
            model = run_model(era, script, sysfs)
            kernel = ex.collect()
            d = compare(script, model, kernel)
            if d is not None:
                d.era, d.sysfs = era.id, SYSFS_MODES[sysfs]
            out.append(Checked(d, model, kernel))
    return out
