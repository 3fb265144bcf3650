"""The expected verdict of every theorem per era (and protocol), each with its reason.

A row is checked only in the eras listed here: the others lack what the theorem is about (no
MADV_COLLAPSE before 6.1, no EXCEPT_ADVISED before 6.18, no CLR outside the patched eras), or a
protocol was never meant for them.  `vmaflags prove` exits non-zero when a verdict differs.
"""
from __future__ import annotations

ALL = ("def-flags", "mmf", "mmf-except-advised", "def-flags-clr", "mmf-clr")
CLR = ("def-flags-clr", "mmf-clr")

P, R = "proved", "refuted"

EXPECTED: dict[tuple[str, str | None], dict[str, tuple[str, str]]] = {
    ("hg-nh-exclusive", None): {e: (P, "each advice sets its bit and clears the other") for e in ALL},
    ("prctl-transparent", None): {
        "def-flags": (R, "VMAs mapped while def_flags has VM_NOHUGEPAGE keep nh"),
        "def-flags-clr": (R, "as def-flags: the prctl is a template for new VMAs"),
        "mmf": (P, "MMF_DISABLE_THP touches no VMA"),
        "mmf-except-advised": (P, "neither MMF bit touches a VMA"),
        "mmf-clr": (P, "as mmf"),
    },
    ("clr-is-neutral", None): {
        "mmf-clr": (P, "CLR clears both bits; a fresh VMA has neither"),
        # The issue expected "proved" here too.  A fresh mmap after PR_SET_THP_DISABLE(1) gets
        # nh from mm->def_flags, while CLR leaves neither: CLR is neutral only with the prctl off.
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
}

_restore = {
    "naive": {e: (P, "re-applies every dumped bit and the exact prctl mode") for e in ALL},
    "criu-2017": {
        "def-flags": (R, "VMAs mapped under prctl(1) keep nh"),
        "def-flags-clr": (R, "VMAs mapped under prctl(1) keep nh"),
        "mmf": (R, "flags come back but a dumped prctl(1) is lost"),
        "mmf-except-advised": (R, "a dumped prctl mode is lost"),
        "mmf-clr": (R, "a dumped prctl(1) is lost"),
    },
    "criu-3.19": {
        "def-flags": (R, "VMAs mapped under prctl(1) keep nh"),
        "def-flags-clr": (R, "VMAs mapped under prctl(1) keep nh"),
        "mmf": (P, "PR_GET is 0 or 1, restored as a bool"),
        "mmf-except-advised": (R, "EXCEPT_ADVISED (3) comes back as COMPLETELY (1)"),
        "mmf-clr": (P, "as mmf"),
    },
    "criu-fixed": {
        "def-flags": (R, "VMAs mapped under prctl(1) keep nh"),
        "def-flags-clr": (R, "VMAs mapped under prctl(1) keep nh"),
        "mmf": (P, "restores the mode exactly"),
        "mmf-except-advised": (P, "restores EXCEPT_ADVISED with its flag"),
        "mmf-clr": (P, "as mmf"),
    },
    "clr-2017": {
        **{e: (R, "without CLR a VMA with neither bit keeps the protective nh")
           for e in ALL if e not in CLR},
        **{e: (P, "CLR undoes the protective nh") for e in CLR},
    },
}
# The eras each protocol was written for (no-collapse-window is about them).
_targets = {
    "naive": ALL,
    "criu-2017": ("def-flags", "mmf"),
    "criu-3.19": ("mmf", "mmf-except-advised"),
    "criu-fixed": ("mmf", "mmf-except-advised", "mmf-clr"),
    "clr-2017": CLR,
}
for _p, _rows in _restore.items():
    EXPECTED[("criu-restore-original", _p)] = _rows
    EXPECTED[("no-collapse-window", _p)] = {
        e: ((R, "nothing stops a collapse before UFFDIO_REGISTER") if _p == "naive" else
            (P, "THP is off while pages go in; uffd holes block collapse after"))
        for e in _targets[_p]
    }

PROTOCOL_ORDER = tuple(_restore)
