"""Conformance: this machine's kernel against the model (the catalogue, era identification,
a short random run, replay, the command's output formats and exit codes).  Needs cc and a
kernel with THP; the sysfs-changing parts need root (CI runs as root on 6.18)."""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import threading
import time

import pytest

from vmaflags.conformance import (catalogue, command, driver, host, identify, report,
                                  sequences, sysfs)
from vmaflags.model import ERAS, parse_script
from vmaflags.model.syscalls import Script

ERA = ERAS["mmf-except-advised"]
CAN_RUN = host.no_thp() or host.no_executor()
needs_kernel = pytest.mark.skipif(bool(CAN_RUN), reason=CAN_RUN or "")
needs_root = pytest.mark.skipif(sysfs.writable() is not None, reason=sysfs.writable() or "")
ON_618 = platform.release().startswith("6.18")


@pytest.fixture
def guard():
    """The sysfs guard (root), also so that no other run switches THP modes under a test; per
    test, since its lock must not be held while a test runs the command."""
    if sysfs.writable() is not None:
        yield None
        return
    with sysfs.SysfsGuard() as g:
        yield g


# --- the catalogue ------------------------------------------------------------------------------

def test_catalogue_files_are_well_formed():
    scs = catalogue.load()
    assert len(scs) >= 15
    for sc in scs:
        assert sc.title and sc.source, sc.name
        if sc.probe:  # probes must run anywhere, without root, in the live mode
            assert sc.modes == (catalogue.LIVE,) and not sc.needs and not sc.sysfs_steps
            assert not sc.khugepaged


@pytest.mark.parametrize("text, msg", [
    ("#! title: t\n#! source: s\nmmap 0 2Q\n", "bad size"),
    ("#! title: t\n#! source: s\nfrobnicate 0 2M\n", "unknown step"),
    ("#! source: s\nmmap 0 2M\n", "missing `#! title:`"),
    ("#! title: t\n#! source: s\n#! sysfs: sometimes\nmmap 0 2M\n", "bad sysfs mode"),
    ("#! title: t\n#! source: s\n#! colour: red\nmmap 0 2M\n", "unknown header"),
])
def test_malformed_scenarios_are_rejected(text, msg):
    with pytest.raises(catalogue.CatalogueError, match=re.escape(msg)):
        catalogue.parse("bad", text)


# Scenarios that diverge for a reason written down in conformance/DIVERGENCES.md.  Strict: a
# model fix turns them into failures, and the entry goes.
KNOWN: dict[str, str] = {}  # name -> "DIVERGENCES.md N: why"


@needs_kernel
@pytest.mark.parametrize("name", [
    pytest.param(sc.name, marks=pytest.mark.xfail(strict=True, reason=KNOWN[sc.name]))
    if sc.name in KNOWN and ON_618 else sc.name for sc in catalogue.load()])
def test_scenario(name, guard):
    (sc,) = catalogue.load([name])
    skipped = []
    for r in catalogue.run(sc, ERA, guard):
        if r.status == "skip":
            assert r.reason
            skipped.append(f"{r.name}: {r.reason}")
            continue
        assert r.status == "pass", r.reason + "\n" + (
            r.divergence.side_by_side() if r.divergence else "")
    if skipped:  # a skipped run is reported as a skip, never as a pass
        pytest.skip("; ".join(skipped))


@needs_kernel
def test_scenario_against_a_wrong_era_diverges(guard):
    """The check can fail: the 6.18 prctl table is not what 6.12 (era mmf) does."""
    (sc,) = catalogue.load(["prctl-errno-6.18"])
    (r,) = catalogue.run(sc, ERAS["mmf"], guard)
    assert r.status == "diverge"
    assert r.divergence.syscall == "prctl_set 1 2 0 0" and "ret" in r.divergence.fields()


def test_missing_capabilities_skip_with_a_reason(monkeypatch):
    (sc,) = catalogue.load(["thp-eligible"])
    (k,) = catalogue.load(["khugepaged-collapse"])
    live = sysfs.read("enabled") if not host.no_thp() else "madvise"
    results = catalogue.run(sc, ERA, None) + catalogue.run(k, ERA, None)
    skipped = [r for r in results if r.status == "skip"]
    # without a guard every mode but the live one, and all khugepaged runs, are skipped
    assert {r.name for r in skipped} >= {f"thp-eligible@{m}" for m in
                                         ("always", "madvise", "never") if m != live}
    assert all("root" in r.reason or "THP" in r.reason for r in skipped)
    monkeypatch.setattr(host, "no_thp", lambda: "no THP in this kernel (test)")
    (r,) = catalogue.run(catalogue.load(["prctl-errno-6.18"])[0], ERA, None)
    assert r.status == "skip" and r.reason == "no THP in this kernel (test)"
    text = report.to_ktap(report.Run("x", scenarios=[r]))
    assert "ok 1 prctl-errno-6.18 # SKIP no THP in this kernel (test)" in text


