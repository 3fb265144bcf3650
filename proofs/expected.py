"""The expected verdict of every theorem per era (and protocol), each with its reason.

A row is checked only in the eras listed here: the others lack what the theorem is about (no
MADV_COLLAPSE before 6.1, no EXCEPT_ADVISED before 6.18, no CLR outside the patched eras), or a
protocol was never run on them.  An era id may name a kernel inside the era (`def-flags@4.4`:
Era.at("4.4")) where a within-era feature decides the verdict.  The reasons of the restore rows
come from CRIU's code as cited in protocols.py.  `vmaflags prove` exits non-zero when a verdict
differs.
"""
from __future__ import annotations

ALL = ("def-flags", "mmf", "mmf-except-advised", "def-flags-clr", "mmf-clr")
CLR = ("def-flags-clr", "mmf-clr")

P, R, A = "proved", "refuted", "aborted"

EXPECTED: dict[tuple[str, str | None], dict[str, tuple[str, str]]] = {
    ("hg-nh-exclusive", None): {e: (P, "each advice sets its bit and clears the other")
                                for e in ALL},
    ("restore-frame", None): {e: (P, "per-cell rules, per-PMD THP and page-table changes")
                              for e in ALL},
    ("prctl-transparent", None): {
        "def-flags": (R, "VMAs mapped while def_flags has VM_NOHUGEPAGE keep nh"),
        "def-flags-clr": (R, "as def-flags: the prctl is a template for new VMAs"),
        "mmf": (P, "MMF_DISABLE_THP touches no VMA"),
        "mmf-except-advised": (P, "neither MMF bit touches a VMA"),
        "mmf-clr": (P, "as mmf"),
    },
    ("clr-is-neutral", None): {
        "mmf-clr": (P, "CLR clears both bits; a fresh VMA has neither"),
        # A fresh mmap after PR_SET_THP_DISABLE(1) gets nh from mm->def_flags, while CLR leaves
        # neither: CLR is neutral only with the prctl off.
        "def-flags-clr": (R, "a fresh VMA inherits nh from def_flags; CLR clears it"),
    },
    ("no-return-to-neither", None): {
        **{e: (P, "MADV_[NO]HUGEPAGE always set one bit") for e in ALL if e not in CLR},
        **{e: (R, "MADV_CLR_HUGEPAGE clears both") for e in CLR},
    },
    ("eligibility-monotone", None): {e: (P, "nh and the disable bits only ever remove THP")
                                     for e in ALL},
    ("except-advised-as-madvise", None): {
        "mmf-except-advised": (P, "vma_thp_disabled: EXCEPT_ADVISED blocks unless hg"),
    },
    ("collapse-ignores-sysfs", None): {
        e: (P, "TVA_FORCED_COLLAPSE does not enforce sysfs")
        for e in ("mmf", "mmf-except-advised", "mmf-clr")
    },
    ("disable-inherited", None): {e: (P, "MMF_INIT_MASK / VM_INIT_DEF_MASK in mm_init")
                                  for e in ALL},
    ("fork-and-exec", None): {e: (P, "dup_mmap copies VMAs; dup_userfaultfd drops uffd flags")
                              for e in ALL},
    ("uffd-leaves-no-trace", None): {e: (P, "unregister and release clear what register set")
                                     for e in ALL},
    ("documented-returns", None): {e: (P, "madvise(2), prctl(2), ioctl_userfaultfd(2) errors")
                                   for e in ALL},
    ("pages-arrive", None): {e: (P, "do_anonymous_page, mfill_atomic_install_pte")
                             for e in ALL},
    ("collapse-fills-holes", None): {e: (P, "max_ptes_none 511: one page is enough")
                                     for e in ALL},
    ("sysfs-is-global", None): {e: (P, "enabled_store sets a global flag") for e in ALL},
    ("status-shows-prctl", None): {e: (P, "task_thp_status tests MMF_DISABLE_THP(_COMPLETELY)")
                                   for e in ("mmf", "mmf-except-advised", "mmf-clr")},
}

