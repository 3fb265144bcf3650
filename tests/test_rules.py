"""Pin the kernel rules (model/rules.py) against the spec's tables, one rule function at a time.

Every expected value below is a literal taken from /work/shared/spec/kernel-thp-semantics.md
("spec §x") or /work/notes/kernel-facts.md ("kf §x"); nothing is computed by another part of the
model.  The Python backend evaluates the rules; set-up states are built from `empty_state()` and
the rule under test (prctl), never from expectations.
"""
from __future__ import annotations

import errno

import pytest

from vmaflags.model import ERAS, rules
from vmaflags.model.backend import PY
from vmaflags.model.eras import era_at
from vmaflags.model.state import Flags, empty_state
from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, MADV_COLLAPSE, MADV_HUGEPAGE,
                                     MADV_NOHUGEPAGE)

EINVAL, EBUSY, EEXIST, ENOENT = -errno.EINVAL, -errno.EBUSY, -errno.EEXIST, -errno.ENOENT

E412 = ERAS["def-flags"]  # 3.15-4.12
E612 = ERAS["mmf"]  # 4.13-6.17, representative 6.12
E61 = ERAS["mmf"].at("6.1")  # Debian 6.1: MADV_COLLAPSE exists, EXCEED_NONE_PTE -> EINVAL
E618 = ERAS["mmf-except-advised"]  # 6.18+
E40 = ERAS["def-flags"].at("4.0")  # before "Loosen MADV_NOHUGEPAGE" (~4.5)

FRESH = empty_state().mm
NONE = Flags(False, False, False, False)
HG = Flags(True, False, False, False)
NH = Flags(False, True, False, False)
ALWAYS, MADVISE, NEVER = 0, 1, 2


def prctl_seq(era, calls):
    """Apply PR_SET_THP_DISABLE calls from a fresh mm; each must succeed."""
    mm = FRESH
    for args in calls:
        ret, mm = rules.prctl_set_thp_disable(PY, era, mm, *args)
        assert ret == 0, (args, ret)
    return mm


def get(era, mm):
    return rules.prctl_get_thp_disable(PY, era, mm, 0, 0, 0, 0)


# --- 1. prctl --------------------------------------------------------------------------------

# spec §2.3 "Observed on 6.18" table, plus the set/clear bullets of §2.3 and kf §8 (6.18);
# THP_enabled: spec §5 (status tests only COMPLETELY, so except-advised shows 1).
C, X = (1, 0, 0, 0), (1, 2, 0, 0)  # completely, except-advised
PRCTL_618 = [
    # prior SETs, SET args, ret, GET after, THP_enabled after
    ((), (0, 0, 0, 0), 0, 0, 1),  # initial: GET 0, THP_enabled 1
    ((), (1, 0, 0, 0), 0, 1, 0),
    ((), (1, 2, 0, 0), 0, 3, 1),
    ((), (7, 2, 0, 0), 0, 3, 1),  # arg2 converted to bool
    ((), (7, 0, 0, 0), 0, 1, 0),
    ((X,), (1, 0, 0, 0), 0, 1, 0),  # "SET(1,0) while in except-advised: mode switches"
    ((C,), (1, 2, 0, 0), 0, 3, 1),  # disable with the flag: clear COMPLETELY, set EXCEPT_ADVISED
    ((C,), (0, 0, 0, 0), 0, 0, 1),  # SET(0,0)
    ((X,), (0, 0, 0, 0), 0, 0, 1),
    ((X, C), (0, 0, 0, 0), 0, 0, 1),
    *[(prior, bad, EINVAL, g, t)
      for prior, g, t in (((), 0, 1), ((C,), 1, 0), ((X,), 3, 1))
      for bad in ((0, 2, 0, 0), (0, 1, 0, 0), (1, 1, 0, 0), (1, 3, 0, 0), (1, 4, 0, 0),
                  (1, 2, 1, 0), (1, 0, 0, 1), (1, 0, 1, 0), (0, 0, 0, 1))],  # unchanged
]