# --- era identification -------------------------------------------------------------------------

@needs_kernel
def test_identify_by_behaviour(guard):
    ident = identify.identify()
    assert ident.probes and not ident.skipped
    if ON_618:
        assert ident.era == "mmf-except-advised"
    for v in ident.verdicts:
        if not v.matches:  # every other era: where it departs, and that it is a real difference
            assert v.divergence is not None and v.divergence.fields(), v.era
            assert v.probe in ident.probes


@needs_kernel
def test_identify_reports_a_wrong_era_as_divergent(guard):
    ident = identify.identify([ERAS["mmf"], ERA])
    verdict = {v.era: v for v in ident.verdicts}
    assert not verdict["mmf"].matches
    assert "prctl_set 1 2" in verdict["mmf"].divergence.syscall


# --- replay and random sequences -------------------------------------------------------------

@needs_kernel
def test_replay(guard):
    text = "arena 1\nmmap 0 2M\ntouch 0 1M\nmadvise 0 2M collapse\nprctl_set 1 2 0 0\n"
    assert catalogue.replay(text, ERA, guard) is None
    d = catalogue.replay(text, "mmf", guard)
    assert d is not None and d.step == "4"
    with pytest.raises(catalogue.CatalogueError):
        catalogue.replay("mmap 0\n", ERA)


@needs_kernel
def test_random_sequences_agree(guard):
    mode = sysfs.read("enabled")
    r = sequences.run(ERA, 100, 7, [mode], None, workers=1)
    assert r.examples == 100 and r.transitions > 1000 and r.shrink_examples == 0
    assert not r.divergences and not r.errors, r.divergences


@needs_kernel
def test_random_sequences_shrink_a_divergence(guard):
    """Against a wrong era hypothesis finds and shrinks a divergence to a few steps."""
    mode = sysfs.read("enabled")
    r = sequences.run_shard(ERAS["mmf"], sequences.Shard(0, 11, mode, 2, 50))
    d = r.divergence
    assert d is not None
    assert 1 <= r.examples <= 50 and r.shrink_examples > 0  # the shard stops at a divergence
    script = parse_script(d["script"])
    assert 1 <= len(script.steps) <= 3
    assert driver.check(ERAS["mmf"], script, host.live_mode()).divergence is not None


def test_random_plan_is_reproducible():
    a = sequences.plan(230, 5, ["madvise", "always"])
    assert a == sequences.plan(230, 5, ["madvise", "always"])
    assert sum(s.examples for s in a) == 230
    assert {s.mode for s in a} == {"madvise", "always"} and len({s.seed for s in a}) == len(a)


# --- the command --------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = os.path.join(os.path.dirname(sys.executable), "vmaflags")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("args, msg", [
    (["--era", "nonsense"], "unknown era"),
    (["--scenario", "no-such-scenario"], "unknown scenario"),
])
def test_usage_errors_exit_2(args, msg):
    p = _cli("conform", *args)
    assert p.returncode == 2
    assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_malformed_catalogue_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.vmf").write_text("#! title: t\n#! source: s\nmmap 0 2M\ntouch 0 2Q\n")
    monkeypatch.setattr(catalogue, "SCENARIO_DIR", tmp_path)
    assert command.conform(ERA, False, None, 0, 1, False, False) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vmaflags: bad: line 4: bad size '2Q'"


@needs_kernel
def test_executor_rejects_malformed_scripts():
    p = subprocess.run([driver._executor(None), "-"], input="mmap 0 2M\nfrob 1\n",
                       capture_output=True, text=True, check=False)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == "executor: line 2: unknown step 'frob'\n"


def _serve(*scripts: tuple[str, int]) -> subprocess.CompletedProcess:
    """`executor --serve` fed each (script text, timeout seconds)."""
    feed = "".join(f"script {len(t.encode())} {secs}\n{t}" for t, secs in scripts)
    return subprocess.run([driver._executor(None), "--serve"], input=feed, capture_output=True,
                          text=True, timeout=60, check=False)


