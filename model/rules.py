"""The kernel's rules, one function per kernel function, written once for both backends.

Each function takes a backend `B` (backend.PY or backend.Z3) and an `era` (eras.Era); the era is
always concrete, arguments may be symbolic.  Booleans go through B's connectives only.  A comment
per conjunct says what it models.  Versions: "6.12" means Debian linux-source 6.12.117, "6.18"
the merged 6.18 series, "4.0" the torvalds snapshot of mm/huge_memory.c; see model/README.md.
Anonymous private memory only: file, shmem, DAX, hugetlb and VM_SPECIAL are not modelled.
"""
from __future__ import annotations

from typing import Any

from .backend import memo_concrete
from .eras import Era
from .errno import EBUSY, EEXIST, EINVAL, ENOENT
from .state import Flags, Mm
from .syscalls import MADV_CLR_HUGEPAGE, MADV_COLLAPSE, MADV_HUGEPAGE, MADV_NOHUGEPAGE

PR_THP_DISABLE_EXCEPT_ADVISED = 2  # include/uapi/linux/prctl.h, 6.18

# Users of thp_vma_allowable_orders(): enum tva_type (6.18) / tva_flags (6.8-6.17).
PAGEFAULT, KHUGEPAGED, FORCED_COLLAPSE, SMAPS = "pagefault", "khugepaged", "collapse", "smaps"
USERS = (PAGEFAULT, KHUGEPAGED, FORCED_COLLAPSE, SMAPS)

SYSFS_ALWAYS, SYSFS_MADVISE, SYSFS_NEVER = 0, 1, 2


# --- prctl (kernel/sys.c) ----------------------------------------------------------------------

def prctl_set_thp_disable(B: Any, era: Era, mm: Mm, a2: Any, a3: Any, a4: Any, a5: Any
                          ) -> tuple[Any, Mm]:
    """PR_SET_THP_DISABLE (41): (return value, new mm).  EINTR from mmap_write_lock_killable
    is not modelled (no fatal signals here)."""
    disable = B.not_(a2 == 0)  # arg2 is converted to bool: any non-zero value disables
    if era.except_advised:
        # 6.18 prctl_set_thp_disable(): arg4/arg5 must be 0; flags (arg3) only with disable,
        # and only PR_THP_DISABLE_EXCEPT_ADVISED.
        einval = B.or_(B.not_(a4 == 0), B.not_(a5 == 0),
                       B.and_(B.not_(disable), B.not_(a3 == 0)),
                       B.not_(B.or_(a3 == 0, a3 == PR_THP_DISABLE_EXCEPT_ADVISED)))
        new = Mm(mm.def_nh,
                 disable=B.and_(disable, a3 == 0),  # MMF_DISABLE_THP_COMPLETELY
                 except_adv=B.and_(disable, a3 == PR_THP_DISABLE_EXCEPT_ADVISED),
                 registered=mm.registered)
    else:
        # 3.15-6.17: arg3..arg5 must be 0.
        einval = B.or_(B.not_(a3 == 0), B.not_(a4 == 0), B.not_(a5 == 0))
        if era.def_flags:
            # 3.15-4.12: me->mm->def_flags |= VM_NOHUGEPAGE (or &= ~), a template for new VMAs.
            new = B.put(mm, def_nh=disable)
        else:
            # 4.13-6.17: set_bit/clear_bit(MMF_DISABLE_THP, &me->mm->flags).
            new = B.put(mm, disable=disable)
    return B.ite(einval, -EINVAL, 0), _mm_ite(B, einval, mm, new)


def prctl_get_thp_disable(B: Any, era: Era, mm: Mm, a2: Any, a3: Any, a4: Any, a5: Any) -> Any:
    """PR_GET_THP_DISABLE (42): EINVAL unless arg2..arg5 are all 0 (all eras)."""
    einval = B.or_(*(B.not_(a == 0) for a in (a2, a3, a4, a5)))
    return B.ite(einval, -EINVAL, thp_disable_value(B, era, mm))


