"""report.txt: a mailing-list reply -- at most 80 columns, no tabs, traces quoted with "> "."""
from __future__ import annotations

from typing import Any

from vmaflags.conformance.replay import LEGEND

from . import diagram, shape
from .shape import WIDTH, wrap, wrap_command
from .timeline import DUMP, GUARDS, OPEN, SPLIT, THP, Timeline

Q = "> "
METHOD = 22  # the method column of the verdict tables


def table_groups(head: list[str], rows: list[list[str]], indent: str = "",
                 wrap_col: int | None = None) -> list[list[str]]:
    """The lines of the head and its rule, then of each row: columns two spaces apart.  When
    the table is wider than WIDTH, column `wrap_col` (default: the widest) is wrapped.  A
    row of one cell is a heading across the columns."""
    rows = [[str(x) for x in r] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *(r for r in rows if len(r) > 1))]
    over = len(indent) + sum(widths) + 2 * (len(widths) - 1) - WIDTH
    order = ([wrap_col] if wrap_col is not None else []) + sorted(
        range(len(widths)), key=lambda c: -widths[c])
    for c in order:
        cut = min(over, widths[c] - 8)
        if cut > 0:
            widths[c] -= cut
            over -= cut
    out = []
    for r in [head, ["-" * w for w in widths], *rows]:
        if len(r) == 1:
            out.append(wrap(r[0], indent + "  ", first=indent))
            continue
        cells = [wrap(x, width=w) if len(x) > w else [x] for x, w in zip(r, widths)]
        out.append([(indent + "  ".join(f"{(c[k] if k < len(c) else ''):<{w}}"
                                        for c, w in zip(cells, widths))).rstrip()
                    for k in range(max(len(c) for c in cells))])
    return out


def table(head: list[str], rows: list[list[str]], indent: str = "",
          wrap_col: int | None = None) -> list[str]:
    return [ln for g in table_groups(head, rows, indent, wrap_col) for ln in g]


def heading(number: str, title: str) -> list[str]:
    t = f"{number}. {title}"
    return ["", t, "=" * len(t)]


def sub(number: str, title: str) -> list[str]:
    lines = wrap(title, "    ", first=f"{number} ")
    return ["", *lines]


# ---- traces -----------------------------------------------------------------------------------

def state_lines(obs: str, indent: str) -> list[str]:
    """An observation line, wrapped after its VMAs' commas (continuations indented 2 more)."""
    head, sep, vmas = obs.partition("vmas=")
    if not sep:
        return wrap(obs, indent + "  ", first=indent)
    parts = vmas.split(",")
    words = [head + sep + parts[0]] + parts[1:]
    out, cur = [], ""
    for k, w in enumerate(words):
        piece = w + ("," if k < len(words) - 1 else "")
        if cur and len(indent) + len(cur) + len(piece) > WIDTH:
            out.append(indent + cur)
            cur = "  " + piece
        else:
            cur += piece
    return out + [indent + cur]


def trace(steps: list[dict], era: str) -> list[str]:
    """A counterexample, quoted: era, sysfs and arena, then each step numbered with its role,
    its process and step, and the state after it; a trace of several processes ends with
    each one's last state."""
    if not shape.is_trace(steps):  # a rule-level counterexample: the rule's inputs
        return [Q + ln for s in steps for ln in wrap(
            ", ".join(f"{k}={v}" for k, v in s.items()), width=WIDTH - len(Q))]
    s0 = steps[0]
    pmds = f"{s0['arena']} PMD{'s' if s0['arena'] > 1 else ''} ({2 * s0['arena']} MiB)"
    out = [f"{Q}era {era}, sysfs {s0['sysfs']}, arena {pmds}", Q.rstrip()]
    for n, s in enumerate(steps, 1):
        who = f"{s['process']} {s['step']}"
        line = f"{n:>2} {shape.role(s):<9} {who:<17} {s['syscall']}"
        if s.get("locks"):
            line += f"  [{s['locks']}]"
        out += wrap(line, Q + " " * 30, first=Q)
        out += state_lines(s["observation"], Q + " " * 5)
        if "child" in s:
            out += state_lines("child " + s["child"], Q + " " * 5)
    ends = shape.finals(steps)
    if ends:
        out.append(Q.rstrip())
        for proc, obs in ends:
            out.append(f"{Q}after {proc}:")
            out += state_lines(obs, Q + " " * 5)
    return out


