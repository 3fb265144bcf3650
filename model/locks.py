"""The lock discipline: which locks each syscall and each step of a THP collapse hold, and how
locks exclude each other.  Written as rules in one record (`Discipline`), so that a
counterfactual -- "madvise under the read lock", "no revalidation under the write lock", "a
writer does not exclude writers" -- is one changed field; proofs/concurrency.py interleaves the
model's transitions under these rules.

The locks: the mm's `mmap_lock`, an rwsem (readers share, a writer excludes readers and
writers), and, since 6.4, each VMA's own lock: faults take it for read (lock_vma_under_rcu ->
vma_start_read, mm/memory.c); every mmap_lock writer that changes a VMA takes it for write
(vma_start_write) until it drops the mmap_lock (mmap_write_unlock -> vma_end_write_all).
Sources: Debian 6.12.117 unless a version is named.
"""
from __future__ import annotations

from dataclasses import dataclass

from .eras import Era
from .syscalls import (MADV_COLLAPSE, Execve, Fork, Khugepaged, Madvise, Mmap, Munmap, PrctlGet,
                       PrctlSet, Syscall, Sysfs, Touch, UffdClose, UffdCopy, UffdRegister,
                       UffdUnregister)

READ, WRITE = "read", "write"


@dataclass(frozen=True)
class Hold:
    """The locks held during one atomic step: mmap_lock and the VMA's lock (None, READ, WRITE).
    The VMA is the one holding the PMD the concurrency theorems look at."""

    mmap: str | None = None
    vma: str | None = None

    def text(self) -> str:
        parts = [f"{n}:{m[0].upper()}" for n, m in (("mmap", self.mmap), ("vma", self.vma)) if m]
        return " ".join(parts) or "-"


@dataclass(frozen=True)
class Discipline:
    """The rules; the defaults are the kernel's."""

    # madvise_need_mmap_write() (mm/madvise.c, every version since 2.6): MADV_HUGEPAGE and
    # MADV_NOHUGEPAGE are not among the read-lock exceptions, so they take the write lock (and,
    # 6.4+, madvise_update_vma -> vma_start_write).  MADV_CLR_HUGEPAGE (kernel-patch/) likewise.
    madvise_hugepage_write: bool = True
    # collapse_huge_page() (mm/khugepaged.c) re-runs hugepage_vma_revalidate() after
    # mmap_write_lock(), before it touches the page tables: 4.8+; before 4.8 it repeated
    # find_vma() + hugepage_vma_check() inline, also under the write lock (4.0
    # mm/huge_memory.c).  From 4.8 it also revalidates under the read lock first
    # (Era.collapse_revalidate_read).
    revalidate_under_write: bool = True
    revalidate_under_read: bool = True
    # rwsem semantics (kernel/locking/rwsem.c): a writer excludes writers and readers.
    writer_excludes_writer: bool = True
    writer_excludes_reader: bool = True
    # prctl(PR_SET_THP_DISABLE) (kernel/sys.c): mmap_write_lock_killable() only; it changes an
    # mm bit, no VMA, so it takes no VMA write lock.
    prctl_vma_write: bool = False


KERNEL = Discipline()


