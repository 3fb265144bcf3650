"""The theorem catalogue: verdicts as expected, output that means what it says, and every
theorem able to fail.

Each mutation breaks one kernel rule (model/rules.py) or transition (model/step.py) the way a
wrong model would, and the theorem that is about it must change its verdict.
"""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
from typer.testing import CliRunner

from vmaflags.cli import app
from vmaflags.model import ERAS, concrete, rules
from vmaflags.model import step as S
from vmaflags.model.state import Flags
from vmaflags.model.backend import Z3
from vmaflags.model.syscalls import (MADV_COLLAPSE, MADV_NOHUGEPAGE, PMD_PAGES, STEPS, Madvise,
                                     Mmap, Step, UffdRegister, parse_step)
from vmaflags.proofs import engine as E
from vmaflags.proofs import backing, contract, restore, states
from vmaflags.proofs import theorems as T
from vmaflags.proofs.command import WIDTH, era_of, obligations, work
from vmaflags.proofs.expected import EXPECTED
from vmaflags.proofs.protocols import _criu_fixed

METHOD = re.compile(r"(induction|one-step|bounded) \[(\d+ steps, )?\d+x\d+\]|rule-level"
                    r"|unbounded \(.+\)")


def clear_caches():
    """Symbolic runs and memoised concrete steps come from the (maybe mutated) rules."""
    restore.restore_run.cache_clear()
    contract.any_step.cache_clear()
    for f in (backing.backing_run, backing._assumptions, backing.dump_builder):
        f.cache_clear()
    concrete.clear_caches()


@pytest.fixture(autouse=True)
def fresh_runs():
    clear_caches()
    yield
    clear_caches()


def verdict(theorem: str, era: str, protocol: str | None = None, **kw) -> T.Verdict:
    check = T.THEOREMS[theorem].check
    v = check(era_of(era), protocol, **kw) if protocol else check(era_of(era), **kw)
    assert not v.vacuity, v.vacuity
    return v


JOBS = obligations(None, list(ERAS.values()))


@pytest.mark.parametrize("job", JOBS, ids=[":".join(filter(None, j)) for j in JOBS])
def test_obligation(job):
    """Each obligation of the catalogue, in-process: the expected verdict, a method label
    from the vocabulary, every input dimension fully covered, a counterexample exactly for
    refuted and aborted verdicts."""
    (row,) = work([job])
    v = row.v
    assert v.verdict == row.expected, (v.note, v.vacuity, v.counterexample)
    assert METHOD.fullmatch(v.label), v.label
    assert v.quantified and not v.vacuity
    for dim, count in v.quantified.items():
        k, n = count.split("/")
        assert k == n != "0", (dim, count)
    assert (v.counterexample is not None) == (v.verdict in ("refuted", "aborted")), v


def test_catalogue_matches_the_expected_table():
    assert len(JOBS) == sum(len(rows) for rows in EXPECTED.values())


# --- what the command prints ------------------------------------------------------------------

