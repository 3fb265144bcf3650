"""Behaviour of the model that the mutation run (mutation/run.py) found no test or proof pinning.

Each test states a kernel behaviour, with the function and file it comes from, and checks the
concrete interpreter (vmaflags.model.concrete) on a script of the script language
(conformance/SCRIPT.md).  Expected values come from reading the kernel source (Debian 6.1.192,
6.12.117; 6.18 as merged), not from running the model.  The last section checks properties
that every state of the interpreter must have for the proofs to speak about it: each reachable
state is `sane` (the proofs' assumption about states), and the Z3 terms of a step equal the
interpreter's on states that random scripts rarely reach.
"""
from __future__ import annotations

from functools import lru_cache

import pytest
import z3
from hypothesis import HealthCheck, example, given, settings

from vmaflags.conformance.strategies import coded_scripts
from vmaflags.model import ERAS, concrete, parse_script, symbolic
from vmaflags.model import step as S
from vmaflags.model.backend import PY
from vmaflags.model.state import empty_state
from vmaflags.model.syscalls import SYSFS_MODES
from vmaflags.proofs.states import sane

E61, E612, E618 = ERAS["mmf"].at("6.1"), ERAS["mmf"], ERAS["mmf-except-advised"]
E40 = ERAS["def-flags"].at("4.0")  # hugepage_madvise() refuses advice whose bit is set
MADVISE = SYSFS_MODES.index("madvise")  # the mode each script starts in
# the kernels of the test VMs and of this host; those before 6.16 (and 6.18)
EACH = pytest.mark.parametrize("era", [E61, E612, E618], ids=["6.1", "6.12", "6.18"])
BEFORE_616 = BEFORE_618 = pytest.mark.parametrize("era", [E61, E612], ids=["6.1", "6.12"])


def lines(era, text):
    """One observation text per step of `text`, whose steps ';' separates."""
    script = parse_script(text.replace("; ", "\n"))
    return [o.obs.text() for o in concrete.run(era, script, MADVISE)]


def final_state(era, text):
    script = parse_script(text.replace("; ", "\n"))
    st = empty_state(script.arena, MADVISE)
    for sc in script.steps:
        st = concrete.run_syscall(era, st, sc).state
    return st


def field(line, name):
    return dict(tok.partition("=")[::2] for tok in line.split(" "))[name]


def vmas(line):
    return field(line, "vmas")


def ret(line):
    return field(line, "ret")


# --- merging with both neighbours: prev's and next's anon_vmas must fit each other -----------

# [hg][nh][hg], the outer VMAs written or not, then MADV_HUGEPAGE on the middle, which was never
# written: it may merge with either neighbour, and with both only if prev's and next's anon_vmas
# are compatible (equal, or one of them none).
BOTH = "arena 3; mmap 0 6M; madvise 0 6M hugepage; madvise 2M 2M nohugepage; "


@EACH
@pytest.mark.parametrize("writes, want", [
    ("", "0x0-0x600000:hg:1:0"),
    ("touch 0 4K; ", "0x0-0x600000:hg:1:2048"),
    ("touch 4M 4K; ", "0x0-0x600000:hg:1:2048"),
    # two anon_vmas, whichever was made first: the middle joins prev only
    ("touch 0 4K; touch 4M 4K; ", "0x0-0x400000:hg:1:2048,0x400000-0x600000:hg:1:2048"),
    ("touch 4M 4K; touch 0 4K; ", "0x0-0x400000:hg:1:2048,0x400000-0x600000:hg:1:2048"),
])
def test_merge_both_needs_compatible_anon_vmas(era, writes, want):
    """6.12 mm/vma.c vma_merge_existing_range(): merge_right = can_vma_merge_right(vmg,
    merge_left), which with merge_left also needs are_anon_vmas_compatible(prev, next)
    (is_mergeable_anon_vma: equal, or one is NULL); otherwise only prev is merged.  6.1
    mm/mmap.c vma_merge(): merge_prev && merge_next && is_mergeable_anon_vma(prev->anon_vma,
    next->anon_vma, NULL), else merge_prev alone.  6.16+ can_vma_merge_right() spells the
    same check out: !prev->anon_vma || !next->anon_vma || prev->anon_vma == next->anon_vma."""
    out = lines(era, BOTH + writes + "madvise 2M 2M hugepage")
    assert vmas(out[-1]) == want


@EACH
def test_merge_both_with_one_shared_anon_vma(era):
    """A VMA written at both ends before it is split keeps one anon_vma in all its pieces
    (__split_vma -> anon_vma_clone), so prev and next are compatible and all three merge back
    (same functions as above)."""
    out = lines(era, "arena 3; mmap 0 6M; madvise 0 6M hugepage; touch 0 4K; touch 4M 4K; "
                     "madvise 2M 2M nohugepage; madvise 2M 2M hugepage")
    assert vmas(out[-2]) == ("0x0-0x200000:hg:1:2048,0x200000-0x400000:nh:0:0,"
                             "0x400000-0x600000:hg:1:2048")
    assert vmas(out[-1]) == "0x0-0x600000:hg:1:4096"


