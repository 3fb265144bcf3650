"""`vmaflags reproduce`: proof counterexamples as C programs, compiled, and run on this kernel.

The live tests run the generated programs as children, with THP `enabled` set through the
project's sysfs guard where the trace needs another mode (root); run the suite under
`flock /run/vmaflags-live.lock`.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from vmaflags.conformance import host, reproduce, reproduce_c, sysfs
from vmaflags.conformance.catalogue import SCENARIO_DIR
from vmaflags.model import ERAS

EXE = os.path.join(os.path.dirname(sys.executable), "vmaflags")
CC = shutil.which("cc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc)")
no_live = host.no_thp() or (None if CC else "no C compiler (cc)")
needs_live = pytest.mark.skipif(bool(no_live), reason=no_live or "")
no_guard = no_live or host.writable()
needs_guard = pytest.mark.skipif(bool(no_guard), reason=no_guard or "")

LOSS = ("criu-restore-original", "mmf-except-advised", "3.19-lazy-predump")
# refuted and aborted rows of every theorem that has a trace, over the eras
ROWS = [LOSS,
        ("criu-restore-original", "mmf-except-advised", "3.19-plain"),
        ("criu-restore-original", "def-flags", "3.19-plain"),
        ("criu-restore-original", "mmf", "3.5-lazy"),
        ("criu-restore-original", "def-flags", "3.5-lazy"),  # the restore makes no call
        ("criu-restore-original", "def-flags@4.4", "3.5-lazy-predump"),  # aborted
        ("criu-restore-original", "mmf-except-advised", "clr-2017"),  # aborted: no CLR
        ("no-collapse-window", "mmf-except-advised", "naive"),
        ("no-collapse-window", "def-flags", "naive"),  # a khugepaged step
        ("prctl-transparent", "def-flags", None),
        ("clr-is-neutral", "def-flags-clr", None),  # a fresh mmap as the probe
        ("no-return-to-neither", "mmf-clr", None),
        ("criu-thp-kept", "mmf-clr", "clr-2017"),  # a lazy phase: UFFDIO_COPY, close
        ("criu-khugepaged-registered", "mmf", "3.5-lazy"),  # khugepaged ends both traces
        ("criu-no-new-thp-in-nh", "def-flags", "3.19-plain")]
BACKING = ["criu-thp-kept", "criu-khugepaged-registered", "criu-no-new-thp-in-nh"]


@functools.cache
def solved(theorem: str, era: str, protocol: str | None):
    return reproduce.row(theorem, era, protocol)


@functools.cache
def program(theorem: str, era: str, protocol: str | None,
            predict: str | None = None) -> reproduce.Program:
    return reproduce.build(solved(theorem, era, protocol), ERAS[predict] if predict else None)


def harness_dir() -> pathlib.Path | None:
    """tools/testing/selftests of an unpacked kernel source: the one the brief names, or the
    project's cached 6.12 tree (tests/test_kernel.py unpacks it); never unpacked here."""
    from vmaflags.kernel.source import cache_root

    try:
        cached = sorted(glob.glob(str(cache_root() / "src" / "*" / "linux-source-*" /
                                      "tools/testing/selftests")))
    except RuntimeError:
        cached = []
    for d in ["/work/ksrc/6.12/linux-source-6.12/tools/testing/selftests", *cached]:
        if (pathlib.Path(d) / "kselftest_harness.h").is_file():
            return pathlib.Path(d)
    return None


