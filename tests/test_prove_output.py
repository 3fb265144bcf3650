"""What `vmaflags prove` prints: the same bytes on every run, 80 columns, counterexamples that
replay on the model to the state they print, the theorem list, replay files, bad requests,
and the concurrency obligations.  The model only: no live kernel."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import z3

from vmaflags.conformance import catalogue
from vmaflags.conformance.driver import run_model
from vmaflags.conformance.replay import split
from vmaflags.model import concrete
from vmaflags.model.syscalls import SYSFS_MODES, Script, parse_step
from vmaflags.proofs import concurrency as C
from vmaflags.proofs.command import WIDTH, era_of
from vmaflags.proofs.expected import EXPECTED
from vmaflags.proofs.theorems import THEOREMS

VMAFLAGS = str(pathlib.Path(sys.executable).parent / "vmaflags")


def prove(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([VMAFLAGS, "prove", *args], capture_output=True, text=True,
                       timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def json_runs() -> tuple[str, str]:
    return prove("--json").stdout, prove("--json").stdout


@pytest.fixture(scope="module")
def results(json_runs) -> list[dict]:
    return json.loads(json_runs[0])["results"]


@pytest.fixture(scope="module")
def table() -> str:
    return prove().stdout


def traces(results: list[dict]) -> list[dict]:
    out = [r for r in results if r["verdict"] in ("refuted", "aborted")]
    assert out and all(r["counterexample"] for r in out)
    return out


def test_two_json_runs_give_the_same_bytes(json_runs):
    assert json_runs[0] == json_runs[1]


def test_a_row_has_its_trace_whatever_else_is_asked_and_whoever_asks(results):
    """`prove --theorem T --era E` (fewer obligations) and a caller that made Z3 terms before
    (this test process) get the trace the whole catalogue prints for each row."""
    from vmaflags.proofs.command import run

    full = {(r["theorem"], r["protocol"], r["era"]): r["counterexample"] for r in results}
    one = json.loads(prove("--theorem", "no-collapse-window", "--era", "def-flags",
                           "--json").stdout)["results"]
    assert one and all(full[(r["theorem"], r["protocol"], r["era"])] == r["counterexample"]
                       for r in one)
    z3.Solver().check(z3.Int("x") * 7 == 42)  # terms the workers must not depend on
    asked = [("criu-restore-original", "3.19-lazy-predump", "mmf-except-advised"),
             ("prctl-transparent", None, "def-flags")]
    for job, row in zip(asked, run(asked, show_progress=False)):
        assert row.counterexample == full[job], job


def test_every_line_fits_80_columns(table):
    lines = table.splitlines()
    assert len(lines) > 200 and "Counterexamples:" in table
    assert [ln for ln in lines if len(ln) > WIDTH] == []
    listing = prove("--list").stdout.splitlines()
    assert [ln for ln in listing if len(ln) > WIDTH] == []


def test_the_list_has_every_theorem_with_its_statement_and_eras():
    text = prove("--list").stdout
    for t in THEOREMS.values():
        assert f"\n{t.id}\n" in text
        assert " ".join(text.split(f"\n{t.id}\n")[1].split()).startswith(t.statement)
    for tid in C.THEOREMS:
        assert f"\n{tid}\n" in text
    assert "    3.5-lazy: def-flags refuted, mmf refuted\n" in text


def test_a_theorem_era_pair_without_a_row_is_an_error():
    r = prove("--theorem", "clr-is-neutral", "--era", "mmf", check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("vmaflags: clr-is-neutral does not apply to mmf: it has expected "
                        "verdicts for mmf-clr, def-flags-clr\n")
    r = prove("--theorem", "criu-restore-original", "--protocol", "3.5-lazy", "--era",
              "mmf-except-advised", check=False)
    assert r.returncode == 2 and "for def-flags, mmf\n" in r.stderr
    for args in (["--theorem", "hg-nh-exclusive", "--protocol", "naive"],
                 ["--protocol", "nosuch"], ["--era", "mmf@9"],
                 ["--theorem", "criu-restore-original", "--era", "mmf", "--script", "-"],
                 ["--theorem", "hg-nh-exclusive", "--era", "mmf", "--script", "-"]):
        r = prove(*args, check=False)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stdout == "", args


def test_each_counterexample_says_how_to_replay_it_who_acts_and_what_refutes(table, results):
    for r in traces(results):
        name = ":".join(filter(None, (r["theorem"], r["protocol"], r["era"])))
        block = table.split(f"\n{name}: {r['verdict']}, as expected")[1].split("\n\n")[0]
        steps = r["counterexample"]
        if "syscall" not in steps[0]:
            continue
        era = era_of(r["era"])
        assert f"era {era.id} (as of {era.kernel}), sysfs {steps[0]['sysfs']}, arena " \
               f"{steps[0]['arena']} PMD" in block
        assert r["minimal"] and " ".join(f"minimal: {r['minimal']}".split()) in " ".join(
            block.split())
        assert r["difference"] and f"{r['verdict']} by: " in block
        for s in steps:
            mine = "restorer" if s["process"] == "restore" else "process"
            assert s["role"] in (mine, "observer") or (s["role"], mine) == ("adversary",
                                                                           "restorer")
        # an observer's step ends each process's trace alike, and only where the theorem
        # needs one to be seen (criu-khugepaged-registered's scan)
        seen = [(s["process"], s["syscall"]) for i, s in enumerate(steps)
                if s["role"] == "observer" and (i + 1 == len(steps) or
                                                steps[i + 1]["process"] != s["process"])]
        assert len(seen) == sum(s["role"] == "observer" for s in steps)
        assert seen == ([("dump", "khugepaged 0"), ("restore", "khugepaged 0")]
                        if r["theorem"] == "criu-khugepaged-registered" else [])
    assert "START-END:FLAGS:ELIG:AHP" in table


def _replayed(era, steps: list[dict], process: str) -> list[str]:
    """The observation lines the model prints for one process's script of the trace."""
    mine = [s for s in steps if s["process"] == process]
    script = Script(tuple(parse_step(s["syscall"]) for s in mine), mine[0]["arena"])
    return [o.obs.text() for o in concrete.run(era, script,
                                                SYSFS_MODES.index(mine[0]["sysfs"]))]