# --- a first write reuses a neighbour's anon_vma (find_mergeable_anon_vma) ---------------------

# Before 6.16 a written VMA does not merge into an unwritten neighbour with the same flags
# (is_mergeable_anon_vma: the unwritten VMA's anon_vma_chain is not singular), so such pairs
# stay apart.  A first write into the unwritten one then takes the written one's anon_vma, and
# a later change of both lets them merge; a fresh anon_vma would keep them apart.
REUSE_CASES = [
    # [nh][nh, written][-]: the write into the first VMA reuses next's anon_vma
    ("next", "arena 3; mmap 0 6M; madvise 2M 2M hugepage; touch 2M 4K; madvise 0 4M nohugepage;"
     " touch 0 4K; madvise 0 4M hugepage",
     "0x0-0x400000:hg:1:2048,0x400000-0x600000:-:0:0"),
    # [nh, written][nh][-]: the write into the second VMA reuses prev's
    ("prev", "arena 3; mmap 0 6M; madvise 2M 2M nohugepage; touch 0 4K; madvise 0 2M nohugepage;"
     " touch 2M 4K; madvise 0 4M hugepage",
     "0x0-0x400000:hg:1:0,0x400000-0x600000:-:0:0"),
    # the same with 2 PMDs per VMA: the neighbour is the VMA's, not the next cell's
    ("next, wide", "arena 6; mmap 0 12M; madvise 4M 4M hugepage; touch 4M 4K;"
     " madvise 0 8M nohugepage; touch 2M 4K; madvise 0 8M hugepage",
     "0x0-0x800000:hg:1:2048,0x800000-0xc00000:-:0:0"),
    # the neighbour is the arena's last cell
    ("next, last", "arena 2; mmap 0 4M; madvise 2M 2M hugepage; touch 2M 4K;"
     " madvise 0 4M nohugepage; touch 0 4K; madvise 0 4M hugepage", "0x0-0x400000:hg:1:2048"),
    ("prev, last", "arena 2; mmap 0 4M; madvise 2M 2M nohugepage; touch 0 4K;"
     " madvise 0 2M nohugepage; touch 2M 4K; madvise 0 4M hugepage", "0x0-0x400000:hg:1:0"),
    ("prev, wide", "arena 6; mmap 0 12M; madvise 4M 4M nohugepage; touch 0 4K;"
     " madvise 0 4M nohugepage; touch 6M 4K; madvise 0 8M hugepage",
     "0x0-0x800000:hg:1:0,0x800000-0xc00000:-:0:0"),
]


@BEFORE_616
@pytest.mark.parametrize("name, text, want", REUSE_CASES, ids=[c[0] for c in REUSE_CASES])
def test_first_write_reuses_neighbours_anon_vma(era, name, text, want):
    """mm/rmap.c __anon_vma_prepare() -> find_mergeable_anon_vma() (6.12 mm/vma.c, 6.1
    mm/mmap.c): try next first, then prev; reusable_anon_vma() takes a neighbour's anon_vma
    when anon_vma_compatible() (adjacent, vm_flags equal but for VM_ACCESS_FLAGS and
    VM_SOFTDIRTY) and the neighbour's anon_vma_chain is singular (never forked)."""
    assert vmas(lines(era, text)[-1]) == want


# [L][R]: R written first, then the first write into L, whose vm_flags differ from R's in one
# flag; then L's flags are made equal to R's.  The anon_vmas differ, so L and R stay apart.
FLAG_CASES = [
    ("VM_HUGEPAGE", "madvise 0 2M hugepage", "touch 0 4K", "madvise 0 4M nohugepage",
     "0x0-0x200000:nh:0:2048,0x200000-0x400000:nh:0:0"),
    ("VM_NOHUGEPAGE", "madvise 0 2M nohugepage", "touch 0 4K", "madvise 0 4M hugepage",
     "0x0-0x200000:hg:1:0,0x200000-0x400000:hg:1:0"),
    ("VM_UFFD_MISSING", "uffd_register 0 2M missing", "uffd_copy 0 4K", "uffd_unregister 0 2M",
     "0x0-0x200000:-:0:0,0x200000-0x400000:-:0:0"),
    ("VM_UFFD_WP", "uffd_register 0 2M wp", "touch 0 4K", "uffd_unregister 0 2M",
     "0x0-0x200000:-:0:0,0x200000-0x400000:-:0:0"),
]


@EACH
@pytest.mark.parametrize("flag, differ, write, same, want", FLAG_CASES,
                         ids=[c[0] for c in FLAG_CASES])