def _counterexample(num: str, r: dict, kernels: dict, concurrency: bool) -> list[str]:
    out = sub(num, f"{shape.obligation(r).replace(':', ' / ')}: {shape.verdict(r)}")
    out += wrap(f"expected {r['expected']}: {r['reason']}", "    ")
    if r.get("note"):
        out += wrap(f"found: {r['note']}", "    ")
    cmd = shape.concurrency_command(r) if concurrency else shape.prove_command(r)
    out += wrap_command(cmd, "    ")
    rp = shape.replay_command(r, kernels)
    if rp:
        out += wrap_command(rp, "    ")
    return out + [""] + trace(r["counterexample"], r["era"])


# ---- sections ---------------------------------------------------------------------------------

def _verdicts(rows: list[dict], eras: list[str]) -> list[str]:
    stacked = [[p + "-" for p in e.split("-")[:-1]] + [e.split("-")[-1]] for e in eras]
    depth = max(len(s) for s in stacked)
    head_rows = [[""] + [(s[k] if k < len(s) else "") for s in stacked] for k in range(depth)]
    body = [[label, *(cells or [""] * len(eras))] for label, cells in shape.grid(rows, eras)]
    widths = [max(len(str(x)) for x in col) for col in zip(*head_rows, *body)]
    out = []
    for r in [*head_rows, ["-" * w for w in widths], *body]:
        out.append("  ".join(f"{x:<{w}}" for x, w in zip(r, widths)).rstrip())
    return out


def _detail(rows: list[dict]) -> list[str]:
    """obligation, era, verdict, method [bound], time: one line per row; the theorem (and
    protocol) on the first line of its group.  A bound too long for its column is a note
    under the table."""
    body, notes, current, cur_p = [], {}, None, None
    for r in rows:
        first = ""
        if r["theorem"] != current:
            if r["protocol"] or len(r["theorem"]) > 20:
                body.append([r["theorem"]])
            else:
                first = r["theorem"]
            current, cur_p = r["theorem"], None
        if r["protocol"] and r["protocol"] != cur_p:
            first, cur_p = "  " + r["protocol"], r["protocol"]
        method = r["method"]
        if len(method) > METHOD and r.get("bound"):
            n = notes.setdefault(r["bound"], len(notes) + 1)
            method = method.replace(f"[{r['bound']}]", f"[b{n}]")
        body.append([first, r["era"], shape.verdict(r), method, shape.seconds(r)])
    out = table(["theorem / protocol", "era", "verdict", "method [bound]", "s"], body, "  ",
                wrap_col=3)
    for bound, n in notes.items():
        out += wrap(bound, "        ", first=f"  b{n}: ")
    return out


def _statements(res: dict, rows: list[dict]) -> list[str]:
    out = []
    for tid in dict.fromkeys(r["theorem"] for r in rows):
        if tid in res.get("statements", {}):
            out += ["", *wrap(f"{tid}: {res['statements'][tid]}", "      ", first="  ")]
    return out