def thp_disable_value(B: Any, era: Era, mm: Mm) -> Any:
    """What a valid PR_GET_THP_DISABLE returns."""
    if era.def_flags:
        return B.ite(mm.def_nh, 1, 0)  # !!(def_flags & VM_NOHUGEPAGE)
    if era.except_advised:
        # 6.18: 1 for COMPLETELY, 1 | PR_THP_DISABLE_EXCEPT_ADVISED for EXCEPT_ADVISED.
        return B.ite(mm.disable, 1, B.ite(mm.except_adv, 1 | PR_THP_DISABLE_EXCEPT_ADVISED, 0))
    return B.ite(mm.disable, 1, 0)  # !!test_bit(MMF_DISABLE_THP)


def task_thp_status(B: Any, era: Era, mm: Mm) -> Any:
    """/proc/PID/status THP_enabled (fs/proc/array.c task_thp_status, 5.0+; None before).
    6.18 tests only MMF_DISABLE_THP_COMPLETELY, so EXCEPT_ADVISED still shows 1."""
    if not era.thp_enabled_status:
        return None
    return B.ite(mm.disable, 0, 1)


def mm_init(B: Any, era: Era, parent: Mm, fork: bool) -> Mm:
    """kernel/fork.c mm_init(): the child mm (fork) or the new image's mm (execve).
    def_flags & VM_INIT_DEF_MASK (= VM_NOHUGEPAGE) and MMF_INIT_MASK (which includes
    MMF_DISABLE_THP_MASK) come from current->mm in both cases.  MMF_VM_HUGEPAGE is not in the
    init mask: khugepaged_fork() re-registers a forked child, exec starts unregistered."""
    return Mm(parent.def_nh, parent.disable, parent.except_adv,
              parent.registered if fork else B.F)


# --- new VMAs (mm/mmap.c do_mmap) ---------------------------------------------------------------

def new_vma_flags(B: Any, era: Era, mm: Mm) -> Flags:
    """vm_flags of a fresh anonymous VMA: do_mmap() ORs in mm->def_flags.  Only in the def-flags
    eras can def_flags hold VM_NOHUGEPAGE (s390 KVM's thp_split_mm() is not modelled)."""
    return Flags(B.F, mm.def_nh if era.def_flags else B.F, B.F, B.F)


# --- madvise (mm/madvise.c, mm/khugepaged.c) ----------------------------------------------------

def madvise_behavior_valid(era: Era, advice: int) -> bool:
    """madvise_behavior_valid(): MADV_[NO]HUGEPAGE with CONFIG_TRANSPARENT_HUGEPAGE, MADV_COLLAPSE
    from 6.1, MADV_CLR_HUGEPAGE in the patched eras.  Other advice numbers are out of scope:
    the model answers EINVAL for them."""
    return (advice in (MADV_HUGEPAGE, MADV_NOHUGEPAGE)
            or (advice == MADV_COLLAPSE and era.madv_collapse)
            or is_clr_hugepage(era, advice))


def is_clr_hugepage(era: Era, advice: int) -> bool:
    return era.clr_hugepage is not None and advice in (MADV_CLR_HUGEPAGE, era.clr_hugepage)


@memo_concrete
def hugepage_madvise(B: Any, era: Era, f: Flags, advice: int) -> tuple[Flags, Any]:
    """hugepage_madvise(): (new flags, error for this VMA).  Each advice sets its own bit and
    clears the other (all eras).  Before ~4.5 ("mm: Loosen MADV_NOHUGEPAGE to enable Qemu
    postcopy on s390") re-applying an advice whose bit is set failed with EINVAL (4.0
    mm/huge_memory.c).  s390 KVM's silent no-op for MADV_HUGEPAGE is not modelled."""
    if is_clr_hugepage(era, advice):
        # MADV_CLR_HUGEPAGE (Rapoport 2017, kernel-patch/): *vm_flags &= ~(VM_HUGEPAGE|VM_NOHUGEPAGE)
        return B.put(f, hg=B.F, nh=B.F), 0
    hg = advice == MADV_HUGEPAGE
    already = f.hg if hg else f.nh
    err = B.ite(already, -EINVAL, 0) if era.madv_same_advice_einval else 0
    return B.put(f, hg=B.T if hg else B.F, nh=B.F if hg else B.T), err


# --- eligibility (include/linux/huge_mm.h, mm/huge_memory.c) ------------------------------------