def test_no_reuse_across_different_vm_flags(era, flag, differ, write, same, want):
    """mm/vma.c (6.12; mm/mmap.c 6.1) anon_vma_compatible(): !((a->vm_flags ^ b->vm_flags) &
    ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY)) -- VM_HUGEPAGE, VM_NOHUGEPAGE and the uffd flags count;
    so find_mergeable_anon_vma() finds nothing and __anon_vma_prepare() allocates a fresh
    anon_vma, which is_mergeable_anon_vma() later refuses to merge with R's."""
    out = lines(era, f"arena 2; mmap 0 4M; {differ}; touch 2M 4K; {write}; {same}")
    assert ret(out[-2]) == "0"
    assert vmas(out[-1]) == want


# --- userfaultfd registration leaves alone what it does not change ----------------------------

@EACH
def test_uffd_unregister_part_of_a_registration(era):
    """fs/userfaultfd.c userfaultfd_unregister(): only [start, end) is cleared; the registered
    VMA is split at the range's end (userfaultfd_clear_vma -> vma_modify_flags_uffd)."""
    out = lines(era, "arena 2; mmap 0 4M; uffd_register 0 4M missing; uffd_unregister 0 2M")
    assert vmas(out[-1]) == "0x0-0x200000:-:0:0,0x200000-0x400000:um:0:0"


# Before 6.16 [nh, written][nh][-] stays three VMAs (the written one cannot merge into the
# unwritten one); any change of the second VMA would merge it into the first.
PAIR = "arena 3; mmap 0 6M; madvise 2M 2M nohugepage; touch 0 4K; madvise 0 2M nohugepage; "
PAIR_VMAS = "0x0-0x200000:nh:0:0,0x200000-0x400000:nh:0:0,0x400000-0x600000:-:0:0"


@BEFORE_616
@pytest.mark.parametrize("step", ["uffd_unregister 0 4M",
                                  "uffd_register 4M 2M missing; uffd_close"])
def test_uffd_clear_skips_unregistered_vmas(era, step):
    """6.12 fs/userfaultfd.c userfaultfd_unregister(): `if (!vma->vm_userfaultfd_ctx.ctx) goto
    skip;`, and mm/userfaultfd.c userfaultfd_release_all() (closing the fd) skips a VMA whose
    ctx is not this one: neither touches, and so neither merges, a VMA that is not registered
    (6.1: the same tests in fs/userfaultfd.c)."""
    out = lines(era, PAIR + step)
    assert ret(out[-1]) == "0"
    assert vmas(out[-1]) == PAIR_VMAS


@BEFORE_616
@pytest.mark.parametrize("mode, flags", [("missing", "um"), ("wp", "uw")])
def test_uffd_register_skips_vmas_with_the_mode(era, mode, flags):
    """mm/userfaultfd.c userfaultfd_register_range() (6.12; fs/userfaultfd.c in 6.1): a VMA
    already registered with this ctx and every requested mode bit is skipped (`goto skip`):
    not modified, so not merged.  [flags, written][flags] stay apart, as before 6.16 the
    written one could not merge into the unwritten one when it was registered."""
    out = lines(era, f"arena 2; mmap 0 4M; uffd_register 2M 2M {mode}; touch 0 4K;"
                     f" uffd_register 0 2M {mode}; uffd_register 0 4M {mode}")
    want = f"0x0-0x200000:{flags}:0:0,0x200000-0x400000:{flags}:0:0"
    assert vmas(out[-2]) == want
    assert (ret(out[-1]), vmas(out[-1])) == ("0", want)


# --- madvise's walk stops at the first VMA that fails (only before 4.5 does one fail) ---------

@pytest.mark.parametrize("text, want", [
    # the first VMA fails: nothing after it is advised
    ("arena 2; mmap 0 4M; madvise 0 2M hugepage; madvise 0 4M hugepage",
     "0x0-0x200000:hg:-:0,0x200000-0x400000:-:-:0"),
    # the first is advised (it cannot merge with the second: other anon_vmas), the second
    # fails, the third is not advised
    ("arena 3; mmap 0 6M; madvise 2M 2M hugepage; touch 2M 4K; touch 0 4K;"
     " madvise 0 6M hugepage",
     "0x0-0x200000:hg:-:0,0x200000-0x400000:hg:-:2048,0x400000-0x600000:-:-:0"),
    ("arena 3; mmap 0 6M; madvise 2M 2M nohugepage; touch 2M 4K; touch 0 4K;"
     " madvise 0 6M nohugepage",
     "0x0-0x200000:nh:-:0,0x200000-0x400000:nh:-:0,0x400000-0x600000:-:-:0"),
])
def test_madvise_stops_at_a_failing_vma_before_4_5(text, want):
    """4.0 mm/madvise.c madvise(): `error = madvise_vma(...); if (error) goto out;` ends the
    walk at the first VMA that fails; 4.0 mm/huge_memory.c hugepage_madvise() fails with
    EINVAL when the VMA already has the advice's bit (VM_HUGEPAGE, VM_NOHUGEPAGE)."""
    out = lines(E40, text)
    assert (ret(out[-1]), vmas(out[-1])) == ("-EINVAL", want)


