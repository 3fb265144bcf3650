"""The backing theorems (proofs/backing.py): each verdict as expected, each premise able to
make its check vacuous, each counterexample replaying from its printed scripts to a state
that violates the statement, the lazy phase bringing every page, and the model's side of
`vmaflags vm criu` showing what real CRIU did (findings 3-5)."""
from __future__ import annotations

import pytest
import z3

from vmaflags.conformance.driver import parse_line
from vmaflags.conformance.vm import criu
from vmaflags.model import concrete
from vmaflags.model.backend import PY
from vmaflags.model.state import cells, empty_state
from vmaflags.model.syscalls import SYSFS_MODES, Khugepaged, parse_step
from vmaflags.proofs import backing
from vmaflags.proofs import engine as E
from vmaflags.proofs.command import era_of, work
from vmaflags.proofs.expected import EXPECTED
from vmaflags.proofs.theorems import THEOREMS, run_one

ROWS = [(t, p, e) for (t, p), rows in EXPECTED.items() if t in backing.CLAIMS for e in rows]


def clear():
    for f in (backing.backing_run, backing._assumptions, backing.dump_builder):
        f.cache_clear()
    concrete.clear_caches()


@pytest.fixture(autouse=True)
def fresh_runs():
    clear()
    yield
    clear()


def _scripts(cex: list[dict]) -> tuple[list, list, int, int]:
    steps = {p: [parse_step(d["syscall"]) for d in cex if d["process"] == p]
             for p in ("dump", "restore")}
    return steps["dump"], steps["restore"], SYSFS_MODES.index(cex[0]["sysfs"]), cex[0]["arena"]


def _states(era, steps, sysfs, blocks):
    st = empty_state(blocks, sysfs)
    out = []
    for sc in steps:
        r = concrete.run_syscall(era, st, sc)
        assert r.ret == 0, (sc.text(), r.ret)
        st = r.state
        out.append(st)
    return out


def test_every_backing_theorem_has_rows():
    assert {t for t, _, _ in ROWS} == set(backing.CLAIMS)
    assert {"proved", "refuted"} <= {EXPECTED[(t, p)][e][0] for t, p, e in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=[":".join(r) for r in ROWS])
def test_verdict_and_counterexample(row):
    """The expected verdict, fully quantified; a refutation's two scripts, run on the
    interpreter, reach a state that violates the statement (checked here on the printed
    scripts, with the statement's own predicate)."""
    (r,) = work([row])
    v = r.v
    assert v.verdict == r.expected, (v.note, v.vacuity)
    assert not v.vacuity and all(k == n for k, n in (c.split("/") for c in
                                                     v.quantified.values()))
    assert backing.CLAIMS[row[0]].premise in v.quantified
    assert (v.counterexample is not None) == (v.verdict == "refuted")
    if v.verdict != "refuted":
        return
    era, claim = era_of(row[2]), backing.CLAIMS[row[0]]
    dump_steps, steps, sysfs, blocks = _scripts(v.counterexample)
    extra = len(claim.observe)
    if extra:  # what makes it visible: the same steps after both scripts
        assert dump_steps[-extra:] == steps[-extra:] == list(claim.observe)
        dump_steps, steps = dump_steps[:-extra], steps[:-extra]
    dump = _states(era, dump_steps, sysfs, blocks)[-1]
    states = _states(era, steps, sysfs, blocks)
    assert any(claim.violated(PY, era, dump, st)
               for st in (states if claim.every_point else states[-1:])), v.note


def test_a_lost_registration_shows_in_a_khugepaged_scan():
    """criu-khugepaged-registered's counterexample ends with a khugepaged scan of both
    processes: the dumped one has a THP there, the restored one does not."""
    v = THEOREMS["criu-khugepaged-registered"].check(era_of("mmf"), "3.19-lazy")
    assert v.verdict == "refuted" and any(d.startswith("after a khugepaged scan, PMD")
                                          for d in v.difference), v.difference
    last = {d["process"]: parse_line("0 " + d["observation"])[1] for d in v.counterexample}
    ahp = {p: sum(v.anon_huge_kb for v in o.vmas) for p, o in last.items()}
    assert ahp["dump"] > ahp["restore"], ahp


