"""What the three renderings share: results.json turned into rows, roles and commands, so that
report.txt, report.md and report.html say the same things."""
from __future__ import annotations

import textwrap

WIDTH = 80
ADVERSARIES = ("khugepaged", "collapse", "fault")
ROLE_OF = {"restore": "restorer", **{a: "adversary" for a in ADVERSARIES}}


def obligation(r: dict) -> str:
    return ":".join(x for x in (r["theorem"], r["protocol"], r["era"]) if x)


def base_era(key: str) -> str:
    return key.partition("@")[0]


def verdict(r: dict) -> str:
    """The verdict, in capitals when it is not the expected one."""
    return r["verdict"] if r["verdict"] == r["expected"] else r["verdict"].upper()


def seconds(r: dict) -> str:
    s = r.get("seconds")
    return "-" if s is None else f"{s:.2f}"


def role(step: dict) -> str:
    """Whose step it is: the process under test (a dumped process, a script), the restorer
    (CRIU's restore protocol), an adversary (khugepaged, MADV_COLLAPSE, a fault) -- a
    collapse inside a restore's trace is the adversary the no-collapse-window proof adds -- or
    an observer (proofs/verdict.py replay: the scan that ends both backing traces)."""
    if "role" in step:
        return step["role"]
    words = step.get("syscall", "").split()
    if words[:1] == ["khugepaged"] or (words[:1] == ["madvise"] and words[-1:] == ["collapse"]):
        return "adversary"
    return ROLE_OF.get(step.get("process", ""), "process")


def counterexamples(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("counterexample") and r["verdict"] != "proved"]


def is_trace(steps: list[dict]) -> bool:
    return bool(steps) and "syscall" in steps[0]


def finals(steps: list[dict]) -> list[tuple[str, str]]:
    """(process, its last observation) for each process of a trace of several."""
    last: dict[str, str] = {}
    for s in steps:
        last[s["process"]] = s["observation"]
    return list(last.items()) if len(last) > 1 else []


def prove_command(r: dict) -> str:
    return f"vmaflags prove --theorem {r['theorem']} --era {base_era(r['era'])}"


def concurrency_command(r: dict | None = None) -> str:
    """No vmaflags command runs the concurrency theorems yet: the Python call that does."""
    if r is None:
        call = ("[print(t, p, e, C.check(t, p, era(e)).verdict) for t, p, e in C.EXPECTED]")
    else:
        p = "None" if r["protocol"] is None else repr(r["protocol"])
        call = f"print(C.check({r['theorem']!r}, {p}, era({r['era']!r})))"
    return ('python3 -c "from vmaflags.proofs import concurrency as C; '
            f'from vmaflags.model import era; {call}"')


def replay_name(r: dict) -> str:
    return "replay/" + obligation(r).replace(":", ".").replace("@", "-at-") + ".txt"


def replay_command(r: dict, kernels: dict) -> str | None:
    """`vmaflags replay` of a step-level counterexample on a kernel of its era, or None."""
    if not is_trace(r["counterexample"]) or "@" in r["era"] or "locks" in r["counterexample"][0]:
        return None
    spec = kernels.get(r["era"])
    if spec is None:
        return None
    return (f"vmaflags replay {replay_name(r)} --era {r['era']}"
            + (f" --kernel {spec}" if spec else ""))


def reproduce(res: dict) -> list[tuple[str, str]]:
    """(what, the command that produces it again) for each number of the report."""
    out = [("Section 2, the verdicts (their times: bench/prove.py)",
            res.get("proofs_command", "vmaflags prove --json")),
           ("Section 3, a counterexample", "vmaflags prove --theorem THEOREM --era ERA"),
           ("Section 4, the concurrency theorems", concurrency_command()),
           ("Sections 5 and 6 (from the model), and this report from its results.json",
            "vmaflags report --out DIR --from results.json")]
    for i, k in enumerate(kernel_rows(res["conformance"]), 1):
        if k["command"]:
            out.append((f"Section 7, K{i}", k["command"]))
    for rep in res.get("criu", []):
        out.append((f"Section 8, CRIU {rep.get('criu')}", rep["command"]))
    for st in res.get("stress", []):
        out.append((f"Section 9, Linux {st.get('kernel')}", st["command"]))
    return out


def grid(rows: list[dict], eras: list[str]) -> list[tuple[str, list[str]]]:
    """theorem (/ protocol, @kernel) x era: the verdicts, "" where a header row."""
    out: list[tuple[str, list[str]]] = []
    cells: dict[tuple, dict[str, str]] = {}
    for r in rows:
        at = r["era"].partition("@")[2]
        key = (r["theorem"], r["protocol"], at)
        if key not in cells:
            cells[key] = {}
        cells[key][base_era(r["era"])] = verdict(r)
    current = None
    for (theorem, protocol, at), by in cells.items():
        label = theorem
        if protocol:
            if theorem != current:
                out.append((theorem, []))
            label = "  " + protocol
        current = theorem
        out.append((label + (f" @{at}" if at else ""), [by.get(e, "-") for e in eras]))
    return out


def thp_kb(obs: dict | None) -> str:
    """AnonHugePages over every VMA of a `vm criu` observation."""
    if not obs:
        return "-"
    return str(sum(int(v.rsplit(":", 1)[1]) for v in obs["vmas"]))