def test_madvise_error_of_a_range_after_other_vmas_before_4_5():
    """The walk starts at the range (4.0 madvise(): find_vma_prev(start)); the VMA before it is
    not looked at, and the error is the failing VMA's EINVAL."""
    out = lines(E40, "arena 2; mmap 0 4M; madvise 2M 2M nohugepage; madvise 2M 2M nohugepage")
    assert (ret(out[-1]), vmas(out[-1])) == ("-EINVAL",
                                             "0x0-0x200000:-:-:0,0x200000-0x400000:nh:-:0")


def test_failed_madvise_hugepage_does_not_register_before_4_5():
    """4.0 hugepage_madvise() returns EINVAL before khugepaged_enter_vma_merge(): the mm of a
    written hg VMA (its write under `never` took the PTE path) stays off khugepaged's list."""
    st = final_state(E40, "arena 1; sysfs never; mmap 0 2M; madvise 0 2M hugepage; touch 0 4K;"
                          " sysfs madvise; madvise 0 2M hugepage")
    assert st.mm.registered is False


# --- fork's write protection, and what makes a PMD writable again ----------------------------

@EACH
def test_collapse_of_a_forked_thp_succeeds(era):
    """fork write-protects a PMD-mapped THP (mm/huge_memory.c copy_huge_pmd:
    pmdp_set_wrprotect), but MADV_COLLAPSE does not look at the PMD's write bit: 6.12
    mm/khugepaged.c find_pmd_or_thp_or_none() returns SCAN_PMD_MAPPED for pmd_trans_huge(),
    which madvise_collapse() counts as a success (++thps)."""
    out = lines(era, "arena 1; mmap 0 2M; madvise 0 2M hugepage; touch 0 4K; fork;"
                     " madvise 0 2M collapse")
    assert out[-1] == "ret=0 get=0 thp=1 vmas=0x0-0x200000:hg:1:2048"


# Two PMDs with a present page each, forked (copy_present_pte write-protects both), then one
# of them written or filled again: only that PMD has a writable PTE.
@pytest.mark.parametrize("era, want", [
    (E61, ("-EINVAL", "2048")), (E612, ("-EINVAL", "2048")), (E618, ("0", "4096"))],
    ids=["6.1", "6.12", "6.18"])
@pytest.mark.parametrize("again", [
    "touch 0 4K", "touch 2M 4K",
    "uffd_register 0 4M missing; uffd_copy 4K 4K; uffd_unregister 0 4M",
    "uffd_register 0 4M missing; uffd_copy 0x201000 4K; uffd_unregister 0 4M"])
def test_writable_again_after_fork_per_pmd(era, want, again):
    """A write after fork makes its PTE writable (mm/memory.c do_wp_page -> wp_page_reuse, or a
    copy), and so does UFFDIO_COPY of a new page (mm/userfaultfd.c mfill_atomic_install_pte:
    pte_mkwrite for a writable private VMA); the other PMD keeps only write-protected PTEs.
    Before 6.18 mm/khugepaged.c hpage_collapse_scan_pmd() fails such a PMD with SCAN_PAGE_RO,
    which madvise_collapse() lets go on and reports as EINVAL; 6.18 no longer requires a
    writable PTE."""
    out = lines(era, f"arena 2; mmap 0 4M; touch 0 4K; touch 2M 4K; fork; {again};"
                     " madvise 0 4M collapse")
    assert (ret(out[-1]), vmas(out[-1]).split(":")[3]) == want


@pytest.mark.parametrize("era, want", [
    (E61, ("-EINVAL", "0")), (E612, ("-EINVAL", "0")), (E618, ("0", "2048"))],
    ids=["6.1", "6.12", "6.18"])
def test_khugepaged_leaves_a_forked_thp_write_protected(era, want):
    """khugepaged finds the forked THP PMD-mapped (find_pmd_or_thp_or_none: SCAN_PMD_MAPPED)
    and changes nothing, so the PMD stays write-protected; splitting it keeps the PTEs
    read-only (mm/huge_memory.c __split_huge_pmd_locked: the PTEs take pmd_write()), and
    before 6.18 MADV_COLLAPSE of those PTEs fails with SCAN_PAGE_RO (EINVAL)."""
    out = lines(era, "arena 1; mmap 0 2M; madvise 0 2M hugepage; touch 0 4K; fork; khugepaged;"
                     " madvise 1M 4K nohugepage; madvise 1M 4K hugepage; madvise 0 2M collapse")
    assert vmas(out[-2]) == "0x0-0x200000:hg:1:0"
    assert (ret(out[-1]), vmas(out[-1]).split(":")[3]) == want