# Why, from CRIU's code (protocols.py cites each step):
_NH_LEFT = "maybe_disable_thp's prctl(1) comes before premap: def_flags puts nh on every VMA"
_GET_BOOL = "thp_disabled is a protobuf bool: EXCEPT_ADVISED (3) comes back as 1"
_EINVAL_44 = ("before 4.5 madvise(MADV_NOHUGEPAGE) on a VMA that has nh (from def_flags) is "
              "EINVAL")
_RESTORE = {
    "naive": {e: (P, "re-applies every dumped bit and the exact prctl mode") for e in ALL},
    "3.5-lazy-predump": {
        "def-flags": (R, _NH_LEFT),
        "def-flags@4.4": (A, _EINVAL_44),
        "mmf": (P, "prctl(0) only when the dump had 0; a dumped prctl(1) stays set"),
    },
    "3.5-lazy": {e: (R, "no parent: no prctl at all, so a dumped prctl(1) is lost")
                 for e in ("def-flags", "mmf")},
    "3.5-plain": {e: (R, "prctl only `if (args->uffd > -1)`: a dumped prctl(1) is lost")
                  for e in ("def-flags", "mmf")},
    "3.19-lazy-predump": {
        "def-flags": (R, _NH_LEFT),
        "def-flags@4.4": (A, _EINVAL_44),
        "mmf": (P, "prctl(thp_disabled) after registration restores 0 or 1"),
        "mmf-except-advised": (R, _GET_BOOL),
    },
    "3.19-lazy": {
        "def-flags": (P, "no prctl before premap; prctl(thp_disabled) after the VMAs exist"),
        "mmf": (P, "prctl(thp_disabled) restores 0 or 1"),
        "mmf-except-advised": (R, _GET_BOOL),
    },
    "3.19-plain": {
        "def-flags": (R, "pieok: the restorer's prctl comes before restore_mapping(), so "
                         "def_flags puts nh on every VMA"),
        "mmf": (P, "prctl(thp_disabled) restores 0 or 1"),
        "mmf-except-advised": (R, _GET_BOOL),
    },
    "criu-fixed": {
        "def-flags": (R, _NH_LEFT),
        "def-flags-clr": (R, _NH_LEFT),
        "mmf": (P, "restores the mode exactly"),
        "mmf-except-advised": (P, "restores EXCEPT_ADVISED with its flag"),
        "mmf-clr": (P, "as mmf"),
    },
    "clr-2017": {
        **{e: (A, "no MADV_CLR_HUGEPAGE: EINVAL for a dumped VMA with neither bit")
           for e in ALL if e not in CLR},
        **{e: (P, "CLR undoes the protective nh") for e in CLR},
    },
}
for _p, _rows in _RESTORE.items():
    EXPECTED[("criu-restore-original", _p)] = _rows

_PRCTL_WINDOW = "prctl(1) from before premap until after every UFFDIO_REGISTER; then holes"
_WINDOW = {
    "naive": {e: (R, "nothing stops a collapse before UFFDIO_REGISTER") for e in ALL},
    "3.5-lazy-predump": {e: (P, _PRCTL_WINDOW) for e in ("def-flags", "mmf")},
    "3.5-lazy": {e: (P, "no parent: nothing is written before UFFDIO_REGISTER")
                 for e in ("def-flags", "mmf")},
    "3.19-lazy-predump": {e: (P, _PRCTL_WINDOW)
                          for e in ("def-flags", "mmf", "mmf-except-advised")},
    "3.19-lazy": {e: (P, "no parent: nothing is written before UFFDIO_REGISTER")
                  for e in ("def-flags", "mmf", "mmf-except-advised")},
    "criu-fixed": {e: (P, _PRCTL_WINDOW) for e in ("mmf", "mmf-except-advised", "mmf-clr")},
    "clr-2017": {e: (P, "nh from right after each mmap until after UFFDIO_REGISTER")
                 for e in CLR},
}
for _p, _rows in _WINDOW.items():
    EXPECTED[("no-collapse-window", _p)] = _rows

