"""`vmaflags report`: report.txt fits a mail and its tables come from the results; report.html
renders in a real browser; the restore timelines are the protocols' own steps; the same results
give the same bytes.  The results are real: a few obligations proved here, the concurrency
theorems of one era, and the saved JSON of real runs (tests/data/report/: `vmaflags vm matrix
--examples 100 --seed 7 --json` -- this machine and the five test VMs, with a divergence on
Debian's 6.12 --, `vmaflags vm criu --json`, CRIU 3.17 on Debian's 6.1, and `vmaflags stress
--tries 50 --seconds 5 --json` on this machine)."""
from __future__ import annotations

import copy
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from vmaflags.model.eras import ERAS
from vmaflags.report import collect, render, saved, shape, text, timeline

EXE = os.path.join(os.path.dirname(sys.executable), "vmaflags")
DATA = pathlib.Path(__file__).parent / "data" / "report"
JOBS = [("prctl-transparent", None, "def-flags"), ("prctl-transparent", None, "mmf"),
        ("criu-restore-original", "3.5-lazy", "mmf"), ("no-collapse-window", "naive", "mmf"),
        ("clr-is-neutral", None, "def-flags-clr")]


@pytest.fixture(scope="module")
def res() -> dict:
    from vmaflags.proofs.command import run

    found = saved.load_dir(DATA)
    found["proofs"] = [{"rows": [collect.row(r) for r in run(JOBS, False)],
                        "command": "vmaflags prove --json"}]
    return collect.collect(lambda *a: None, live=False, saved=found, eras=[ERAS["mmf"]])


