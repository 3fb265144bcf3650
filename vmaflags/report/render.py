"""report.txt, report.md and report.html from collect()'s dict."""
from __future__ import annotations

import pathlib
import textwrap
from typing import Any

import jinja2

from vmaflags.model.eras import ERAS

from . import diagram

WIDTH = 80


# ---- shared pieces ------------------------------------------------------------------------------

def obligation(r: dict) -> str:
    return ":".join(x for x in (r["theorem"], r["protocol"], r["era"]) if x)


def reproduce(r: dict, concurrency: bool = False) -> str:
    era = r["era"]
    cmd = f"vmaflags prove --theorem {r['theorem']} --era {era}"
    return cmd + (" --concurrency" if concurrency else "")


def trace_lines(steps: list[dict], indent: str = "  ") -> list[str]:
    """A counterexample as numbered steps, each followed by the state after it, one VMA per
    line (the executor's START-END:FLAGS:ELIG:AHP), within WIDTH columns."""
    if steps and "syscall" not in steps[0]:  # a rule-level counterexample: input values
        return [indent + ln for s in steps for ln in textwrap.wrap(
            ", ".join(f"{k}={v}" for k, v in s.items()), WIDTH - len(indent))]
    out = []
    for s in steps:
        locks = f"  [{s['locks']}]" if s.get("locks") else ""
        out.append(f"{indent}{s['process']:<10} {s['step']:>2}. {s['syscall']}{locks}"[:WIDTH])
        out += _state_lines(s["observation"], indent + " " * 15)
        if "child" in s:
            out += _state_lines("child " + s["child"], indent + " " * 15)
    return out


def _state_lines(obs: str, indent: str) -> list[str]:
    if " vmas=" not in obs:
        return textwrap.wrap(obs, WIDTH - len(indent), initial_indent=indent,
                             subsequent_indent=indent) or []
    head, vmas = obs.split(" vmas=", 1)
    lines = [indent + head]
    lines += [indent + "  " + v for v in vmas.split(",") if v]
    return [ln[:WIDTH] for ln in lines]


def matrix(conf: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Scenario names and, per kernel, each scenario's status (pass/diverge/skip/-)."""
    names = list(dict.fromkeys(s["name"] for k in conf for s in k.get("scenarios", [])))
    cols = []
    for k in conf:
        by = {s["name"]: s["status"] for s in k.get("scenarios", [])}
        cols.append([by.get(n, "-") for n in names])
    return names, cols


def kernel_rows(conf: list[dict]) -> list[dict]:
    out = []
    for k in conf:
        rnd = k.get("random") or {}
        ident = k.get("identified_era")
        out.append({"spec": k.get("spec", "host"), "kernel": k.get("kernel", ""),
                    "identified": ident or "-", "expected": k.get("expected_era") or "-",
                    "scenarios": sum(s["status"] == "pass" for s in k.get("scenarios", [])),
                    "of": len(k.get("scenarios", [])),
                    "random": rnd.get("examples", 0),
                    "divergences": len(rnd.get("divergences", [])),
                    "selftests": ",".join(t["status"] for t in k.get("selftests", [])) or "-",
                    "note": k.get("skip") or (k.get("error") or "").splitlines()[:1],
                    "ok": k.get("ok", False)})
    return out


# ---- text ---------------------------------------------------------------------------------------

def _h(title: str) -> list[str]:
    return ["", title, "-" * len(title)]


def _table(rows: list[list[str]], head: list[str]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head).rstrip(), fmt.format(*("-" * w for w in widths))] + \
        [fmt.format(*map(str, r)).rstrip()[:WIDTH] for r in rows]


