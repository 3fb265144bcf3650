"""A restore timeline (timeline.Timeline) as an inline SVG: one column per step, a lane for
PR_GET and one per PMD with lazy pages, each cell coloured by what keeps the PMD safe."""
from __future__ import annotations

from html import escape

from .timeline import Timeline

STEP_W, LABEL_W, HEAD_H, LANE_H = 92, 64, 34, 24
STRONG = ("nh", "prctl", "uffd")  # a protection the restore sets up


def css_class(status: str) -> str:
    if status == "THP":
        return "thp"
    if status.startswith("open") or status == "unsafe":
        return "open"
    if any(g in status.split(",") for g in STRONG):
        return "guard"
    return "idle"


def timeline(t: Timeline) -> str:
    lanes = [("PR_GET", [str(s.get) for s in t.steps])]
    lanes += [(f"PMD {k}", [s.pmds[k] for s in t.steps]) for k in t.lazy_pmds]
    width = LABEL_W + STEP_W * len(t.steps) + 2
    height = HEAD_H + LANE_H * len(lanes) + 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(t.protocol)} restore timeline">']
    for i, s in enumerate(t.steps):
        x = LABEL_W + i * STEP_W
        out.append(f'<text x="{x + STEP_W / 2:g}" y="13" class="n">{s.n}</text>')
        out.append(f'<text x="{x + STEP_W / 2:g}" y="27" class="ph">{escape(s.phase)}</text>')
    for j, (name, cells) in enumerate(lanes):
        y = HEAD_H + j * LANE_H
        out.append(f'<text x="4" y="{y + 16}" class="lane">{escape(name)}</text>')
        for i, c in enumerate(cells):
            x = LABEL_W + i * STEP_W
            cls = "get" if j == 0 else css_class(c)
            out.append(f'<g><title>step {t.steps[i].n}: {escape(t.steps[i].syscall)} -- '
                       f'{escape(name)}: {escape(c)}</title>'
                       f'<rect x="{x + 1}" y="{y + 1}" width="{STEP_W - 2}" '
                       f'height="{LANE_H - 2}" class="{cls}"/>'
                       f'<text x="{x + STEP_W / 2:g}" y="{y + 16}" class="c">{escape(c)}'
                       '</text></g>')
    out.append("</svg>")
    return "\n".join(out)
