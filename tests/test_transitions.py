"""Pin whole-script behaviour of the model (vmaflags.model.concrete.run) against the spec.

Each test runs a script in the conformance language (conformance/SCRIPT.md) and compares the
observation lines, or single fields of them, with literal values from
/work/shared/spec/kernel-thp-semantics.md ("spec §x") and /work/notes/kernel-facts.md
("kf §x").  Observation text: ``ret=<ret> get=<PR_GET> thp=<THP_enabled|-> vmas=<vma>,...``,
each vma ``START-END:FLAGS:THPeligible|-:AnonHugePages``.  Default sysfs is ``madvise``, as on
the 6.18 machine the spec's experiments ran on.
"""
from __future__ import annotations

import textwrap

import pytest

from vmaflags.model import ERAS, ScriptError, parse_script
from vmaflags.model.concrete import run, run_syscall
from vmaflags.model.state import empty_state
from vmaflags.model.syscalls import SYSFS_MODES

E412, E612, E618 = ERAS["def-flags"], ERAS["mmf"], ERAS["mmf-except-advised"]
E61 = ERAS["mmf"].at("6.1")
T, F = True, False


def outcomes(era, text, sysfs="madvise"):
    return run(era, parse_script(textwrap.dedent(text)), SYSFS_MODES.index(sysfs))


def lines(era, text, sysfs="madvise"):
    """One observation text per step."""
    return [o.obs.text() for o in outcomes(era, text, sysfs)]


def field(line, name):
    for tok in line.split(" "):
        k, _, v = tok.partition("=")
        if k == name:
            return v
    raise KeyError(name)


def rets(era, text, sysfs="madvise"):
    return [field(s, "ret") for s in lines(era, text, sysfs)]


def vmas(line):
    return field(line, "vmas")


# --- 1. prctl through scripts (spec §2.3 "Observed on 6.18"; §2.1/2.2) ----------------------

PRCTL_SCRIPT = """\
    prctl_get 0 0 0 0
    prctl_set 1 0 0 0
    prctl_set 1 2 0 0
    prctl_set 7 2 0 0
    prctl_set 1 0 0 0
    prctl_set 0 2 0 0
    prctl_set 0 1 0 0
    prctl_set 1 1 0 0
    prctl_set 1 3 0 0
    prctl_set 1 4 0 0
    prctl_set 1 2 1 0
    prctl_set 1 0 0 1
    prctl_get 1 0 0 0
    prctl_get 0 1 0 0
    prctl_get 0 0 1 0
    prctl_get 0 0 0 1
    prctl_get 0 0 0 0
    prctl_set 0 0 0 0
    prctl_get 0 0 0 0
"""
PRCTL_WANT = {  # (ret, get, thp) per step
    "mmf-except-advised": [
        ("0", "0", "1"), ("0", "1", "0"), ("0", "3", "1"), ("0", "3", "1"), ("0", "1", "0"),
        *[("-EINVAL", "1", "0")] * 7,
        *[("-EINVAL", "1", "0")] * 4,
        ("1", "1", "0"), ("0", "0", "1"), ("0", "0", "1"),
    ],
    "mmf": [
        ("0", "0", "1"), ("0", "1", "0"), ("-EINVAL", "1", "0"), ("-EINVAL", "1", "0"),
        ("0", "1", "0"),
        *[("-EINVAL", "1", "0")] * 7,
        *[("-EINVAL", "1", "0")] * 4,
        ("1", "1", "0"), ("0", "0", "1"), ("0", "0", "1"),
    ],
    "def-flags": [
        ("0", "0", "-"), ("0", "1", "-"), ("-EINVAL", "1", "-"), ("-EINVAL", "1", "-"),
        ("0", "1", "-"),
        *[("-EINVAL", "1", "-")] * 7,
        *[("-EINVAL", "1", "-")] * 4,
        ("1", "1", "-"), ("0", "0", "-"), ("0", "0", "-"),
    ],
}


@pytest.mark.parametrize("era_id", list(PRCTL_WANT))
def test_prctl_script(era_id):
    got = [(field(s, "ret"), field(s, "get"), field(s, "thp"))
           for s in lines(ERAS[era_id], PRCTL_SCRIPT)]
    assert got == PRCTL_WANT[era_id]


# The prctl never changes VMA flags in the MMF eras (spec §2.2, §10 invariants).
@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
@pytest.mark.parametrize("args", ["1 0 0 0", "1 2 0 0"])
def test_prctl_leaves_vma_flags(era_id, args):
    out = lines(ERAS[era_id], f"""\
        mmap 0 4M
        madvise 0 2M hugepage
        madvise 2M 2M nohugepage
        prctl_set {args}
        prctl_set 0 0 0 0
    """)
    flags = [[v.split(":")[1] for v in vmas(s).split(",")] for s in out[2:]]
    assert flags == [["hg", "nh"]] * 3


# --- 2. eligibility x mode matrix (spec §4.3) ------------------------------------------------
# Script: prctl, one 2 MiB-aligned anon VMA, optional advice, write the whole PMD ("fault"),
# then MADV_COLLAPSE.  Observed: THPeligible, AnonHugePages after the fault, collapse result,
# AnonHugePages after the collapse.
# sysfs=madvise: the spec's "Observed 6.18 matrix" [exp].  always/never: derived from the §4.3
# "Which checks apply" table: sysfs blocks fault and smaps only; MADV_COLLAPSE ignores sysfs;
# except-advised blocks fault/smaps unless hg, never blocks collapse; nh and completely block all.
MATRIX_618 = {
    # (sysfs, mode, flag): (THPeligible, AHP after fault, collapse ret, AHP after collapse)
    ("madvise", "none", "-"): ("0", "0", "0", "2048"),
    ("madvise", "none", "hg"): ("1", "2048", "0", "2048"),
    ("madvise", "none", "nh"): ("0", "0", "-EINVAL", "0"),
    ("madvise", "completely", "-"): ("0", "0", "-EINVAL", "0"),
    ("madvise", "completely", "hg"): ("0", "0", "-EINVAL", "0"),
    ("madvise", "completely", "nh"): ("0", "0", "-EINVAL", "0"),
    ("madvise", "except", "-"): ("0", "0", "0", "2048"),
    ("madvise", "except", "hg"): ("1", "2048", "0", "2048"),
    ("madvise", "except", "nh"): ("0", "0", "-EINVAL", "0"),
    ("always", "none", "-"): ("1", "2048", "0", "2048"),
    ("always", "none", "hg"): ("1", "2048", "0", "2048"),
    ("always", "none", "nh"): ("0", "0", "-EINVAL", "0"),
    ("always", "completely", "-"): ("0", "0", "-EINVAL", "0"),
    ("always", "completely", "hg"): ("0", "0", "-EINVAL", "0"),
    ("always", "completely", "nh"): ("0", "0", "-EINVAL", "0"),
    ("always", "except", "-"): ("0", "0", "0", "2048"),
    ("always", "except", "hg"): ("1", "2048", "0", "2048"),
    ("always", "except", "nh"): ("0", "0", "-EINVAL", "0"),
    ("never", "none", "-"): ("0", "0", "0", "2048"),
    ("never", "none", "hg"): ("0", "0", "0", "2048"),
    ("never", "none", "nh"): ("0", "0", "-EINVAL", "0"),
    ("never", "completely", "-"): ("0", "0", "-EINVAL", "0"),
    ("never", "completely", "hg"): ("0", "0", "-EINVAL", "0"),
    ("never", "completely", "nh"): ("0", "0", "-EINVAL", "0"),
    ("never", "except", "-"): ("0", "0", "0", "2048"),
    ("never", "except", "hg"): ("0", "0", "0", "2048"),
    ("never", "except", "nh"): ("0", "0", "-EINVAL", "0"),
}
# 6.12 (mmf): same table for none/completely (spec §1: "refused (EINVAL) when nh or
# MMF_DISABLE_THP; ignores sysfs"); the except-advised prctl does not exist: SET(1,2) is
# EINVAL (arg3 != 0) and the process stays in "none".
MATRIX_612 = {k: MATRIX_618[(k[0], "none" if k[1] == "except" else k[1], k[2])]
              for k in MATRIX_618}