def text(res: dict) -> str:
    out = [f"vmaflags report -- this machine: Linux {res['host']}"]
    out += _h("Eras")
    for e in res["eras"]:
        out.append(f"  {e['id']:<20} {e['kernels']:<26} features of {e['kernel']}")
        out += textwrap.wrap(e["summary"], WIDTH, initial_indent=" " * 4,
                             subsequent_indent=" " * 4)
    proofs = res["proofs"]
    ok = sum(r["verdict"] == r["expected"] for r in proofs)
    out += _h(f"Theorems: {len(proofs)} obligations, {ok} as expected (vmaflags prove)")
    rows, current = [], None
    for r in proofs:
        if r["protocol"] and r["theorem"] != current:
            rows.append([r["theorem"], "", "", ""])
        current = r["theorem"]
        rows.append([("  " + r["protocol"]) if r["protocol"] else r["theorem"], r["era"],
                     r["verdict"] if r["verdict"] == r["expected"] else r["verdict"].upper(),
                     r["method"].split(" [")[0]])
    out += _table(rows, ["obligation", "era", "verdict", "method"])
    out += _counterexamples(proofs, "Counterexamples (from the solver, replayed on the model)")
    conc = res["concurrency"]
    out += _h("Concurrency (vmaflags prove --concurrency)")
    out += _table([[r["theorem"], r["protocol"] or "-", r["era"], r["verdict"]] for r in conc],
                  ["theorem", "protocol", "era", "verdict"])
    out += _counterexamples(conc, "Interleavings (thread, step, locks held, state)")
    st = res["stress"]
    out += _h(f"Live races on {st.get('kernel', res['host'])} (vmaflags stress)")
    if st.get("skip"):
        out.append(f"  SKIP: {st['skip']}")
    out += _table([[x["race"], x["model"] or "control", x["tries"], x["windows"],
                    x["sightings"], x["skip"] or x["verdict"]] for x in st["races"]],
                  ["race", "model", "tries", "windows", "seen", "verdict"])
    conf = res["conformance"]
    out += _h("Conformance: kernels (vmaflags conform, vmaflags vm run)")
    ks = kernel_rows(conf)
    out += _table([[f"K{i}", k["spec"], k["identified"], k["expected"],
                    f"{k['scenarios']}/{k['of']}", f"{k['random']}/{k['divergences']}",
                    k["selftests"], "OK" if k["ok"] else "FAIL"] for i, k in enumerate(ks, 1)],
                  ["", "kernel", "identified", "expected", "scen.", "random", "ksft", ""])
    out += [f"  K{i}: {k['kernel']}" for i, k in enumerate(ks, 1)]
    names, cols = matrix(conf)
    if names:
        out += _h("Conformance: scenarios x kernels")
        mark = {"pass": "ok", "diverge": "DIV", "skip": "skip", "-": "-"}
        out += _table([[n, *(mark[c[j]] for c in cols)] for j, n in enumerate(names)],
                      ["scenario", *(f"K{i}" for i in range(1, len(cols) + 1))])
    out += _h("State machines (one VMA's hg/nh, PR_GET_THP_DISABLE; from the model)")
    for e in ERAS.values():
        out += ["  " + ln for ln in diagram.text(e)]
    out += _h("Not modelled")
    for item in res["not_modelled"]:
        out += textwrap.wrap(item, WIDTH, initial_indent="  - ", subsequent_indent="    ")
    out += _h("Reproduce")
    out += [f"  {c}" for c in res["commands"].values()]
    return "\n".join(ln.rstrip() for ln in out) + "\n"


def _counterexamples(rows: list[dict], title: str) -> list[str]:
    out = _h(title)
    for r in rows:
        if not r.get("counterexample") or r["verdict"] not in ("refuted", "aborted"):
            continue
        out.append(f"  {obligation(r)}: {r['verdict']}")
        out += textwrap.wrap(r.get("note") or r.get("reason", ""), WIDTH,
                             initial_indent="    ", subsequent_indent="    ")
        out += trace_lines(r["counterexample"], "    ")
    return out


# ---- markdown and HTML ----------------------------------------------------------------------------

def _env() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.globals.update(obligation=obligation, reproduce=reproduce, trace_lines=trace_lines,
                       kernel_rows=kernel_rows, matrix=matrix)
    return env


