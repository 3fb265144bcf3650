"""Mutation testing of the model's rules and transitions with mutmut (pinned in pyproject's
`mutation` extra), the proofs and the model tests being the oracle.

    .venv/bin/pip install -e '.[mutation]' && .venv/bin/python mutation/run.py

Two mutmut runs over model/rules.py and model/step.py:
1. oracle `vmaflags prove`: every obligation of the catalogue (tests/test_proofs.py
   test_obligation, in-process, so mutmut sees which rules each one runs);
2. the mutants that survive it, against the model tests (test_rules, test_transitions,
   test_agreement, test_mutants_killed) and the rest of tests/test_proofs.py.
Then it prints the score of the proofs alone and of both, and every survivor with its place
(file:line, the mutated line), marking those mutation/equivalent.toml explains as equivalent.

mutmut 3 needs a package laid out under its import name and skips decorated functions, so
the run happens in a work tree (.mutation/, not in git) where the package is assembled as
pyproject's package-dir maps it and `@memo_concrete` is applied after each definition instead
of as a decorator (the same function, memoised the same way).  A pytest plugin there forgets
every memoised result before each test, the test modules' own caches included: mutmut forks
each mutant's run from a warm process, whose Z3 steps were built from the unmutated code.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
TARGETS = ("model/rules.py", "model/step.py")
PACKAGES = {"vmaflags": "vmaflags", "vmaflags/model": "model", "vmaflags/proofs": "proofs",
            "vmaflags/conformance": "conformance"}
MODEL_TESTS = ("tests/test_rules.py", "tests/test_transitions.py", "tests/test_agreement.py",
               "tests/test_mutants_killed.py")
PROOFS = "tests/test_proofs.py::test_obligation"

CONFTEST = '''# mutation/run.py: every test starts with nothing memoised (mutants run in forks of a
# process that has run the unmutated code): neither the model's and the proofs' memos nor the
# caches of the test modules (e.g. Z3 steps that test_agreement built from the unmutated code).
import sys

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _forget_memoised_results():
    from vmaflags.model import concrete
    from vmaflags.proofs import contract, restore
    concrete.clear_caches()
    restore.restore_run.cache_clear()
    contract.any_step.cache_clear()
    for name, module in list(sys.modules.items()):
        if name.startswith("test_"):
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()
    yield
'''


def undecorate(src: str) -> str:
    """`@memo_concrete def f` -> `def f` ... `f = memo_concrete(f)` at the end of the module."""
    names = re.findall(r"^@memo_concrete\ndef (\w+)\(", src, flags=re.M)
    src = re.sub(r"^@memo_concrete\n(?=def )", "", src, flags=re.M)
    return src + "".join(f"\n{n} = memo_concrete({n})" for n in names) + ("\n" if names else "")


def workspace(name: str, tests: list[str]) -> Path:
    """A fresh work tree with the package assembled, the tests and mutmut's configuration."""
    ws = WORK / name
    if ws.exists():
        shutil.rmtree(ws)
    for dst, src in PACKAGES.items():
        shutil.copytree(ROOT / src, ws / dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "vm"))
    for t in TARGETS:
        p = ws / "vmaflags" / t
        p.write_text(undecorate(p.read_text()))
    (ws / "tests").mkdir()
    for t in (*MODEL_TESTS, "tests/test_proofs.py"):
        shutil.copy2(ROOT / t, ws / t)
    shared = ROOT / "tests" / "conftest.py"
    (ws / "tests" / "conftest.py").write_text(
        (shared.read_text() + "\n\n" if shared.exists() else "") + CONFTEST)
    only = ", ".join(f'"vmaflags/{t}"' for t in TARGETS)
    selection = ", ".join(f'"{t}"' for t in tests)
    (ws / "pyproject.toml").write_text(f'''[tool.mutmut]
source_paths = ["vmaflags"]
only_mutate = [{only}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]
pytest_add_cli_args_test_selection = [{selection}]
use_git_change_detection = false
track_dependencies = false

[tool.pytest.ini_options]
addopts = "-p no:randomly"
''')
    return ws


def refresh(ws: Path) -> None:
    """--again: bring the work tree's unmutated files and tests up to date, keeping mutmut's
    mutants and results; only valid while the mutated files are unchanged."""
    for t in TARGETS:
        if (ws / "vmaflags" / t).read_text() != undecorate((ROOT / t).read_text()):
            sys.exit(f"mutation/run.py: {t} changed since the last run; run without --again")
    for base in (ws, ws / "mutants"):
        for dst, src in PACKAGES.items():
            for f in (ROOT / src).rglob("*"):
                rel = f.relative_to(ROOT / src)
                target = base / dst / rel
                if f.is_file() and "__pycache__" not in f.parts and rel.parts[0] != "vm" \
                        and f"vmaflags/{src}/{rel}" not in {f"vmaflags/{t}" for t in TARGETS}:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, target)
        for t in (*MODEL_TESTS, "tests/test_proofs.py"):
            shutil.copy2(ROOT / t, base / t)


