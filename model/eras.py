"""Kernel eras: each a record of features, so a semantics is "base + features".

Every behaviour that differs between kernels is a named field here and nowhere else; the rules in
`rules.py` read these fields instead of comparing version numbers.  An era has a representative
kernel version (`kernel`); `Era.at(version)` gives the same era with the within-era features of
another version (e.g. ``ERAS["mmf"].at("6.1")`` for Debian's 6.1, whose MADV_COLLAPSE returns
EINVAL where 6.4+ returns EBUSY).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

# prctl flavours (kernel/sys.c PR_SET_THP_DISABLE)
DEF_FLAGS = "def_flags"  # 3.15-4.12: mm->def_flags |= VM_NOHUGEPAGE   (a0715cc22601)
MMF = "mmf"  # 4.13-6.17: set_bit(MMF_DISABLE_THP)                      (1860033237d4)
MMF_EXCEPT_ADVISED = "mmf_except_advised"  # 6.18+: _COMPLETELY / _EXCEPT_ADVISED (9dc21bbd62ed)


def _version(text: str) -> tuple[int, int]:
    try:
        major, minor = text.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        raise ValueError(f"bad kernel version {text!r} (want e.g. 6.12)") from None


@dataclass(frozen=True, eq=False)
class Era:
    id: str
    kernels: str  # the range this semantics stands for, as printed by `vmaflags eras`
    kernel: str  # representative version; within-era features below follow it
    summary: str
    prctl: str  # DEF_FLAGS | MMF | MMF_EXCEPT_ADVISED
    madv_clr: bool = False  # the patched eras: MADV_CLR_HUGEPAGE exists
    # Within-era features, derived from `kernel` by `Era.at`:
    # MADV_CLR_HUGEPAGE's advice number in the patched eras (None in the others): 18 in the 2017
    # posting, for 4.12; 18 is MADV_WIPEONFORK from 4.14 (d2cd9ede6e19), so from there on it is
    # kernel-patch/'s 26, the first number after MADV_COLLAPSE (25) that 6.12 and 6.18 leave free
    # (the kernels that exist with it: patched-6.12 and the def-flags-clr-6.12 stand-in).
    clr_hugepage: int | None = None
    madv_same_advice_einval: bool = False  # < 4.5: re-applying a set advice fails (hugepage_madvise)
    madv_collapse: bool = False  # >= 6.1: MADV_COLLAPSE exists (7d8faaf15545)
    collapse_none_ebusy: bool = False  # >= 6.4: SCAN_EXCEED_NONE_PTE -> EBUSY, before: EINVAL
    thp_eligible_smaps: bool = False  # >= 5.0: smaps THPeligible (7635d9cbe832)
    thp_enabled_status: bool = False  # >= 5.0: /proc/PID/status THP_enabled
    # >= 6.16 (879bca0a2c4f "mm/vma: fix incorrectly disallowed anonymous VMA merges"): a VMA
    # with an anon_vma may merge into a neighbour without one; before, only the other way round.
    anon_merge_into_unfaulted: bool = False
    # < 6.18: khugepaged and MADV_COLLAPSE need a writable PTE in the PMD (SCAN_PAGE_RO); removed
    # by "mm: Enable khugepaged to operate on non-writable VMAs" (Sept 2025).
    collapse_needs_writable: bool = True
    # >= 6.4 (5543d3c43c41 "mm/uffd: allow vma to merge as much as possible"):
    # userfaultfd_register()/_unregister() give vma_merge() the pgoff of the range's start.
    # Before (Debian 6.1.192 fs/userfaultfd.c, lines 1473 and 1668, not backported), they pass
    # vma->vm_pgoff, so a piece that starts inside its VMA never merges with the next VMA
    # (can_vma_merge_before's pgoff check).  userfaultfd_release() was always right.
    uffd_merge_pgoff: bool = True
    # >= 6.9 (Lokesh Gidra, "userfaultfd: use per-vma locks in userfaultfd operations"):
    # UFFDIO_COPY finds the VMA at dst with uffd_mfill_lock() -> find_vma_and_prepare_anon(),
    # which prepares its anon_vma before validate_dst_vma() can refuse the range (ENOENT).
    # Before (Debian 6.1.192 mm/userfaultfd.c __mcopy_atomic), find_dst_vma() refuses first and
    # anon_vma_prepare() runs only for a valid range: a failed copy leaves no anon_vma.
    uffd_copy_prepares_anon_first: bool = True
    # >= 6.12 (cacded5e42b9 "mm: avoid using vma_merge() for new VMAs"): vma_merge_new_range()
    # tries prev, then next, and merges both when prev's and next's anon_vmas are compatible.
    # Before (Debian 6.1.192 mm/mmap.c mmap_region(), unchanged through 6.11), "Check next"
    # comes first, and prev is then checked with next's anon_vma as the moving one
    # (can_vma_merge_after(prev, ..., vma->anon_vma)): prev without an anon_vma, or with
    # another one, does not merge, and the new VMA expands next alone.
    mmap_merge_prev_first: bool = True
    # MADV_HUGEPAGE: where khugepaged_enter_vma() is called (rules.khugepaged_enter_vma).
    # True: hugepage_madvise() calls it before madvise_update_vma(), on the VMA before the
    # split and also when the flags do not change -- 4.x (khugepaged_enter_vma_merge), Debian
    # 6.1.192, the mm tree of Jan 2025 (6.14 cycle: "@@ -383,6 +376,21 @@ int
    # hugepage_madvise" context of a posted patch), Sept 2025 (BPF-THP review) and 6.18 (this
    # host: scenarios khugepaged-madvise-again, khugepaged-madvise-subrange).  False: Debian
    # 6.12.117 calls it from madvise_update_vma() on the piece, after an actual change.  Other
    # 6.2-6.13 releases are not checked; only 6.12 is set False.
    hugepage_madvise_registers: bool = True
    # >= 6.4 (0bff0aaea03e "x86/mm: try VMA lock-based page fault handling first"): anonymous
    # faults hold the VMA's own lock (lock_vma_under_rcu), not the mmap_lock; before, the mmap
    # read lock.  Writers of vm_flags take the VMA write lock (vma_start_write), the prctl does
    # not: see locks.py.
    per_vma_lock_faults: bool = False
    # >= 4.8 (hugepage_vma_revalidate, Ebru Akagunduz's khugepaged swapin series):
    # collapse_huge_page() re-validates the VMA under the mmap read lock before the swapin, then
    # again under the write lock; before, only under the write lock (find_vma +
    # hugepage_vma_check inline, 4.0 mm/huge_memory.c).
    collapse_revalidate_read: bool = True

    def at(self, kernel: str) -> Era:
        v = _version(kernel)
        return replace(
            self,
            kernel=kernel,
            clr_hugepage=(18 if v < (4, 14) else 26) if self.madv_clr else None,
            madv_same_advice_einval=v < (4, 5),
            madv_collapse=v >= (6, 1),
            collapse_none_ebusy=v >= (6, 4),
            thp_eligible_smaps=v >= (5, 0),
            thp_enabled_status=v >= (5, 0),
            anon_merge_into_unfaulted=v >= (6, 16),
            collapse_needs_writable=v < (6, 18),
            hugepage_madvise_registers=v != (6, 12),
            uffd_merge_pgoff=v >= (6, 4),
            uffd_copy_prepares_anon_first=v >= (6, 9),
            mmap_merge_prev_first=v >= (6, 12),
            per_vma_lock_faults=v >= (6, 4),
            collapse_revalidate_read=v >= (4, 8),
        )

    @property
    def def_flags(self) -> bool:
        return self.prctl == DEF_FLAGS

    @property
    def except_advised(self) -> bool:
        return self.prctl == MMF_EXCEPT_ADVISED


def _era(id: str, kernels: str, kernel: str, summary: str, prctl: str, clr: bool = False) -> Era:
    return Era(id, kernels, kernel, summary, prctl, madv_clr=clr).at(kernel)


ERAS: dict[str, Era] = {
    e.id: e
    for e in (
        _era("def-flags", "3.15-4.12", "4.12",
             "PR_SET_THP_DISABLE ORs VM_NOHUGEPAGE into mm->def_flags", DEF_FLAGS),
        _era("mmf", "4.13-6.17", "6.12",
             "PR_SET_THP_DISABLE sets MMF_DISABLE_THP, a master override", MMF),
        _era("mmf-except-advised", "6.18-", "6.18",
             "MMF_DISABLE_THP_COMPLETELY or _EXCEPT_ADVISED (PR_THP_DISABLE_EXCEPT_ADVISED)",
             MMF_EXCEPT_ADVISED),
        _era("def-flags-clr", "4.12 + MADV_CLR_HUGEPAGE", "4.12",
             "the 2017 proposal: def-flags plus MADV_CLR_HUGEPAGE (18; 26 from 4.14, where 18 "
             "is MADV_WIPEONFORK)", DEF_FLAGS, clr=True),
        _era("mmf-clr", "6.12 + MADV_CLR_HUGEPAGE", "6.12",
             "kernel-patch/: Debian 6.12 plus MADV_CLR_HUGEPAGE (26)", MMF, clr=True),
    )
}


def era(id: str) -> Era:
    """The era called `id`, or ValueError with a one-line message listing the valid ids."""
    try:
        return ERAS[id]
    except KeyError:
        raise ValueError(f"unknown era {id!r}; valid eras: {', '.join(ERAS)}") from None


@functools.cache
def era_at(id: str, kernel: str) -> Era:
    """ERAS[id] with the within-era features of `kernel` (Era.at), one object per pair: the
    interpreter memoises its rules per era object."""
    e = era(id)
    return e if kernel == e.kernel else e.at(kernel)