PRCTL_ARGS = {"none": "0 0 0 0", "completely": "1 0 0 0", "except": "1 2 0 0"}
ADVICE = {"-": "", "hg": "madvise 0 2M hugepage", "nh": "madvise 0 2M nohugepage"}


def matrix_run(era, sysfs, mode, flag):
    out = lines(era, f"""\
        arena 1
        prctl_set {PRCTL_ARGS[mode]}
        mmap 0 2M
        {ADVICE[flag] or "prctl_get 0 0 0 0"}
        touch 0 2M
        madvise 0 2M collapse
    """, sysfs)
    vma = [vmas(s).split(":") for s in out]
    assert all(v[0] == "0x0-0x200000" and v[1] == flag for v in vma[2:])
    return field(out[0], "ret"), (vma[2][2], vma[3][3], field(out[4], "ret"), vma[4][3])


@pytest.mark.parametrize("key", list(MATRIX_618), ids=["/".join(k) for k in MATRIX_618])
def test_eligibility_matrix_618(key):
    prctl_ret, got = matrix_run(E618, *key)
    assert prctl_ret == "0"
    assert got == MATRIX_618[key]


@pytest.mark.parametrize("key", list(MATRIX_612), ids=["/".join(k) for k in MATRIX_612])
def test_eligibility_matrix_612(key):
    prctl_ret, got = matrix_run(E612, *key)
    assert prctl_ret == ("-EINVAL" if key[1] == "except" else "0")
    assert got == MATRIX_612[key]


# THPeligible does not need an anon_vma (spec §4.4 "1 for an untouched anon VMA with hg") and
# needs an aligned PMD inside the VMA ("0 for ... 1 MiB and a misaligned 2 MiB hg VMA").
@pytest.mark.parametrize("era", [E612, E618], ids=["6.12", "6.18"])
@pytest.mark.parametrize("script, want", [
    ("mmap 0 2M\nmadvise 0 2M hugepage", "0x0-0x200000:hg:1:0"),
    ("mmap 0 1M\nmadvise 0 1M hugepage", "0x0-0x100000:hg:0:0"),
    ("mmap 1M 2M\nmadvise 1M 2M hugepage", "0x100000-0x300000:hg:0:0"),
    ("mmap 1M 3M\nmadvise 1M 3M hugepage", "0x100000-0x400000:hg:1:0"),
])
def test_thpeligible_fit_and_no_anon_vma(era, script, want):
    assert vmas(lines(era, "arena 2\n" + script)[-1]) == want


# MADV_COLLAPSE gives a THP in a plain VMA under madvise while THPeligible stays 0 (spec §4.4).
@pytest.mark.parametrize("era", [E612, E618], ids=["6.12", "6.18"])
def test_collapse_thp_while_not_eligible(era):
    out = lines(era, "mmap 0 2M\ntouch 0 4K\nmadvise 0 2M collapse")
    assert out[-1] == "ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:2048"


# --- 3. split / merge (spec §3.2 [exp]) -------------------------------------------------------

@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised", "mmf-clr"])
def test_split_merge_hugepage_middle(era_id):
    out = lines(ERAS[era_id], """\
        arena 4
        mmap 0 8M
        madvise 2M 2M hugepage
        madvise 0 8M hugepage
        madvise 2M 2M hugepage
    """)
    assert vmas(out[1]) == "0x0-0x200000:-:0:0,0x200000-0x400000:hg:1:0,0x400000-0x800000:-:0:0"
    assert vmas(out[2]) == "0x0-0x800000:hg:1:0"
    assert vmas(out[3]) == "0x0-0x800000:hg:1:0"  # flags unchanged: no split (kf §3.2)


def test_split_merge_hugepage_middle_def_flags():
    out = lines(E412, "arena 4\nmmap 0 8M\nmadvise 2M 2M hugepage\nmadvise 0 8M hugepage")
    assert vmas(out[1]) == "0x0-0x200000:-:-:0,0x200000-0x400000:hg:-:0,0x400000-0x800000:-:-:0"
    assert vmas(out[2]) == "0x0-0x800000:hg:-:0"


@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
@pytest.mark.parametrize("off, want", [
    ("0", "0x0-0x3000:nh:0:0,0x3000-0x200000:-:0:0"),
    ("1M", "0x0-0x100000:-:0:0,0x100000-0x103000:nh:0:0,0x103000-0x200000:-:0:0"),
])
def test_nohugepage_12k_splits(era_id, off, want):
    out = lines(ERAS[era_id], f"mmap 0 2M\nmadvise {off} 12288 nohugepage")
    assert out[-1] == f"ret=0 get=0 thp=1 vmas={want}"


# spec §7 [exp], kf §6.3: closing the uffd clears um/uw; the VMA keeps hg and does not merge
# with its non-hg neighbour; where the flags become equal the VMAs merge.
@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
def test_uffd_close_keeps_hg_no_merge(era_id):
    out = lines(ERAS[era_id], """\
        arena 2
        mmap 0 4M
        madvise 0 2M hugepage
        uffd_register 0 4M missing
        uffd_close
    """)
    assert vmas(out[2]) == "0x0-0x200000:hg+um:1:0,0x200000-0x400000:um:0:0"
    assert out[3] == "ret=0 get=0 thp=1 vmas=0x0-0x200000:hg:1:0,0x200000-0x400000:-:0:0"


@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
@pytest.mark.parametrize("last", ["uffd_close", "uffd_unregister 0 4M"])
def test_uffd_clear_remerges_equal_flags(era_id, last):
    out = lines(ERAS[era_id], f"arena 2\nmmap 0 4M\nuffd_register 1M 2M missing\n{last}")
    assert vmas(out[1]) == "0x0-0x100000:-:0:0,0x100000-0x300000:um:0:0,0x300000-0x400000:-:0:0"
    assert vmas(out[2]) == "0x0-0x400000:-:0:0"


# --- 4. madvise front end (spec §3.1 "Generic madvise error..."; kf §2) -----------------------

HOLES = "arena 3\nmmap 0 2M\nmmap 4M 2M\n"


@pytest.mark.parametrize("era_id", ["def-flags", "mmf", "mmf-except-advised"])
@pytest.mark.parametrize("step, ret, flags", [
    # ENOMEM, and both sides of the hole get the advice
    ("madvise 0 6M hugepage", "-ENOMEM", ("hg", "hg")),
    ("madvise 0 6M nohugepage", "-ENOMEM", ("nh", "nh")),
    ("madvise 2M 4M hugepage", "-ENOMEM", ("-", "hg")),  # starting in a hole
    ("madvise 0 4M hugepage", "-ENOMEM", ("hg", "-")),  # ending in a hole
    ("madvise 2M 2M hugepage", "-ENOMEM", ("-", "-")),  # only a hole
    ("madvise 0x800 4K hugepage", "-EINVAL", ("-", "-")),  # unaligned start
    ("madvise 0x800 0 hugepage", "-EINVAL", ("-", "-")),  # unaligned, len 0
    ("madvise 0 0 hugepage", "0", ("-", "-")),  # len 0
    ("madvise 2M 0 hugepage", "0", ("-", "-")),  # len 0 in a hole
    ("madvise 0 2M 99", "-EINVAL", ("-", "-")),  # unknown advice
    ("madvise 0 0 999", "-EINVAL", ("-", "-")),  # unknown advice beats len 0
    ("madvise 0 2M 27", "-EINVAL", ("-", "-")),
])
def test_madvise_front_end(era_id, step, ret, flags):
    out = lines(ERAS[era_id], HOLES + step)
    assert field(out[-1], "ret") == ret
    got = tuple(v.split(":")[1] for v in vmas(out[-1]).split(","))
    assert [v.split(":")[0] for v in vmas(out[-1]).split(",")] == ["0x0-0x200000",
                                                                  "0x400000-0x600000"]
    assert got == flags