@pytest.mark.parametrize("prior, args, ret, want_get, want_thp", PRCTL_618)
def test_prctl_618(prior, args, ret, want_get, want_thp):
    mm0 = prctl_seq(E618, prior)
    r, mm = rules.prctl_set_thp_disable(PY, E618, mm0, *args)
    assert r == ret
    assert get(E618, mm) == want_get
    assert rules.thp_disable_value(PY, E618, mm) == want_get
    assert rules.task_thp_status(PY, E618, mm) == want_thp


# spec §2.1/§2.2, kf §8 (6.1/6.12 identical): SET: arg3..arg5 non-zero -> EINVAL (before the
# lock, so nothing changes); any non-zero arg2 disables, zero clears.  GET: 0/1.
# THP_enabled: None before 5.0 (def-flags era = 4.12), else !MMF_DISABLE_THP (spec §5).
OLD_ERAS = ["def-flags", "mmf", "def-flags-clr", "mmf-clr"]
THP_ON = {"def-flags": (None, None), "def-flags-clr": (None, None),
          "mmf": (1, 0), "mmf-clr": (1, 0)}  # (THP_enabled when enabled, when disabled)
PRCTL_OLD = [
    ((), (0, 0, 0, 0), 0, 0),
    ((), (1, 0, 0, 0), 0, 1),
    ((), (7, 0, 0, 0), 0, 1),
    ((), (1 << 40, 0, 0, 0), 0, 1),
    ((C,), (0, 0, 0, 0), 0, 0),
    ((C,), (1, 0, 0, 0), 0, 1),
    *[(prior, bad, EINVAL, g)
      for prior, g in (((), 0), ((C,), 1))
      for bad in ((1, 2, 0, 0), (0, 1, 0, 0), (1, 1, 0, 0), (0, 2, 0, 0), (1, 0, 1, 0),
                  (1, 0, 0, 1), (0, 0, 0, 1), (0, 0, 1, 0))],
]


@pytest.mark.parametrize("era_id", OLD_ERAS)
@pytest.mark.parametrize("prior, args, ret, want_get", PRCTL_OLD)
def test_prctl_315_617(era_id, prior, args, ret, want_get):
    era = ERAS[era_id]
    mm0 = prctl_seq(era, prior)
    r, mm = rules.prctl_set_thp_disable(PY, era, mm0, *args)
    assert r == ret
    assert get(era, mm) == want_get
    on, off = THP_ON[era_id]
    assert rules.task_thp_status(PY, era, mm) == (off if want_get else on)


# GET with any non-zero argument -> EINVAL, in every era and state (spec §2.1-2.3, kf §8).
@pytest.mark.parametrize("era_id", list(ERAS))
@pytest.mark.parametrize("prior", [(), (C,)])
@pytest.mark.parametrize("args", [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1),
                                  (3, 0, 0, 0), (1, 1, 1, 1)])
def test_prctl_get_nonzero_arg_einval(era_id, prior, args):
    era = ERAS[era_id]
    mm = prctl_seq(era, prior)
    assert rules.prctl_get_thp_disable(PY, era, mm, *args) == EINVAL


# PR_GET values per era and mode: 0 / 1 / 3 (3 only with 6.18 except-advised).
@pytest.mark.parametrize("era_id, prior, want", [
    ("def-flags", (), 0), ("def-flags", (C,), 1),
    ("mmf", (), 0), ("mmf", (C,), 1),
    ("mmf-except-advised", (), 0), ("mmf-except-advised", (C,), 1),
    ("mmf-except-advised", (X,), 3),
])
def test_prctl_get_values(era_id, prior, want):
    era = ERAS[era_id]
    assert get(era, prctl_seq(era, prior)) == want