def _excludes(d: Discipline, a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    if a == WRITE and b == WRITE:
        return d.writer_excludes_writer
    return (a == WRITE or b == WRITE) and d.writer_excludes_reader


def conflicts(d: Discipline, a: Hold, b: Hold) -> bool:
    """Two holds cannot be taken at the same time (by different threads)."""
    return _excludes(d, a.mmap, b.mmap) or _excludes(d, a.vma, b.vma)


def fault_hold(era: Era) -> Hold:
    """An anonymous write fault: since 6.4 under the VMA's lock only (do_user_addr_fault ->
    lock_vma_under_rcu, arch/x86/mm/fault.c; the first fault of a VMA without an anon_vma may
    briefly take the mmap read lock in __vmf_anon_prepare), before under mmap_read_lock."""
    return Hold(vma=READ) if era.per_vma_lock_faults else Hold(mmap=READ)


def syscall_hold(era: Era, d: Discipline, sc: Syscall) -> Hold:
    """The locks a syscall of the script language holds while it changes the state."""
    t = type(sc)
    if t is Madvise:
        if sc.advice == MADV_COLLAPSE:  # madvise_need_mmap_write(): a read-lock exception
            return Hold(mmap=READ)
        return Hold(WRITE, WRITE) if d.madvise_hugepage_write else Hold(mmap=READ)
    if t is PrctlSet:
        return Hold(WRITE, WRITE if d.prctl_vma_write else None)
    if t in (Mmap, Munmap, Fork, UffdRegister, UffdUnregister, UffdClose):
        # mmap_write_lock(_killable) and vma_start_write on the VMAs they change (mm/mmap.c,
        # mm/vma.c, kernel/fork.c dup_mmap, fs/userfaultfd.c register/unregister/release)
        return Hold(WRITE, WRITE)
    if t is Touch:
        return fault_hold(era)
    if t is UffdCopy:
        # mfill_atomic(): mmap_read_lock, or (6.8+) the VMA's read lock via uffd_lock_vma; only
        # PTEs change, which a collapse re-checks under its write lock: not told apart here.
        return Hold(mmap=READ)
    assert t in (PrctlGet, Sysfs, Execve, Khugepaged), t
    return Hold()  # no lock of this mm: a read of a bit, a global tunable, a new mm


@dataclass(frozen=True)
class MicroStep:
    """One atomic step of a collapse, with the locks it runs under and what it checks."""

    name: str
    hold: Hold
    section: int  # a step and the next of the same section: this step's hold is kept between
    checks: str  # what it looks at: proofs/concurrency.py evaluates it with the model's rules
    source: str


def collapse_steps(era: Era, d: Discipline, khugepaged: bool) -> tuple[MicroStep, ...]:
    """One PMD collapsed by khugepaged (khugepaged_scan_mm_slot -> hpage_collapse_scan_pmd ->
    collapse_huge_page) or by MADV_COLLAPSE (madvise_collapse -> the same), as atomic steps in
    critical sections: the scan (read), the allocation (no lock), the revalidation under the
    read lock (4.8+), the revalidation and the install (write)."""
    r, w = Hold(mmap=READ), Hold(WRITE, WRITE)
    first = (MicroStep("scan", r, 0, "scan", "khugepaged_scan_mm_slot: mmap_read_trylock, "
                       "hpage_collapse_test_exit_or_disable, thp_vma_allowable_order")
             if khugepaged else
             MicroStep("scan", r, 0, "scan", "madvise_collapse: mmap_read_lock, "
                       "hugepage_vma_revalidate"))
    read_check = (MicroStep("revalidate", r, 2,
                            "revalidate" if d.revalidate_under_read else "",
                            "collapse_huge_page: mmap_read_lock, hugepage_vma_revalidate, "
                            "mmap_read_unlock"),) if era.collapse_revalidate_read else ()
    return (
        first,
        MicroStep("scan_pmd", r, 0, "scan_pmd", "hpage_collapse_scan_pmd: the PTEs (holes, "
                  "userfaultfd_armed, writable)"),
        MicroStep("alloc", Hold(), 1, "", "collapse_huge_page: mmap_read_unlock, "
                  "alloc_charge_folio"),
        *read_check,
        MicroStep("revalidate_write", Hold(mmap=WRITE), 3, "revalidate" if d.revalidate_under_write else "",
                  "collapse_huge_page: mmap_write_lock, hugepage_vma_revalidate"),
        MicroStep("install", w, 3, "isolate", "collapse_huge_page: check_pmd_still_valid, "
                  "vma_start_write, __collapse_huge_page_isolate, set_pmd_at, "
                  "mmap_write_unlock"),
    )


def fault_steps(era: Era) -> tuple[MicroStep, ...]:
    """A write fault into an empty PMD that takes the huge path: the eligibility check in
    __handle_mm_fault (thp_vma_allowable_order(TVA_IN_PF)), then do_huge_pmd_anonymous_page:
    allocate and clear 2 MiB, take the PMD lock, re-check only pmd_none() and
    userfaultfd_missing(), set_pmd_at.  Both under the fault's lock (fault_hold)."""
    h = fault_hold(era)
    return (MicroStep("fault_check", h, 0, "fault", "__handle_mm_fault: pmd_none, "
                      "thp_vma_allowable_order(TVA_IN_PF)"),
            MicroStep("fault_install", h, 0, "fault_install", "__do_huge_pmd_anonymous_page: "
                      "folio_zero_user, pmd_lock, pmd_none, userfaultfd_missing, set_pmd_at"))