@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
def test_madvise_len_rounded_up(era_id):
    out = lines(ERAS[era_id], "mmap 0 2M\nmadvise 0 1 nohugepage")  # len 1 -> one page
    assert vmas(out[-1]) == "0x0-0x1000:nh:0:0,0x1000-0x200000:-:0:0"


# MADV_CLR_HUGEPAGE: EINVAL (unknown advice) outside the patched eras (spec §3.4; kf §12:
# 26 -> EINVAL on 6.12/6.18, 18 unused in 4.12).
@pytest.mark.parametrize("era_id, advice", [
    ("def-flags", "clr_hugepage"), ("def-flags", "18"),
    ("mmf", "clr_hugepage"), ("mmf", "26"),
    ("mmf-except-advised", "clr_hugepage"), ("mmf-except-advised", "26"),
    ("def-flags-clr", "26"), ("mmf-clr", "18"),
])
def test_clr_hugepage_einval_outside_clr_eras(era_id, advice):
    out = lines(ERAS[era_id], f"mmap 0 2M\nmadvise 0 2M hugepage\nmadvise 0 2M {advice}")
    assert field(out[-1], "ret") == "-EINVAL"
    assert vmas(out[-1]).split(":")[1] == "hg"


# In the -clr eras it clears both hg and nh, and the VMA merges with its plain neighbours.
@pytest.mark.parametrize("era_id, advice, e", [
    ("def-flags-clr", "clr_hugepage", "-"), ("def-flags-clr", "18", "-"),
    ("mmf-clr", "clr_hugepage", "0"), ("mmf-clr", "26", "0"),
])
def test_clr_hugepage_clears_and_merges(era_id, advice, e):
    out = lines(ERAS[era_id], f"""\
        arena 3
        mmap 0 6M
        madvise 2M 2M hugepage
        madvise 2M 2M {advice}
        madvise 2M 2M nohugepage
        madvise 2M 2M {advice}
        madvise 0 6M {advice}
    """)
    one = f"0x0-0x600000:-:{e}:0"
    three_nh = f"0x0-0x200000:-:{e}:0,0x200000-0x400000:nh:{e}:0,0x400000-0x600000:-:{e}:0"
    assert [field(s, "ret") for s in out] == ["0"] * 6
    assert [vmas(s) for s in out[2:]] == [one, three_nh, one, one]


# The CRIU use case in def-flags-clr: the prctl's left-over nh can be cleared (spec §3.4).
def test_clr_hugepage_undoes_def_flags_nh():
    out = lines(ERAS["def-flags-clr"], """\
        prctl_set 1 0 0 0
        mmap 0 2M
        prctl_set 0 0 0 0
        madvise 0 2M clr_hugepage
    """)
    assert out[2] == "ret=0 get=0 thp=- vmas=0x0-0x200000:nh:-:0"
    assert out[3] == "ret=0 get=0 thp=- vmas=0x0-0x200000:-:-:0"


# --- 5. the seed scenario (spec §2.1, §2.2, seed-thread.md) ---------------------------------

SEED = "prctl_set 1 0 0 0\nmmap 0 2M\nprctl_set 0 0 0 0\n"


@pytest.mark.parametrize("era_id, want", [
    ("def-flags", "ret=0 get=0 thp=- vmas=0x0-0x200000:nh:-:0"),
    ("def-flags-clr", "ret=0 get=0 thp=- vmas=0x0-0x200000:nh:-:0"),
    ("mmf", "ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:0"),
    ("mmf-clr", "ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:0"),
    ("mmf-except-advised", "ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:0"),
])
def test_seed_prctl_leaves_nh_only_in_def_flags(era_id, want):
    assert lines(ERAS[era_id], SEED)[-1] == want


# spec §2.1 "Side effect on VMA merging": a VMA created while the def-flags prctl is set does
# not merge with its pre-prctl neighbour; in the MMF eras nothing differs.
@pytest.mark.parametrize("era_id, want", [
    ("def-flags", "0x0-0x200000:-:-:0,0x200000-0x400000:nh:-:0"),
    ("mmf", "0x0-0x400000:-:0:0"),
    ("mmf-except-advised", "0x0-0x400000:-:0:0"),
])
def test_seed_def_flags_blocks_merge(era_id, want):
    out = lines(ERAS[era_id], "arena 2\nmmap 0 2M\nprctl_set 1 0 0 0\nmmap 2M 2M")
    assert vmas(out[-1]) == want


# def-flags: MADV_HUGEPAGE overrides the def_flags nh and THP works (spec §2.1 "not a master
# override"); mmf: the prctl is a master override (spec §2.2): THPeligible 0, no THP on fault.
def test_seed_hugepage_overrides_def_flags_nh():
    out = lines(E412, SEED.replace("prctl_set 0 0 0 0\n", "") + "madvise 0 2M hugepage\n"
                "touch 0 2M\n")
    assert vmas(out[1]) == "0x0-0x200000:nh:-:0"
    assert out[2] == "ret=0 get=1 thp=- vmas=0x0-0x200000:hg:-:0"
    assert out[3] == "ret=0 get=1 thp=- vmas=0x0-0x200000:hg:-:2048"


@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
def test_seed_prctl_master_override(era_id):
    out = lines(ERAS[era_id], """\
        prctl_set 1 0 0 0
        mmap 0 2M
        madvise 0 2M hugepage
        touch 0 4K
        prctl_set 0 0 0 0
    """)
    assert out[2] == "ret=0 get=1 thp=0 vmas=0x0-0x200000:hg:0:0"
    assert out[3] == "ret=0 get=1 thp=0 vmas=0x0-0x200000:hg:0:0"  # no THP on fault
    assert out[4] == "ret=0 get=0 thp=1 vmas=0x0-0x200000:hg:1:0"  # existing PTE table stays


# Immediate effect (spec §2.2): setting the prctl on an existing hg VMA stops THP at the next
# fault; THPs that already exist are not split.
@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
def test_prctl_immediate_keeps_existing_thp(era_id):
    out = lines(ERAS[era_id], """\
        arena 2
        mmap 0 4M
        madvise 0 4M hugepage
        touch 0 4K
        prctl_set 1 0 0 0
        touch 2M 4K
    """)
    assert out[-1] == "ret=0 get=1 thp=0 vmas=0x0-0x400000:hg:0:2048"


# --- 6. MADV_COLLAPSE errno table (spec §3.3, kf §1) ----------------------------------------

UFFD_HOLES = "mmap 0 2M\ntouch 0 1M\nuffd_register 0 2M {mode}\nmadvise 0 2M collapse\n"


@pytest.mark.parametrize("era, ret, e", [
    (E618, "-EBUSY", "0"), (E612, "-EBUSY", "0"), (E61, "-EINVAL", "0"),
    (ERAS["mmf-clr"], "-EBUSY", "0"),
])
@pytest.mark.parametrize("mode, flags", [("missing", "um"), ("wp", "uw"),
                                         ("missing+wp", "um+uw")])