# --- MADV_COLLAPSE: what fork left write-protected, errors per VMA, the walk's end ----------

@pytest.mark.parametrize("era, want", [
    (E61, ("-EINVAL", "0")), (E612, ("-EINVAL", "0")), (E618, ("0", "2048"))],
    ids=["6.1", "6.12", "6.18"])
def test_madv_collapse_of_an_empty_page_table(era, want):
    """A SIGBUS write leaves an empty PTE table (do_anonymous_page: pte_alloc first).
    MADV_COLLAPSE ignores max_ptes_none (cc->is_khugepaged is false in
    hpage_collapse_scan_pmd), so only SCAN_PAGE_RO (no writable PTE, before 6.18) stops it;
    6.18 collapses it (observed on this 6.18 host: `vmaflags replay` of this script, ret 0,
    AnonHugePages 2048)."""
    out = lines(era, "arena 1; mmap 0 2M; uffd_register 0 2M missing; touch 0 4K;"
                     " uffd_unregister 0 2M; madvise 0 2M collapse")
    assert (ret(out[-1]), vmas(out[-1]).split(":")[3]) == want


@EACH
def test_collapse_twice_after_fork(era):
    """A failed collapse changes no PTE (hpage_collapse_scan_pmd only reads them), so a PMD
    that fork write-protected fails again with SCAN_PAGE_RO before 6.18."""
    out = lines(era, "arena 2; mmap 0 4M; touch 0 4K; touch 2M 4K; fork;"
                     " madvise 0 2M collapse; madvise 0 2M collapse")
    want = ("0", "2048") if era is E618 else ("-EINVAL", "0")
    assert [(ret(x), vmas(x).split(":")[3]) for x in out[-2:]] == [want, want]


@EACH
def test_madv_collapse_leaves_a_forked_thp_write_protected(era):
    """MADV_COLLAPSE of a PMD-mapped THP is SCAN_PMD_MAPPED: a success that changes nothing,
    so the PMD fork write-protected stays so, and its split gives read-only PTEs
    (__split_huge_pmd_locked) that fail SCAN_PAGE_RO before 6.18."""
    out = lines(era, "arena 1; mmap 0 2M; madvise 0 2M hugepage; touch 0 4K; fork;"
                     " madvise 0 2M collapse; madvise 1M 4K nohugepage; madvise 1M 4K hugepage;"
                     " madvise 0 2M collapse")
    assert ret(out[-4]) == "0"
    assert vmas(out[-2]) == "0x0-0x200000:hg:1:0"
    want = ("0", "2048") if era is E618 else ("-EINVAL", "0")
    assert (ret(out[-1]), vmas(out[-1]).split(":")[3]) == want


@BEFORE_618
def test_madv_collapse_errno_is_the_vmas_own(era):
    """6.12 mm/khugepaged.c madvise_collapse() keeps last_fail per call on one VMA: [0, 2M)
    collapses, so its result is 0 and the walk goes on; [2M, 6M) collapses its first PMD and
    fails its second (SCAN_PAGE_RO, written before fork only), and returns EINVAL."""
    out = lines(era, "arena 3; sysfs never; mmap 0 6M; madvise 2M 4M hugepage; touch 0 4K;"
                     " touch 2M 4K; touch 4M 4K; fork; touch 0 4K; touch 2M 4K;"
                     " madvise 0 6M collapse")
    assert (ret(out[-1]), vmas(out[-1])) == (
        "-EINVAL", "0x0-0x200000:-:0:2048,0x200000-0x600000:hg:0:2048")


@EACH
def test_madv_collapse_walk_ends_at_the_first_failing_vma(era):
    """6.12 mm/madvise.c madvise_walk_vmas(): `if (error) return error;` -- after [0, 2M)
    fails (VM_NOHUGEPAGE: thp_vma_allowable_order() is false, EINVAL) neither later VMA is
    visited, however many pieces the first one is in."""
    out = lines(era, "arena 3; mmap 0 6M; madvise 0 2M nohugepage; madvise 2M 2M hugepage;"
                     " touch 4K 4K; touch 2M 4K; touch 4M 4K; madvise 0 6M collapse")
    assert (ret(out[-1]), vmas(out[-1])) == (
        "-EINVAL", "0x0-0x200000:nh:0:0,0x200000-0x400000:hg:1:2048,0x400000-0x600000:-:0:0")


# --- collapse only of PMDs inside one VMA, and not of uffd-armed holes ----------------------

