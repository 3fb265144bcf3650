"""The theorem catalogue: verdicts as expected, and every theorem able to fail.

Each mutation breaks one kernel rule in model/rules.py the way a wrong model would, and the
theorem that is about that rule must change its verdict.
"""
from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from vmaflags.cli import app
from vmaflags.model import ERAS, concrete, rules
from vmaflags.model.state import Flags
from vmaflags.proofs import theorems as T
from vmaflags.proofs.command import obligations
from vmaflags.proofs.expected import EXPECTED


def clear_caches():
    """Symbolic protocol runs and memoised concrete steps come from the (maybe mutated) rules."""
    T._restore.cache_clear()
    concrete.clear_caches()


@pytest.fixture(autouse=True)
def fresh_runs():
    clear_caches()
    yield
    clear_caches()


def verdict(theorem: str, era: str, protocol: str | None = None) -> str:
    v, _ = T.run_one(T.THEOREMS[theorem], ERAS[era], protocol)
    assert not v.vacuity, v.vacuity
    return v.verdict


def test_catalogue_as_expected():
    r = CliRunner().invoke(app, ["prove", "--json"])
    results = json.loads(r.stdout)["results"]
    assert r.exit_code == 0, [x for x in results if x["verdict"] != x["expected"]]
    assert len(results) == len(obligations(None, list(ERAS.values()))) == sum(
        len(rows) for rows in EXPECTED.values())
    for x in results:
        assert x["verdict"] == x["expected"], x
        assert x["method"] in ("induction", "bounded")
        assert (x["counterexample"] is not None) == (x["verdict"] == "refuted"), x


def test_ktap_is_valid():
    r = CliRunner().invoke(app, ["prove", "--ktap", "--theorem", "disable-inherited"])
    lines = r.stdout.splitlines()
    assert lines[0] == "KTAP version 1" and lines[1] == "1..5"
    results = [ln for ln in lines if re.match(r"(not )?ok \d+ ", ln)]
    assert len(results) == 5 and all(ln.startswith("ok ") for ln in results)


def test_unknown_theorem_and_era_are_errors():
    runner = CliRunner()
    r = runner.invoke(app, ["prove", "--theorem", "nope"])
    assert r.exit_code == 2 and "unknown theorem" in r.stderr
    r = runner.invoke(app, ["prove", "--era", "nope"])
    assert r.exit_code == 2 and "unknown era" in r.stderr


def test_counterexamples_replay_in_the_script_language():
    from vmaflags.model.syscalls import parse_step

    v, _ = T.run_one(T.THEOREMS["criu-restore-original"], ERAS["mmf-except-advised"],
                     "criu-3.19")
    assert v.verdict == "refuted"
    for step in v.counterexample:
        assert parse_step(step["syscall"]).text() == step["syscall"]
    restore = [s for s in v.counterexample if s["process"] == "restore"]
    assert "get=1" in restore[-1]["observation"]  # EXCEPT_ADVISED (3) came back as 1


# --- mutations: a broken rule must flip the verdict of the theorem about it ---------------------

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


ORIG = {n: getattr(rules, n) for n in ("hugepage_madvise", "collapse_pmd",
                                        "thp_vma_allowable", "mm_init")}

MUTATIONS = [
    # theorem, protocol, era, rule, mutant, verdict before -> after
    ("hg-nh-exclusive", None, "mmf", "hugepage_madvise", _keep_other_bit),
    ("prctl-transparent", None, "mmf", "new_vma_flags", _nh_from_disable),
    ("criu-restore-original", "criu-fixed", "mmf-except-advised", "thp_disable_value",
     _get_hides_except),
    ("no-collapse-window", "criu-fixed", "mmf-except-advised", "collapse_pmd",
     _collapse_ignores_uffd),
    ("clr-is-neutral", None, "mmf-clr", "hugepage_madvise", _clr_clears_hg_only),
    ("no-return-to-neither", None, "mmf", "hugepage_madvise", _nohuge_clears_both),
    ("eligibility-monotone", None, "mmf", "vma_thp_disabled", _nh_overrides_disable),
    ("except-advised-as-madvise", None, "mmf-except-advised", "vma_thp_disabled",
     _except_ignores_hg),
    ("collapse-ignores-sysfs", None, "mmf-except-advised", "thp_vma_allowable",
     _collapse_enforces_sysfs),
    ("disable-inherited", None, "mmf-except-advised", "mm_init", _exec_forgets),
]


@pytest.mark.parametrize("theorem, protocol, era, rule, mutant", MUTATIONS,
                         ids=[m[0] for m in MUTATIONS])
def test_mutated_rule_flips_verdict(monkeypatch, theorem, protocol, era, rule, mutant):
    before = verdict(theorem, era, protocol)
    assert before == EXPECTED[(theorem, protocol)][era][0] == "proved"
    monkeypatch.setattr(rules, rule, mutant)
    clear_caches()
    assert verdict(theorem, era, protocol) == "refuted"


def test_every_theorem_has_a_mutation():
    assert {m[0] for m in MUTATIONS} == set(T.THEOREMS)