def test_collapse_uffd_holes(era, ret, e, mode, flags):
    out = lines(era, UFFD_HOLES.format(mode=mode))
    assert out[-1] == f"ret={ret} get=0 thp=1 vmas=0x0-0x200000:{flags}:{e}:0"


# spec §7 [exp]: after UFFDIO_COPY of the rest, the armed range collapses (0, 2048 kB).
@pytest.mark.parametrize("era", [E618, E612, E61], ids=["6.18", "6.12", "6.1"])
def test_collapse_uffd_fully_populated(era):
    out = lines(era, UFFD_HOLES.format(mode="missing") + "uffd_copy 1M 1M\nmadvise 0 2M collapse")
    assert out[-2] == "ret=0 get=0 thp=1 vmas=0x0-0x200000:um:0:0"
    assert out[-1] == "ret=0 get=0 thp=1 vmas=0x0-0x200000:um:0:2048"


# kf §1.5 (a) E1/E1b: a never-touched PMD aborts the loop with EINVAL; PMDs before it stay
# collapsed, PMDs after it are not tried.
E1 = "arena 4\nmmap 0 8M\ntouch 0 4K\ntouch 4M 4K\n"


@pytest.mark.parametrize("era", [E618, E612, E61], ids=["6.18", "6.12", "6.1"])
@pytest.mark.parametrize("steps, want", [
    (["madvise 0 8M collapse"], [("-EINVAL", "2048")]),  # E1
    (["madvise 2M 6M collapse"], [("-EINVAL", "0")]),  # E1b
    (["madvise 0 8M collapse", "madvise 4M 2M collapse"], [("-EINVAL", "2048"), ("0", "4096")]),
    (["madvise 0 2M collapse", "madvise 4M 2M collapse"], [("0", "2048"), ("0", "4096")]),
])
def test_collapse_untouched_pmd_aborts(era, steps, want):
    out = lines(era, E1 + "\n".join(steps))[3:]  # after mmap, touch, touch
    got = [(field(s, "ret"), vmas(s).split(":")[3]) for s in out]
    assert [vmas(s).split(":")[0] for s in out] == ["0x0-0x800000"] * len(out)
    assert got == want


COLLAPSE_CASES = [
    # name, script, {era: (ret, vmas after)}
    ("already THP", "mmap 0 2M\nmadvise 0 2M hugepage\ntouch 0 4K\nmadvise 0 2M collapse",
     {"6.18": ("0", "0x0-0x200000:hg:1:2048"), "6.12": ("0", "0x0-0x200000:hg:1:2048"),
      "6.1": ("0", "0x0-0x200000:hg:1:2048")}),
    ("nh", "mmap 0 2M\ntouch 0 4K\nmadvise 0 2M nohugepage\nmadvise 0 2M collapse",
     {"6.18": ("-EINVAL", "0x0-0x200000:nh:0:0"), "6.12": ("-EINVAL", "0x0-0x200000:nh:0:0"),
      "6.1": ("-EINVAL", "0x0-0x200000:nh:0:0")}),
    ("except-advised allows", "prctl_set 1 2 0 0\nmmap 0 2M\ntouch 0 4K\nmadvise 0 2M collapse",
     {"6.18": ("0", "0x0-0x200000:-:0:2048")}),
    ("completely refuses", "prctl_set 1 0 0 0\nmmap 0 2M\ntouch 0 4K\nmadvise 0 2M collapse",
     {"6.18": ("-EINVAL", "0x0-0x200000:-:0:0"), "6.12": ("-EINVAL", "0x0-0x200000:-:0:0"),
      "6.1": ("-EINVAL", "0x0-0x200000:-:0:0")}),
    ("no anon_vma", "mmap 0 2M\nmadvise 0 2M collapse",
     {"6.18": ("-EINVAL", "0x0-0x200000:-:0:0"), "6.12": ("-EINVAL", "0x0-0x200000:-:0:0"),
      "6.1": ("-EINVAL", "0x0-0x200000:-:0:0")}),
    ("no anon_vma, hg", "mmap 0 2M\nmadvise 0 2M hugepage\nmadvise 0 2M collapse",
     {"6.18": ("-EINVAL", "0x0-0x200000:hg:1:0"), "6.12": ("-EINVAL", "0x0-0x200000:hg:1:0")}),
    ("1 MiB VMA", "mmap 0 1M\ntouch 0 4K\nmadvise 0 1M collapse",
     {"6.18": ("-EINVAL", "0x0-0x100000:-:0:0"), "6.12": ("-EINVAL", "0x0-0x100000:-:0:0"),
      "6.1": ("-EINVAL", "0x0-0x100000:-:0:0")}),
    # kf §1.2: clipped range strictly inside one PMD -> EINVAL (unsigned underflow); touching a
    # PMD boundary without a whole PMD -> 0, nothing collapsed
    ("[4K,8K)", "mmap 0 2M\ntouch 0 4K\nmadvise 4K 4K collapse",
     {"6.18": ("-EINVAL", "0x0-0x200000:-:0:0"), "6.12": ("-EINVAL", "0x0-0x200000:-:0:0")}),
    ("[4K,2M)", "mmap 0 2M\ntouch 0 4K\nmadvise 4K 2044K collapse",
     {"6.18": ("0", "0x0-0x200000:-:0:0"), "6.12": ("0", "0x0-0x200000:-:0:0")}),
    ("[0,1M)", "mmap 0 2M\ntouch 0 4K\nmadvise 0 1M collapse",
     {"6.18": ("0", "0x0-0x200000:-:0:0"), "6.12": ("0", "0x0-0x200000:-:0:0")}),
    ("[1M,3M)", "mmap 0 4M\ntouch 0 4K\ntouch 2M 4K\nmadvise 1M 2M collapse",
     {"6.18": ("0", "0x0-0x400000:-:0:0"), "6.12": ("0", "0x0-0x400000:-:0:0")}),
    ("[4K,2M+8K)", "mmap 0 4M\ntouch 0 4K\ntouch 2M 4K\nmadvise 4K 2056K collapse",
     {"6.18": ("0", "0x0-0x400000:-:0:0"), "6.12": ("0", "0x0-0x400000:-:0:0")}),
    # kf §2 [exp]: [full][hole][full] -> both collapsed, ENOMEM
    ("hole between", "arena 3\nmmap 0 2M\nmmap 4M 2M\ntouch 0 4K\ntouch 4M 4K\n"
     "madvise 0 6M collapse",
     {"6.18": ("-ENOMEM", "0x0-0x200000:-:0:2048,0x400000-0x600000:-:0:2048"),
      "6.12": ("-ENOMEM", "0x0-0x200000:-:0:2048,0x400000-0x600000:-:0:2048")}),
    # kf §2: the walk stops at the first VMA that fails (no anon_vma), the next is not tried
    ("first VMA fails", "mmap 0 4M\nmadvise 0 2M hugepage\ntouch 2M 4K\nmadvise 0 4M collapse",
     {"6.18": ("-EINVAL", "0x0-0x200000:hg:1:0,0x200000-0x400000:-:0:0"),
      "6.12": ("-EINVAL", "0x0-0x200000:hg:1:0,0x200000-0x400000:-:0:0")}),
    # spec §3.3: unmapped range -> ENOMEM
    ("unmapped", "mmap 0 2M\nmadvise 2M 2M collapse",
     {"6.18": ("-ENOMEM", "0x0-0x200000:-:0:0"), "6.12": ("-ENOMEM", "0x0-0x200000:-:0:0")}),
    # spec §3.3 [exp]: a PMD with a single populated page collapses (max_ptes_none ignored)
    ("single page", "mmap 0 2M\ntouch 1M 4K\nmadvise 0 2M collapse",
     {"6.18": ("0", "0x0-0x200000:-:0:2048"), "6.12": ("0", "0x0-0x200000:-:0:2048")}),
]
ERA_BY = {"6.18": E618, "6.12": E612, "6.1": E61}


