"""The concurrency theorems (proofs/concurrency.py) under the kernel's lock discipline and under
changed rules (model/locks.py): each verdict flips when the rule it rests on is changed."""
from __future__ import annotations

from dataclasses import replace

import pytest

from vmaflags.model.eras import ERAS, era_at
from vmaflags.model.locks import KERNEL
from vmaflags.proofs import concurrency as C


@pytest.mark.parametrize("era,protocol", [("mmf-clr", "clr-2017"),
                                          ("mmf-except-advised", "criu-3.19"),
                                          ("def-flags", "criu-2017")])
def test_collapse_respects_protection_under_the_kernels_locks(era, protocol):
    v = C.collapse_respects_nh(ERAS[era], protocol)
    assert v.verdict == "proved" and not v.vacuity, (v.note, v.vacuity)


def test_vlastimils_race_needs_both_read_locked_madvise_and_no_revalidation():
    e = ERAS["mmf"]
    v = C.collapse_race_if_madvise_read_locked(e, "vlastimil")
    assert v.verdict == "refuted"
    steps = [(d["process"], d["syscall"].split()[0]) for d in v.counterexample]
    # his interleaving: the scan, then MADV_NOHUGEPAGE and the writes, then the collapse
    scan = steps.index(("khugepaged", "scan"))
    nh = steps.index(("process", "madvise"), 3)
    assert scan < nh < steps.index(("khugepaged", "scan_pmd"))
    assert v.counterexample[-1]["observation"].endswith("protected by MADV_NOHUGEPAGE")
    # either rule of the kernel alone closes it: the revalidation after the scan sees nh; the
    # write-locked madvise cannot land inside the scan, which then finds an empty PMD
    nh_only = ("MADV_NOHUGEPAGE",)
    for rule in (dict(madvise_hugepage_write=False),
                 dict(revalidate_under_read=False, revalidate_under_write=False)):
        v = C.collapse_respects_nh(e, "vlastimil", replace(KERNEL, **rule), nh_only)
        assert v.verdict == "proved", rule


def test_a_fresh_vma_closes_vlastimils_window_even_under_his_hypothesis():
    """khugepaged and MADV_COLLAPSE skip a VMA without an anon_vma: MADV_NOHUGEPAGE right after
    mmap comes before any write, so the scan never passes before it."""
    v = C.collapse_race_if_madvise_read_locked(ERAS["mmf-clr"], "clr-2017")
    assert v.verdict == "proved" and not v.vacuity


def test_writers_that_do_not_exclude_writers_break_the_collapse():
    """A restore's MADV_NOHUGEPAGE (re-applying a dumped nh) lands between the revalidation and
    the install."""
    v = C.collapse_respects_nh(ERAS["mmf"], "criu-3.19",
                               replace(KERNEL, writer_excludes_writer=False))
    assert v.verdict == "refuted"
    assert [d for d in v.counterexample if d["process"] == "khugepaged"][-1]["step"] - 1 == \
        next(d["step"] for d in reversed(v.counterexample) if d["process"] == "restore")


@pytest.mark.parametrize("era", ["mmf", "mmf-except-advised", "mmf-clr"])
def test_fault_under_the_vma_lock_installs_after_the_prctl(era):
    v = C.fault_vs_prctl(ERAS[era])
    assert v.verdict == "refuted" and not v.vacuity
    assert [(d["process"], d["syscall"].split()[0]) for d in v.counterexample][-3:] == [
        ("fault", "fault_check"), ("prctl", "prctl_set"), ("fault", "fault_install")]


def test_fault_under_the_mmap_lock_or_a_prctl_that_write_locks_vmas_cannot():
    assert C.fault_vs_prctl(era_at("mmf", "6.1")).verdict == "proved"  # before 6.4
    v = C.fault_vs_prctl(ERAS["mmf"], replace(KERNEL, prctl_vma_write=True))
    assert v.verdict == "proved"
