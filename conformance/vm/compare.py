"""Compare Debian kernels booted in qemu with the model: scenarios, probes and random scripts.

    python -m vmaflags.conformance.vm.compare [--kernel 6.1 --kernel 6.12] [-n 200]
                                               [--json out.json] [--no-minimise]

Everything for one kernel runs in ONE boot (plus one boot per minimisation round).  The model
era follows the kernel: `mmf` (represented by 6.12) for 6.12, `ERAS["mmf"].at("6.1")` for 6.1;
the model's sysfs is the script's starting mode (madvise unless a scenario's `#! sysfs:` header
lists others, each run separately).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from dataclasses import dataclass

from vmaflags.model.eras import ERAS, Era
from vmaflags.model.syscalls import PMD, SYSFS_MODES, Script, ScriptError, parse_script

from .. import driver
from ..driver import Divergence
from . import runner

SCENARIO_DIR = pathlib.Path(__file__).resolve().parent.parent / "scenarios"
SEED = 20251126

# Hand-written probes for the questions the VM prototype was asked (see README.md).
PROBES = {
    # (a) MADV_COLLAPSE over none PTEs in a uffd-armed VMA: SCAN_EXCEED_NONE_PTE
    "probe-uffd-hole-collapse": """arena 1
mmap 0 2M
touch 0 8K
uffd_register 0 2M missing
madvise 0 2M collapse
""",
    # (b) a nohugepage over a region with one hg VMA that has an anon_vma
    "probe-merge-after-write": """arena 3
mmap 0 6M
madvise 2M 2M hugepage
touch 2M 4K
madvise 0 6M nohugepage
""",
    # (c) fork write-protects the parent's PTEs: SCAN_PAGE_RO before 6.18
    "probe-fork-collapse": """arena 1
mmap 0 2M
touch 0 8K
fork
madvise 0 2M collapse
""",
    # (c') ... unless a page is written again after the fork
    "probe-fork-rewrite-collapse": """arena 1
mmap 0 2M
touch 0 8K
fork
touch 0 4K
madvise 0 2M collapse
""",
    # (c'') fork of a THP: the PMD is write-protected too, but SCAN_PMD_MAPPED counts as done
    "probe-fork-thp-collapse": """arena 1