# Each premise restricted away: the check must say it is vacuous.
RESTRICT = {
    "criu-thp-kept": lambda st: z3.And(*(z3.Not(b.thp) for b in st.blocks)),
    "criu-khugepaged-registered": lambda st: z3.Not(st.mm.registered),
    "criu-no-new-thp-in-nh": lambda st: z3.And(z3.Not(st.mm.disable), z3.Not(st.mm.except_adv),
                                               *(z3.Not(c.nh) for c in cells(st))),
}


@pytest.mark.parametrize("theorem", list(RESTRICT))
def test_without_its_premise_a_check_is_vacuous(monkeypatch, theorem):
    real = backing.dump_state

    def restricted(era, shp, backed=False):
        st, ok = real(era, shp, backed)
        return st, z3.And(ok, RESTRICT[theorem](st))

    monkeypatch.setattr(backing, "dump_state", restricted)
    v = run_one(THEOREMS[theorem], era_of("mmf-except-advised"), "3.19-plain")
    assert v.verdict == "unknown"
    assert f"{backing.CLAIMS[theorem].premise}: only 1 of 2 values occur" in v.vacuity


@pytest.mark.parametrize("protocol", ["3.5-lazy", "3.19-lazy-predump", "criu-fixed",
                                      "clr-2017"])
def test_the_lazy_phase_brings_every_dumped_page_and_unregisters(protocol):
    era = era_of("mmf-clr")
    b = backing.backing_run(era, protocol, backing.CRIU_SHAPE)
    facts, *_ = backing._assumptions(era, protocol, backing.CRIU_SHAPE)
    missing = z3.Or(*(z3.And(d.mapped, d.pop, z3.Not(e.pop))
                      for d, e in zip(cells(b.dump), cells(b.run.last))))
    armed = z3.Or(*(z3.Or(c.um, c.uw) for c in cells(b.run.last)))
    assert E.check(*facts, z3.Or(missing, armed))[0] == z3.unsat
    assert b.lazy_from < len(b.run.log)  # the copies and close are steps of the run


# --- the model's side of `vmaflags vm criu` -----------------------------------------------------

def _ahp(obs, start: int) -> int:
    """AnonHugePages (kB) of the VMA at `start` MiB."""
    return next(v.anon_huge_kb for v in obs.vmas if v.start == start << 20)


def _runs(case_name: str, release: str):
    case = next(c for c in criu.CASES if c.name == case_name)
    sysfs = SYSFS_MODES.index(case.sysfs)
    for mode in criu.MODES:
        p = criu.protocol_id(release, mode)
        yield mode, p, criu.model_run(era_of("mmf"), case, mode, p, sysfs)


@pytest.mark.parametrize("release", list(criu.RELEASES))
def test_vm_criu_cases_show_findings_3_and_4(release):
    """`madvise` case: the full hg VMA (0-2M) has a THP in the dump, 4 KiB pages after every
    restore (criu-thp-kept); plain and lazy-parent restores are on khugepaged's list, which
    collapses it again and the sparse hg VMA (6-8M) too; a lazy restore is not
    (criu-khugepaged-registered), and neither is ever collapsed."""
    for mode, p, mr in _runs("madvise", release):
        assert not mr.aborted
        assert _ahp(mr.steps[-1], 0) == 2048 and _ahp(mr.restored, 0) == 0, mode
        again = 0 if mode == "lazy" else 2048
        assert (_ahp(mr.final, 0), _ahp(mr.final, 6)) == (again, again), mode
        assert EXPECTED[("criu-thp-kept", p)]["mmf"][0] == "refuted"
        # lazy-parent keeps this dump on the list, not every dump (hg VMAs with lazy pages only)
        assert EXPECTED[("criu-khugepaged-registered", p)]["mmf"][0] == (
            "proved" if mode == "plain" else "refuted")


@pytest.mark.parametrize("release", list(criu.RELEASES))
def test_vm_criu_cases_show_finding_5(release):
    """`always` case: the nh VMA (2-4M) has no THP in the dump, and one after a plain restore
    (criu-no-new-thp-in-nh), none after a lazy one."""
    for mode, p, mr in _runs("always", release):
        assert _ahp(mr.steps[-1], 2) == 0
        assert _ahp(mr.restored, 2) == (2048 if mode == "plain" else 0), mode
        assert EXPECTED[("criu-no-new-thp-in-nh", p)]["mmf"][0] == (
            "refuted" if mode == "plain" else "proved")