@EACH
def test_collapse_skips_a_pmd_across_two_vmas(era):
    """MADV_COLLAPSE (6.12 mm/khugepaged.c madvise_collapse) and khugepaged
    (khugepaged_scan_mm_slot) walk one VMA at a time, over the aligned PMDs between
    round_up(vm_start) and round_down(vm_end): the PMD [2M, 4M) that [0, 3M) and [3M, 6M)
    share is in neither's range and keeps its PTEs, so the page at 3M is still missing
    (UFFDIO_COPY fills it)."""
    text = "arena 3; mmap 0 6M; madvise 3M 3M hugepage; touch 0 4K; touch 2M 4K; touch 4M 4K; "
    check = "; uffd_register 3M 3M missing; uffd_copy 3M 4K"
    out = lines(era, text + "madvise 0 6M collapse" + check)
    assert vmas(out[-3]) == "0x0-0x300000:-:0:2048,0x300000-0x600000:hg:1:2048"
    assert ret(out[-1]) == "0"
    out = lines(era, text + "sysfs always; khugepaged" + check)
    assert vmas(out[-3]) == "0x0-0x300000:-:1:2048,0x300000-0x600000:hg:1:2048"
    assert ret(out[-1]) == "0"


@EACH
def test_khugepaged_skips_holes_of_a_wp_registered_vma(era):
    """6.12 mm/khugepaged.c hpage_collapse_scan_pmd(): a none PTE in a userfaultfd_armed()
    VMA is SCAN_EXCEED_NONE_PTE, and userfaultfd_armed() (include/linux/userfaultfd_k.h) tests
    all of __VM_UFFD_FLAGS, VM_UFFD_WP as well as VM_UFFD_MISSING."""
    out = lines(era, "arena 2; mmap 0 4M; madvise 2M 2M hugepage; touch 0 4K; touch 2M 4K;"
                     " uffd_register 0 2M wp; sysfs always; khugepaged")
    assert vmas(out[-1]) == "0x0-0x200000:uw:1:0,0x200000-0x400000:hg:1:2048"


# --- sysfs and madvise without a change ------------------------------------------------------

@EACH
def test_sysfs_always_gives_a_thp_without_madvise(era):
    """mm/huge_memory.c enabled_store(): "always" sets TRANSPARENT_HUGEPAGE_FLAG for every later
    fault; a write into an unadvised VMA holding an aligned PMD then faults in a THP."""
    out = lines(era, "arena 1; sysfs always; mmap 0 2M; touch 0 4K")
    assert vmas(out[-1]) == "0x0-0x200000:-:1:2048"


@BEFORE_616
def test_madvise_without_a_change_does_not_merge(era):
    """6.12 mm/madvise.c madvise_update_vma(): `if (new_flags == vma->vm_flags) { *prev = vma;
    return 0; }` -- no vma_modify_flags(), so no merge attempt (6.1: the same test, before
    vma_merge()): [nh, written][nh] stays two VMAs."""
    out = lines(era, PAIR + "madvise 0 4M nohugepage")
    assert (ret(out[-1]), vmas(out[-1])) == ("0", PAIR_VMAS)


# --- khugepaged registration: a merge of MADV_HUGEPAGE, and writes that take no huge path ----

@EACH
def test_madvise_hugepage_registers_through_its_merge(era):
    """MADV_HUGEPAGE on [0, 1M), which holds no aligned PMD and no anon_vma, merges it with the
    written hg VMA [1M, 3M): the merged VMA holds [0, 2M) and an anon_vma, and the merge calls
    khugepaged_enter_vma() on it (6.1 mm/mmap.c vma_merge(); 6.12 mm/vma.c
    vma_merge_existing_range(), and mm/madvise.c madvise_update_vma() on the same VMA)."""
    text = "arena 2; mmap 0 4M; madvise 1M 2M hugepage; touch 1M 4K"
    assert final_state(era, text).mm.registered is False
    assert final_state(era, text + "; madvise 0 1M hugepage").mm.registered is True


@EACH
@pytest.mark.parametrize("text", [
    # a write into a THP takes no fault (MADV_COLLAPSE made it, and does not register)
    "arena 1; sysfs always; prctl_set 1 0 0 0; mmap 0 2M; touch 0 4K; prctl_set 0 0 0 0;"
    " madvise 0 2M collapse; touch 0 4K",
    # a write into a PMD that has a PTE table takes the PTE path, whatever the PMD next to it
    "arena 2; prctl_set 1 0 0 0; mmap 0 4M; madvise 0 4M hugepage; touch 0 4K;"
    " prctl_set 0 0 0 0; touch 4K 4K",
], ids=["into a THP", "into a PTE table"])
def test_writes_off_the_huge_path_do_not_register(era, text):
    """do_huge_pmd_anonymous_page() calls khugepaged_enter_vma(); __handle_mm_fault() goes
    there only for the faulting address's PMD, and only if it is pmd_none()."""
    assert final_state(era, text).mm.registered is False