# spec §2.1-2.3 inheritance, kf §7: fork and execve carry def_flags & VM_NOHUGEPAGE and the
# MMF_DISABLE_THP bits; MMF_VM_HUGEPAGE survives fork (khugepaged_fork), not exec.
@pytest.mark.parametrize("era_id, prior, want_get, want_thp", [
    ("def-flags", (C,), 1, None),
    ("mmf", (C,), 1, 0),
    ("mmf-except-advised", (C,), 1, 0),
    ("mmf-except-advised", (X,), 3, 1),
    ("mmf-except-advised", (), 0, 1),
])
@pytest.mark.parametrize("fork", [True, False])
def test_mm_init_inherits_prctl(era_id, prior, want_get, want_thp, fork):
    era = ERAS[era_id]
    parent = prctl_seq(era, prior)._replace(registered=True)
    child = rules.mm_init(PY, era, parent, fork)
    assert get(era, child) == want_get
    assert rules.task_thp_status(PY, era, child) == want_thp
    assert child.registered is fork


# --- new VMAs: do_mmap ORs mm->def_flags (spec §2.1, §10 "mmap ... nh = def_nh"; kf §4) ------

@pytest.mark.parametrize("era_id, prior, want", [
    ("def-flags", (), NONE), ("def-flags", (C,), NH), ("def-flags-clr", (C,), NH),
    ("mmf", (C,), NONE), ("mmf-except-advised", (C,), NONE), ("mmf-except-advised", (X,), NONE),
])
def test_new_vma_flags(era_id, prior, want):
    era = ERAS[era_id]
    assert tuple(rules.new_vma_flags(PY, era, prctl_seq(era, prior))) == tuple(want)


# --- madvise advice validity and hugepage_madvise (spec §3.1, §3.4; kf §12) ------------------

@pytest.mark.parametrize("era_id, advice, valid", [
    *[(e, a, True) for e in ERAS for a in (MADV_HUGEPAGE, MADV_NOHUGEPAGE)],
    ("def-flags", MADV_COLLAPSE, False), ("def-flags-clr", MADV_COLLAPSE, False),  # 4.12
    ("mmf", MADV_COLLAPSE, True), ("mmf-except-advised", MADV_COLLAPSE, True),
    ("mmf-clr", MADV_COLLAPSE, True),
    # MADV_CLR_HUGEPAGE never landed: only the patched eras know it (18 in 2017, 26 in ours)
    ("def-flags", 18, False), ("mmf", 26, False), ("mmf-except-advised", 26, False),
    ("def-flags-clr", 18, True), ("mmf-clr", 26, True),
    ("def-flags-clr", 26, False), ("mmf-clr", 18, False),
    ("def-flags", MADV_CLR_HUGEPAGE, False), ("mmf", MADV_CLR_HUGEPAGE, False),
    ("mmf-except-advised", MADV_CLR_HUGEPAGE, False),
    ("def-flags-clr", MADV_CLR_HUGEPAGE, True), ("mmf-clr", MADV_CLR_HUGEPAGE, True),
    *[(e, a, False) for e in ERAS for a in (0, 27, 99, 1000)],
])
def test_madvise_behavior_valid(era_id, advice, valid):
    assert bool(rules.madvise_behavior_valid(ERAS[era_id], advice)) is valid


# spec §3.4: the 2017 posting's 18 is MADV_WIPEONFORK from 4.14, so the patched eras take
# MADV_CLR_HUGEPAGE's number from the kernel (Era.at): 18 before 4.14, kernel-patch/'s 26 after.
@pytest.mark.parametrize("era_id, kernel, number", [
    ("def-flags-clr", "4.12", 18), ("def-flags-clr", "4.13", 18), ("def-flags-clr", "4.14", 26),
    ("def-flags-clr", "6.12", 26), ("mmf-clr", "6.12", 26), ("mmf-clr", "6.18", 26),
    *[(e, v, None) for e in ("def-flags", "mmf", "mmf-except-advised") for v in ("4.12", "6.12")],
])
def test_clr_number_follows_the_kernel(era_id, kernel, number):
    era = era_at(era_id, kernel)
    assert era.clr_hugepage == number
    for advice in (18, 26):
        assert bool(rules.madvise_behavior_valid(era, advice)) is (advice == number)


