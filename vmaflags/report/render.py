"""report.txt, report.md and report.html (and the files beside them) from results.json.

Rendering is a function of the results and the code: the same results give the same bytes.
report.html is one file: inline CSS and SVG, no script, nothing fetched.  report.md shows the
state machines as the SVG files written beside it.  The counterexamples of the proofs that are
scripts are written as replay files (replay/, for `vmaflags replay`).
"""
from __future__ import annotations

import copy
import pathlib
import re
from typing import Any

import jinja2
from markupsafe import Markup

from vmaflags.conformance.replay import LEGEND, from_counterexample
from vmaflags.model.eras import ERAS

from . import diagram, shape, svg, text, timeline

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"


def machine_svg(era_id: str) -> str:
    """The era's state machine as an SVG element for HTML: no XML prolog or doctype, and ids
    prefixed with the era (five of them share one page)."""
    doc = diagram.svg(ERAS[era_id])
    doc = doc[doc.index("<svg"):]
    return re.sub(r'\bid="', f'id="{era_id}-', doc)


def _trace_md(r: dict, concurrency: bool, kernels: dict) -> str:
    out = [f"### {shape.obligation(r).replace(':', ' / ')}: {shape.verdict(r)}", "",
           f"Expected {r['expected']}: {r['reason']}." + (f"  Found: {r['note']}."
                                                            if r.get("note") else ""), ""]
    cmd = shape.concurrency_command(r) if concurrency else shape.prove_command(r)
    out.append(f"`{cmd}`")
    rp = shape.replay_command(r, kernels)
    if rp:
        out += ["", f"`{rp}`"]
    return "\n".join(out + ["", "```text", *text.trace(r["counterexample"], r["era"]), "```",
                            ""])


def _context(res: dict) -> dict[str, Any]:
    res = copy.deepcopy(res)
    for r in res["proofs"] + res["concurrency"]:
        r["ok"] = r["verdict"] == r["expected"]
    kernels = res.get("replay_kernels") or {}
    eras = [e["id"] for e in res["eras"]]
    restores = "\n".join(text._restores(res)).strip("\n")
    return {
        "res": res, "proofs": res["proofs"], "conc": res["concurrency"], "eras": eras,
        "model_eras": list(ERAS.values()), "grid": shape.grid(res["proofs"], eras),
        "timelines": timeline.timelines(), "dump": timeline.DUMP.strip(),
        "split": timeline.SPLIT, "guards": timeline.GUARDS, "open": timeline.OPEN,
        "thp": timeline.THP, "legend": " ".join(LEGEND.split()),
        "reproduce": shape.reproduce(res), "criu_head": shape.CRIU_HEAD,
        "race_head": shape.RACE_HEAD, "mark": shape.MARK, "restores_text": restores,
        "trace_md": lambda r, c: _trace_md(r, c, kernels),
    }


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=autoescape, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals.update(
        obligation=shape.obligation, verdict=shape.verdict, seconds=shape.seconds,
        role=shape.role, is_trace=shape.is_trace, finals=shape.finals,
        prove_command=shape.prove_command, concurrency_command=shape.concurrency_command,
        replay_command=shape.replay_command, arguments=shape.arguments,
        kernel_rows=shape.kernel_rows, matrix=shape.matrix, criu_rows=shape.criu_rows,
        race_rows=shape.race_rows, cex=shape.counterexamples, divergences=shape.divergences,
        skips=shape.skips, css_class=svg.css_class,
        timeline_svg=lambda t: Markup(svg.timeline(t)))
    return env


def replay_files(res: dict) -> dict[str, str]:
    """replay/NAME.txt for each counterexample of the proofs that is a script."""
    return {shape.replay_name(r): from_counterexample(shape.obligation(r), r["counterexample"])
            for r in shape.counterexamples(res["proofs"]) if shape.is_trace(r["counterexample"])}


def write(res: dict, out: pathlib.Path) -> list[pathlib.Path]:
    """report.txt, report.md (with machine-ERA.svg), report.html and replay/ into `out`."""
    ctx = _context(res)
    files: dict[str, str] = {f"machine-{e}.svg": diagram.svg(ERAS[e]) for e in ERAS}
    files.update(replay_files(res))
    files["report.txt"] = text.text(res)
    files["report.md"] = _env(False).get_template("report.md.j2").render(**ctx)
    files["report.html"] = _env(True).get_template("report.html.j2").render(
        **ctx, svgs={e: Markup(machine_svg(e)) for e in ERAS})
    written = []
    for name, body in files.items():
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
        written.append(p)
    return [out / n for n in ("report.html", "report.md", "report.txt")]