# --- a walk stops at its first failure --------------------------------------------------------

@EACH
@pytest.mark.parametrize("stop, signal, want", [
    ("munmap 2M 2M", "SIGSEGV", "0x0-0x200000:hg:1:2048,0x400000-0x800000:hg:1:0"),
    ("uffd_register 2M 2M missing", "SIGBUS",
     "0x0-0x200000:hg:1:2048,0x200000-0x400000:hg+um:1:0,0x400000-0x800000:hg:1:0"),
])
def test_touch_stops_at_the_first_signal(era, stop, signal, want):
    """conformance/SCRIPT.md `touch`: the first page whose write raises a signal ends the walk;
    the PMDs after it are not written (no THP fault there)."""
    out = lines(era, f"arena 4; mmap 0 8M; madvise 0 8M hugepage; {stop}; touch 0 8M")
    assert (ret(out[-1]), vmas(out[-1])) == (signal, want)


@EACH
def test_uffd_copy_stops_at_the_first_failure(era):
    """6.12 mm/userfaultfd.c mfill_atomic(): the page loop breaks on the first error (here
    -EEXIST for a present page), so the pages after it, in this PMD and the next, stay
    missing: a later copy there succeeds."""
    out = lines(era, "arena 2; mmap 0 4M; touch 0x1fe000 4K; uffd_register 0 4M missing;"
                     " uffd_copy 0x1fd000 16K; uffd_copy 0x1ff000 4K; uffd_copy 2M 4K")
    assert [ret(x) for x in out[-3:]] == ["-EAGAIN", "0", "0"]


# --- page tables and anon_vmas that a failing fault or copy leaves --------------------------

@EACH
@pytest.mark.parametrize("advice, ahp", [("", 0), ("madvise 0 2M hugepage; ", 2048)],
                         ids=["pte-path", "huge-path"])
def test_a_uffd_sigbus_leaves_a_page_table_only_on_the_pte_path(era, advice, ahp):
    """6.12 mm/memory.c do_anonymous_page(): pte_alloc() comes before the userfaultfd_missing()
    check that raises SIGBUS, so the PMD is no longer pmd_none() and, after unregistering and
    MADV_HUGEPAGE, a write takes the PTE path (__handle_mm_fault tests pmd_none() before
    create_huge_pmd): no THP.  mm/huge_memory.c __do_huge_pmd_anonymous_page(): on the huge
    path handle_userfault() comes before any pmd_populate(), so the PMD stays none and the
    next write makes a THP (scenario uffd-sigbus-pmd-none, checked on the kernels)."""
    out = lines(era, f"arena 1; mmap 0 2M; {advice}uffd_register 0 2M missing; touch 0 4K;"
                     " uffd_unregister 0 2M; madvise 0 2M hugepage; touch 4K 4K")
    assert ret(out[-4]) == "SIGBUS"
    assert (ret(out[-1]), vmas(out[-1])) == ("0", f"0x0-0x200000:hg:1:{ahp}")


@EACH
def test_uffd_copy_into_an_unregistered_vma(era):
    """6.12 mm/userfaultfd.c validate_dst_vma(): the destination VMA itself must be registered
    (`!dst_vma->vm_userfaultfd_ctx.ctx` -> ENOENT), whatever other VMAs are."""
    out = lines(era, "arena 2; mmap 0 4M; uffd_register 2M 2M missing; uffd_copy 0 4K")
    assert ret(out[-1]) == "-ENOENT"


@EACH
@pytest.mark.parametrize("dst", ["2M", "0x3ff000"])
def test_uffd_copy_prepares_only_the_destination_vma(era, dst):
    """6.12 mm/userfaultfd.c uffd_mfill_lock() -> find_vma_and_prepare_anon(): anon_vma_prepare()
    of the VMA holding dst_start only (6.1 __mcopy_atomic: the same VMA).  The unwritten VMAs
    around it keep no anon_vma, so registering them merges all three (is_mergeable_anon_vma:
    a VMA without an anon_vma merges with one that has it)."""
    out = lines(era, f"arena 3; mmap 0 6M; uffd_register 2M 2M missing; uffd_copy {dst} 4K;"
                     " uffd_register 0 6M missing")
    assert vmas(out[-1]) == "0x0-0x600000:um:0:0"


# --- what the proofs assume of every state, on the interpreter's states ----------------------

# every era, and the within-era variants that tests use: Debian 6.1, and 4.0 for madvise's errors
VARIANTS = {**ERAS, "mmf@6.1": E61, "def-flags@4.0": E40}


@lru_cache(maxsize=None)
def _sane_term(shp):
    sym = symbolic.state(shp)
    return tuple(symbolic.values(sym).values()), sane(sym)