@pytest.fixture(scope="module")
def out(res, tmp_path_factory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("report")
    t0 = time.perf_counter()
    render.write(res, d)
    (d / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"rendered in {time.perf_counter() - t0:.1f} s")
    return d


def test_txt_fits_a_mail(out):
    lines = (out / "report.txt").read_text().split("\n")
    assert [ln for ln in lines if len(ln) > 80] == []
    assert not any("\t" in ln for ln in lines)
    quoted = [ln for ln in lines if ln.startswith(">")]
    assert any("restorer" in ln for ln in quoted) and any("adversary" in ln for ln in quoted)
    assert all(ln == ">" or ln.startswith("> ") for ln in quoted)


def _row_line(txt: str, theorem: str, era: str) -> str:
    """The detail table's line of a theorem's first row (in that era)."""
    return next(ln for ln in txt.split("\n") if re.match(rf"  {theorem}\s+{era}\s", ln))


def test_txt_tables_come_from_the_results(res):
    txt = text.text(res)
    r = next(x for x in res["proofs"] if x["theorem"] == "prctl-transparent"
             and x["era"] == "def-flags")
    line = _row_line(txt, "prctl-transparent", "def-flags")
    assert r["verdict"] in line and r["method"] in line and f"{r['seconds']:.2f}" in line
    changed = copy.deepcopy(res)
    c = next(x for x in changed["proofs"] if x["theorem"] == "prctl-transparent"
             and x["era"] == "def-flags")
    c.update(verdict="proved", method="induction [9x9]", seconds=12.34)
    txt2 = text.text(changed)
    line2 = _row_line(txt2, "prctl-transparent", "def-flags")
    assert "PROVED" in line2 and "induction [9x9]" in line2 and "12.34" in line2
    assert "prctl-transparent:def-flags: proved, expected refuted" in txt2
    # each theorem's statement, every obligation and every kernel of the saved runs
    from vmaflags.proofs.theorems import THEOREMS
    flat = " ".join(txt.split())
    for tid in {x["theorem"] for x in res["proofs"]}:
        assert f"{tid}: {THEOREMS[tid].statement}" in flat
    for x in res["proofs"] + res["concurrency"]:
        assert x["method"].split(" [")[0] in txt
    for k in shape.kernel_rows(res["conformance"]):
        assert k["spec"] in txt and k["identified"] in txt


def test_counterexamples_are_numbered_traces_with_roles(res):
    r = next(x for x in res["proofs"] if x["theorem"] == "no-collapse-window")
    steps = r["counterexample"]
    roles = [shape.role(s) for s in steps]
    assert roles == sorted(roles, key=("process", "restorer", "adversary").index)
    assert roles[0] == "process" and "restorer" in roles
    race = next(x for x in res["concurrency"] if x["verdict"] == "refuted"
                and x["protocol"] == "vlastimil")["counterexample"]
    assert {shape.role(s) for s in race if s["process"] == "khugepaged"} == {"adversary"}
    assert {shape.role(s) for s in race if s["process"] != "khugepaged"} == {"process"}
    lines = text.trace(steps, r["era"])
    n = steps[0]["arena"]
    assert lines[0] == (f"> era mmf, sysfs {steps[0]['sysfs']}, arena {n} "
                        f"PMD{'s' if n > 1 else ''} ({2 * n} MiB)")
    numbered = [ln for ln in lines if ln[2:5].strip().isdigit()]
    assert [int(ln[2:5]) for ln in numbered] == list(range(1, len(steps) + 1))
    # the state after each step, and the replay file holds the same script
    assert sum(s["observation"].split(" vmas=")[0] in "\n".join(lines) for s in steps) \
        == len(steps)
    files = render.replay_files(res)
    body = files[shape.replay_name(r)]
    assert [ln for ln in body.split("\n") if ln and not ln.startswith(("#", "arena"))] == \
        [s["syscall"] for s in steps]


def test_restore_timelines_are_the_protocols_own_steps():
    from vmaflags.conformance.vm import criu
    from vmaflags.proofs.protocols import PROTOCOLS

    case = criu.Case("t", timeline.DUMP, timeline.SPLIT, timeline.SYSFS)
    for pid, p in PROTOCOLS.items():
        t = timeline.timeline(pid)
        era = ERAS[t.era]
        s = case.script
        states, _ = criu._run_states(era, s.steps, s.arena, 1)
        mode = timeline._mode(p)
        inp = criu.restore_input(states[-1], states[timeline.SPLIT - 1], s.steps[timeline.SPLIT:],
                                 mode)
        assert [x.syscall for x in t.steps] == [sc.text() for sc in
                                                criu.protocol_steps(era, pid, inp)]
        assert bool(t.lazy_pmds) == p.lazy
        assert not t.aborted
    # no protection: the pages written before registration leave a PMD open to
    # MADV_COLLAPSE; the protocols that protect never leave one open
    # (under sysfs madvise, to MADV_COLLAPSE only: khugepaged takes no VMA without hg,
    # thp_vma_allowable_orders)
    naive = timeline.timeline("naive")
    assert {st for s in naive.steps for st in s.pmds.values()
            if st.startswith("open")} == {"open:collapse"}
    for pid in ("3.5-lazy-predump", "3.19-lazy-predump", "criu-fixed", "clr-2017"):
        assert not any(st.startswith(("open", "THP")) for s in timeline.timeline(pid).steps
                       for st in s.pmds.values()), pid
    fixed = timeline.timeline("criu-fixed")
    assert fixed.steps[0].syscall == "prctl_set 1 0 0 0" and fixed.steps[0].get == 1
    assert "prctl" in fixed.steps[3].pmds[0]  # the pre-dumped page is written under the prctl


def test_same_results_same_bytes(out, tmp_path):
    again = tmp_path / "again"
    p = subprocess.run([EXE, "report", "--out", str(again), "--from",
                        str(out / "results.json")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    names = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert names == sorted(str(f.relative_to(again)) for f in again.rglob("*") if f.is_file())
    for n in names:
        assert (out / n).read_bytes() == (again / n).read_bytes(), n


def test_saved_results_are_recognised_with_their_commands(res):
    specs = [k["spec"] for k in shape.kernel_rows(res["conformance"])]
    assert specs[0] == "host" and len(specs) > 1
    assert all(k["command"].startswith("vmaflags vm matrix") and "--seed 7" in k["command"]
               for k in shape.kernel_rows(res["conformance"]))
    (rep,) = res["criu"]
    assert rep["command"].startswith("vmaflags vm criu --kernel debian-")
    assert len(shape.criu_rows(rep)) == len(rep["cases"])
    (st,) = res["stress"]
    assert st["command"] == "vmaflags stress --tries 50 --json"
    txt = text.text(res)
    for race in st["races"]:
        model = race["model"] or "control"
        assert re.search(rf"\n  {race['race']} +{model} +{race['tries']} ", txt)
    assert "khugepaged-fault-sigbus@always" in txt and "DIV" in txt  # Debian 6.12's


@pytest.mark.parametrize("files, message", [
    ({"x.json": "{"}, "x.json: not JSON"),
    ({"x.json": '{"a": 1}'}, "x.json: not the JSON of vmaflags prove"),
    ({"results.json": '{"proofs": [], "eras": []}'}, "use --from"),
    ({}, "no .json files"),
])
def test_bad_results_are_one_line(tmp_path, files, message):
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    p = subprocess.run([EXE, "report", "--out", str(tmp_path / "o"), "--results", str(tmp_path),
                        "--no-live"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()


def test_from_needs_a_report(tmp_path):
    (tmp_path / "prove.json").write_text('{"results": []}')
    for args, message in ((["--from", str(tmp_path / "prove.json")], "not the results.json"),
                          (["--from", str(tmp_path / "none.json")], "No such file"),
                          (["--from", str(tmp_path / "prove.json"), "--results", str(tmp_path)],
                           "no --results or --kernel")):
        p = subprocess.run([EXE, "report", "--out", str(tmp_path / "o"), *args],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr


CHROMIUM = "/usr/bin/chromium"


def _browser_or_skip():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no playwright (pip install -e '.[test]')")
    return sync_playwright


def test_html_renders_in_a_browser(out, res, tmp_path):
    sync_playwright = _browser_or_skip()
    html = out / "report.html"
    assert "http" not in html.read_text().replace("http://www.w3.org/", "")
    problems, requests = [], []
    t0 = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("console", lambda m: m.type in ("error", "warning") and problems.append(
            f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        # the state machines and the restore timelines are drawn
        machines = page.locator("figure.machine svg")
        assert machines.count() == len(ERAS)
        for i in range(len(ERAS)):
            box = machines.nth(i).bounding_box()
            assert box and box["width"] > 300 and box["height"] > 100
            assert machines.nth(i).locator("g.node").count() >= 3
        lines = page.locator("figure.timeline svg")
        assert lines.count() == len(timeline.timelines())
        assert lines.first.locator("rect").count() >= len(timeline.timelines()[0].steps)
        # the tables render, with the rows of the results
        assert page.locator("#verdicts tr").count() == len(res["proofs"]) + 1
        assert page.locator("#grid tr").count() == len(shape.grid(
            res["proofs"], [e["id"] for e in res["eras"]])) + 1
        assert page.locator("#kernels tr").count() == len(res["conformance"]) + 1
        assert page.locator("table.trace").count() == sum(
            shape.is_trace(r["counterexample"])
            for r in shape.counterexamples(res["proofs"] + res["concurrency"]))
        assert page.locator("table.restore").count() == len(timeline.timelines())
        for sel in ("#grid", "#verdicts", "#kernels", "#scenarios", "table.criu",
                    "table.races", "table.divergence"):
            box = page.locator(sel).first.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 20, sel
        first = page.locator("#verdicts tr").nth(1).locator("td")
        r = res["proofs"][0]
        assert first.nth(0).inner_text() == r["theorem"] and first.nth(3).inner_text() == \
            shape.verdict(r)
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot))
        browser.close()
    print(f"browser test: {time.perf_counter() - t0:.1f} s")
    assert problems == []
    assert [u for u in requests if not u.startswith("file://")] == []
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("VMAFLAGS_REPORT_SCREENSHOT")
    if keep:
        pathlib.Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, pathlib.Path(keep) / "report.png")