@pytest.mark.parametrize("name, script, ver, want", [
    (n, s, v, w) for n, s, by in COLLAPSE_CASES for v, w in by.items()],
    ids=[f"{n}-{v}" for n, _, by in COLLAPSE_CASES for v in by])
def test_collapse_errno(name, script, ver, want):
    out = lines(ERA_BY[ver], "arena 2\n" + script if "arena" not in script else script)
    assert (field(out[-1], "ret"), vmas(out[-1])) == want


# MADV_COLLAPSE does not exist in 4.12: invalid advice -> EINVAL, before the len-0 shortcut.
@pytest.mark.parametrize("era_id", ["def-flags", "def-flags-clr"])
@pytest.mark.parametrize("step", ["madvise 0 2M collapse", "madvise 0 0 collapse",
                                  "madvise 2M 2M collapse"])
def test_collapse_invalid_in_def_flags(era_id, step):
    out = lines(ERAS[era_id], f"arena 2\nmmap 0 2M\ntouch 0 4K\n{step}")
    assert out[-1] == "ret=-EINVAL get=0 thp=- vmas=0x0-0x200000:-:-:0"


# --- 7. userfaultfd (spec §7; kf §6) --------------------------------------------------------

@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
@pytest.mark.parametrize("script, want_rets, want_vmas", [
    # no VMA in range -> EINVAL; holes are fine
    ("mmap 0 2M\nuffd_register 2M 2M missing", ["0", "-EINVAL"], "0x0-0x200000:-:0:0"),
    ("mmap 0 2M\nuffd_unregister 2M 2M", ["0", "-EINVAL"], "0x0-0x200000:-:0:0"),
    ("mmap 0 2M\nmmap 4M 2M\nuffd_register 0 6M missing", ["0", "0", "0"],
     "0x0-0x200000:um:0:0,0x400000-0x600000:um:0:0"),
    ("mmap 0 2M\nmmap 4M 2M\nuffd_register 0 6M missing\nuffd_unregister 0 6M",
     ["0", "0", "0", "0"], "0x0-0x200000:-:0:0,0x400000-0x600000:-:0:0"),
    # re-register: a subset of the current mode is a no-op, another mode replaces
    ("mmap 0 2M\nuffd_register 0 2M missing+wp\nuffd_register 0 2M missing", ["0"] * 3,
     "0x0-0x200000:um+uw:0:0"),
    ("mmap 0 2M\nuffd_register 0 2M missing+wp\nuffd_register 0 2M wp", ["0"] * 3,
     "0x0-0x200000:um+uw:0:0"),
    ("mmap 0 2M\nuffd_register 0 2M missing\nuffd_register 0 2M wp", ["0"] * 3,
     "0x0-0x200000:uw:0:0"),
    ("mmap 0 2M\nuffd_register 0 2M wp\nuffd_register 0 2M missing", ["0"] * 3,
     "0x0-0x200000:um:0:0"),
    ("mmap 0 2M\nuffd_register 0 2M missing\nuffd_register 0 2M missing+wp", ["0"] * 3,
     "0x0-0x200000:um+uw:0:0"),
    # registration splits to the range and merges (kf §6.1 step 7)
    ("mmap 0 4M\nuffd_register 1M 2M missing\nuffd_register 0 4M missing", ["0"] * 3,
     "0x0-0x400000:um:0:0"),
])
def test_uffd_register(era_id, script, want_rets, want_vmas):
    out = lines(ERAS[era_id], "arena 3\n" + script)
    assert [field(s, "ret") for s in out] == want_rets
    assert vmas(out[-1]) == want_vmas


@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
@pytest.mark.parametrize("name, script, want", [
    ("into THP", "mmap 0 2M\nmadvise 0 2M hugepage\ntouch 0 4K\nuffd_register 0 2M missing\n"
     "uffd_copy 1M 4K", "-EEXIST"),
    ("onto present page", "mmap 0 2M\ntouch 0 4K\nuffd_register 0 2M missing\nuffd_copy 0 4K",
     "-EEXIST"),
    ("partial", "mmap 0 2M\ntouch 4K 4K\nuffd_register 0 2M missing\nuffd_copy 0 16K",
     "-EAGAIN"),
    ("unregistered", "mmap 0 2M\nuffd_copy 0 4K", "-ENOENT"),
    ("outside any VMA", "mmap 0 2M\nuffd_register 0 2M missing\nuffd_copy 2M 4K", "-ENOENT"),
    ("crossing the VMA end", "mmap 0 4M\nuffd_register 0 2M missing\nuffd_copy 0x1ff000 8K",
     "-ENOENT"),
    ("after unregister", "mmap 0 2M\nuffd_register 0 2M missing\nuffd_unregister 0 2M\n"
     "uffd_copy 0 4K", "-ENOENT"),
    ("WP-only registration", "mmap 0 2M\nuffd_register 0 2M wp\nuffd_copy 0 4K", "0"),
    ("missing registration", "mmap 0 2M\nuffd_register 0 2M missing\nuffd_copy 0 8K", "0"),
])
def test_uffd_copy(era_id, name, script, want):
    assert field(lines(ERAS[era_id], "arena 2\n" + script)[-1], "ret") == want


# Partial copy: pages before the present one were copied, the ones after were not (kf §6.4).
@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
def test_uffd_copy_partial_state(era_id):
    out = rets(ERAS[era_id], """\
        mmap 0 2M
        touch 4K 4K
        uffd_register 0 2M missing
        uffd_copy 0 16K
        uffd_copy 0 4K
        uffd_copy 8K 8K
        touch 0 16K
        touch 16K 4K
    """)
    assert out == ["0", "0", "0", "-EAGAIN", "-EEXIST", "0", "0", "SIGBUS"]


# The seed's hazard (spec §7 "CRIU hazard reproduced deterministically" [exp]) and its fix.
@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
def test_uffd_hazard_collapse_then_register(era_id):
    out = lines(ERAS[era_id], """\
        mmap 0 2M
        touch 0 1M
        madvise 0 2M collapse
        uffd_register 0 2M missing
        uffd_copy 1M 4K
        touch 1M 4K
    """)
    assert out[2] == "ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:2048"
    assert out[3] == "ret=0 get=0 thp=1 vmas=0x0-0x200000:um:0:2048"
    assert field(out[4], "ret") == "-EEXIST"
    assert field(out[5], "ret") == "0"  # no fault is ever delivered


@pytest.mark.parametrize("era, collapse", [(E618, "-EBUSY"), (E612, "-EBUSY"), (E61, "-EINVAL")],
                         ids=["6.18", "6.12", "6.1"])
def test_uffd_hazard_fix_register_first(era, collapse):
    out = lines(era, """\
        mmap 0 2M
        touch 0 1M
        uffd_register 0 2M missing
        madvise 0 2M collapse
        uffd_copy 1M 4K
        touch 1M 8K
    """)
    assert [field(s, "ret") for s in out] == ["0", "0", "0", collapse, "0", "SIGBUS"]
    assert vmas(out[-1]) == "0x0-0x200000:um:0:0"


# The seed's other fix (spec §7): the prctl during population stops the collapse (EINVAL);
# after registration and clearing the prctl, UFFDIO_COPY works.
@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
def test_uffd_hazard_fix_prctl(era_id):
    out = rets(ERAS[era_id], """\
        prctl_set 1 0 0 0
        mmap 0 2M
        touch 0 1M
        madvise 0 2M collapse
        uffd_register 0 2M missing
        prctl_set 0 0 0 0
        uffd_copy 1M 4K
    """)
    assert out == ["0", "0", "0", "-EINVAL", "0", "0", "0"]