def compile_c(src: str, path: pathlib.Path, *flags: str) -> pathlib.Path:
    path.write_text(src)
    exe = path.with_suffix("")
    r = subprocess.run([CC, "-Wall", "-Werror", "-O2", *flags, "-o", str(exe), str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return exe


def run(exe: pathlib.Path, mode: str | None, fast_khugepaged: bool = False
        ) -> subprocess.CompletedProcess:
    """The program as a child, with THP `enabled` set to `mode` by the sysfs guard (restored
    afterwards), and khugepaged tuned to scan at once if asked (as the catalogue does for its
    khugepaged steps), or as it is."""
    if mode is None:
        return subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    with sysfs.SysfsGuard() as g:
        g.set_many({"enabled": mode, **(sysfs.FAST_KHUGEPAGED if fast_khugepaged else {})})
        return subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)


# --- bad input ---------------------------------------------------------------------------

BAD = [
    (["nope", "--era", "mmf"], "unknown theorem 'nope'"),
    (["hg-nh-exclusive", "--era", "nope"], "unknown era 'nope'"),
    (["hg-nh-exclusive", "--era", "mmf"], "hg-nh-exclusive:mmf is proved: no counterexample"),
    (["criu-restore-original", "--era", "mmf"], "give --protocol"),
    (["criu-restore-original", "--era", "mmf", "--protocol", "bogus"], "unknown protocol"),
    (["criu-restore-original", "--era", "mmf-clr", "--protocol", "3.5-lazy"],
     "criu-restore-original:3.5-lazy has no row in era mmf-clr; its eras: def-flags, mmf"),
    (["criu-restore-original", "--era", "mmf", "--protocol", "criu-fixed"], "is proved"),
    (["clr-is-neutral", "--era", "mmf"], "clr-is-neutral has no row in era mmf"),
    (["prctl-transparent", "--era", "def-flags", "--protocol", "naive"], "drop --protocol"),
    (["prctl-transparent"], "Missing option '--era'"),
]


@pytest.mark.parametrize("args,msg", BAD, ids=lambda x: " ".join(x) if isinstance(x, list)
                         else "")
def test_bad_input_is_one_line_and_exit_2(args, msg):
    r = subprocess.run([EXE, "reproduce", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r
    assert r.stdout == "" and r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr


def cli(*args: str) -> str:
    r = subprocess.run([EXE, "reproduce", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_same_command_gives_the_same_bytes(tmp_path):
    """Each run a fresh process, as a reader of the mail runs it; --out writes the same
    program and the kselftest beside it."""
    args = ["prctl-transparent", "--era", "def-flags"]
    first = cli(*args)
    assert cli(*args) == first
    files = sorted(pathlib.Path(f) for f in cli(*args, "--out", str(tmp_path / "o")).split())
    assert [f.name for f in files] == ["prctl-transparent-def-flags.c",
                                       "vmaflags_prctl_transparent_def_flags.c"]
    assert files[0].read_text() == first
    assert "\nTEST(prctl_transparent_def_flags)\n" in files[1].read_text()


def test_the_trace_is_the_one_prove_prints():
    """The program carries the trace `vmaflags prove` prints for the row (any prove command
    prints the same one for it: tests/test_prove_output.py)."""
    from vmaflags.conformance.replay import from_counterexample

    r = subprocess.run([EXE, "prove", "--era", "def-flags", "--json"], capture_output=True,
                       text=True, timeout=600)
    (want,) = [x for x in json.loads(r.stdout)["results"]
               if (x["theorem"], x["protocol"]) == ("no-collapse-window", "naive")]
    trace = from_counterexample("no-collapse-window:naive:def-flags", want["counterexample"])
    src = cli("no-collapse-window", "--era", "def-flags", "--protocol", "naive")
    assert "\n".join(f" *   {ln}" for ln in trace.rstrip("\n").split("\n")) in src
    assert f"Verdict: refuted, bounded [2x2]: {want['note']}." in src


# --- what is generated ---------------------------------------------------------------------

def test_every_expected_value_is_the_models():
    """The checks are the interpreter's observations of the solver's trace (the proof's own
    replay), and the refutation of the CRIU row is what the solver said differs."""
    r, p = solved(*LOSS), program(*LOSS)
    assert [c.want.text() for c in p.checks] == [s["observation"] for s in r.counterexample]
    assert "get" in r.v.note.removeprefix("differs in ").split(", ")
    get = next(f for f in p.facts if f.terms[0].prop == "get")
    assert [t.want for t in get.terms] == ["3", "1"]
    src = reproduce_c.standalone(p)
    for c in p.checks:  # each step performed and checked, in order
        assert f"vf_check({c.number}, ret, " in src
    assert src.count("vf_check(") == len(p.checks) + 1  # + its definition
    assert f'#define THP_MODE "{p.sysfs}"' in src and "#define MADV_CLR_HUGEPAGE 26" in src


@pytest.mark.parametrize("key", ROWS, ids=lambda k: ":".join(filter(None, k)))
def test_refutation_names_what_the_solver_found(key):
    r, p = solved(*key), program(*key)
    texts = " / ".join(f.text for f in p.facts)
    if r.verdict == "aborted":
        step = re.match(r"restore step (\d+)", r.v.note).group(1)
        assert texts.startswith(f"restore step {step} (") and "CRIU stops" in texts
    elif r.theorem == "criu-restore-original":
        fields = r.v.note.removeprefix("differs in ").split(", ")
        assert len(p.facts) == len(fields)
        assert ("PR_GET" in texts) == ("get" in fields)
    elif r.theorem == "no-collapse-window":
        pmd = re.match(r"PMD (\d+)", r.v.note).group(1)
        assert texts.startswith(f"PMD {pmd} (") and p.facts[0].terms[0].want == "huge"
    elif r.theorem in BACKING:  # the PMD the solver's note names, as the observations show it
        pmd = re.search(r"PMD (\d+)", " ".join([r.v.note, *r.v.difference])).group(1)
        assert f"PMD {pmd} (" in texts
        wants = [t.want for t in p.facts[0].terms if t.prop == "pmd_thp"]
        assert wants == (["not huge", "huge"] if r.theorem == "criu-no-new-thp-in-nh"
                         else ["huge", "not huge"])
        step = re.search(r"from restore step (\d+)", r.v.note)
        assert not step or f"after restore step {step.group(1)} (" in texts
    for f in p.facts:  # each term's value is the model's property of its record
        for t in f.terms:
            if t.prop != "fresh":
                assert reproduce.prop(p.checks[t.record].want, t.prop, t.at) == t.want


@needs_cc
@pytest.mark.parametrize("key", ROWS, ids=lambda k: ":".join(filter(None, k)))
def test_programs_compile(key, tmp_path):
    p = program(*key)
    compile_c(reproduce_c.standalone(p), tmp_path / f"{p.slug}.c")
    h = harness_dir()
    if h is None:
        pytest.skip("no kselftest_harness.h (an unpacked kernel source) to compile against")
    name = reproduce_c.kselftest_name(p)
    src = tmp_path / f"{name}.c"
    src.write_text(reproduce_c.kselftest(p))
    r = subprocess.run([CC, "-fsyntax-only", "-Wall", "-Werror", "-iquote", str(h / "mm"),
                        str(src)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_a_trace_that_writes_sysfs_is_refused():
    text = "arena 1\nmmap 0 2M\nsysfs never\n"
    with pytest.raises(reproduce.ReproduceError, match="writes sysfs"):
        reproduce.script_program("s", text, ERAS["mmf"], "madvise")


# --- on this kernel -------------------------------------------------------------------------

def ktap(out: str) -> tuple[list[str], list[str]]:
    lines = out.splitlines()
    assert lines[:2] == ["KTAP version 1", f"1..{lines[1][3:]}"], out
    return ([ln for ln in lines if ln.startswith("ok ")],
            [ln for ln in lines if ln.startswith("not ok ")])


def other_mode(mode: str) -> str:
    return "madvise" if mode != "madvise" else "never"


@needs_guard
def test_the_criu_3_19_except_advised_loss_on_this_kernel(tmp_path):
    """CRIU 3.19 restores PR_GET 3 (EXCEPT_ADVISED) as 1, here as in the model; the program
    runs under the THP mode its trace names, set through the sysfs guard."""
    p = program(*LOSS)
    exe = compile_c(reproduce_c.standalone(p), tmp_path / f"{p.slug}.c")
    r = run(exe, p.sysfs)
    assert r.returncode == 0, r.stdout + r.stderr
    ok, bad = ktap(r.stdout)
    assert not bad and len(ok) == len(p.checks) + len(p.facts)
    prctl = next(c for c in p.checks if c.process == "dump" and c.step is not None
                 and c.step.text() == "prctl_set 1 2 0 0")
    assert f"ok {prctl.number} step dump {prctl.label} prctl_set 1 2 0 0" in ok
    assert any(ln.endswith(" refutation: PR_GET_THP_DISABLE: dumped 3, restored 1")
               for ln in ok), r.stdout
    assert r.stdout.splitlines()[-1].startswith("# PASS")


@needs_guard
def test_the_kselftest_runs_on_this_kernel(tmp_path):
    h = harness_dir()
    if h is None:
        pytest.skip("no kselftest_harness.h (an unpacked kernel source)")
    p = program(*LOSS)
    name = reproduce_c.kselftest_name(p)
    exe = compile_c(reproduce_c.kselftest(p), tmp_path / f"{name}.c", "-iquote", str(h / "mm"))
    r = run(exe, p.sysfs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok 1 global.{reproduce_c.ident(p.slug)}\n" in r.stdout
    r = run(exe, other_mode(p.sysfs))  # the harness's SKIP (its exit status: a pass)
    assert "# SKIP THP enabled is [" in r.stdout and " skip:1 " in r.stdout, r.stdout


@needs_guard
@pytest.mark.parametrize("theorem", BACKING)
def test_what_a_restore_does_to_thp_on_this_kernel(theorem, tmp_path):
    """The backing theorems' counterexamples for CRIU 3.19+'s plain restore, in this kernel's
    era, run here: each step as the model predicts it and the refutation holds (a dumped THP
    restored as 4 KiB pages, a restored mm khugepaged does not scan, a THP in an nh VMA)."""
    from vmaflags.proofs.expected import EXPECTED

    era = host.mainline_era()
    if era not in EXPECTED[(theorem, "3.19-plain")]:
        pytest.skip(f"{theorem}:3.19-plain has no row in this kernel's era ({era})")
    p = program(theorem, era, "3.19-plain")
    exe = compile_c(reproduce_c.standalone(p), tmp_path / f"{p.slug}.c")
    r = run(exe, p.sysfs, fast_khugepaged=True)
    if r.returncode == 4 and "khugepaged did not finish" in r.stdout:
        pytest.skip("khugepaged did not finish two full scans in time")
    assert r.returncode == 0, r.stdout + r.stderr
    ok, bad = ktap(r.stdout)
    assert not bad and len(ok) == len(p.checks) + len(p.facts)
    assert f"ok {len(ok)} refutation: {p.facts[-1].text}" in ok


@needs_guard
def test_a_khugepaged_too_slow_for_the_refutation_is_a_skip(tmp_path):
    """A khugepaged step that times out (here: khugepaged asleep for 10 minutes) leaves the
    observations after it unmade: the refutation that reads them is a SKIP, not a FAIL."""
    p = program("criu-khugepaged-registered", "mmf", "3.5-lazy",
                predict=host.mainline_era() or "mmf-except-advised")
    exe = compile_c(reproduce_c.standalone(p), tmp_path / f"{p.slug}.c")
    with sysfs.SysfsGuard() as g:
        g.set_many({"enabled": p.sysfs, "khugepaged/scan_sleep_millisecs": "600000"})
        r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 4, r.stdout + r.stderr
    ok, bad = ktap(r.stdout)
    assert not bad and ok[-1].startswith(f"ok {len(ok)} refutation: ") and (
        " # SKIP " in ok[-1] and " was not observed: khugepaged did not" in ok[-1]), r.stdout
    assert r.stdout.splitlines()[-1] == "# SKIP: khugepaged was too slow; nothing differed before"


@needs_guard
def test_a_wrong_eras_prediction_fails_with_the_difference(tmp_path):
    """The same trace, with the model of mmf (4.13-6.17) predicting it: there
    PR_SET_THP_DISABLE(1, EXCEPT_ADVISED) is EINVAL; 6.18 takes it."""
    p = program(*LOSS, predict="mmf")
    exe = compile_c(reproduce_c.standalone(p), tmp_path / f"{p.slug}.c")
    r = run(exe, p.sysfs)
    assert r.returncode == 1, r.stdout + r.stderr
    ok, bad = ktap(r.stdout)
    prctl = next(c for c in p.checks if c.process == "dump" and c.step is not None
                 and c.step.text() == "prctl_set 1 2 0 0")
    assert (f"not ok {prctl.number} step dump {prctl.label} prctl_set 1 2 0 0 expected "
            "ret=-EINVAL get=0 got ret=0 get=3") in bad, r.stdout
    assert "# model:  ret=-EINVAL get=0 thp=1 vmas=" in r.stdout
    assert r.stdout.splitlines()[-1].startswith("# FAIL: ") and "era mmf (4.13-6.17)" in r.stdout


@needs_guard
def test_another_thp_mode_is_a_skip(tmp_path):
    p = program(*LOSS)
    exe = compile_c(reproduce_c.standalone(p), tmp_path / f"{p.slug}.c")
    mode = other_mode(p.sysfs)
    r = run(exe, mode)
    assert r.returncode == 4, r.stdout
    assert r.stdout == (f"KTAP version 1\n1..0 # SKIP THP enabled is [{mode}], the trace runs "
                        f"under [{p.sysfs}]; this program does not change it (as root: echo "
                        f"{p.sysfs} > /sys/kernel/mm/transparent_hugepage/enabled)\n")


@needs_live
@pytest.mark.parametrize("scenario", ["fork-execve-inherit", "seed-uffd-collapse-eexist",
                                      "enomem-holes", "split-merge"])
def test_scenarios_as_programs_agree_with_the_model(scenario, tmp_path):
    """The C of every step kind (fork, execve, touch, uffd, munmap) checked the way the
    conformance suite checks the executor: the catalogue's scenarios, in the live mode, each
    step as the model of this kernel's era predicts it."""
    mode = host.read("enabled")
    era = host.era(ERAS[host.mainline_era() or "mmf-except-advised"])
    text = (SCENARIO_DIR / f"{scenario}.vmf").read_text()
    p = reproduce.script_program(scenario, text, era, mode)
    exe = compile_c(reproduce_c.standalone(p), tmp_path / f"{scenario}.c")
    r = run(exe, None)
    assert r.returncode == 0, r.stdout + r.stderr
    ok, bad = ktap(r.stdout)
    assert not bad and len(ok) == len(p.checks)