# spec §3.1: each advice sets its own bit and clears the other; no error of its own from ~4.5;
# before ~4.5 re-applying an advice whose bit is set -> EINVAL.
HGA, NHA = MADV_HUGEPAGE, MADV_NOHUGEPAGE
MADV_FLAGS = [  # start, advice, result
    (NONE, HGA, HG), (NONE, NHA, NH), (HG, HGA, HG), (HG, NHA, NH), (NH, HGA, HG), (NH, NHA, NH),
    (Flags(False, False, True, True), HGA, Flags(True, False, True, True)),  # uffd bits kept
]


@pytest.mark.parametrize("era_id", ["def-flags", "mmf", "mmf-except-advised", "mmf-clr"])
@pytest.mark.parametrize("start, advice, want", MADV_FLAGS)
def test_hugepage_madvise(era_id, start, advice, want):
    f, err = rules.hugepage_madvise(PY, ERAS[era_id], start, advice)
    assert (tuple(f), err) == (tuple(want), 0)


@pytest.mark.parametrize("start, advice, want, err", [
    (NONE, HGA, HG, 0), (NH, HGA, HG, 0), (HG, NHA, NH, 0), (NONE, NHA, NH, 0),
    (HG, HGA, None, EINVAL), (NH, NHA, None, EINVAL),
])
def test_hugepage_madvise_before_4_5(start, advice, want, err):
    f, e = rules.hugepage_madvise(PY, E40, start, advice)
    assert e == err
    if want is not None:
        assert tuple(f) == tuple(want)


# spec §3.4: MADV_CLR_HUGEPAGE: *vm_flags &= ~(VM_HUGEPAGE | VM_NOHUGEPAGE)
@pytest.mark.parametrize("era_id, advice", [("def-flags-clr", 18), ("mmf-clr", 26),
                                            ("def-flags-clr", MADV_CLR_HUGEPAGE),
                                            ("mmf-clr", MADV_CLR_HUGEPAGE)])
@pytest.mark.parametrize("start", [NONE, HG, NH, Flags(True, False, True, False)])
def test_clr_hugepage(era_id, advice, start):
    f, err = rules.hugepage_madvise(PY, ERAS[era_id], start, advice)
    assert err == 0
    assert (f.hg, f.nh, f.um, f.uw) == (False, False, start.um, start.uw)


# --- 2. eligibility: spec §4.3 "Which checks apply to which user" (6.1-6.18, anon) -----------
# Baseline: an hg VMA, no prctl, sysfs madvise, anon_vma present, an aligned PMD fits: every
# user may.  Each row changes one input; values (fault, khugepaged, MADV_COLLAPSE, smaps).
T, F = True, False
ELIG_BASE = dict(flags=HG, mode="none", sysfs=MADVISE, anon=True, fits=True)
ELIG_ROWS = [
    ("baseline", {}, (T, T, T, T)),
    ("nh", dict(flags=NH), (F, F, F, F)),
    ("completely", dict(mode="completely"), (F, F, F, F)),
    ("completely, no hg, always", dict(mode="completely", flags=NONE, sysfs=ALWAYS), (F, F, F, F)),
    ("sysfs never", dict(sysfs=NEVER), (F, F, T, F)),
    ("sysfs never, no hg", dict(sysfs=NEVER, flags=NONE), (F, F, T, F)),
    ("madvise without hg", dict(flags=NONE), (F, F, T, F)),
    ("always without hg", dict(flags=NONE, sysfs=ALWAYS), (T, T, T, T)),
    ("always, nh", dict(flags=NH, sysfs=ALWAYS), (F, F, F, F)),
    ("no anon_vma", dict(anon=False), (T, F, F, T)),
    ("no PMD fit", dict(fits=False), (T, F, F, F)),
    ("uffd-armed is no eligibility input", dict(flags=Flags(T, F, T, T)), (T, T, T, T)),
]
# 6.18 _EXCEPT_ADVISED: "blocks unless hg" for fault/khugepaged/smaps, "allowed" for collapse
ELIG_ROWS_618 = [
    ("except-advised, hg", dict(mode="except"), (T, T, T, T)),
    ("except-advised, no hg, always", dict(mode="except", flags=NONE, sysfs=ALWAYS), (F, F, T, F)),
    ("except-advised, no hg, madvise", dict(mode="except", flags=NONE), (F, F, T, F)),
    ("except-advised, no hg, never", dict(mode="except", flags=NONE, sysfs=NEVER), (F, F, T, F)),
    ("except-advised, hg, never", dict(mode="except", sysfs=NEVER), (F, F, T, F)),
    ("except-advised, nh", dict(mode="except", flags=NH, sysfs=ALWAYS), (F, F, F, F)),
    ("except-advised, hg, no anon_vma", dict(mode="except", anon=False), (T, F, F, T)),
]
MODES = {"none": (), "completely": (C,), "except": (X,)}
USERS4 = (rules.PAGEFAULT, rules.KHUGEPAGED, rules.FORCED_COLLAPSE, rules.SMAPS)