mmap 0 2M
madvise 0 2M hugepage
touch 0 4K
fork
madvise 0 2M collapse
""",
}


def era_for(kernel: str) -> Era:
    """The model era standing for a Debian kernel "6.1" / "6.12" (or a version string)."""
    v = kernel if kernel in ("6.1", "6.12") else ".".join(kernel.split(".")[:2])
    e = ERAS["mmf"]
    return e if v == e.kernel else e.at(v)


@dataclass
class Case:
    name: str
    script: Script
    mode: str = "madvise"  # the starting THP `enabled` mode

    @property
    def text(self) -> str:
        return self.script.text()


def scenario_cases(directory: pathlib.Path = SCENARIO_DIR) -> list[Case]:
    """Every scenario file, once per `#! sysfs:` mode (`live` -> madvise, the VM's boot mode).
    Files that do not parse (the catalogue may be mid-edit) are reported and left out."""
    out = []
    for p in sorted(directory.glob("*.vmf")):
        try:
            sc = parse_script(p.read_text())
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"warning: {p.name}: {e}", file=sys.stderr)
            continue
        modes = dict(sc.meta).get("sysfs", "live").split() or ["live"]
        modes = ["madvise" if m == "live" else m for m in modes]
        for m in dict.fromkeys(modes):
            out.append(Case(p.stem if len(modes) == 1 else f"{p.stem}@{m}", sc, m))
    return out


def probe_cases() -> list[Case]:
    return [Case(n, parse_script(t)) for n, t in PROBES.items()]


def random_cases(n: int = 200, seed: int = SEED, blocks: int = 2, max_steps: int = 12,
                 coded: bool = False) -> list[Case]:
    """`n` distinct scripts from strategies.scripts (or, with `coded`, from
    strategies.coded_scripts, the random conformance run's longer byte-coded scripts), the same
    ones for the same seed."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    from ..strategies import coded_scripts, scripts

    got: dict[str, Script] = {}
    strategy = coded_scripts(blocks) if coded else scripts(blocks, max_steps)

    @hseed(seed)
    @settings(max_examples=4 * n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(s: Script) -> None:
        if len(got) < n and s.steps:
            got.setdefault(s.text(), s)

    draw()
    kind = "coded" if coded else "random"
    return [Case(f"{kind}-{i:03d}", s) for i, s in enumerate(got.values())]


@dataclass
class Outcome:
    case: Case
    divergence: Divergence | None
    error: str = ""  # the executor failed in the guest


def _vma_kind(m, k) -> str:
    """How the VMA lists differ: the kernel has fewer VMAs ("merge"), more ("split"), other
    boundaries, or the same boundaries with other flags / THPeligible / AnonHugePages."""
    if m is None or k is None or m.vmas == k.vmas:
        return ""
    if len(k.vmas) != len(m.vmas):
        return "kernel-merges" if len(k.vmas) < len(m.vmas) else "kernel-splits"
    if [(v.start, v.end) for v in m.vmas] != [(v.start, v.end) for v in k.vmas]:
        return "boundaries"
    out = [name for name, i in (("flags", 2), ("eligible", 3), ("anon-huge", 4))
           if any(a[i] != b[i] for a, b in zip(m.vmas, k.vmas))]
    return "+".join(out)


def _signature(d: Divergence, script: Script) -> tuple:
    """What makes two divergences "the same": the kind of step, the differing fields, the two
    results when the result differs, and how the VMA lists differ."""
    step = script.steps[int(d.step.rstrip("c")) - 1]
    rets = (d.model.ret, d.kernel.ret) if d.model and d.kernel and "ret" in d.fields() else ()
    return (type(step).__name__, getattr(step, "advice", None), d.step.endswith("c"),
            tuple(d.fields()), rets, _vma_kind(d.model, d.kernel))


def check_boot(kernel: str, cases: list[Case], era: Era | None = None
               ) -> tuple[runner.Boot, list[Outcome]]:
    """Run every case in one boot of `kernel` and compare each with the model."""
    era = era or era_for(kernel)
    b = runner.boot(kernel, [c.text for c in cases], [c.mode for c in cases],
                    clr_hugepage=era.clr_hugepage)
    out = []
    for c, r in zip(cases, b.results):
        if r.rc != 0:
            out.append(Outcome(c, None, f"executor exited {r.rc}: {r.stderr.strip()}"))
            continue
        try:
            kernel_trace = [driver.parse_line(ln) for ln in r.lines]
        except (ValueError, KeyError) as e:
            out.append(Outcome(c, None, f"unparsable executor output: {e}"))
            continue
        try:
            model_trace = driver.run_model(era, c.script, SYSFS_MODES.index(c.mode))
        except ScriptError as e:
            out.append(Outcome(c, None, f"the model rejects the script: {e}"))
            continue
        d = driver.compare(c.script, model_trace, kernel_trace)
        if d is not None:
            d.era, d.sysfs = f"{era.id}@{era.kernel}", c.mode
        out.append(Outcome(c, d))
    return b, out


def _fits(steps: tuple, arena: int) -> bool:
    if arena < 1:
        return False
    size = arena * PMD
    return all(getattr(s, "off", 0) + getattr(s, "len", 0) <= size for s in steps)


def _truncate(script: Script, d: Divergence) -> Script:
    n = int(d.step.rstrip("c"))
    return Script(script.steps[:n], script.arena)


def _chunk_deletions(steps: tuple) -> list[tuple]:
    """Every way of deleting one run of n/2, n/4, ..., 1 steps (ddmin's complements)."""
    n, out, seen = len(steps), [], set()
    k = max(1, n // 2)
    while True:
        for i in range(0, n, k):
            if (i, k) not in seen:
                seen.add((i, k))
                out.append(steps[:i] + steps[i + k:])
        if k == 1:
            return out
        k //= 2


def minimise(kernel: str, outcomes: list[Outcome], era: Era | None = None,
             max_rounds: int = 40, log=print) -> list[Outcome]:
    """Shortest scripts that keep each divergence's signature (step kind, differing fields,
    results): per round, every chunk deletion of every divergence's current script (and a
    one-block-smaller arena, and the script itself, to confirm it reproduces) run in one boot;
    the shortest survivor wins.  One result per signature; `error` says "flaky" when the
    current best did not reproduce in some round."""
    era = era or era_for(kernel)
    best: dict[tuple, Outcome] = {}
    for o in outcomes:
        if o.divergence is None:
            continue
        sig = _signature(o.divergence, o.case.script)
        s = _truncate(o.case.script, o.divergence)
        if sig not in best or len(s.steps) < len(best[sig].case.script.steps):
            best[sig] = Outcome(Case(o.case.name, s, o.case.mode), o.divergence)
    done: set[tuple] = set()
    flaky: dict[tuple, int] = {}
    for rnd in range(max_rounds):
        cands: list[tuple[tuple, Case]] = []
        for sig, o in best.items():
            if sig in done:
                continue
            sc = o.case.script
            cands.append((sig, o.case))  # does the current best still reproduce?
            for st in _chunk_deletions(sc.steps):
                if st:
                    cands.append((sig, Case(o.case.name, Script(st, sc.arena), o.case.mode)))
            if _fits(sc.steps, sc.arena - 1):
                cands.append((sig, Case(o.case.name, Script(sc.steps, sc.arena - 1),
                                        o.case.mode)))
        if not cands:
            break
        log(f"  {kernel}: minimise round {rnd + 1}: {len(cands)} candidates, "
            f"{len(best) - len(done)} divergences")
        try:
            _, res = check_boot(kernel, [c for _, c in cands], era)
        except runner.VMError as e:
            log(f"  {kernel}: round {rnd + 1} failed: {str(e).splitlines()[0]}")
            break
        improved: set[tuple] = set()
        for (sig, c), o in zip(cands, res):
            same = o.divergence is not None and _signature(o.divergence, c.script) == sig
            if c is best[sig].case:
                if not same:
                    flaky[sig] = flaky.get(sig, 0) + 1
                continue
            if not same:
                continue
            s = _truncate(c.script, o.divergence)
            cur = best[sig].case.script
            if (len(s.steps), s.arena) < (len(cur.steps), cur.arena):
                best[sig] = Outcome(Case(c.name, s, c.mode), o.divergence)
                improved.add(sig)
        done |= set(best) - improved
    for sig, n in flaky.items():
        best[sig].error = f"flaky: did not reproduce in {n} minimisation round(s)"
    return list(best.values())


def _script_lines(s: Script) -> str:
    return "; ".join([f"arena {s.arena}", *(x.text() for x in s.steps)])


def report_kernel(kernel: str, n_random: int = 200, do_minimise: bool = True, log=print,
                  n_coded: int = 0, seed: int = SEED) -> dict:
    era = era_for(kernel)
    cases = (probe_cases() + scenario_cases() + random_cases(n_random, seed)
             + (random_cases(n_coded, seed, coded=True) if n_coded else []))
    t0 = time.monotonic()
    b, outs = check_boot(kernel, cases, era)
    wall = time.monotonic() - t0
    divs = [o for o in outs if o.divergence is not None]
    errs = [o for o in outs if o.error]
    log(f"{kernel}: {b.kernel} ({b.release}), booted enabled={b.enabled}; "
        f"{len(cases)} scripts in {wall:.1f} s wall (qemu {b.seconds:.1f} s, /init at "
        f"{b.boot_seconds} s, done at {b.guest_seconds} s guest uptime); "
        f"{len(divs)} diverge, {len(errs)} executor errors")
    res = {"kernel": kernel, "package": b.kernel, "release": b.release,
           "era": f"{era.id}@{era.kernel}", "scripts": len(cases), "wall_s": round(wall, 2),
           "qemu_s": round(b.seconds, 2), "init_uptime_s": b.boot_seconds,
           "done_uptime_s": b.guest_seconds,
           "cases": [{"name": o.case.name, "mode": o.case.mode,
                      "status": "error" if o.error else "diverge" if o.divergence else "pass",
                      "error": o.error,
                      "divergence": o.divergence.as_dict() if o.divergence else None}
                     for o in outs]}
    # A quick single-script boot: boot-to-verdict for the smallest job.
    t1 = time.monotonic()
    one = runner.boot(kernel, [PROBES["probe-uffd-hole-collapse"]])
    res["one_script_wall_s"] = round(time.monotonic() - t1, 2)
    res["one_script_init_uptime_s"] = one.boot_seconds
    res["one_script_done_uptime_s"] = one.guest_seconds
    if do_minimise and divs:
        mins = minimise(kernel, divs, era, log=log)
        res["minimised"] = [{**o.divergence.as_dict(), "script": _script_lines(o.case.script),
                             "mode": o.case.mode, "from": o.case.name, "note": o.error}
                            for o in mins if o.divergence]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", action="append", help="6.1, 6.12, a package or an image")
    ap.add_argument("-n", type=int, default=200, help="random scripts (default 200)")
    ap.add_argument("--coded", type=int, default=0,
                    help="also this many strategies.coded_scripts scripts (default 0)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--no-minimise", action="store_true")
    a = ap.parse_args(argv)
    out = []
    for k in a.kernel or ["6.1", "6.12"]:
        try:
            r = report_kernel(k, a.n, not a.no_minimise, n_coded=a.coded, seed=a.seed)
        except runner.Skip as e:
            print(f"{k}: SKIP: {e}")
            continue
        out.append(r)
        if a.json:
            a.json.write_text(json.dumps(out, indent=1))
        for c in r["cases"]:
            if c["status"] == "error":
                print(f"  ERROR {c['name']}: {c['error']}")
        for m in r.get("minimised", []):
            print(f"\n  [{k}] {m['script']}   (sysfs {m['mode']}, from {m['from']})"
                  + (f"  [{m['note']}]" if m["note"] else ""))
            print(f"    step {m['step']} `{m['syscall']}`: {', '.join(m['differ'])} differ")
            print(f"    model:  {m['model']}\n    kernel: {m['kernel']}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