@memo_concrete
def vma_thp_disabled(B: Any, era: Era, f: Flags, mm: Mm, forced_collapse: bool) -> Any:
    """Is THP disabled for the VMA by VM_NOHUGEPAGE or the process?"""
    if era.def_flags:
        return f.nh  # the prctl only ever shows up as VM_NOHUGEPAGE on VMAs
    if not era.except_advised:
        # 4.13-6.17 (6.12 vma_thp_disabled()): VM_NOHUGEPAGE or MMF_DISABLE_THP.
        return B.or_(f.nh, mm.disable)
    # 6.18 vma_thp_disabled(vma, vm_flags, forced_collapse), in its order:
    return B.or_(f.nh,  # 1. VM_NOHUGEPAGE always wins
                 mm.disable,  # 2. MMF_DISABLE_THP_COMPLETELY
                 B.and_(B.not_(f.hg),  # 3. VM_HUGEPAGE is "advised": not disabled
                        B.F if forced_collapse else B.T,  # 4. MADV_COLLAPSE counts as advised
                        mm.except_adv))  # 5. otherwise disabled iff EXCEPT_ADVISED


@memo_concrete
def thp_vma_allowable(B: Any, era: Era, user: str, f: Flags, mm: Mm, sysfs: Any,
                      anon_vma: Any, pmd_fits: Any) -> Any:
    """May `user` use a PMD-sized THP in this anonymous VMA?

    `pmd_fits`: a naturally aligned PMD lies inside the VMA.  The page-fault user does not check
    it here (do_huge_pmd_anonymous_page checks the faulting PMD instead); `anon_vma`: the VMA
    has one (first write).  Assumes only the PMD order is enabled (hugepages-2048kB=inherit, as
    on the machines we test); mTHP orders are not modelled.  Returns None where the user does
    not exist in the era (MADV_COLLAPSE before 6.1, smaps THPeligible before 5.0).
    """
    if user == FORCED_COLLAPSE and not era.madv_collapse:
        return None
    if user == SMAPS and not era.thp_eligible_smaps:
        return None
    # Sysfs (the TVA_ENFORCE_SYSFS mask, 6.8+ thp_vma_allowable_orders; 4.x
    # transparent_hugepage_enabled / hugepage_vma_check): "always", or "madvise" with
    # VM_HUGEPAGE.  MADV_COLLAPSE ignores sysfs.  khugepaged does not run under "never".
    sysfs_ok = B.or_(sysfs == SYSFS_ALWAYS, B.and_(sysfs == SYSFS_MADVISE, f.hg))
    return B.and_(
        B.not_(vma_thp_disabled(B, era, f, mm, user == FORCED_COLLAPSE)),
        B.T if user == FORCED_COLLAPSE else sysfs_ok,
        # !in_pf: the VMA must hold an aligned PMD (thp_vma_suitable_order at vm_end - PMD;
        # 4.x: the khugepaged scan loop's hstart < hend).
        B.T if user == PAGEFAULT else pmd_fits,
        # no anon_vma: eligible only for smaps and the fault (which prepares one).
        anon_vma if user in (KHUGEPAGED, FORCED_COLLAPSE) else B.T,
    )


# --- khugepaged registration (mm/khugepaged.c) --------------------------------------------------