def allowable(era, user, flags, mode, sysfs, anon, fits):
    mm = prctl_seq(era, MODES[mode])
    return rules.thp_vma_allowable(PY, era, user, flags, mm, sysfs, anon, fits)


@pytest.mark.parametrize("era", [E61, E612, E618, ERAS["mmf-clr"]],
                         ids=["6.1", "6.12", "6.18", "6.12-clr"])
@pytest.mark.parametrize("name, change, want", ELIG_ROWS, ids=[r[0] for r in ELIG_ROWS])
def test_eligibility_matrix(era, name, change, want):
    kw = {**ELIG_BASE, **change}
    got = tuple(bool(allowable(era, u, **kw)) for u in USERS4)
    assert got == want


@pytest.mark.parametrize("name, change, want", ELIG_ROWS_618, ids=[r[0] for r in ELIG_ROWS_618])
def test_eligibility_except_advised_618(name, change, want):
    kw = {**ELIG_BASE, **change}
    got = tuple(bool(allowable(E618, u, **kw)) for u in USERS4)
    assert got == want


# spec §4.2 "<= 4.12": fault = (always or madvise+hg) and not nh; khugepaged also needs an
# anon_vma and an aligned PMD; no MADV_COLLAPSE (6.1) and no smaps THPeligible (5.0) -> None.
# The def-flags prctl is not a master override: it only shows up as nh on new VMAs (spec §2.1).
@pytest.mark.parametrize("era_id", ["def-flags", "def-flags-clr"])
@pytest.mark.parametrize("name, change, want", [
    ("baseline", {}, (T, T)),
    ("prctl set, hg VMA", dict(mode="completely"), (T, T)),
    ("nh", dict(flags=NH), (F, F)),
    ("madvise without hg", dict(flags=NONE), (F, F)),
    ("always without hg", dict(flags=NONE, sysfs=ALWAYS), (T, T)),
    ("never", dict(sysfs=NEVER), (F, F)),
    ("no anon_vma", dict(anon=False), (T, F)),
    ("no PMD fit", dict(fits=False), (T, F)),
])
def test_eligibility_def_flags(era_id, name, change, want):
    era = ERAS[era_id]
    kw = {**ELIG_BASE, **change}
    assert (bool(allowable(era, rules.PAGEFAULT, **kw)),
            bool(allowable(era, rules.KHUGEPAGED, **kw))) == want
    assert allowable(era, rules.FORCED_COLLAPSE, **kw) is None
    assert allowable(era, rules.SMAPS, **kw) is None


# --- faults (kf §5.1) ------------------------------------------------------------------------
# pmd_none required; the aligned 2 MiB block must lie in the VMA; uffd MISSING hands the fault
# to userspace (no THP); WP-only does not (kf §5: WP-only + hg -> AnonHugePages 2048).
@pytest.mark.parametrize("flags, pmd_none, in_vma, sysfs, want", [
    (HG, T, T, MADVISE, T),
    (HG, F, T, MADVISE, F),
    (HG, T, F, MADVISE, F),
    (Flags(T, F, T, F), T, T, MADVISE, F),  # um
    (Flags(T, F, F, T), T, T, MADVISE, T),  # uw only
    (NONE, T, T, MADVISE, F),
    (NONE, T, T, ALWAYS, T),
    (HG, T, T, NEVER, F),
    (NH, T, T, ALWAYS, F),
])
@pytest.mark.parametrize("era", [E612, E618], ids=["6.12", "6.18"])
def test_fault_huge_pmd(era, flags, pmd_none, in_vma, sysfs, want):
    assert bool(rules.fault_huge_pmd(PY, era, flags, FRESH, sysfs, pmd_none, in_vma)) is want