@needs_kernel
def test_serve_starts_every_script_as_a_fresh_process():
    """The prctl state is per mm and survives fork and execve: a script must not inherit the
    previous one's, nor its VMAs, nor its khugepaged registration."""
    first = "arena 1\nprctl_set 1 0 0 0\nmmap 0 2M\nmadvise 0 2M hugepage\n"
    second = "arena 1\nprctl_get 0 0 0 0\n"
    p = _serve((first, 10), (second, 10))
    assert p.returncode == 0 and p.stderr == ""
    lines = p.stdout.splitlines()
    assert lines[3] == "end 0" and lines[5] == "end 0", lines
    assert driver.parse_line(lines[0])[1].get == 1  # prctl_set took effect in the first
    (label, obs) = driver.parse_line(lines[4])
    assert label == "1" and obs.ret == 0 and obs.get == 0 and obs.vmas == ()


@needs_kernel
def test_serve_reports_exit_status_and_timeouts():
    p = _serve(("arena 1\nfrob 1\n", 10), ("arena 1\nkhugepaged 30000\n", 1),
               ("arena 1\nprctl_get 0 0 0 0\n", 10))
    assert p.stdout.splitlines() == ["end 2", "end timeout", p.stdout.splitlines()[2], "end 0"]
    assert p.stderr == "executor: line 2: unknown step 'frob'\n"