def khugepaged_enter_vma(B: Any, era: Era, f: Flags, mm: Mm, sysfs: Any, anon_vma: Any,
                         pmd_fits: Any) -> Any:
    """khugepaged_enter_vma(vma, vm_flags): does this call put the mm on khugepaged's list
    (set MMF_VM_HUGEPAGE)?  Only if khugepaged could scan the VMA as it is at the call, with
    `vm_flags` (the new flags, not yet stored in some callers): hugepage_flags_enabled() /
    6.11+ hugepage_pmd_enabled() (sysfs not never), then thp_vma_allowable(KHUGEPAGED) -- an
    anon_vma and a whole aligned PMD inside the VMA (6.1 hugepage_vma_check(vma, vm_flags,
    false, false, true); 6.12 thp_vma_allowable_order(TVA_ENFORCE_SYSFS); 6.18 TVA_KHUGEPAGED;
    4.x khugepaged_enter_vma_merge() + khugepaged_enter()).  The bit is never cleared while the
    mm lives (collect_mm_slot frees the slot only at exit), so registration is monotonic.

    The call sites are step.py's (6.1 = Debian 6.1.192, 6.12 = Debian 6.12.117, 6.18 = this
    host's kernel, checked by conformance/scenarios/khugepaged-*.vmf):
    - a fault that takes the huge-PMD path, before userfaultfd can turn it into SIGBUS:
      do_huge_pmd_anonymous_page() (mm/huge_memory.c, all eras) -> step.touch;
    - every successful VMA merge, on the merged VMA: vma_merge() (6.1 mm/mmap.c), 6.12+
      vma_merge_existing_range() and vma_merge_new_range() (mm/vma.c), and 6.1 mmap_region()'s
      vma_expand() -> step.mmap, step.madvise, step._relayout (UFFDIO_(UN)REGISTER, close);
    - a new VMA in mmap_region() / __mmap_region() (6.1+): never registers here, a fresh
      anonymous VMA has no anon_vma -> step.mmap;
    - MADV_HUGEPAGE, Era.hugepage_madvise_registers: hugepage_madvise() (4.x, 6.1, 6.18) on
      the VMA before madvise_update_vma() splits it, or (Debian 6.12) madvise_update_vma() on
      the piece after a change -> step.madvise;
    - khugepaged_fork() (include/linux/khugepaged.h): the child is registered iff the parent
      is -> mm_init.
    Not modelled: brk, stack expansion and mremap/mprotect merges (no such steps)."""
    return thp_vma_allowable(B, era, KHUGEPAGED, f, mm, sysfs, anon_vma, pmd_fits)


# --- userfaultfd (fs/userfaultfd.c) -------------------------------------------------------------

def userfaultfd_register(B: Any, f: Flags, missing: bool, wp: bool) -> Flags:
    """userfaultfd_register(): the VMA's uffd flags become exactly the requested mode
    (vm_flags & ~__VM_UFFD_FLAGS | mode)."""
    return B.put(f, um=B.T if missing else B.F, uw=B.T if wp else B.F)


def userfaultfd_unregister(B: Any, f: Flags) -> Flags:
    """UFFDIO_UNREGISTER and userfaultfd_release() (closing the fd) clear the uffd flags."""
    return B.put(f, um=B.F, uw=B.F)


def dup_userfaultfd(B: Any, f: Flags) -> Flags:
    """fork: without UFFD_FEATURE_EVENT_FORK the child's VMAs lose their uffd flags
    (kernel/fork.c dup_mmap -> dup_userfaultfd)."""
    return userfaultfd_unregister(B, f)


# --- VMA merging (mm/vma.c is_mergeable_vma, is_mergeable_anon_vma) -----------------------------

@memo_concrete
def is_mergeable_vma(B: Any, era: Era, left: Flags, right: Flags, moving_av: Any, target_av: Any
                     ) -> Any:
    """Can two neighbouring VMAs merge?  `moving_av` is the anon_vma of the VMA being changed
    or created, `target_av` that of the neighbour it would merge into (0 = none yet).

    vm_flags must be equal (we track hg/nh/um/uw; the arena's other flags are equal by
    construction); one userfaultfd per process, so equal um/uw imply the same uffd context.
    is_mergeable_anon_vma(): equal anon_vmas, or the moving VMA has none; from 6.16 also a
    moving VMA with one into a neighbour without.  Fork children (anon_vma_chain not singular)
    never merge with written neighbours; the model does not run a child further.
    """
    anon_ok = B.or_(moving_av == target_av, moving_av == 0,
                    B.and_(target_av == 0, B.T if era.anon_merge_into_unfaulted else B.F))
    return B.and_(left.hg == right.hg, left.nh == right.nh, left.um == right.um,
                  left.uw == right.uw, anon_ok)


def are_anon_vmas_compatible(B: Any, prev_av: Any, next_av: Any) -> Any:
    """Merging a changed VMA with both neighbours also needs prev's and next's anon_vmas to
    fit each other: equal, or one of them none (mm/vma.c are_anon_vmas_compatible, 6.12; 6.1
    mm/mmap.c vma_merge)."""
    return B.or_(prev_av == next_av, prev_av == 0, next_av == 0)


# --- collapse (mm/khugepaged.c) -----------------------------------------------------------------