@pytest.mark.parametrize("era_id", ["def-flags", "mmf", "mmf-except-advised"])
@pytest.mark.parametrize("script, want", [
    ("mmap 0 2M\nuffd_register 0 2M missing\ntouch 0 4K", "SIGBUS"),
    ("mmap 0 2M\nmadvise 0 2M hugepage\nuffd_register 0 2M missing\ntouch 0 4K", "SIGBUS"),
    ("mmap 0 2M\ntouch 2M 4K", "SIGSEGV"),
    ("mmap 0 2M\ntouch 0x1ff000 8K", "SIGSEGV"),
    ("mmap 0 2M\nuffd_register 0 2M wp\ntouch 0 4K", "0"),
    ("mmap 0 2M\nuffd_register 0 2M missing\nuffd_close\ntouch 0 4K", "0"),
])
def test_touch_signals(era_id, script, want):
    out = lines(ERAS[era_id], "arena 2\n" + script)
    assert field(out[-1], "ret") == want


# A MISSING fault never allocates a THP; a WP-only VMA faults normally (kf §5.1 [exp]:
# WP-only + hg -> AnonHugePages 2048; without hg under madvise -> 4 KiB).
@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
@pytest.mark.parametrize("mode, hg, want", [
    ("wp", True, "0x0-0x200000:hg+uw:1:2048"),
    ("wp", False, "0x0-0x200000:uw:0:0"),
    ("missing", True, "0x0-0x200000:hg+um:1:0"),
])
def test_uffd_fault_thp(era_id, mode, hg, want):
    adv = "madvise 0 2M hugepage\n" if hg else ""
    out = lines(ERAS[era_id], f"mmap 0 2M\n{adv}uffd_register 0 2M {mode}\ntouch 0 4K")
    assert vmas(out[-1]) == want


# --- 8. fork and execve (spec §2.1-2.3, §7; kf §7) ------------------------------------------

FORK = """\
    arena 4
    prctl_set {prctl}
    mmap 0 8M
    madvise 0 2M hugepage
    madvise 2M 2M nohugepage
    uffd_register 4M 2M missing
    touch 0 4K
    fork
"""


@pytest.mark.parametrize("era_id, prctl, want", [
    ("mmf-except-advised", "0 0 0 0",
     "ret=0 get=0 thp=1 vmas=0x0-0x200000:hg:1:2048,0x200000-0x400000:nh:0:0,"
     "0x400000-0x600000:-:0:0,0x600000-0x800000:-:0:0"),
    ("mmf-except-advised", "1 2 0 0",
     "ret=0 get=3 thp=1 vmas=0x0-0x200000:hg:1:2048,0x200000-0x400000:nh:0:0,"
     "0x400000-0x600000:-:0:0,0x600000-0x800000:-:0:0"),
    ("mmf", "0 0 0 0",
     "ret=0 get=0 thp=1 vmas=0x0-0x200000:hg:1:2048,0x200000-0x400000:nh:0:0,"
     "0x400000-0x600000:-:0:0,0x600000-0x800000:-:0:0"),
    ("def-flags", "0 0 0 0",
     "ret=0 get=0 thp=- vmas=0x0-0x200000:hg:-:2048,0x200000-0x400000:nh:-:0,"
     "0x400000-0x600000:-:-:0,0x600000-0x800000:-:-:0"),
])
def test_fork_child(era_id, prctl, want):
    out = outcomes(ERAS[era_id], FORK.format(prctl=prctl))
    parent, child = out[-1].obs.text(), out[-1].child.text()
    assert child == want
    # the parent keeps its uffd registration and the same process-level values
    assert "0x400000-0x600000:um:" in parent
    assert (field(parent, "get"), field(parent, "thp")) == (field(child, "get"),
                                                            field(child, "thp"))


@pytest.mark.parametrize("era_id, prctl, get, thp", [
    ("mmf-except-advised", "1 0 0 0", "1", "0"),
    ("mmf-except-advised", "1 2 0 0", "3", "1"),
    ("mmf", "1 0 0 0", "1", "0"),
    ("def-flags", "1 0 0 0", "1", "-"),
])
def test_fork_child_prctl(era_id, prctl, get, thp):
    out = outcomes(ERAS[era_id], f"prctl_set {prctl}\nmmap 0 2M\nfork")
    c = out[-1].child.text()
    assert (field(c, "get"), field(c, "thp")) == (get, thp)
    # no master override in def-flags: the VMA made while set carries nh
    assert vmas(c).split(":")[1] == ("nh" if era_id == "def-flags" else "-")


@pytest.mark.parametrize("era_id, prctl, want_exec, want_mmap", [
    ("mmf-except-advised", "1 0 0 0", "ret=0 get=1 thp=0 vmas=",
     "ret=0 get=1 thp=0 vmas=0x0-0x200000:-:0:0"),
    ("mmf-except-advised", "1 2 0 0", "ret=0 get=3 thp=1 vmas=",
     "ret=0 get=3 thp=1 vmas=0x0-0x200000:-:0:0"),
    ("mmf", "1 0 0 0", "ret=0 get=1 thp=0 vmas=", "ret=0 get=1 thp=0 vmas=0x0-0x200000:-:0:0"),
    ("mmf", "0 0 0 0", "ret=0 get=0 thp=1 vmas=", "ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:0"),
    ("def-flags", "1 0 0 0", "ret=0 get=1 thp=- vmas=",
     "ret=0 get=1 thp=- vmas=0x0-0x200000:nh:-:0"),
    ("def-flags", "0 0 0 0", "ret=0 get=0 thp=- vmas=",
     "ret=0 get=0 thp=- vmas=0x0-0x200000:-:-:0"),
])
def test_execve(era_id, prctl, want_exec, want_mmap):
    out = lines(ERAS[era_id], f"""\
        prctl_set {prctl}
        mmap 0 4M
        madvise 0 2M hugepage
        touch 0 4K
        execve
        mmap 0 2M
    """)
    assert out[-2:] == [want_exec, want_mmap]


# def-flags: the inherited def_flags can be cleared after execve; VMAs made before keep nh.
def test_execve_def_flags_clear_after():
    out = lines(E412, """\
        prctl_set 1 0 0 0
        execve
        mmap 0 2M
        prctl_set 0 0 0 0
        mmap 2M 2M
    """)
    assert out[-1] == "ret=0 get=0 thp=- vmas=0x0-0x200000:nh:-:0,0x200000-0x400000:-:-:0"


# --- 9. anon_vma merge direction (kf §3.2, §15.5) -------------------------------------------

MERGE3 = """\
    arena 3
    mmap 0 6M
    madvise 2M 2M hugepage
    touch 2M 4K
    madvise {range} nohugepage
"""


# kf §3.2 [exp 6.18]: 3 PMDs, hg on the middle, write only the middle, MADV_NOHUGEPAGE over
# all -> ONE VMA on 6.18.
def test_merge_direction_618_one_vma():
    out = lines(E618, MERGE3.format(range="0 6M"))
    assert out[2] == ("ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:0,0x200000-0x400000:hg:1:2048,"
                      "0x400000-0x600000:-:0:0")
    assert out[3] == "ret=0 get=0 thp=1 vmas=0x0-0x600000:nh:0:2048"