def test_every_trace_replays_on_the_model_to_its_printed_state(results):
    for r in traces(results):
        steps = r["counterexample"]
        if "syscall" not in steps[0]:  # rule-level: input values, not a trace
            continue
        for process in dict.fromkeys(s["process"] for s in steps):
            printed = [s["observation"] for s in steps if s["process"] == process]
            assert _replayed(era_of(r["era"]), steps, process) == printed, r["theorem"]


def test_the_difference_is_the_replayed_one():
    """The refuting difference of a CRIU row names the dumped and the restored state."""
    r = json.loads(prove("--json", "--theorem", "criu-restore-original", "--protocol",
                         "3.19-lazy-predump", "--era", "mmf-except-advised").stdout)
    (row,) = [x for x in r["results"] if x["protocol"] == "3.19-lazy-predump"]
    assert row["difference"] == ["PR_GET: dumped 3, restored 1"]
    last = [s for s in row["counterexample"] if s["process"] == "restore"][-1]
    assert "get=1" in last["observation"]
    assert row["minimal"].startswith("fewest steps (3), then fewest VMAs (0)")


def test_script_is_a_replay_file_that_replays_to_the_printed_state(tmp_path):
    args = ["--theorem", "criu-restore-original", "--protocol", "3.19-plain", "--era",
            "def-flags"]
    out = tmp_path / "cex.vmf"
    assert prove(*args, "--script", str(out)).stdout == ""
    text = out.read_text()
    assert text == prove(*args, "--script", "-").stdout
    (row,) = [x for x in json.loads(prove(*args, "--json").stdout)["results"]
              if x["protocol"] == "3.19-plain"]
    era = era_of("def-flags")
    parts = split(text)
    assert [n for n, _ in parts] == ["dump", "restore"]
    for name, body in parts:
        sc = catalogue.parse(name, body, strict=False)
        (mode,) = sc.modes
        model = run_model(era, sc.script, SYSFS_MODES.index(mode))
        printed = [s for s in row["counterexample"] if s["process"] == name]
        assert [s["syscall"] for s in printed] == [x.text() for x in sc.script.steps]
        assert model[-1][1].text() == printed[-1]["observation"]


def test_concurrency_obligations_in_json():
    r = prove("--concurrency", "--json")
    rows = json.loads(r.stdout)["results"]
    assert len(rows) == len(C.EXPECTED) == 18
    assert all(x["kind"] == "concurrency" and x["verdict"] == x["expected"] for x in rows)
    assert {(x["theorem"], x["protocol"], x["era"]) for x in rows} == set(C.EXPECTED)
    assert "18 concurrency obligations in" in r.stderr
    refuted = [x for x in rows if x["verdict"] == "refuted"]
    assert refuted and all(x["difference"] and x["minimal"] for x in refuted)
    assert {s["role"] for x in refuted for s in x["counterexample"]} == {"process",
                                                                         "adversary"}


def test_the_default_catalogue_has_no_concurrency_rows(results):
    assert {r["kind"] for r in results} == {"catalogue"}
    assert len(results) == sum(len(rows) for rows in EXPECTED.values())