@memo_concrete
def collapse_pmd(B: Any, era: Era, khugepaged: bool, armed: Any, thp: Any, ptable: Any,
                 cow: Any, any_pop: Any, all_pop: Any) -> tuple[Any, Any, Any]:
    """One aligned PMD inside an eligible VMA: (ok, abort, errno).  `ok`: it is or becomes a
    PMD-mapped THP; `abort`: MADV_COLLAPSE's loop stops here (madvise_collapse's result switch
    lists the results that let it go on); `errno`: madvise_collapse_errno() of the failure.

    hpage_collapse_scan_pmd() / find_pmd_or_thp_or_none(): a PMD THP is SCAN_PMD_MAPPED
    (success); no page table is SCAN_PMD_NONE (abort; khugepaged never collapses it); a none
    PTE in a userfaultfd_armed() VMA is SCAN_EXCEED_NONE_PTE (abort; 4.3 "userfaultfd: prevent
    khugepaged to merge if userfaultfd is armed": holes are missing data, not zeroes), EBUSY
    from ~6.4 and EINVAL in 6.1; no writable PTE (none present, or all still write-protected
    by fork: `cow`) is SCAN_PAGE_RO (go on, EINVAL) before 6.18.
    khugepaged also needs none PTEs <= max_ptes_none (511 by default: one present page) and a
    young page (a freshly written one is); MADV_COLLAPSE ignores both.
    """
    none_err = -EBUSY if era.collapse_none_ebusy else -EINVAL
    holes_armed = B.and_(armed, B.not_(all_pop))
    abort = B.and_(B.not_(thp), B.or_(B.not_(ptable), holes_armed))
    page = any_pop if khugepaged else B.T  # max_ptes_none: one present page
    writable = B.and_(any_pop, B.not_(cow)) if era.collapse_needs_writable else B.T
    ok = B.or_(thp, B.and_(B.not_(abort), page, writable))
    err = B.ite(ok, 0, B.ite(B.and_(ptable, holes_armed), none_err, -EINVAL))
    return ok, abort, err


# --- faults and UFFDIO_COPY (mm/memory.c, mm/userfaultfd.c) -------------------------------------

@memo_concrete
def huge_pmd_path(B: Any, era: Era, f: Flags, mm: Mm, sysfs: Any, pmd_none: Any,
                  pmd_in_vma: Any) -> Any:
    """Does a write fault on a not-present page get into do_huge_pmd_anonymous_page() past its
    first check?  __handle_mm_fault(): pmd_none() and thp_vma_allowable_order(TVA_PAGEFAULT);
    do_huge_pmd_anonymous_page(): the aligned PMD inside the VMA (thp_vma_suitable_order),
    then vmf_anon_prepare() and khugepaged_enter_vma() -- whatever userfaultfd says next."""
    return B.and_(pmd_none, pmd_in_vma,
                  thp_vma_allowable(B, era, PAGEFAULT, f, mm, sysfs, B.T, B.T))


def fault_huge_pmd(B: Any, era: Era, f: Flags, mm: Mm, sysfs: Any, pmd_none: Any,
                   pmd_in_vma: Any) -> Any:
    """Does a write fault on a not-present page allocate a PMD THP?  The huge path
    (huge_pmd_path), unless a VM_UFFD_MISSING VMA hands the fault to userspace there
    (__do_huge_pmd_anonymous_page -> handle_userfault)."""
    return B.and_(B.not_(f.um), huge_pmd_path(B, era, f, mm, sysfs, pmd_none, pmd_in_vma))


@memo_concrete
def uffdio_copy_page(B: Any, registered: Any, present: Any, pmd_thp: Any) -> Any:
    """mfill_atomic() for one destination page: errno or 0.  The range must lie in one VMA
    registered with a userfaultfd, in any mode (validate_dst_vma; else ENOENT); a PMD-mapped
    THP is EEXIST ("If the dst_pmd is THP don't override it and just be strict"); so is a
    present PTE (mfill_atomic_install_pte)."""
    return B.ite(B.not_(registered), -ENOENT,
                 B.ite(B.or_(pmd_thp, present), -EEXIST, 0))


def _mm_ite(B: Any, c: Any, a: Mm, b: Mm) -> Mm:
    return Mm(*(B.ite(c, x, y) for x, y in zip(a, b)))