# --- collapse of one PMD (kf §1.3-1.5, §11) ---------------------------------------------------
# (ok, abort, errno).  MADV_COLLAPSE: PMD-mapped -> success; pmd_none -> SCAN_PMD_NONE (abort,
# EINVAL); uffd-armed with holes -> SCAN_EXCEED_NONE_PTE (abort; EBUSY >= 6.4, EINVAL in 6.1);
# no writable PTE -> SCAN_PAGE_RO (continue, EINVAL) before 6.18, gone in 6.18.  The last row's
# PTEs are present but write-protected by fork (cow; found in the 6.1/6.12 test VMs).
COLLAPSE_ROWS = [
    # armed, thp, ptable, any_pop, all_pop -> {era: (ok, abort, err)}
    ((F, T, F, T, T), {"6.1": (T, F, 0), "6.12": (T, F, 0), "6.18": (T, F, 0)}),
    ((T, T, F, T, T), {"6.1": (T, F, 0), "6.12": (T, F, 0), "6.18": (T, F, 0)}),
    ((F, F, F, F, F), {"6.1": (F, T, EINVAL), "6.12": (F, T, EINVAL), "6.18": (F, T, EINVAL)}),
    ((T, F, F, F, F), {"6.1": (F, T, EINVAL), "6.12": (F, T, EINVAL), "6.18": (F, T, EINVAL)}),
    ((T, F, T, T, F), {"6.1": (F, T, EINVAL), "6.12": (F, T, EBUSY), "6.18": (F, T, EBUSY)}),
    ((T, F, T, F, F), {"6.1": (F, T, EINVAL), "6.12": (F, T, EBUSY), "6.18": (F, T, EBUSY)}),
    ((T, F, T, T, T), {"6.1": (T, F, 0), "6.12": (T, F, 0), "6.18": (T, F, 0)}),
    ((F, F, T, T, F), {"6.1": (T, F, 0), "6.12": (T, F, 0), "6.18": (T, F, 0)}),
    ((F, F, T, T, T), {"6.1": (T, F, 0), "6.12": (T, F, 0), "6.18": (T, F, 0)}),
    ((F, F, T, F, F), {"6.1": (F, F, EINVAL), "6.12": (F, F, EINVAL), "6.18": (T, F, 0)}),
    ((F, F, T, T, T, T), {"6.1": (F, F, EINVAL), "6.12": (F, F, EINVAL), "6.18": (T, F, 0)}),
]
ERA_BY = {"6.1": E61, "6.12": E612, "6.18": E618}


@pytest.mark.parametrize("ver", ["6.1", "6.12", "6.18"])
@pytest.mark.parametrize("inputs, want", COLLAPSE_ROWS)
def test_collapse_pmd_madv_collapse(ver, inputs, want):
    armed, thp, ptable, any_pop, all_pop, *cow = inputs
    ok, abort, err = rules.collapse_pmd(PY, ERA_BY[ver], False, armed, thp, ptable,
                                        bool(cow and cow[0]), any_pop, all_pop)
    assert (bool(ok), bool(abort), err) == want[ver]


# khugepaged (kf §11): never collapses a pmd_none PMD; needs >= 1 non-none PTE in every era;
# any hole in an armed VMA refuses; a PMD-mapped THP counts as done.
@pytest.mark.parametrize("ver", ["6.12", "6.18"])
@pytest.mark.parametrize("armed, thp, ptable, any_pop, all_pop, ok", [
    (F, T, F, T, T, T),
    (F, F, F, F, F, F),
    (F, F, T, T, F, T),
    (F, F, T, F, F, F),
    (T, F, T, T, F, F),
    (T, F, T, T, T, T),
])
def test_collapse_pmd_khugepaged(ver, armed, thp, ptable, any_pop, all_pop, ok):
    got, _, _ = rules.collapse_pmd(PY, ERA_BY[ver], True, armed, thp, ptable, F, any_pop,
                                   all_pop)
    assert bool(got) is ok


