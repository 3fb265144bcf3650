"""Coverage of the model (vmaflags.model) under the random conformance run.

Runs the random part of `vmaflags conform` (conformance/sequences.py: every sysfs mode as root,
the khugepaged share included) against this machine's kernel, in this one process so that
every model evaluation is seen, and prints two figures:

1. coverage.py's branch coverage of model/ (Python `if`s and loops);
2. the rules' own branches: the rules are written with the backend's connectives
   (`B.and_`, `B.or_`, `B.ite`, `B.select`), which coverage.py sees as one line each.  Each
   call site of a connective in rules.py, step.py and arena.py is counted as the branches of
   the short-circuit code it stands for: `and_(a, b, c)` has the exits "a false", "b false",
   "c false" and "all true"; `or_` likewise with "true"; `ite`/`select` their two arms.  A
   call site whose number of arguments varies (a generator over the cells) counts as two
   outcomes, true and false.

The scripts are the ones `vmaflags conform --examples N --seed S` draws (the shards do not
depend on the number of workers).  Needs what `conform` needs; as root hold
/run/vmaflags-live.lock.  model/README.md lists the rule branches no random run can reach.

Run: .venv/bin/python bench/model_coverage.py [--examples N] [--seed S] [--era ERA] [--missing]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import pathlib
import sys
import time
from typing import Any

import coverage

MODEL = pathlib.Path(__file__).resolve().parent.parent / "model"
RULE_FILES = {str(MODEL / f) for f in ("rules.py", "step.py", "arena.py")}


class Outcomes:
    """Which exit of each connective call site the concrete backend took."""

    def __init__(self) -> None:
        # (code object, bytecode offset) -> line, kind, and the (arity, exit) pairs seen
        self.line: dict[tuple[Any, int], int] = {}
        self.kind: dict[tuple[Any, int], str] = {}
        self.seen: dict[tuple[Any, int], set[tuple[int, int]]] = collections.defaultdict(set)

    def install(self) -> None:
        from vmaflags.model import backend

        getframe = sys._getframe

        def site(kind: str) -> tuple[Any, int] | None:
            f = getframe(2)
            if f.f_code.co_filename not in RULE_FILES:
                return None
            key = (f.f_code, f.f_lasti)
            if key not in self.line:
                self.line[key], self.kind[key] = f.f_lineno, kind
            return key

        def and_(*xs: Any) -> bool:
            out = next((i for i, x in enumerate(xs) if not x), len(xs))
            key = site("and")
            if key:
                self.seen[key].add((len(xs), out))
            return out == len(xs)

        def or_(*xs: Any) -> bool:
            out = next((i for i, x in enumerate(xs) if x), len(xs))
            key = site("or")
            if key:
                self.seen[key].add((len(xs), out))
            return out < len(xs)

        def ite(c: Any, a: Any, b: Any) -> Any:
            key = site("ite")
            if key:
                self.seen[key].add((1, 0 if c else 1))
            return a if c else b

        backend._Py.and_ = staticmethod(and_)
        backend._Py.or_ = staticmethod(or_)
        backend._Py.ite = staticmethod(ite)
        backend._Py.select = staticmethod(ite)

    def report(self, missing: bool) -> tuple[int, int]:
        """Print per file and (with `missing`) every exit never taken; (taken, total)."""
        per_file: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        gaps = []
        for key, seen in sorted(self.seen.items(),
                                key=lambda kv: (kv[0][0].co_filename, self.line[kv[0]])):
            arities = {a for a, _ in seen}
            if len(arities) > 1:  # variadic: true or false
                exits = {"and": lambda a, o: o == a, "or": lambda a, o: o < a}[self.kind[key]]
                got = {exits(a, o) for a, o in seen}
                want = {True, False}
                names = {True: "true", False: "false"}
            else:
                (a,) = arities
                got = {o for _, o in seen}
                want = set(range(a + 1)) if self.kind[key] != "ite" else {0, 1}
                names = {o: self._exit(self.kind[key], a, o) for o in want}
            path = key[0].co_filename
            pf = per_file[pathlib.Path(path).name]
            pf[0] += len(got & want)
            pf[1] += len(want)
            for o in sorted(want - got, key=str):
                gaps.append((pathlib.Path(path).name, self.line[key], names[o], key[0].co_name))
        for name, (got, total) in sorted(per_file.items()):
            print(f"  {name:10s} {got:4d} of {total:4d} connective exits "
                  f"({100 * got / total:.1f}%)")
        if missing:
            for name, line, what, func in gaps:
                print(f"    {name}:{line} ({func}): never {what}")
        taken = sum(g for g, _ in per_file.values())
        return taken, sum(t for _, t in per_file.values())

    @staticmethod
    def _exit(kind: str, arity: int, o: int) -> str:
        if kind == "ite":
            return "the then-arm" if o == 0 else "the else-arm"
        if o == arity:
            return "all false" if kind == "or" else "all true"
        return f"argument {o + 1} of {arity} {'true' if kind == 'or' else 'false'} first"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--era", help="era id (default: identify it)")
    ap.add_argument("--missing", action="store_true", help="list the exits never taken")
    a = ap.parse_args()
    cov = coverage.Coverage(branch=True, source=[str(MODEL)], data_file=None)
    cov.start()
    # imported under coverage, so that module-level lines count too
    from vmaflags.conformance import host, identify, sequences, sysfs
    from vmaflags.model.eras import ERAS, era as era_by_id

    why = host.no_thp() or host.no_executor()
    if why:
        cov.stop()
        print(f"SKIP: {why}")
        return 0
    era = era_by_id(a.era) if a.era else None
    if era is None:
        ident = identify.identify()
        if not ident.matching:
            cov.stop()
            print("no model era matches this kernel", file=sys.stderr)
            return 1
        era = ERAS[ident.matching[0]]
    outcomes = Outcomes()
    outcomes.install()
    from vmaflags.model import concrete
    concrete.clear_caches()  # identification filled the memos: evaluate everything afresh
    t0 = time.perf_counter()
    guard_cm = sysfs.SysfsGuard() if sysfs.writable() is None else contextlib.nullcontext()
    with guard_cm as guard:
        live = sysfs.read("enabled")
        modes = [live] + ([m for m in ("madvise", "always", "never") if m != live]
                          if guard is not None else [])
        r = sequences.run(era, a.examples, a.seed, modes, guard, workers=1)
    cov.stop()
    print(f"era {era.id}, seed {a.seed}, modes {' '.join(modes)}: {r.examples} scripts "
          f"({r.machine_examples} with sysfs/khugepaged steps), {r.transitions} transitions, "
          f"{len(r.divergences)} divergences, {len(r.flaky)} flaky, {r.inconclusive} "
          f"inconclusive, {time.perf_counter() - t0:.0f} s")
    for d in r.divergences:
        print(d["script"], d["step"], d["model"], d["kernel"], sep="\n")
    print("coverage.py, model/:")
    pct = cov.report(show_missing=True, file=sys.stdout)
    print(f"model/ branch coverage (coverage.py): {pct:.1f}%")
    print("rule branches (connective exits in rules.py, step.py, arena.py):")
    taken, total = outcomes.report(a.missing)
    print(f"rule branches taken: {taken} of {total} ({100 * taken / total:.1f}%)")
    return 1 if r.divergences or r.errors else 0


if __name__ == "__main__":
    sys.exit(main())