# The written middle VMA does not merge into its unwritten left neighbour before 6.16, and
# does from 6.16 on.  Range [0,4M): the right neighbour is not touched, so the only question
# is that one merge.
@pytest.mark.parametrize("era_id, want", [
    ("mmf", "0x0-0x200000:nh:0:0,0x200000-0x400000:nh:0:2048,0x400000-0x600000:-:0:0"),
    ("mmf-clr", "0x0-0x200000:nh:0:0,0x200000-0x400000:nh:0:2048,0x400000-0x600000:-:0:0"),
    ("mmf-except-advised", "0x0-0x400000:nh:0:2048,0x400000-0x600000:-:0:0"),
])
def test_merge_direction_written_into_unwritten(era_id, want):
    assert vmas(lines(ERAS[era_id], MERGE3.format(range="0 4M"))[-1]) == want


# An unwritten VMA merges into a written one in both (kf §3.2 6.12 rule: "modified VMA
# unfaulted + neighbour faulted and not a fork child -> mergeable").
@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
def test_merge_direction_unwritten_into_written(era_id):
    out = lines(ERAS[era_id], MERGE3.format(range="2M 4M"))
    assert vmas(out[-1]) == "0x0-0x200000:-:0:0,0x200000-0x600000:nh:0:2048"


# kf §3.2's parenthesis says the whole-range case "stays 3 VMAs" on 6.12.  6.12 mm/vma.c
# l.35-45, l.120-125 (is_mergeable_anon_vma via can_vma_merge_after) let the unwritten right
# VMA, processed last, merge into the written middle: two VMAs.  To be settled on a 6.12 VM.
def test_merge_direction_612_whole_range_source_reading():
    out = lines(E612, MERGE3.format(range="0 6M"))
    assert vmas(out[-1]) == "0x0-0x200000:nh:0:0,0x200000-0x600000:nh:0:2048"


# kf §3.2 [exp 6.18 G2]: neighbours written after the middle have their own anon_vmas: no
# merge even with equal flags, in either era.
@pytest.mark.parametrize("era_id", ["mmf", "mmf-except-advised"])
def test_no_merge_different_anon_vmas(era_id):
    out = lines(ERAS[era_id], """\
        arena 3
        mmap 0 6M
        madvise 2M 2M hugepage
        touch 2M 4K
        touch 0 4K
        touch 4M 4K
        madvise 0 6M nohugepage
    """)
    assert vmas(out[-1]) == ("0x0-0x200000:nh:0:0,0x200000-0x400000:nh:0:2048,"
                             "0x400000-0x600000:nh:0:0")


# Debian 6.1.192 in the test VM (conformance/vm/README.md findings 4-6, minimised scripts and
# the kernel's last line), and 6.12 for contrast.  4: a failed UFFDIO_COPY prepares no
# anon_vma on 6.1, so the later MADV_COLLAPSE finds none (EINVAL).  5: a uffd range that starts
# inside its VMA does not merge with the next one on 6.1.  6: a new VMA between an unfaulted
# prev and a faulted next merges into next only on 6.1.
@pytest.mark.parametrize("text, want61, want612", [
    ("arena 2\nmmap 0 4M\nuffd_copy 1M 8K\nmadvise 1M 2M collapse",
     "ret=-EINVAL get=0 thp=1 vmas=0x0-0x400000:-:0:0",
     "ret=0 get=0 thp=1 vmas=0x0-0x400000:-:0:0"),
    ("arena 2\nmmap 0 2M\nuffd_register 2044K 8K missing\nuffd_register 1M 1M missing",
     "ret=0 get=0 thp=1 vmas=0x0-0x100000:-:0:0,0x100000-0x1ff000:um:0:0,"
     "0x1ff000-0x200000:um:0:0",
     "ret=0 get=0 thp=1 vmas=0x0-0x100000:-:0:0,0x100000-0x200000:um:0:0"),
    ("arena 2\nmmap 0 4M\nmadvise 1M 1M hugepage\ntouch 2044K 8K\nmmap 1M 1M",
     "ret=0 get=0 thp=1 vmas=0x0-0x100000:-:0:0,0x100000-0x400000:-:0:0",
     "ret=0 get=0 thp=1 vmas=0x0-0x400000:-:0:0"),
], ids=["uffd_copy-anon_vma", "uffd-pgoff", "mmap-next-first"])
def test_debian_61_merge_and_anon_vma_quirks(text, want61, want612):
    assert lines(E61, text)[-1] == want61
    assert lines(E612, text)[-1] == want612


# 6.1 mmap_region(): prev and next both with other anon_vmas: the new VMA takes next; 6.12's
# vma_merge_new_range() takes prev.  Same anon_vma on both sides: all three merge in both.
@pytest.mark.parametrize("era, want", [
    (E61, "0x0-0x200000:-:0:0,0x200000-0x600000:-:0:0"),
    (E612, "0x0-0x400000:-:0:0,0x400000-0x600000:-:0:0"),
])
def test_mmap_between_two_anon_vmas(era, want):
    text = "arena 3\nmmap 0 2M\ntouch 0 4K\nmmap 4M 2M\ntouch 4M 4K\nmmap 2M 2M"
    assert vmas(lines(era, text)[-1]) == want


def test_debian_61_era_features():
    assert (E61.uffd_merge_pgoff, E61.uffd_copy_prepares_anon_first,
            E61.mmap_merge_prev_first) == (False, False, False)
    assert (E612.uffd_merge_pgoff, E612.uffd_copy_prepares_anon_first,
            E612.mmap_merge_prev_first) == (True, True, True)
    assert [ERAS["mmf"].at(v).uffd_merge_pgoff for v in ("6.3", "6.4")] == [False, True]
    assert [ERAS["mmf"].at(v).uffd_copy_prepares_anon_first for v in ("6.8", "6.9")] == [
        False, True]
    assert [ERAS["mmf"].at(v).mmap_merge_prev_first for v in ("6.11", "6.12")] == [False, True]


# --- 10. argument checks and parse errors (SCRIPT.md; kf §2, §4, §6) ------------------------

@pytest.mark.parametrize("era_id", ["def-flags", "mmf", "mmf-except-advised"])
@pytest.mark.parametrize("step, want", [
    ("mmap 0x800 4K", "-EINVAL"),
    ("mmap 0 0", "-EINVAL"),
    ("mmap 2M 0", "-EINVAL"),
    ("munmap 0 0", "-EINVAL"),
    ("munmap 0x800 4K", "-EINVAL"),
    ("munmap 2M 2M", "0"),  # a hole: no error
    ("uffd_register 0 0 missing", "-EINVAL"),
    ("uffd_register 0x800 4K missing", "-EINVAL"),
    ("uffd_register 0 0x1800 missing", "-EINVAL"),  # len not a page multiple
    ("uffd_unregister 0 0", "-EINVAL"),
    ("uffd_copy 0 0", "-EINVAL"),
    ("uffd_copy 0x800 4K", "-EINVAL"),
    ("touch 0 0", "0"),
])
def test_argument_checks(era_id, step, want):
    out = lines(ERAS[era_id], f"arena 2\nmmap 0 2M\n{step}")
    assert field(out[-1], "ret") == want
    if want != "0" or step.startswith("touch"):
        assert out[-1].split(" vmas=")[1] == out[0].split(" vmas=")[1]  # nothing changed


@pytest.mark.parametrize("script", [
    "arena 1\nmmap 0 4M",
    "arena 1\nmmap 0 2M\ntouch 2M 4K",
    "arena 1\nmmap 0x1ff000 8K",
    "arena 2\nmadvise 0 6M hugepage",
    "arena 2\nuffd_register 2M 4M missing",
    "arena 2\nmunmap 4M 4K",
])
def test_range_leaving_arena(script):
    with pytest.raises(ScriptError, match=r"^line [23]: range .* leaves the arena"):
        parse_script(script)