def test_json_is_repeatable_and_labelled():
    runner = CliRunner()
    args = ["prove", "--json", "--theorem", "criu-restore-original", "--era",
            "mmf-except-advised", "--era", "def-flags"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0 and first.stdout == second.stdout
    results = [r for r in json.loads(first.stdout)["results"]
               if r["theorem"] == "criu-restore-original"]
    assert {r["verdict"] for r in results} == {"proved", "refuted", "aborted"}
    for r in results:
        assert r["method"].startswith(("bounded [2x2]", "unbounded")), r["method"]
        assert "seconds" not in r


def test_ktap_is_valid_and_says_the_method():
    r = CliRunner().invoke(app, ["prove", "--ktap", "--theorem", "disable-inherited"])
    lines = r.stdout.splitlines()
    assert lines[0] == "KTAP version 1" and lines[1] == "1..5"
    results = [ln for ln in lines if re.match(r"(not )?ok \d+ ", ln)]
    assert len(results) == 5 and all(ln.startswith("ok ") for ln in results)
    assert sum("(one-step [1x1]; expected proved" in ln for ln in lines) == 5
    assert sum(ln.startswith("# quantified: sysfs 3/3") for ln in lines) == 5


def test_table_fits_80_columns_and_shows_the_bound():
    r = CliRunner().invoke(app, ["prove", "--theorem", "prctl-transparent"])
    assert r.exit_code == 0
    table = r.stdout.split("\n\n")[0].splitlines()
    assert all(len(ln) <= WIDTH for ln in table)
    assert any("bounded [2 steps, 1x2]" in ln for ln in table)
    assert any("induction [1x2]" in ln for ln in table)


def test_unknown_theorem_and_era_are_errors():
    runner = CliRunner()
    r = runner.invoke(app, ["prove", "--theorem", "nope"])
    assert r.exit_code == 2 and "unknown theorem" in r.stderr
    r = runner.invoke(app, ["prove", "--era", "nope"])
    assert r.exit_code == 2 and "unknown era" in r.stderr


def test_counterexamples_replay_in_the_script_language():
    v = verdict("criu-restore-original", "mmf-except-advised", "3.19-lazy-predump")
    assert v.verdict == "refuted"
    for step in v.counterexample:
        assert parse_step(step["syscall"]).text() == step["syscall"]
    restore_steps = [s for s in v.counterexample if s["process"] == "restore"]
    assert "get=1" in restore_steps[-1]["observation"]  # EXCEPT_ADVISED (3) came back as 1


def test_a_failing_restore_step_is_an_aborted_restore():
    v = verdict("criu-restore-original", "mmf", "clr-2017")
    assert v.verdict == "aborted"
    last = [s for s in v.counterexample if s["process"] == "restore"][-1]
    assert "clr_hugepage" in last["syscall"] and last["observation"].startswith("ret=-EINVAL")
    v = verdict("criu-restore-original", "def-flags@4.4", "3.5-lazy-predump")
    last = [s for s in v.counterexample if s["process"] == "restore"][-1]
    assert "nohugepage" in last["syscall"] and last["observation"].startswith("ret=-EINVAL")


def test_an_unbounded_argument_needs_its_lemmas():
    """If restore-frame were not proved in an era, the CRIU rows say what was checked."""
    from vmaflags.proofs.command import Row, settle
    proved = T.Verdict("proved", "unbounded (per-VMA)", argument=["..."],
                       cross_check="bounded [2x2]: proved")
    rows = [Row("hg-nh-exclusive", "mmf", None, "proved", "", T.Verdict("proved", "induction"),
                0),
            Row("restore-frame", "mmf", None, "proved", "", T.Verdict("refuted", "one-step"),
                0),
            Row("criu-restore-original", "mmf", "criu-fixed", "proved", "", proved, 0)]
    v = settle(rows)[2].v
    assert v.label == "bounded [2x2]" and "restore-frame:mmf not proved" in v.note


# --- the step alphabet ------------------------------------------------------------------------

def test_alphabet_has_every_step_kind_of_the_language():
    assert set(E.TEMPLATES) == set(STEPS.values())
    for era in ERAS.values():
        assert {type(sc) for sc in E.alphabet(era)} == set(STEPS.values())


def test_a_new_step_kind_without_templates_fails(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Mremap(Step):
        name = "mremap"

    monkeypatch.setitem(STEPS, "mremap", Mremap)
    with pytest.raises(LookupError, match="mremap"):
        E.alphabet(ERAS["mmf"])


# --- vacuity and sensitivity ------------------------------------------------------------------

def test_fixing_sysfs_makes_rule_level_theorems_vacuous(monkeypatch):
    real = states.inputs

    def never(era):
        x = real(era)
        return dataclasses.replace(x, ok=x.ok & (x.sysfs == rules.SYSFS_NEVER))

    monkeypatch.setattr(T, "inputs", never)
    v, = (r.v for r in work([("eligibility-monotone", None, "mmf")]))
    assert v.verdict == "unknown" and any("sysfs" in p for p in v.vacuity)


def _protocol(monkeypatch, steps, base="criu-fixed"):
    """Register a test protocol: `base` with its steps replaced by `steps(r)`."""
    from vmaflags.proofs.protocols import PROTOCOLS
    monkeypatch.setitem(PROTOCOLS, "test", dataclasses.replace(PROTOCOLS[base], id="test",
                                                               steps=steps))
    return "test"


def _except_advised_protection(r):
    """criu-fixed protected by EXCEPT_ADVISED instead of PR_SET_THP_DISABLE(1): blocks the
    fault and khugepaged (no VMA has hg yet), not MADV_COLLAPSE."""
    r.prctl(1, rules.PR_THP_DISABLE_EXCEPT_ADVISED)
    r.each_vma(r.mmap)
    r.populate()
    r.each_vma(r.register)
    r.prctl(*r.saved_mode())
    r.each_vma(r.restore_madv)


def test_khugepaged_decides_the_eras_before_madv_collapse():
    assert verdict("no-collapse-window", "def-flags", "naive").verdict == "refuted"
    v = T.THEOREMS["no-collapse-window"].check(ERAS["def-flags"], "naive",
                                                adversaries=("collapse",))
    assert v.verdict == "proved" and v.vacuity == ["no adversary exists in this era"]


def test_collapse_decides_a_restore_protected_by_except_advised(monkeypatch):
    p = _protocol(monkeypatch, _except_advised_protection)
    v = verdict("no-collapse-window", "mmf-except-advised", p)
    assert v.verdict == "refuted" and "collapse" in v.note
    v = verdict("no-collapse-window", "mmf-except-advised", p, adversaries=("khugepaged",))
    assert v.verdict == "proved"


def _map_holes(r):
    """criu-fixed that also maps the dump's holes."""
    for i, c in enumerate(r.cs):
        r.run.do(Mmap(0, 0), (c.start, c.end), Z3.not_(c.mapped))
    _criu_fixed(r)


def _no_hugepage(r):
    """A restore that forgets MADV_HUGEPAGE."""
    r.each_vma(r.mmap)
    r.prctl(*r.saved_mode())
    r.each_vma(lambda i: r.madvise(i, MADV_NOHUGEPAGE, r.cs[i].nh))


def _register_first_cell(r):
    """Registers only the first cell of each VMA, splitting a VMA of two cells."""
    r.each_vma(r.mmap)
    for i, c in enumerate(r.cs):
        r.run.do(UffdRegister(0, 0, True, False), (c.start, c.end), r._vma(i)[0])
    r.prctl(*r.saved_mode())
    r.each_vma(r.restore_madv)


# observation -> (era, protocol, shape) where it alone tells the restore from the dump (4.12
# has no smaps THPeligible, which would otherwise show a lost hg, bound or mode as well)
SENSITIVE = {
    "get": ("def-flags", "3.5-plain", (2, 2)),
    "nh": ("def-flags", "criu-fixed", (1,)),
    "hg": ("def-flags", _no_hugepage, (1,)),
    "mapped": ("mmf", _map_holes, (1,)),
    "vma": ("def-flags", _register_first_cell, (2,)),
    "eligible": ("mmf-except-advised", "criu-fixed", (2, 2)),  # with _get_hides_except
}


@pytest.mark.parametrize("name", list(restore.OBSERVATIONS))
def test_each_compared_observation_decides_a_verdict(monkeypatch, name):
    era, protocol, shp = SENSITIVE[name]
    if name == "eligible":  # a PR_GET that shows EXCEPT_ADVISED as 1 hides the lost mode
        monkeypatch.setattr(rules, "thp_disable_value", _get_hides_except)
    if callable(protocol):
        protocol = _protocol(monkeypatch, protocol)
    others = tuple(n for n in restore.OBSERVATIONS if n != name)
    v = verdict("criu-restore-original", era, protocol, shp=shp)
    assert v.verdict == "refuted" and v.note == f"differs in {name}", v.note
    after = verdict("criu-restore-original", era, protocol, shp=shp, observations=others)
    assert after.verdict == "proved"


# --- mutations: a broken rule must flip the verdict of the theorem about it -------------------

def _keep_other_bit(B, era, f, advice):
    hg = advice == 14
    return f._replace(hg=B.T if hg else f.hg, nh=B.T if not hg else f.nh), 0


def _clr_clears_hg_only(B, era, f, advice):
    if rules.is_clr_hugepage(era, advice):
        return f._replace(hg=B.F), 0
    return ORIG["hugepage_madvise"](B, era, f, advice)


def _nohuge_clears_both(B, era, f, advice):
    if advice == 15:
        return f._replace(hg=B.F, nh=B.F), 0
    return ORIG["hugepage_madvise"](B, era, f, advice)


def _get_hides_except(B, era, mm):
    return B.ite(B.or_(mm.disable, mm.except_adv), 1, 0)


def _nh_from_disable(B, era, mm):
    return Flags(B.F, mm.disable, B.F, B.F)


def _collapse_ignores_uffd(B, era, khugepaged, armed, *rest):
    return ORIG["collapse_pmd"](B, era, khugepaged, B.F, *rest)


def _nh_overrides_disable(B, era, f, mm, forced):
    return B.and_(mm.disable, B.not_(f.nh))


def _except_ignores_hg(B, era, f, mm, forced):
    return B.or_(f.nh, mm.disable, B.and_(B.not_(forced), mm.except_adv))


def _collapse_enforces_sysfs(B, era, user, f, mm, sysfs, anon, fits):
    ok = ORIG["thp_vma_allowable"](B, era, user, f, mm, sysfs, anon, fits)
    if user == rules.FORCED_COLLAPSE and ok is not None:
        return B.and_(ok, sysfs == rules.SYSFS_ALWAYS)
    return ok


def _exec_forgets(B, era, parent, fork):
    mm = ORIG["mm_init"](B, era, parent, fork)
    return mm if fork else mm._replace(disable=B.F, except_adv=B.F, def_nh=B.F)


def _khugepaged_sets_nh(B, era, st):
    """The audit's mutant: khugepaged marks what it collapses VM_NOHUGEPAGE."""
    ret, new = ORIG_STEP["khugepaged"](B, era, st)
    return ret, new._replace(blocks=tuple(
        b._replace(cells=tuple(c._replace(nh=B.or_(c.nh, B.and_(b.thp, B.not_(o.thp))))
                               for c in b.cells))
        for b, o in zip(new.blocks, st.blocks)))


def _sysfs_sets_hg(B, era, st, sc, args):
    """The audit's mutant: a sysfs write sets hg on every VMA."""
    ret, new, child = ORIG_STEP["transition"](B, era, st, sc, args)
    if sc.name == "sysfs":
        new = new._replace(blocks=tuple(b._replace(cells=tuple(c._replace(hg=c.mapped)
                                                               for c in b.cells))
                                        for b in new.blocks))
    return ret, new, child


def _prctl_positive_einval(B, era, mm, *args):
    ret, new = ORIG["prctl_set_thp_disable"](B, era, mm, *args)
    return B.ite(ret == 0, 0, -ret), new


def _fork_keeps_uffd(B, f):
    return f


def _unregister_keeps_wp(B, f):
    return B.put(f, um=B.F)


def _status_always_on(B, era, mm):
    return None if not era.thp_enabled_status else 1


def _copy_never(B, registered, present, pmd_thp):
    return B.ite(B.not_(registered), -2, -17)


def _any_hole_aborts(B, era, khugepaged, armed, *rest):
    return ORIG["collapse_pmd"](B, era, khugepaged, B.T, *rest)


def _sysfs_ignored(B, era, st, sc, args):
    if sc.name == "sysfs":
        return 0, st, None
    return ORIG_STEP["transition"](B, era, st, sc, args)


def _madvise_leaks(B, era, st, a, b, advice):
    """madvise also advises the cell just before its range."""
    ret, new = ORIG_STEP["madvise"](B, era, st, a, b, advice)
    cs = [c for blk in new.blocks for c in blk.cells]
    leak = [B.and_(c.mapped, c.end == a) for c in cs]
    it = iter(leak)
    return ret, new._replace(blocks=tuple(b._replace(cells=tuple(
        c._replace(hg=B.or_(c.hg, next(it))) for c in b.cells)) for b in new.blocks))


def _fault_ignores_prctl(B, era, f, mm, *rest):
    return ORIG["fault_huge_pmd"](B, era, f, mm._replace(disable=B.F, except_adv=B.F), *rest)


def _madvise_never_lists(B, era, st, a, b, advice):
    """madvise() without hugepage_madvise()'s khugepaged_enter_vma()."""
    ret, new = ORIG_STEP["madvise"](B, era, st, a, b, advice)
    return ret, new._replace(mm=new.mm._replace(registered=st.mm.registered))


def _advice_splits_thps(B, era, st, a, b, advice):
    """madvise(MADV_[NO]HUGEPAGE) splits every THP it covers."""
    ret, new = ORIG_STEP["madvise"](B, era, st, a, b, advice)
    inside = [B.and_(a <= k * PMD_PAGES, (k + 1) * PMD_PAGES <= b) for k in range(len(st.blocks))]
    return ret, new._replace(blocks=tuple(
        blk._replace(thp=B.and_(blk.thp, B.not_(x)), ptable=B.or_(blk.ptable, B.and_(blk.thp, x)))
        for blk, x in zip(new.blocks, inside)))


def _collapse_thps(r):
    """A plain restore that MADV_COLLAPSEs each PMD the dump has as a THP after writing the
    pages, before the madv bits and the prctl: it keeps every THP."""
    r.each_vma(r.mmap)
    r.populate()
    for k, blk in enumerate(r.dump.blocks):
        r.run.do(Madvise(0, 0, MADV_COLLAPSE), (k * PMD_PAGES, (k + 1) * PMD_PAGES), blk.thp)
    r.each_vma(r.restore_madv)
    r.prctl(r.saved_bool())


ORIG = {n: getattr(rules, n) for n in ("hugepage_madvise", "collapse_pmd",
                                        "thp_vma_allowable", "mm_init",
                                        "prctl_set_thp_disable", "fault_huge_pmd")}
ORIG_STEP = {n: getattr(S, n) for n in ("khugepaged", "transition", "madvise")}

MUTATIONS = [
    # theorem, protocol, era, module, function, mutant
    ("hg-nh-exclusive", None, "mmf", rules, "hugepage_madvise", _keep_other_bit),
    ("hg-nh-exclusive", None, "mmf", S, "khugepaged", _khugepaged_sets_nh),
    ("hg-nh-exclusive", None, "mmf-except-advised", S, "transition", _sysfs_sets_hg),
    ("prctl-transparent", None, "mmf", rules, "new_vma_flags", _nh_from_disable),
    ("criu-restore-original", "criu-fixed", "mmf-except-advised", rules, "thp_disable_value",
     _get_hides_except),
    ("no-collapse-window", "criu-fixed", "mmf-except-advised", rules, "collapse_pmd",
     _collapse_ignores_uffd),
    ("clr-is-neutral", None, "mmf-clr", rules, "hugepage_madvise", _clr_clears_hg_only),
    ("no-return-to-neither", None, "mmf", rules, "hugepage_madvise", _nohuge_clears_both),
    ("eligibility-monotone", None, "mmf", rules, "vma_thp_disabled", _nh_overrides_disable),
    ("except-advised-as-madvise", None, "mmf-except-advised", rules, "vma_thp_disabled",
     _except_ignores_hg),
    ("collapse-ignores-sysfs", None, "mmf-except-advised", rules, "thp_vma_allowable",
     _collapse_enforces_sysfs),
    ("disable-inherited", None, "mmf-except-advised", rules, "mm_init", _exec_forgets),
    ("restore-frame", None, "mmf", S, "madvise", _madvise_leaks),
    ("documented-returns", None, "mmf", rules, "prctl_set_thp_disable", _prctl_positive_einval),
    ("fork-and-exec", None, "mmf", rules, "dup_userfaultfd", _fork_keeps_uffd),
    ("uffd-leaves-no-trace", None, "mmf", rules, "userfaultfd_unregister", _unregister_keeps_wp),
    ("status-shows-prctl", None, "mmf-except-advised", rules, "task_thp_status",
     _status_always_on),
    ("pages-arrive", None, "mmf", rules, "uffdio_copy_page", _copy_never),
    ("sysfs-is-global", None, "mmf", S, "transition", _sysfs_ignored),
    ("collapse-fills-holes", None, "mmf-except-advised", rules, "collapse_pmd",
     _any_hole_aborts),
    ("criu-thp-kept", _collapse_thps, "mmf", S, "madvise", _advice_splits_thps),
    ("criu-khugepaged-registered", "3.5-plain", "mmf", S, "madvise", _madvise_never_lists),
    ("criu-no-new-thp-in-nh", "3.19-lazy-predump", "mmf", rules, "fault_huge_pmd",
     _fault_ignores_prctl),
]


@pytest.mark.parametrize("theorem, protocol, era, module, name, mutant", MUTATIONS,
                         ids=[f"{m[0]}-{m[4]}" for m in MUTATIONS])
def test_mutation_flips_verdict(monkeypatch, theorem, protocol, era, module, name, mutant):
    if callable(protocol):  # a plain restore of the test's own
        protocol = _protocol(monkeypatch, protocol, base="3.19-plain")
    assert verdict(theorem, era, protocol).verdict == "proved"
    monkeypatch.setattr(module, name, mutant)
    clear_caches()
    assert verdict(theorem, era, protocol).verdict == "refuted"


def test_every_theorem_has_a_mutation():
    assert {m[0] for m in MUTATIONS} == set(T.THEOREMS)