def criu_rows(rep: dict) -> list[list[str]]:
    out = []
    for c in rep["cases"]:
        d, r, m = c.get("dumped"), c.get("restored"), c.get("model")
        out.append([c["name"], c["mode"], c["protocol"],
                    f"{d['get'] if d else '-'}>{r['get'] if r else '-'}",
                    f"{thp_kb(d)}>{thp_kb(r)}", thp_kb(m),
                    "yes" if c["agrees"] else "NO"])
    return out


CRIU_HEAD = ["case", "mode", "protocol", "get", "THP kB", "model", "agrees"]


def kernel_rows(conf: list[dict]) -> list[dict]:
    out = []
    for k in conf:
        rnd = k.get("random") or {}
        out.append({"spec": k.get("spec") or "host", "kernel": k.get("kernel", ""),
                    "identified": k.get("identified_era") or "-",
                    "expected": k.get("expected_era") or "-",
                    "scenarios": sum(s["status"] == "pass" for s in k.get("scenarios", [])),
                    "of": len(k.get("scenarios", [])),
                    "random": rnd.get("examples", 0),
                    "divergences": len(rnd.get("divergences", [])),
                    "seed": rnd.get("seed"),
                    "selftests": ",".join(t["status"] for t in k.get("selftests", [])) or "-",
                    "note": k.get("skip") or (k.get("error") or "").split("\n")[0],
                    "status": ("SKIP" if k.get("skip") else "OK" if k.get("ok") else "FAIL"),
                    "source": k.get("source", ""), "command": k.get("command", "")})
    return out


def identified(k: dict) -> str:
    """The era a kernel was identified as, and the one expected where they differ."""
    if k["expected"] in ("-", k["identified"]):
        return k["identified"]
    return f"{k['identified']} (expected {k['expected']})"


def matrix(conf: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Scenario names and, per kernel, each scenario's status (pass/diverge/skip/-)."""
    names = list(dict.fromkeys(s["name"] for k in conf for s in k.get("scenarios", [])))
    cols = []
    for k in conf:
        by = {s["name"]: s["status"] for s in k.get("scenarios", [])}
        cols.append([by.get(n, "-") for n in names])
    return names, cols


def divergences(conf: list[dict]) -> list[dict]:
    """Every divergence of the runs (scenarios and random sequences): where kernel and model
    part, with the script (driver.Divergence.as_dict)."""
    out = []
    for i, k in enumerate(conf, 1):
        found = [(s["name"], s.get("divergence") or {"reason": s.get("reason", "")})
                 for s in k.get("scenarios", []) if s["status"] == "diverge"]
        found += [("random sequence", d) for d in (k.get("random") or {}).get("divergences", [])]
        for name, d in found:
            out.append({"kernel": f"K{i}", "spec": k.get("spec") or "host", "name": name,
                        "step": d.get("step"), "syscall": d.get("syscall"),
                        "differ": ", ".join(d.get("differ") or []), "model": d.get("model"),
                        "kernel_line": d.get("kernel"), "sysfs": d.get("sysfs"),
                        "script": d.get("script", ""), "reason": d.get("reason", "")})
    return out


def skips(conf: list[dict]) -> list[tuple[str, str, str]]:
    """(K#, scenario, why) for every scenario a run skipped."""
    return [(f"K{i}", s["name"], s.get("reason", "")) for i, k in enumerate(conf, 1)
            for s in k.get("scenarios", []) if s["status"] == "skip"]


MARK = {"pass": "ok", "diverge": "DIV", "skip": "skip", "-": "-"}


def race_rows(st: dict) -> list[list[str]]:
    return [[x["race"], x["model"] or "control", str(x["tries"]), str(x["windows"]),
             str(x["sightings"]), x["skip"] or x["verdict"]] for x in st.get("races", [])]


RACE_HEAD = ["race", "model", "tries", "windows", "seen", "verdict"]


def arguments(rows: list[dict]) -> list[tuple[str, list[str], int, str]]:
    """Each distinct unbounded argument: (method, its lemmas, how many rows use it, their
    bounded cross-check)."""
    seen: dict[tuple, list] = {}
    for r in rows:
        if r.get("argument"):
            key = (r["method"], tuple(r["argument"]))
            seen.setdefault(key, [0, set()])
            seen[key][0] += 1
            seen[key][1].add(r.get("cross_check") or "")
    return [(m, list(a), n, "; ".join(sorted(c - {""}))) for (m, a), (n, c) in seen.items()]


def wrap(text: str, indent: str = "", width: int = WIDTH, first: str | None = None
         ) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent if first is None else first,
                         subsequent_indent=indent, break_long_words=True,
                         break_on_hyphens=False) or [indent.rstrip()]


def wrap_command(cmd: str, indent: str = "  ", width: int = WIDTH) -> list[str]:
    """A shell command over several lines (` \\` continuations, inside quotes too: bash drops
    backslash-newline there as well)."""
    words: list[str] = []
    for w in cmd.split(" "):  # an option stays with its value
        if words and words[-1].startswith("--") and not w.startswith("-"):
            words[-1] += " " + w
        else:
            words.append(w)
    lines, cur = [], indent
    for w in words:
        if cur.strip() and len(cur) + 1 + len(w) + 2 > width:
            lines.append(cur + " \\")
            cur = indent + "    " + w
        else:
            cur = cur + (" " if cur.strip() else "") + w
    return lines + [cur]