PROTOCOL_ORDER = tuple(_RESTORE)

# What a restore does to THP backing and khugepaged's list (backing.py): in mmf, the era of
# the kernels real CRIU showed each refutation of the shipped protocols on (`vmaflags vm criu`,
# conformance/vm/README.md findings 3-5; Debian 6.1 and 6.12), clr-2017 in mmf-clr, and
# 3.19-plain, whose registration verdict depends on the era, in its three eras.  Run in every
# era of the restore rows above where their restores complete, the other protocols gave the
# verdicts of their mmf rows (proofs/README.md); they are left out to keep `vmaflags prove`
# within its time.
_COPY = "UFFDIO_COPY installs PTEs, never a PMD (mfill_atomic)"
_PARENT = "the parent's pages are written under prctl(1), the rest by UFFDIO_COPY"
_NH_FIRST = "the pages are written under nh, the rest by UFFDIO_COPY"
_ANON = ("MADV_HUGEPAGE before any page: no anon_vma, khugepaged_enter_vma declines; "
         "UFFDIO_COPY never calls it")
_NEEDS_ANON = "; MADV_HUGEPAGE needs an anon_vma"
_LAZY, _PREDUMP = ("3.5-lazy", "3.19-lazy"), ("3.5-lazy-predump", "3.19-lazy-predump")
_ERAS_3_19 = ("def-flags", "mmf", "mmf-except-advised")
_BACKING: dict[str, dict[str, dict[str, tuple[str, str]]]] = {
    "criu-thp-kept": {
        **{p: {"mmf": (R, _PARENT)} for p in _PREDUMP},
        **{p: {"mmf": (R, _COPY)} for p in _LAZY},
        "3.5-plain": {"mmf": (R, "the restorer writes the pages before the madv bits: a THP at "
                                 "fault only under sysfs always")},
        "3.19-plain": {e: (R, "as 3.5-plain, and after the restorer's prctl(1) none at all")
                       for e in _ERAS_3_19},
        "criu-fixed": {"mmf": (R, _PARENT)},
        "clr-2017": {"mmf-clr": (R, _NH_FIRST)},
    },
    "criu-khugepaged-registered": {
        **{p: {"mmf": (R, _PARENT + _NEEDS_ANON)} for p in _PREDUMP},
        **{p: {"mmf": (R, _ANON)} for p in _LAZY},
        "3.5-plain": {"mmf": (P, "pages, then MADV_HUGEPAGE registers (hugepage_madvise), or "
                                 "under always the huge fault does")},
        "3.19-plain": {
            "def-flags": (R, "the prctl(1) comes first: def_flags puts nh on every VMA, so no "
                             "neither VMA is scanned"),
            "mmf": (P, "prctl(0 or 1), pages, then MADV_HUGEPAGE or the huge fault registers"),
            "mmf-except-advised": (R, _GET_BOOL + ": no VMA may be scanned"),
        },
        "criu-fixed": {"mmf": (R, _PARENT + _NEEDS_ANON)},
        "clr-2017": {"mmf-clr": (R, _NH_FIRST + _NEEDS_ANON)},
    },
    "criu-no-new-thp-in-nh": {
        **{p: {"mmf": (P, _PARENT)} for p in _PREDUMP},
        **{p: {"mmf": (P, "nothing is written before UFFDIO_REGISTER; " + _COPY)}
           for p in _LAZY},
        "3.5-plain": {"mmf": (R, "no prctl; pages before madvise(NOHUGEPAGE): under always the "
                                 "fault makes a THP")},
        "3.19-plain": {e: (R, "the prctl first covers a disabled mm, not an nh VMA: pages "
                              "before its NOHUGEPAGE") for e in _ERAS_3_19},
        "criu-fixed": {"mmf": (P, _PARENT)},
        "clr-2017": {"mmf-clr": (P, _NH_FIRST)},
    },
}
for _t, _by_protocol in _BACKING.items():
    for _p, _rows in _by_protocol.items():
        EXPECTED[(_t, _p)] = _rows