@needs_kernel
@pytest.mark.parametrize("feed", ["scrip 5 1\nabcde", "script 5\nabcde", "script 9 1\nabc"])
def test_serve_rejects_malformed_framing(feed):
    p = subprocess.run([driver._executor(None), "--serve"], input=feed, capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.startswith("executor: --serve")


@needs_kernel
def test_serve_takes_its_khugepaged_keeper_along():
    """The server forks a keeper (a registered mm of its own), serves no script before the
    keeper's MADV_HUGEPAGE, and reaps it before it exits."""
    p = subprocess.Popen([driver._executor(None), "--serve"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    body = b"arena 1\nprctl_get\n"
    p.stdin.write(b"script %d 10\n" % len(body) + body)
    p.stdin.flush()
    assert p.stdout.readline().startswith(b"1 ret=0 ")
    assert p.stdout.readline() == b"end 0\n"
    kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
    assert len(kids) == 1  # the script's child is reaped; the keeper stays
    assert "hg" in open(f"/proc/{kids[0]}/smaps").read()  # MADV_HUGEPAGE on its 2 MiB
    p.communicate(b"nonsense\n", timeout=30)
    assert p.returncode == 2 and not os.path.exists(f"/proc/{kids[0]}")


@needs_kernel
def test_serve_ends_when_nobody_reads():
    """The driver killed mid-script (its end of the output pipe closed): the server kills the
    script, here inside a khugepaged wait, and its keeper, and exits at once."""
    p = subprocess.Popen([driver._executor(None), "--serve"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    body = b"arena 1\nkhugepaged 20000\n"
    p.stdin.write(b"script %d 60\n" % len(body) + body)
    p.stdin.flush()
    deadline = time.monotonic() + 10
    while len(kids := open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()) < 2:
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.01)
    t0 = time.monotonic()
    p.stdout.close()
    p.wait(timeout=10)
    assert time.monotonic() - t0 < 1
    assert not [k for k in kids if os.path.exists(f"/proc/{k}")]


@needs_kernel
def test_killed_conform_leaves_no_process(tagged):
    """SIGKILL of `vmaflags conform` in its random run: one second later none of its processes
    (executor servers, their scripts and keepers, workers) is left, and none printed a
    traceback (a worker writing to the dead runner)."""
    exe = os.path.join(os.path.dirname(sys.executable), "vmaflags")
    p = subprocess.Popen([exe, "conform", "--scenario", "split-merge", "--examples", "100000",
                          "--seed", "1"], env=tagged.env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not any("vmaflags.conformance.sequences" in c for c in tagged.alive().values()):
            assert p.poll() is None, p.stderr.read().decode()
            assert time.monotonic() < deadline, "no random-testing worker started"
            time.sleep(0.05)
        time.sleep(1)  # shards under way in the runner and the worker
        assert sum("--serve" in c for c in tagged.alive().values()) >= 2
    finally:
        p.kill()
        p.wait()
    time.sleep(1)
    assert tagged.alive() == {}
    os.set_blocking(p.stderr.fileno(), False)
    assert b"Traceback" not in (p.stderr.read() or b"")


@needs_kernel
def test_driver_survives_a_failed_script():
    """A script the executor rejects is an ExecutorError naming the reason; the server is
    replaced and the next script runs."""
    bad = Script((), 0)  # arena 0: the executor refuses it
    with pytest.raises(driver.ExecutorError, match="executor exited 2: executor: "):
        driver.run_kernel(bad)
    trace = driver.run_kernel(parse_script("arena 1\nmmap 0 2M\n"))
    assert [label for label, _ in trace] == ["1"] and trace[0][1].ret == 0


@needs_kernel
def test_pipelined_scripts_cannot_deadlock_the_pipes():
    """More script text than a pipe holds, and more output: written all at once, we would block
    on a full stdin while the running script blocks on a full stdout that we read next."""
    script = parse_script("arena 1\n" + "prctl_get 0 0 0 0\n" * 300)
    done: list = []
    t = threading.Thread(target=lambda: done.append(
        driver.check_many(ERA, [script] * 30, host.live_mode())), daemon=True)
    t.start()
    t.join(120)
    if t.is_alive():
        driver._servers.pop(None).proc.kill()
    assert done and [c.transitions for c in done[0]] == [300] * 30


@needs_kernel
def test_random_run_does_not_count_empty_scripts():
    """hypothesis starts a shard with all-zero bytes, which decode to empty scripts: neither
    run nor counted as checked sequences."""
    r = sequences.run_shard(ERA, sequences.Shard(0, 3, sysfs.read("enabled"), 1, 8))
    assert r.examples == 8 and r.transitions >= 8 and not r.error


@needs_kernel
@pytest.mark.parametrize("n", [1, 5, 9, 100])
def test_examples_n_runs_n_sequences(n):
    """--examples N checks exactly N sequences, whatever the shards and batches."""
    p = _cli("conform", "--scenario", "split-merge", "--examples", str(n), "--seed", str(n),
             "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["random"]["examples"] == n


def test_shard_sizes_cover_the_examples_and_shorten_at_the_end():
    for n in (0, 1, 7, 8, 97, 2000):
        sizes = sequences.shard_sizes(n)
        assert sum(sizes) == n and all(0 < k <= sequences.SHARD for k in sizes)
    sizes = sequences.shard_sizes(2000)
    assert sizes[0] == sequences.SHARD and sizes[-1] <= sequences.BATCH


KTAP_LINE = re.compile(r"^(ok|not ok) (\d+) (\S+)( # (SKIP \S.*|\S.*))?$")


@needs_kernel
def test_ktap_output():
    p = _cli("conform", "--scenario", "prctl-errno-6.18", "--scenario", "thp-eligible",
             "--ktap")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "KTAP version 1"
    m = re.fullmatch(r"1\.\.(\d+)", lines[1])
    assert m
    results = [ln for ln in lines[2:] if not ln.startswith("#")]
    assert len(results) == int(m.group(1))
    for n, ln in enumerate(results, 1):
        g = KTAP_LINE.match(ln)
        assert g and int(g.group(2)) == n, ln
    names = [KTAP_LINE.match(ln).group(3) for ln in results]
    assert names[0] == "identify" and "prctl-errno-6.18" in names


@needs_kernel
def test_json_output_and_a_wrong_era_fails():
    p = _cli("conform", "--era", "mmf", "--scenario", "prctl-errno-6.18", "--examples", "20",
             "--seed", "3", "--json")
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["kernel"] == platform.release() and d["era"] == "mmf"
    assert d["identified_era"] is None  # --era given: no identification
    (s,) = d["scenarios"]
    assert s["name"] == "prctl-errno-6.18" and s["status"] == "diverge" and s["steps"] == 18
    assert set(d["random"]) >= {"examples", "transitions", "divergences"}
    assert d["random"]["divergences"] and 1 <= d["random"]["examples"] <= 20
    assert d["random"]["shrink_examples"] > 0  # the divergence confirmed and shrunk
    assert d["seconds"] > 0 and d["transitions_per_second"] > 0


@needs_kernel
def test_identify_only_json():
    p = _cli("conform", "--identify", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["scenarios"] == [] and d["random"] is None
    if ON_618:
        assert d["identified_era"] == "mmf-except-advised" == d["era"]
