"""Hypothesis strategies for syscall sequences over the arena (random conformance and tests).

Offsets and lengths are drawn from a few PMD-relevant sizes (whole and half blocks, single
pages at block edges) so that splits, merges and THP fits happen often.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from hypothesis import strategies as st

from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, MADV_COLLAPSE, MADV_HUGEPAGE,
                                     MADV_NOHUGEPAGE, PAGE, PMD, Execve, Fork, Khugepaged,
                                     Madvise, Mmap, Munmap, PrctlGet, PrctlSet, Script, Step,
                                     Sysfs, Touch, UffdClose, UffdCopy, UffdRegister,
                                     UffdUnregister)

_PIECES = (PAGE, 2 * PAGE, PMD // 2, PMD - PAGE)


def ranges(blocks: int) -> st.SearchStrategy[tuple[int, int]]:
    """(offset, length) inside an arena of `blocks` PMDs, page aligned."""
    size = blocks * PMD

    @st.composite
    def build(draw: st.DrawFn) -> tuple[int, int]:
        off = draw(st.integers(0, blocks - 1)) * PMD + draw(st.sampled_from((0, *_PIECES)))
        off = min(off, size - PAGE)
        length = draw(st.integers(0, blocks)) * PMD + draw(st.sampled_from((0, *_PIECES)))
        return off, max(PAGE, min(length, size - off))

    return build()


def steps(blocks: int, sysfs: bool = False, exec_fork: bool = True) -> st.SearchStrategy:
    """One syscall of the script language (no sysfs or khugepaged steps: those need root and
    time on a live kernel; sysfs comes in as the run's starting mode instead)."""
    r = ranges(blocks)
    small = st.sampled_from((0, 1, 2, 3))
    options = [
        r.map(lambda x: Mmap(*x)),
        r.map(lambda x: Munmap(*x)),
        r.map(lambda x: Touch(*x)),
        st.tuples(r, st.sampled_from((MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE,
                                      MADV_CLR_HUGEPAGE))).map(lambda x: Madvise(*x[0], x[1])),
        st.tuples(small, small, st.sampled_from((0, 0, 0, 1)), st.just(0)).map(
            lambda x: PrctlSet(*x)),
        st.just(PrctlGet()),
        st.tuples(r, st.sampled_from(((True, False), (False, True), (True, True)))).map(
            lambda x: UffdRegister(*x[0], *x[1])),
        r.map(lambda x: UffdUnregister(*x)),
        r.map(lambda x: UffdCopy(*x)),
        st.just(UffdClose()),
    ]
    if exec_fork:
        options += [st.just(Fork()), st.just(Execve())]
    return st.one_of(*options)


def scripts(blocks: int = 2, max_steps: int = 12, exec_fork: bool = True
            ) -> st.SearchStrategy[Script]:
    return st.lists(steps(blocks, exec_fork=exec_fork), min_size=1, max_size=max_steps).map(
        lambda xs: Script(tuple(xs), blocks))


# --- a byte-coded alphabet for fast random conformance ----------------------------------------
#
# Hypothesis spends ~100 us on every draw, as much as the kernel spends on a step, so the random
# conformance run draws a whole script as one `binary` value and decodes it: a kind byte (0 is
# "no step"), then, for ranged kinds, a range byte indexing `range_table`.  Both tables run from
# simple to unusual, so shrinking (which deletes bytes and lowers them towards 0) still ends at
# a short script of simple steps.

@functools.cache
def range_table(blocks: int) -> tuple[tuple[int, int], ...]:
    """(offset, length) pairs that exercise PMD edges, partial blocks and argument checks."""
    n, P, H = blocks, PAGE, PMD // 2
    last = (n - 1) * PMD
    raw = [(0, n * PMD), (0, PMD), (last, PMD), (0, H), (H, PMD), (0, P), (PMD - P, 2 * P),
           (H, P), (n * PMD - P, P), (P, PMD), (P, n * PMD - 2 * P), (min(PMD, last), PMD),
           (H, H), (last + H, H), (0, last + H), (100, P), (0, 0), (P, 1000)]
    out: list[tuple[int, int]] = []
    for off, ln in raw:
        ln = min(ln, n * PMD - off)
        if (off, ln) not in out:
            out.append((off, ln))
    return tuple(out)


def _few(make: Callable[[int, int], Step]) -> Callable[[int, int], Step]:
    """The step on the first two pages of the range: populating a few pages is as telling as
    populating 512 for most rules, and 256 times cheaper on the kernel."""
    return lambda o, n: make(o, min(n, 2 * PAGE))


def _lazy_restore(o: int, n: int) -> tuple[Step, ...]:
    """CRIU's lazy restore of a range: register it, fill two pages, unregister (the merges
    that follow register the mm with khugepaged)."""
    return (UffdRegister(o, n, True, False), UffdCopy(o, min(n, 2 * PAGE)), UffdUnregister(o, n))


def _populate_disabled(o: int, n: int) -> tuple[Step, ...]:
    """Two pages written while THP is disabled for the process: PTE tables that nothing has
    registered with khugepaged, which a later call site may."""
    return (PrctlSet(1), Touch(o, min(n, 2 * PAGE)), PrctlSet(0))


def _advised_population(o: int, n: int) -> tuple[Step, ...]:
    """A fresh hg VMA over the range with two pages written while THP is disabled: eligible for
    khugepaged under madvise and always, populated, and not registered."""
    return (PrctlSet(1), Mmap(o, n), Madvise(o, n, MADV_HUGEPAGE), Touch(o, min(n, 2 * PAGE)),
            PrctlSet(0))


# (step, or a constructor taking a range; weight; weight in machine scripts), in shrink order.
# Machine scripts end with a khugepaged step: their weights favour what leaves a populated,
# eligible PMD and a call site that registers the mm, and disfavour what hides a collapse (THP
# disabled, uffd holes, execve).  Measured on the model (3,000 scripts): 16% of machine scripts
# then end with a collapse, against 1% with the normal weights.
_KINDS = (
    (Mmap, 3, 4.5), (_few(Touch), 2.4, 2.4), (lambda o, n: Madvise(o, n, MADV_HUGEPAGE), 2, 4),
    (lambda o, n: Madvise(o, n, MADV_NOHUGEPAGE), 1.5, 0.45),
    (lambda o, n: Madvise(o, n, MADV_COLLAPSE), 2, 1), (Touch, 0.8, 0.3), (Munmap, 1, 0.3),
    (lambda o, n: UffdRegister(o, n, True, False), 1.5, 0.45), (_few(UffdCopy), 0.8, 0.8),
    (UffdCopy, 0.3, 0.3), (UffdUnregister, 0.7, 0.7), (PrctlSet(1), 0.7, 0.14),
    (PrctlSet(0), 0.7, 0.7), (PrctlSet(1, 2), 0.7, 0.14), (Fork(), 0.7, 0.21),
    (PrctlGet(), 0.3, 0.3), (UffdClose(), 0.5, 0.5), (Execve(), 0.25, 0.025),
    (lambda o, n: Madvise(o, n, MADV_CLR_HUGEPAGE), 0.3, 0.15),
    (lambda o, n: UffdRegister(o, n, False, True), 0.4, 0.4),
    (lambda o, n: UffdRegister(o, n, True, True), 0.4, 0.4),
    (_lazy_restore, 0.5, 2), (_populate_disabled, 0.5, 4), (_advised_population, 0.3, 4),
    (PrctlSet(0, 2), 0.1, 0.1), (PrctlSet(1, 1), 0.1, 0.1), (PrctlSet(1, 3), 0.1, 0.1),
    (PrctlSet(1, 2, 1), 0.1, 0.1), (PrctlSet(1, 0, 0, 1), 0.1, 0.1), (PrctlSet(2), 0.1, 0.1),
    (PrctlGet(1), 0.1, 0.1), (PrctlGet(0, 1), 0.1, 0.1), (PrctlGet(0, 0, 1), 0.1, 0.1),
    (PrctlGet(0, 0, 0, 1), 0.1, 0.1),
)


# Steps that act on the whole machine: only for scripts run one at a time under the sysfs guard
# (sequences.py, machine shards).  Two full scans take ~20-30 ms with the fast tuning.  No
# `sysfs never`: leaving `never` restarts khugepaged, which scans at once (start_stop_khugepaged
# -> kthread_run), between a step and its observation, which the model cannot tell; and under
# `never` a khugepaged wait runs to its end and leaves the script inconclusive.  The normal
# shards and the scenarios (sysfs-switch) cover `never`.
_MACHINE = ((Sysfs(0), 0.4), (Sysfs(1), 0.4), (Khugepaged(2000), 0.6))
MACHINE_BODY = 32  # steps: ~3 ms in the executor, inside the ~10 ms between two scans


def kind_table(exec_fork: bool = True, machine: bool = False) -> tuple:
    """256 entries: None for byte 0, then each kind repeated in proportion to its weight."""
    kinds = [(k, mw if machine else w) for k, w, mw in _KINDS
             if exec_fork or not isinstance(k, (Fork, Execve))]
    kinds += list(_MACHINE) if machine else []
    total = sum(w for _, w in kinds)
    table: list = [None]
    for k, w in kinds:
        table += [k] * max(1, round(w / total * 255))
    table += [kinds[0][0]] * (256 - len(table))
    return tuple(table[:256])


def decode(kinds: tuple, blocks: int, data: bytes) -> Script:
    """The script a byte string stands for (every byte string decodes)."""
    rt = range_table(blocks)
    steps, i = [], 0
    while i < len(data):
        k = kinds[data[i]]
        i += 1
        if k is None:
            continue
        if isinstance(k, Step):
            steps.append(k)
            continue
        off, ln = rt[(data[i] if i < len(data) else 0) % len(rt)]
        i += 1
        made = k(off, ln)
        steps += made if isinstance(made, tuple) else [made]
    return Script(tuple(steps), blocks)


def machine_script(kinds: tuple, blocks: int, data: bytes) -> Script:
    """A script that ends with a `khugepaged` step, so that whatever the body registered with
    khugepaged and left collapsible is seen collapsing.  The first byte picks the mode it
    starts in (always or madvise: a shard may start under `never`, and the switch away from it
    is safe while the arena is empty); a `khugepaged` step then waits for two full scans, so
    the body runs in the quiet ~10 ms after one instead of racing the next (khugepaged collapses
    only while it scans, and the model only at `khugepaged` steps).  The body is cut to
    MACHINE_BODY steps to fit in that quiet."""
    body = decode(kinds, blocks, data[1:]).steps[:MACHINE_BODY] if data else ()
    start = Sysfs(data[0] % 2 if data else 1)
    return Script((start, _MACHINE[2][0], *body, _MACHINE[2][0]), blocks)


def coded_scripts(blocks: int = 2, min_bytes: int = 32, max_bytes: int = 160,
                  exec_fork: bool = True, machine: bool = False) -> st.SearchStrategy[Script]:
    """About 36 steps on average (a step costs 1-2 bytes): long scripts spread the cost of
    drawing an example and starting an executor over more transitions.  `machine` adds
    `sysfs` and `khugepaged` steps and ends the script with `khugepaged` (machine_script)."""
    kinds = kind_table(exec_fork, machine)
    if machine:
        return st.binary(min_size=min_bytes, max_size=max_bytes).map(
            lambda b: machine_script(kinds, blocks, b))
    return st.binary(min_size=min_bytes, max_size=max_bytes).map(
        lambda b: decode(kinds, blocks, b))