MD = """\
# vmaflags report

This machine: Linux {{ res.host }}.  Regenerate with `vmaflags report --out DIR`.

## Eras

| era | kernels | features of | summary |
|---|---|---|---|
{% for e in res.eras %}
| `{{ e.id }}` | {{ e.kernels }} | {{ e.kernel }} | {{ e.summary }} |
{% endfor %}

## State machines

One VMA's `hg`/`nh` and the process's PR_GET_THP_DISABLE; edges are syscalls; THPeligible under
sysfs `madvise` and `always`.  Computed from the model.

{% for e in eras %}
![{{ e.id }}](machine-{{ e.id }}.svg)
{% endfor %}

## Theorems

{{ proofs|length }} obligations, {{ proofs|selectattr("ok")|list|length }} as expected
(`vmaflags prove`).

| obligation | era | verdict | expected | method |
|---|---|---|---|---|
{% for r in proofs %}
| {{ r.theorem }}{% if r.protocol %} / {{ r.protocol }}{% endif %} | {{ r.era }} | {{ r.verdict }} | {{ r.expected }} | {{ r.method }} |
{% endfor %}

{% for r in proofs if r.counterexample and r.verdict in ("refuted", "aborted") %}
### {{ obligation(r) }}: {{ r.verdict }}

{{ r.note or r.reason }} -- `{{ reproduce(r) }}`

```
{{ trace_lines(r.counterexample, "")|join("\\n") }}
```

{% endfor %}
## Concurrency

| theorem | protocol | era | verdict | method |
|---|---|---|---|---|
{% for r in conc %}
| {{ r.theorem }} | {{ r.protocol or "-" }} | {{ r.era }} | {{ r.verdict }} | {{ r.method }} |
{% endfor %}

{% for r in conc if r.counterexample and r.verdict == "refuted" %}
### {{ obligation(r) }}

{{ r.note or r.reason }}

```
{{ trace_lines(r.counterexample, "")|join("\\n") }}
```

{% endfor %}
### Live races on this machine (`vmaflags stress`)

| race | model | tries | windows | seen | verdict |
|---|---|---|---|---|---|
{% for x in res.stress.races %}
| {{ x.race }} | {{ x.model or "control" }} | {{ x.tries }} | {{ x.windows }} | {{ x.sightings }} | {{ x.skip or x.verdict }} |
{% endfor %}

## Conformance

| | kernel | identified | expected | scenarios | random/divergences | kselftests | |
|---|---|---|---|---|---|---|---|
{% for k in kernel_rows(res.conformance) %}
| K{{ loop.index }} | {{ k.spec }} | {{ k.identified }} | {{ k.expected }} | {{ k.scenarios }}/{{ k.of }} | {{ k.random }}/{{ k.divergences }} | {{ k.selftests }} | {{ "OK" if k.ok else "FAIL" }} |
{% endfor %}

{% set names, cols = matrix(res.conformance) %}
| scenario |{% for c in cols %} K{{ loop.index }} |{% endfor %}

|---|{% for c in cols %}---|{% endfor %}

{% for n in names %}
{% set j = loop.index0 %}
| {{ n }} |{% for c in cols %} {{ c[j] }} |{% endfor %}

{% endfor %}

## Not modelled

{% for item in res.not_modelled %}
- {{ item }}
{% endfor %}

## Reproduce

{% for c in res.commands.values() %}
- `{{ c }}`
{% endfor %}
"""