def _unexpected(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["verdict"] != r["expected"]:
            out += wrap(f"{shape.obligation(r)}: {r['verdict']}, expected {r['expected']} "
                        f"({r['reason']}). {r.get('note') or ''}", "  ", first="! ")
    return out


def _arguments(rows: list[dict]) -> list[str]:
    out = []
    for method, lemmas, n, cross in shape.arguments(rows):
        out += ["", *wrap(f"{method} ({n} rows" + (f"; cross-check: {cross}" if cross else "")
                          + "):", "  ")]
        for lemma in lemmas:
            out += wrap(lemma, "      ", first="    - ")
    return out


def _timeline(num: str, t: Timeline) -> list[str]:
    out = sub(num, f"{t.protocol}: {t.summary}")
    out += wrap(t.citation, "    ")
    kind = ("lazy, with a pre-dump" if t.parent else "lazy, no pre-dump") if t.lazy else "plain"
    pmds = ", ".join(f"PMD {k}" for k in t.lazy_pmds) or "none"
    out += wrap(f"{kind}; era {t.era}, sysfs madvise; lazy pages in: {pmds}", "    ")
    out += state_lines("dumped: " + t.dumped, "    ")
    head = ["#", "phase", "syscall", "get", *(f"PMD {k}" for k in t.lazy_pmds)]
    rows = []
    for s in t.steps:
        rows.append([str(s.n), s.phase, s.syscall, str(s.get),
                     *(s.pmds[k] for k in t.lazy_pmds)])
    groups = table_groups(head, rows, "    ", wrap_col=2)
    out += groups[0] + groups[1]
    # under each step: CRIU's function (when the protocol's line names it), the VMAs after it
    for s, lines in zip(t.steps, groups[2:]):
        out += lines
        if s.source:
            out += wrap(s.source, " " * 12, first="        <- ")
        out += state_lines("vmas=" + s.observation.partition(" vmas=")[2], " " * 8)
    if t.aborted:
        out += wrap(f"aborted: {t.aborted}", "    ")
    if t.lazy_pmds:
        out.append("    Over the restore:")
    for pmd, w in t.windows().items():
        out += wrap(w, " " * 12, first=f"    PMD {pmd}:  ")
    return out


def _restores(res: dict) -> list[str]:
    from .timeline import timelines

    out = wrap("Each restore protocol of proofs/protocols.py on one dump, step by step on the "
               "model; after each step, what keeps each PMD with lazy pages from becoming a THP "
               "(the no-collapse-window proof's invariant), or which adversary would collapse "
               "it.", "  ")
    out += ["", f"  The dumped process (its first {SPLIT} steps before the pre-dump point):"]
    out += [Q + ln for ln in DUMP.strip().splitlines()]
    out += ["", "  What keeps a PMD with lazy pages safe (any one suffices):"]
    out += [f"    {g:<10} {why}" for g, why in GUARDS.items()]
    out += wrap(OPEN, " " * 15, first="    open:WHO   ")
    out += wrap(THP, " " * 15, first="    THP        ")
    for n, t in enumerate(timelines(), 1):
        out += _timeline(f"5.{n}", t)
    return out


def _conformance(res: dict) -> list[str]:
    conf = res["conformance"]
    if not conf:
        return ["  No conformance results: run without --no-live, or give saved JSON of",
                "  `vmaflags conform --json`, `vm run --json` or `vm matrix --json` in --results."]
    ks = shape.kernel_rows(conf)
    out = table(["", "kernel", "era identified", "scen.", "random/div", "ksft", ""],
                [[f"K{i}", k["spec"], shape.identified(k), f"{k['scenarios']}/{k['of']}",
                  f"{k['random']}/{k['divergences']}", k["selftests"], k["status"]]
                 for i, k in enumerate(ks, 1)], "  ")
    out.append("")
    for i, k in enumerate(ks, 1):
        src = f" ({k['source']})" if k["source"] else ""
        seed = f", seed {k['seed']}" if k["seed"] is not None else ""
        out += wrap(f"K{i}: {k['kernel'] or k['spec']}{src}{seed}", "      ", first="  ")
        if k["note"]:
            out += wrap(k["note"], "      ")
    names, cols = shape.matrix(conf)
    if names:
        out += ["", "  Scenarios x kernels (ok pass, DIV diverges, skip, - not run):", ""]
        out += table(["scenario", *(f"K{i}" for i in range(1, len(cols) + 1))],
                     [[n, *(shape.MARK[c[j]] for c in cols)] for j, n in enumerate(names)],
                     "  ")
    for d in shape.divergences(conf):
        if d["reason"]:
            out += ["", *wrap(f"{d['kernel']} ({d['spec']}) {d['name']}: {d['reason']}", "    ",
                              first="  ")]
            continue
        out += ["", *wrap(f"{d['kernel']} ({d['spec']}) {d['name']}, sysfs {d['sysfs']}: step "
                          f"{d['step']} `{d['syscall']}`, {d['differ']} differ", "    ",
                          first="  ")]
        out += [Q + ln for ln in d["script"].strip().split("\n") if not ln.startswith("#")]
        out += state_lines(f"model:  {d['model']}", "    ")
        out += state_lines(f"kernel: {d['kernel_line']}", "    ")
    skipped = shape.skips(conf)
    if skipped:
        out += ["", "  Skipped:"]
        for kn, name, why in skipped:
            out += wrap(f"{kn} {name}: {why}", "      ", first="    ")
    return out


def _criu(res: dict) -> list[str]:
    if not res.get("criu"):
        return ["  No results: give the JSON of `vmaflags vm criu --json` in --results."]
    out = ["  Per case and mode: PR_GET (get) and AnonHugePages dumped > restored (after the",
           "  lazy phase and two khugepaged scans), the model's AnonHugePages at that point,",
           "  and whether the model's protocol predicted the whole restored state."]
    for rep in res["criu"]:
        out += ["", *wrap(f"CRIU {rep.get('criu')} on Linux {rep.get('kernel')} "
                          f"({rep.get('source', 'live')})", "    ", first="  ")]
        out += table(shape.CRIU_HEAD, shape.criu_rows(rep), "  ")
    return out


def _races(res: dict) -> list[str]:
    out: list[str] = []
    if not res.get("stress"):
        return ["  Not run (--no-live)."]
    for st in res["stress"]:
        out += wrap(f"Linux {st.get('kernel')}, era {st.get('era') or '-'} "
                    f"({st.get('source', 'live')})", "    ", first="  ")
        if st.get("skip"):
            out.append(f"  SKIP: {st['skip']}")
        if st.get("races"):
            out += table(shape.RACE_HEAD, shape.race_rows(st), "  ")
    return out


def _reproduce(res: dict) -> list[str]:
    out: list[str] = []
    for what, cmd in shape.reproduce(res):
        out += ["", *wrap(what + ":", "    ", first="  ")] + wrap_command(cmd, "    ")
    return out


def text(res: dict[str, Any]) -> str:
    proofs, conc = res["proofs"], res["concurrency"]
    eras = [e["id"] for e in res["eras"]]
    kernels = res.get("replay_kernels", {})
    ok = sum(r["verdict"] == r["expected"] for r in proofs)
    cok = sum(r["verdict"] == r["expected"] for r in conc)
    out = [f"vmaflags report (results of Linux {res['host']})", ""]
    out += wrap(f"{len(proofs)} proof obligations, {ok} as expected; {len(conc)} concurrency "
                f"obligations, {cok} as expected.")
    out += heading("1", "Eras")
    for e in res["eras"]:
        out.append(f"  {e['id']:<20} {e['kernels']:<26} features of {e['kernel']}")
        out += wrap(e["summary"], "    ")
    out += heading("2", "Theorems: verdicts per era")
    out += wrap("A verdict in capitals is not the expected one.  Method: how it was decided, "
                "with its bound ([PxC]: every state of P PMDs of C cells; [n steps, PxC]: the "
                "shortest counterexample within n steps; unbounded: an argument, below); s: "
                "seconds to decide it.", "  ")
    out += _statements(res, proofs)
    out += [""] + ["  " + ln for ln in _verdicts(proofs, eras)]
    out += [""] + _detail(proofs)
    out += _unexpected(proofs)
    out += ["", "  The arguments of the rows that have one (their lemmas, checked in the same",
            "  era):"]
    out += _arguments(proofs)
    out += heading("3", "Counterexamples (from the solver, replayed on the model)")
    out += wrap("Each step: its number, its role (the process under test, the restorer, "
                "an adversary: khugepaged, MADV_COLLAPSE, a fault, or an observer: a step that "
                "ends both traces alike to make the difference visible), its process and step "
                "there, "
                "the syscall; under it the state after it: the return value, PR_GET (get), "
                "and each VMA of the arena (vmas=), where", "  ")
    out += wrap(" ".join(LEGEND.split()), "  ")
    out += [""] + wrap(f"Each trace is the one `{res.get('proofs_command')}` found.  `vmaflags "
                       "prove --theorem T --era E` prints the same trace for the row; "
                       "`vmaflags replay` runs the trace printed here, on a kernel "
                       "and on the model.", "  ")
    for n, r in enumerate(shape.counterexamples(proofs), 1):
        out += _counterexample(f"3.{n}", r, kernels, False)
    out += heading("4", "Concurrency: interleavings under the kernel's locks")
    out += _statements(res, conc)
    out += [""] + _detail(conc) + _unexpected(conc)
    for n, r in enumerate(shape.counterexamples(conc), 1):
        out += _counterexample(f"4.{n}", r, kernels, True)
    out += heading("5", "Restore protocols as timelines")
    out += _restores(res)
    out += heading("6", "State machines: one VMA's hg/nh and PR_GET_THP_DISABLE")
    from vmaflags.model.eras import ERAS
    for e in ERAS.values():
        out += [""] + ["  " + ln for ln in diagram.text(e)]
    out += heading("7", "Conformance: kernels and scenarios")
    out += _conformance(res)
    out += heading("8", "CRIU in the loop (vmaflags vm criu)")
    out += _criu(res)
    out += heading("9", "Live races (vmaflags stress)")
    out += _races(res)
    out += heading("10", "Not modelled")
    for item in res["not_modelled"]:
        out += wrap(item, "    ", first="  - ")
    out += heading("11", "Reproduce")
    out += _reproduce(res)
    return "\n".join(ln.rstrip() for ln in out) + "\n"