def mutmut(ws: Path, *args: str, check: bool = True) -> str:
    exe = Path(sys.executable).parent / "mutmut"
    r = subprocess.run([str(exe), *args], cwd=ws, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"mutation/run.py: mutmut {' '.join(args[:1])} failed in {ws}:\n"
                 f"{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r.stdout


def statuses(ws: Path) -> dict[str, str]:
    out = {}
    for line in mutmut(ws, "results", "--all", "true").splitlines():
        m = re.match(r"\s+(\S+): (.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def place(ws: Path, name: str) -> tuple[str, int, str, str]:
    """(file, line in the repo's file, original line, mutated line) of a mutant."""
    diff = mutmut(ws, "show", name)
    lines_ = diff.splitlines()
    minus = [ln[1:] for ln in lines_ if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:] for ln in lines_ if ln.startswith("+") and not ln.startswith("+++")]
    module = name.split(".x_")[0]  # vmaflags.model.step
    path = module.replace("vmaflags.", "").replace(".", "/") + ".py"
    func = re.match(r".*\.x_(\w+?)__mutmut_\d+$", name).group(1)
    lines = (ROOT / path).read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if re.match(rf"\s*def {func}\(", ln)), 0)
    old = minus[0] if minus else ""
    line = next((i + 1 for i in range(start, len(lines)) if lines[i].strip() == old.strip()),
                start + 1)
    return path, line, old.strip(), plus[0].strip() if plus else ""


# A mutant whose test run fails, times out or dies is detected.
KILLED = ("killed", "timeout", "segfault", "suspicious")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--output", type=Path, default=ROOT / "mutation" / "last-result.txt")
    ap.add_argument("--again", action="store_true",
                    help="reuse .mutation/ and rerun only the mutants not killed last time "
                         "(after changing the proofs or tests, not rules.py or step.py)")
    ns = ap.parse_args()
    t0 = time.monotonic()
    jobs = ["--max-children", str(ns.max_children)]
    if ns.again:
        proofs_ws = WORK / "proofs"
        refresh(proofs_ws)
        again = [n for n, s in statuses(proofs_ws).items() if s not in KILLED]
        mutmut(proofs_ws, "run", *jobs, *again, check=False)
    else:
        proofs_ws = workspace("proofs", [PROOFS])
        mutmut(proofs_ws, "run", *jobs, check=False)
    first = statuses(proofs_ws)
    if not first:
        sys.exit("mutation/run.py: mutmut found no mutants (see .mutation/proofs)")
    left = [n for n, s in first.items() if s not in KILLED]
    second: dict[str, str] = {}
    if left:
        all_ws = workspace("all", [*MODEL_TESTS, "tests/test_proofs.py", "-k",
                                   "not test_obligation"])
        mutmut(all_ws, "run", *jobs, *left, check=False)
        second = {n: s for n, s in statuses(all_ws).items() if n in left}
    equivalent = tomllib.loads((ROOT / "mutation" / "equivalent.toml").read_text())["mutant"]
    survivors = [n for n in left if second.get(n) not in KILLED]
    report, eq = [], 0
    for n in sorted(survivors):
        path, line, old, new = place(proofs_ws, n)
        why = next((e["reason"] for e in equivalent
                    if e["file"] == path and e["was"] == old and e["now"] == new), None)
        eq += why is not None
        report.append(f"{path}:{line}: {old}  ->  {new}  [{second.get(n, first[n])}]"
                      + (f"\n    equivalent: {why}" if why else ""))
    total = len(first)
    by_proofs = total - len(left)
    by_both = total - len(survivors)
    live = total - eq
    lines = [
        f"mutmut {importlib.metadata.version('mutmut')} over {', '.join(TARGETS)}: "
        f"{total} mutants, {eq} equivalent (mutation/equivalent.toml)",
        f"killed by vmaflags prove alone: {by_proofs}/{live} non-equivalent "
        f"({100 * by_proofs / live:.1f}%)",
        f"killed by prove and the model tests: {by_both}/{live} non-equivalent "
        f"({100 * by_both / live:.1f}%)",
        f"survivors: {len(survivors)} ({eq} equivalent, {len(survivors) - eq} not)",
        *report,
        f"({time.monotonic() - t0:.0f} s)",
    ]
    text = "\n".join(lines) + "\n"
    ns.output.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