@pytest.mark.parametrize("script, line, msg", [
    ("mmap 0 2M\nfrobnicate 0 2M", 2, "unknown step"),
    ("mmap 0 2M\ntouch 0 2Q", 2, "bad size"),
    ("# c\n\nmmap 0 2X", 3, "bad size"),
    ("mmap 0 2M\nmadvise 0 2M", 2, "takes 3 arguments"),
    ("mmap 0 2M\nmadvise 0 2M hugepag", 2, "bad number"),
    ("uffd_register 0 2M minor", 1, "bad uffd mode"),
    ("prctl_set 1 0 0 0 0", 1, "at most 4"),
    ("prctl_set x", 1, "bad number"),
    ("sysfs sometimes", 1, "sysfs takes"),
    ("fork 1", 1, "takes no arguments"),
    ("mmap 0 2M\narena 2", 2, "arena comes once, before the first step"),
    ("arena 1\narena 2", 2, "arena comes once"),
    ("arena 0", 1, r"out of range \(1\.\.64\)"),
    ("arena 65", 1, r"out of range \(1\.\.64\)"),
    ("khugepaged -5", 1, "out of range"),
    ("madvise 0 2M 99999999999999999999", 1, "out of range"),
])
def test_parse_errors(script, line, msg):
    with pytest.raises(ScriptError, match=rf"^line {line}: .*{msg}"):
        parse_script(script)


# --- 11. khugepaged registration, per call site (rules.khugepaged_enter_vma) ---------------
# MMF_VM_HUGEPAGE after the script.  6.1 and 6.12 from the Debian sources, 6.18 as observed on
# the live kernel (conformance/scenarios/khugepaged-*.vmf).  ";" separates steps.

def registered(era, text, sysfs="madvise"):
    script = parse_script(text.replace("; ", "\n"))
    st = empty_state(script.arena, SYSFS_MODES.index(sysfs))
    for sc in script.steps:
        st = run_syscall(era, st, sc).state
    return st.mm.registered


HG_COPIED = "mmap 0 2M; madvise 0 2M hugepage; uffd_register 0 2M missing; uffd_copy 0 4K"
DISABLED_TOUCHED = "prctl_set 1 0 0 0; mmap 0 4M; touch 0 4K"
HG_TOUCHED = ("prctl_set 1 0 0 0; mmap 0 4M; madvise 0 4M hugepage; touch 0 4K;"
              " prctl_set 0 0 0 0")
REGISTRATION = [
    # do_huge_pmd_anonymous_page(): THP fault; huge path handing over to userfaultfd (SIGBUS)
    ("THP fault", "mmap 0 2M; madvise 0 2M hugepage; touch 0 4K", "madvise", (T, T, T)),
    ("SIGBUS on the huge path", "mmap 0 2M; madvise 0 2M hugepage; uffd_register 0 2M missing;"
     " touch 0 4K", "madvise", (T, T, T)),
    ("SIGBUS on the PTE path", "mmap 0 2M; uffd_register 0 2M missing; touch 0 4K",
     "madvise", (F, F, F)),
    ("PTE fault, no hg", "mmap 0 2M; touch 0 4K", "madvise", (F, F, F)),
    ("PTE fault, no aligned PMD", "mmap 0 1M; madvise 0 1M hugepage; touch 0 4K", "madvise",
     (F, F, F)),
    # UFFDIO_COPY and MADV_COLLAPSE never register
    ("UFFDIO_COPY", HG_COPIED, "madvise", (F, F, F)),
    ("MADV_COLLAPSE", "mmap 0 2M; touch 0 4K; madvise 0 2M collapse", "madvise", (F, F, F)),
    # vma_merge() / vma_merge_existing_range(): the merged VMA, for uffd as for madvise
    ("unregister, no merge", f"{HG_COPIED}; uffd_unregister 0 2M", "madvise", (F, F, F)),
    ("unregister merges", f"{HG_TOUCHED}; uffd_register 0 2M missing; uffd_unregister 0 2M",
     "madvise", (T, T, T)),
    ("close merges", f"{HG_TOUCHED}; uffd_register 2M 2M missing; uffd_close", "madvise",
     (T, T, T)),
    # ... and a copied piece merges back into its unfaulted rest only from 6.16 (879bca0a2c4f)
    ("copied piece unregistered", "mmap 0 4M; madvise 0 4M hugepage; uffd_register 0 2M"
     " missing; uffd_copy 0 4K; uffd_unregister 0 2M", "madvise", (F, F, T)),
    ("register merges", "mmap 0 4M; madvise 0 4M hugepage; uffd_register 0 2M missing;"
     " uffd_copy 0 4K; uffd_register 2M 2M missing", "madvise", (T, T, T)),
    ("merge, no advice", f"{DISABLED_TOUCHED}; prctl_set 0 0 0 0; uffd_register 2M 2M missing;"
     " uffd_unregister 2M 2M", "always", (T, T, T)),
    ("nohugepage merge", f"{DISABLED_TOUCHED}; madvise 2M 2M nohugepage; prctl_set 0 0 0 0;"
     " madvise 0 2M nohugepage", "always", (F, F, F)),
    # mmap_region() vma_expand() / vma_merge_new_range(); a new VMA has no anon_vma
    ("mmap expands", "prctl_set 1 0 0 0; mmap 4M 2M; touch 4M 8K; prctl_set 0 0 0 0;"
     " mmap 6M 1M", "always", (T, T, T)),
    ("mmap, no merge", f"{DISABLED_TOUCHED}; prctl_set 0 0 0 0; mmap 6M 2M", "always",
     (F, F, F)),
    # hugepage_madvise() on the unsplit VMA (6.1, 6.18) or Debian 6.12 madvise_update_vma()
    ("hugepage on a sub-range", f"{DISABLED_TOUCHED}; prctl_set 0 0 0 0;"
     " madvise 3M 4K hugepage", "madvise", (T, F, T)),
    ("hugepage again", "prctl_set 1 0 0 0; mmap 0 2M; touch 0 4K; madvise 0 2M hugepage;"
     " prctl_set 0 0 0 0; madvise 0 2M hugepage", "madvise", (T, F, T)),
    ("hugepage, changed", f"{DISABLED_TOUCHED}; prctl_set 0 0 0 0; madvise 0 4M hugepage",
     "madvise", (T, T, T)),
    ("hugepage, no anon_vma", "mmap 0 2M; madvise 0 2M hugepage", "madvise", (F, F, F)),
    # no call site: clearing the prctl, exec (MMF_VM_HUGEPAGE is not in MMF_INIT_MASK)
    ("prctl cleared", f"{DISABLED_TOUCHED}; madvise 0 4M hugepage; prctl_set 0 0 0 0",
     "madvise", (F, F, F)),
    ("execve", "mmap 0 2M; madvise 0 2M hugepage; touch 0 4K; execve", "madvise", (F, F, F)),
]


@pytest.mark.parametrize("text, sysfs, want", [r[1:] for r in REGISTRATION],
                         ids=[r[0] for r in REGISTRATION])
def test_khugepaged_registration(text, sysfs, want):
    got = tuple(registered(e, "arena 4\n" + text, sysfs) for e in (E61, E612, E618))
    assert got == want


def test_khugepaged_registration_clr_merge():
    """MADV_CLR_HUGEPAGE registers only through a merge (the patch adds no call of its own)."""
    text = f"arena 2\n{DISABLED_TOUCHED}; madvise 2M 2M nohugepage; prctl_set 0 0 0 0; "
    assert registered(ERAS["mmf-clr"], text + "madvise 2M 2M clr_hugepage", "always") is True
    assert registered(ERAS["mmf-clr"], text + "madvise 3M 1M clr_hugepage", "always") is False