# fork write-protects the PTEs: khugepaged needs a writable one before 6.18 (SCAN_PAGE_RO).
@pytest.mark.parametrize("ver, ok", [("6.12", F), ("6.18", T)])
def test_collapse_pmd_khugepaged_after_fork(ver, ok):
    got, _, _ = rules.collapse_pmd(PY, ERA_BY[ver], True, F, F, T, T, T, T)
    assert bool(got) is ok


# --- userfaultfd (kf §6) --------------------------------------------------------------------

@pytest.mark.parametrize("start, missing, wp, want", [
    (NONE, T, F, Flags(F, F, T, F)),
    (NONE, F, T, Flags(F, F, F, T)),
    (NONE, T, T, Flags(F, F, T, T)),
    (Flags(F, F, T, F), F, T, Flags(F, F, F, T)),  # a different mode replaces the mode bits
    (Flags(T, F, F, T), T, F, Flags(T, F, T, F)),  # hg kept
    (Flags(F, T, T, T), T, T, Flags(F, T, T, T)),
])
def test_userfaultfd_register(start, missing, wp, want):
    assert tuple(rules.userfaultfd_register(PY, start, missing, wp)) == tuple(want)


@pytest.mark.parametrize("start", [Flags(T, F, T, T), Flags(F, T, T, F), Flags(F, F, F, T), NONE])
def test_userfaultfd_unregister_and_fork_clear_only_uffd_bits(start):
    want = (start.hg, start.nh, False, False)
    assert tuple(rules.userfaultfd_unregister(PY, start)) == want
    assert tuple(rules.dup_userfaultfd(PY, start)) == want


# UFFDIO_COPY per page (kf §6.4): not registered -> ENOENT; dst PMD THP -> EEXIST; present PTE
# -> EEXIST; else copied.
@pytest.mark.parametrize("registered, present, thp, want", [
    (F, F, F, ENOENT), (F, T, T, ENOENT),
    (T, F, T, EEXIST), (T, T, F, EEXIST), (T, T, T, EEXIST),
    (T, F, F, 0),
])
def test_uffdio_copy_page(registered, present, thp, want):
    assert rules.uffdio_copy_page(PY, registered, present, thp) == want


# --- VMA merging (spec §3.2; kf §3.2 is_mergeable_anon_vma) ----------------------------------
# moving = the VMA being changed/created, target = its neighbour; anon_vma 0 = none yet.
@pytest.mark.parametrize("left, right, moving, target, v612, v618", [
    (NONE, NONE, 0, 0, T, T),
    (NONE, NONE, 0, 5, T, T),  # unfaulted into faulted: fine in both
    (NONE, NONE, 5, 5, T, T),
    (NONE, NONE, 5, 7, F, F),  # different anon_vmas
    (NONE, NONE, 5, 0, F, T),  # faulted into unfaulted: 6.16+ only (879bca0a2c4f)
    (HG, NONE, 0, 0, F, F),
    (NH, NONE, 0, 0, F, F),
    (HG, NH, 0, 0, F, F),
    (HG, HG, 0, 0, T, T),
    (Flags(F, F, T, F), NONE, 0, 0, F, F),
    (Flags(F, F, T, F), Flags(F, F, F, T), 0, 0, F, F),
    (Flags(T, F, T, F), Flags(T, F, T, F), 0, 0, T, T),
])
def test_is_mergeable_vma(left, right, moving, target, v612, v618):
    assert bool(rules.is_mergeable_vma(PY, E612, left, right, moving, target)) is v612
    assert bool(rules.is_mergeable_vma(PY, E618, left, right, moving, target)) is v618