def _is_sane(st):
    """proofs.states.sane (well formed, no VMA with both hg and nh) of a concrete state."""
    variables, term = _sane_term(symbolic.shape(st))
    subst = [(v, z3.BoolVal(x) if isinstance(x, bool) else z3.IntVal(x))
             for v, x in zip(variables, symbolic.values(st).values())]
    return z3.is_true(z3.simplify(z3.substitute(term, *subst)))


# first writes that must give the VMA's every cell its anon_vma: a VMA before a hole, after a
# hole, written at its end, written two cells after its start
SANE_EXAMPLES = ["arena 2\nmmap 0 2M\ntouch 0 4K", "arena 3\nmmap 2M 4M\ntouch 2M 4K",
                 "arena 1\nmmap 0 2M\ntouch 0x1ff000 4K", "arena 3\nmmap 0 6M\ntouch 4M 4K"]


def _with_examples(test):
    for text in SANE_EXAMPLES:
        test = example(script=parse_script(text))(test)
    return test


@pytest.mark.parametrize("era_id", list(VARIANTS))
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(script=coded_scripts(blocks=3, machine=True))
@_with_examples
def test_every_reachable_state_is_sane(era_id, script):
    """The theorems quantify over `sane` states (proofs/states.py); a state the interpreter
    reaches that is not sane would be a behaviour no proof speaks about.  Derandomized, so
    that a mutation run kills the same mutants every time."""
    era = VARIANTS[era_id]
    st = empty_state(script.arena, MADVISE)
    for sc in script.steps:
        r = concrete.run_syscall(era, st, sc)
        st = r.state
        assert _is_sane(st), sc.text()
        assert r.child is None or _is_sane(r.child), sc.text()


@lru_cache(maxsize=None)
def _symbolic_step(era_id, shp, sc):
    return symbolic.Step.build(VARIANTS[era_id], shp, sc)


# States random scripts seldom reach: a registered mm going on (every call site then has
# nothing left to decide); an eligible VMA of an unregistered mm beside the call sites of a
# step; a first write that reuses the next VMA's anon_vma across cells; before 4.5, madvise
# failing in the middle of its walk, or next to a VMA outside the range that has the advice.
REGISTERED = ("arena 2\nmmap 0 4M\nmadvise 0 2M hugepage\ntouch 0 4K\nmadvise 2M 2M hugepage\n"
              "touch 2M 4K\nuffd_register 0 2M missing\nuffd_unregister 0 2M\nmmap 3M 1M\n"
              "munmap 0 1M")
UNREGISTERED = ("arena 2\nprctl_set 1 0 0 0\nmmap 0 4M\nmadvise 0 4M hugepage\ntouch 0 4K\n"
                "prctl_set 0 0 0 0\ntouch 4K 4K\nuffd_register 3M 1M missing\n"
                "uffd_unregister 3M 1M\nmadvise 2M 1M nohugepage\nmmap 3M 1M")
REUSE_NEXT = ("arena 6\nmmap 0 12M\nmadvise 4M 4M hugepage\ntouch 4M 4K\n"
              "madvise 0 8M nohugepage\ntouch 2M 4K")
AGREE_PATHS = [
    *((era_id, text) for text in (REGISTERED, UNREGISTERED)
      for era_id in ("mmf@6.1", "mmf", "mmf-except-advised")),
    ("mmf@6.1", REUSE_NEXT), ("mmf", REUSE_NEXT),
    ("def-flags@4.0", "arena 2\nmmap 0 4M\nmadvise 0 2M hugepage\nmadvise 0 4M hugepage"),
    ("def-flags@4.0", "arena 2\nmmap 0 4M\nmadvise 0 2M hugepage\nmadvise 2M 2M hugepage"),
    ("def-flags@4.0", "arena 3\nmmap 0 6M\nmadvise 2M 2M hugepage\ntouch 2M 4K\ntouch 0 4K\n"
     "madvise 0 6M hugepage"),
]


@pytest.mark.parametrize("era_id, text", AGREE_PATHS)
def test_symbolic_step_agrees_on_rare_paths(era_id, text):
    """tests/test_agreement.py's requirement (the Z3 terms of a step, evaluated on a concrete
    state, equal the interpreter's step) on the states of these scripts, step by step."""
    era = VARIANTS[era_id]
    script = parse_script(text)
    st = empty_state(script.arena, MADVISE)
    for sc in script.steps:
        pre, args = concrete.prepare(era, st, sc)
        want = symbolic.outcome(PY, era, *S.transition(PY, era, pre, sc, args))
        assert _symbolic_step(era_id, symbolic.shape(pre), sc).evaluate(pre, args) == want, \
            sc.text()
        st = concrete.run_syscall(era, st, sc).state