HTML = """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vmaflags report</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}pre{background:#f7f7f7;padding:.6em;
overflow-x:auto;font-size:13px}.ok{color:#176117}.bad{color:#b00020;font-weight:bold}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}code{font-size:13px}
</style></head><body>
<h1>vmaflags report</h1>
<p>This machine: Linux {{ res.host }}. Regenerate with <code>vmaflags report --out DIR</code>.</p>
<h2 id="eras">Eras</h2>
<table><tr><th>era</th><th>kernels</th><th>features of</th><th>summary</th></tr>
{% for e in res.eras %}
<tr><td><code>{{ e.id }}</code></td><td>{{ e.kernels }}</td><td>{{ e.kernel }}</td><td>{{ e.summary }}</td></tr>
{% endfor %}
</table>
<h2 id="machines">State machines</h2>
<p>One VMA's <code>hg</code>/<code>nh</code> and the process's PR_GET_THP_DISABLE; edges are
syscalls; THPeligible under sysfs <code>madvise</code> and <code>always</code>. Computed from the model.</p>
{% for e in eras %}
<figure class="machine" id="machine-{{ e.id }}">{{ svgs[e.id]|safe }}</figure>
{% endfor %}
<h2 id="theorems">Theorems</h2>
<p>{{ proofs|length }} obligations, {{ proofs|selectattr("ok")|list|length }} as expected
(<code>vmaflags prove</code>).</p>
<table id="verdicts"><tr><th>obligation</th><th>era</th><th>verdict</th><th>expected</th><th>method</th></tr>
{% for r in proofs %}
<tr><td>{{ r.theorem }}{% if r.protocol %} / {{ r.protocol }}{% endif %}</td><td>{{ r.era }}</td>
<td class="{{ 'ok' if r.ok else 'bad' }}">{{ r.verdict }}</td><td>{{ r.expected }}</td><td>{{ r.method }}</td></tr>
{% endfor %}
</table>
{% for r in proofs if r.counterexample and r.verdict in ("refuted", "aborted") %}
<h3>{{ obligation(r) }}: {{ r.verdict }}</h3>
<p>{{ r.note or r.reason }} &mdash; <code>{{ reproduce(r) }}</code></p>
<pre>{{ trace_lines(r.counterexample, "")|join("\\n") }}</pre>
{% endfor %}
<h2 id="concurrency">Concurrency</h2>
<table><tr><th>theorem</th><th>protocol</th><th>era</th><th>verdict</th><th>method</th></tr>
{% for r in conc %}
<tr><td>{{ r.theorem }}</td><td>{{ r.protocol or "-" }}</td><td>{{ r.era }}</td>
<td class="{{ 'ok' if r.ok else 'bad' }}">{{ r.verdict }}</td><td>{{ r.method }}</td></tr>
{% endfor %}
</table>
{% for r in conc if r.counterexample and r.verdict == "refuted" %}
<h3>{{ obligation(r) }}</h3><p>{{ r.note or r.reason }}</p>
<pre>{{ trace_lines(r.counterexample, "")|join("\\n") }}</pre>
{% endfor %}
<h3>Live races on this machine</h3>
<table><tr><th>race</th><th>model</th><th>tries</th><th>windows</th><th>seen</th><th>verdict</th></tr>
{% for x in res.stress.races %}
<tr><td>{{ x.race }}</td><td>{{ x.model or "control" }}</td><td>{{ x.tries }}</td><td>{{ x.windows }}</td><td>{{ x.sightings }}</td><td>{{ x.skip or x.verdict }}</td></tr>
{% endfor %}
</table>
<h2 id="conformance">Conformance</h2>
<table id="kernels"><tr><th></th><th>kernel</th><th>identified</th><th>expected</th><th>scenarios</th><th>random / divergences</th><th>kselftests</th><th></th></tr>
{% for k in kernel_rows(res.conformance) %}
<tr><td>K{{ loop.index }}</td><td>{{ k.spec }}<br><small>{{ k.kernel }}</small></td><td>{{ k.identified }}</td><td>{{ k.expected }}</td>
<td>{{ k.scenarios }}/{{ k.of }}</td><td>{{ k.random }}/{{ k.divergences }}</td><td>{{ k.selftests }}</td>
<td class="{{ 'ok' if k.ok else 'bad' }}">{{ "OK" if k.ok else "FAIL" }}</td></tr>
{% endfor %}
</table>
{% set names, cols = matrix(res.conformance) %}
<table id="scenarios"><tr><th>scenario</th>{% for c in cols %}<th>K{{ loop.index }}</th>{% endfor %}</tr>
{% for n in names %}{% set j = loop.index0 %}
<tr><td>{{ n }}</td>{% for c in cols %}<td class="{{ 'bad' if c[j] == 'diverge' else 'ok' if c[j] == 'pass' else '' }}">{{ c[j] }}</td>{% endfor %}</tr>
{% endfor %}
</table>
<h2 id="not-modelled">Not modelled</h2>
<ul>{% for item in res.not_modelled %}<li>{{ item }}</li>{% endfor %}</ul>
<h2 id="reproduce">Reproduce</h2>
<ul>{% for c in res.commands.values() %}<li><code>{{ c }}</code></li>{% endfor %}</ul>
</body></html>
"""


def _context(res: dict) -> dict[str, Any]:
    for r in res["proofs"] + res["concurrency"]:
        r["ok"] = r["verdict"] == r["expected"]
    return {"res": res, "proofs": res["proofs"], "conc": res["concurrency"],
            "eras": list(ERAS.values())}


def write(res: dict, out: pathlib.Path) -> list[pathlib.Path]:
    """report.txt, report.md (+ machine-ERA.svg) and report.html into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    env, ctx = _env(), _context(res)
    svgs = {e.id: diagram.svg(e) for e in ERAS.values()}
    files = []
    for e in ERAS.values():
        p = out / f"machine-{e.id}.svg"
        p.write_text(svgs[e.id])
    for name, body in (("report.txt", text(res)),
                       ("report.md", env.from_string(MD).render(**ctx)),
                       ("report.html", env.from_string(HTML).render(
                           **ctx, svgs={k: _inline(v) for k, v in svgs.items()}))):
        p = out / name
        p.write_text(body)
        files.append(p)
    return files


def _inline(svg: str) -> str:
    """An SVG document as an element to put in HTML (no XML prolog or doctype)."""
    return svg[svg.index("<svg"):]


__all__ = ["text", "write", "trace_lines"]
