"""`vmaflags vm criu [--kernel SPEC] [--criu RELEASE] [--json]`: boot a standard Debian kernel
with Debian's CRIU (rootfs.py), run every case of criu.py in every mode, print dump vs restore
per case and whether the model's protocol predicted it.  Exit 0 every case agrees, 1 one
differs or the guest failed, 2 bad input, 4 cannot run here (SKIP), 130 interrupted.

JSON: {"kernel", "criu", "cases": [{"name", "mode", "protocol", "dumped", "restored", "model",
"agrees"}]}, each observation {"get", "thp_enabled", "vmas"}: "restored" is the kernel after
the restore, CRIU's lazy phase and two khugepaged scans, "model" the model's at that point.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from vmaflags.model.eras import era_at
from vmaflags.model.observe import Observation
from vmaflags.model.syscalls import SYSFS_MODES

from .. import driver, sysfs
from . import kernels, rootfs
from .criu import (CASES, MODES, RELEASES, Case, CaseResult, MissingProtocol, compare,
                   guest_run, model_run, protocol_id)
from .guest import Guest, VMError

DEFAULT_KERNEL = "debian-6.1-std"
# Phases of a case in the guest, between criu-case.sh's marks: (name, from mark, to mark).
PHASES = (("dump", "dump", "restore"), ("restore", "restore", "restored"),
          ("khugepaged", "khugepaged", "end"))


@dataclass
class Report:
    """One `vm criu` run: the guest's kernel and CRIU, and every case in every mode."""

    spec: str
    kernel: str = ""
    criu: str = ""
    cases: list[CaseResult] = field(default_factory=list)
    boot_seconds: float = 0.0
    seconds: float = 0.0
    skip: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.skip and all(c.agrees for c in self.cases)

    def as_dict(self) -> dict:
        return {"kernel": self.kernel, "criu": self.criu,
                "cases": [c.as_dict() for c in self.cases]}


def check(spec: str, release: str, cases: tuple[Case, ...] = CASES,
          modes: tuple[str, ...] = MODES, progress: bool = True) -> Report:
    """Boot SPEC with CRIU `release` and run every case in every mode (see the module)."""
    rep = Report(spec)
    t0 = time.monotonic()
    try:
        k = kernels.resolve(spec)
        img = rootfs.image(k, RELEASES[release], progress)
        with Guest(k, initrd=img.initrd, disk=img.disk, memory=img.memory) as g:
            rep.boot_seconds, rep.kernel = g.boot_seconds, g.kernel()
            rep.criu = g.info.get("criu", "")
            if not rep.criu:
                rep.error = f"{spec}: no criu in the guest; {g.console_tail(5)}"
                return rep
            era = era_at(k.expected_era or "mmf", ".".join(rep.kernel.split(".")[:2]))
            for case in cases:
                for mode in modes:
                    if progress:
                        print(f"{case.name} {mode} ...", file=sys.stderr)
                    t = time.monotonic()
                    pid = protocol_id(rep.criu, mode)
                    gr = guest_run(g, case, mode)
                    try:
                        mr, why = model_run(era, case, mode, pid,
                                            SYSFS_MODES.index(case.sysfs)), ""
                    except MissingProtocol as e:
                        mr, why = None, str(e)
                    cr = compare(case, mode, pid, gr, mr, why)
                    cr.seconds = time.monotonic() - t
                    cr.phases = {n: gr.marks[b] - gr.marks[a] for n, a, b in PHASES
                                 if a in gr.marks and b in gr.marks}
                    rep.cases.append(cr)
    except kernels.Skip as e:
        rep.skip = str(e)
    except (VMError, driver.ExecutorError, sysfs.SysfsError) as e:
        rep.error = str(e)
    rep.seconds = time.monotonic() - t0
    return rep


# ---- output ------------------------------------------------------------------------------------

W_RANGE, W_CELL = 21, 16


def _cell(o: Observation | None, row: str | tuple[int, int]) -> str:
    if o is None:
        return "?"
    if row == "get":
        return str(o.get)
    if row == "thp":
        return "-" if o.thp is None else str(o.thp)
    for v in o.vmas:
        if (v.start, v.end) == row:
            return v.text().split(":", 1)[1]
    return "."


def render_text(rep: Report) -> str:
    """Per case: the kernel's observations in three columns (the dumped process; after the
    restore and CRIU's lazy phase; after two khugepaged scans), and under a row the model's
    values where they differ ("!")."""
    out = [f"CRIU {rep.criu} on {rep.kernel} ({rep.spec})",
           "VMAs: FLAGS:THPeligible:AnonHugePages, '.' none; '!' where the model differs",
           ""]
    for c in rep.cases:
        verdict = "agrees" if c.agrees else "DIFFERS"
        head = f"{c.name} / {c.mode} / {c.protocol} / enabled={c.sysfs}"
        out.append(f"{head}{verdict:>{max(78 - len(head), len(verdict) + 1)}}")
        out.append(f"  {'':{W_RANGE}}{'dumped':{W_CELL}}{'restored':{W_CELL}}khugepaged")
        kern = (c.dumped, c.restored, c.khugepaged)
        model = (c.model_dumped, c.model_restored, c.model)
        rows: list[Any] = ["get", "thp"] + sorted(
            {(v.start, v.end) for o in (*kern, *model) if o is not None for v in o.vmas})
        for row in rows:
            label = {"get": "PR_GET", "thp": "THP_enabled"}.get(row) if isinstance(
                row, str) else f"{row[0]:#x}-{row[1]:#x}"
            k = [_cell(o, row) for o in kern]
            m = [_cell(o, row) for o in model]
            out.append(f"  {label:{W_RANGE}}" + "".join(f"{x:{W_CELL}}" for x in k).rstrip())
            if k != m:
                out.append(f"  {'  model':{W_RANGE}}" + "".join(
                    f"{(y + ' !') if x != y else '':{W_CELL}}" for x, y in zip(k, m)).rstrip())
        for p in c.problems:
            out += _wrap(f"  {p}", 78)
        if not c.agrees and c.model_restore:  # to replay with `vmaflags run`
            out += _wrap(f"  the model's restore: {'; '.join(c.model_restore)}", 78)
        out.append("")
    n = len(rep.cases)
    bad = sum(not c.agrees for c in rep.cases)
    out.append(f"{n} cases, {n - bad} agree, {bad} differ")
    return "\n".join(out) + "\n"


def timing_text(rep: Report) -> str:
    """How long it took (stderr: the report itself is the same from run to run)."""
    mean = {name: [c.phases[name] for c in rep.cases if name in c.phases]
            for name, _, _ in PHASES}
    return (f"boot {rep.boot_seconds:.1f} s, {_mean([c.seconds for c in rep.cases])} s per "
            f"case, {rep.seconds:.0f} s in all; per case in the guest: "
            + ", ".join(f"{name} {_mean(v)} s" for name, v in mean.items()) + "\n")


def _mean(xs: list[float]) -> str:
    return f"{sum(xs) / len(xs):.1f}" if xs else "-"


def _wrap(text: str, width: int) -> list[str]:
    """`text` (indented) in lines of at most `width`; long words are cut after a comma."""
    body = text.lstrip(" ")
    lead = " " * (len(text) - len(body))
    words = [w for word in body.split(" ") for w in _cut(word, width - len(lead) - 4)]
    lines, cur = [], lead
    for w in words:
        if cur.strip() and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = lead + "    " + w
        else:
            cur = f"{cur} {w}" if cur.strip() else cur + w
    return lines + [cur]


def _cut(word: str, width: int) -> list[str]:
    """`word` in pieces of about `width`, each but the last ending with a comma."""
    out = [""]
    for part in word.split(","):
        if out[-1] and len(out[-1]) + len(part) > width:
            out.append("")
        out[-1] += part + ","
    out[-1] = out[-1][:-1]
    return out


def run(spec: str | None, release: str, json_out: bool) -> int:
    """`vmaflags vm criu`: 0 every case agrees, 1 one differs or the guest failed, 2 bad
    input, 4 cannot run here (SKIP), 130 interrupted."""
    spec = spec or DEFAULT_KERNEL
    try:
        kernels.resolve_name(spec)
        if spec not in kernels.STANDARD:
            raise ValueError(f"vm criu needs a standard Debian kernel, whose modules CRIU "
                             f"needs: {', '.join(kernels.STANDARD)}")
        if release not in RELEASES:
            raise ValueError(f"unknown CRIU release {release!r}; valid: {', '.join(RELEASES)}")
    except ValueError as e:
        print(f"vmaflags: {e}", file=sys.stderr)
        return 2
    try:
        rep = check(spec, release, progress=not json_out)
    except KeyboardInterrupt:
        print("vmaflags: interrupted", file=sys.stderr)
        return 130
    if rep.skip:
        print(f"{spec}: SKIP {rep.skip}", file=sys.stderr)
        return 4
    if rep.error:
        print(f"vmaflags: {rep.error}", file=sys.stderr)
        return 1
    if json_out:
        print(json.dumps(rep.as_dict(), indent=2))
    else:
        sys.stdout.write(render_text(rep))
        sys.stderr.write(timing_text(rep))
    return 0 if rep.ok else 1


def record(spec: str, release: str) -> str:
    """criu-case.sh's output for every case and mode, as tests/data/criu-*.txt keeps it:
    python -m vmaflags.conformance.vm.criu_command debian-6.1-std 3.17 > tests/data/..."""
    k = kernels.resolve(spec)
    img = rootfs.image(k, RELEASES[release])
    out = []
    with Guest(k, initrd=img.initrd, disk=img.disk, memory=img.memory) as g:
        out.append(f"# kernel {g.kernel()} criu {g.info.get('criu', '')}")
        for case in CASES:
            for mode in MODES:
                gr = guest_run(g, case, mode)
                if gr.error:
                    raise RuntimeError(f"{case.name} {mode}: {gr.error}")
                out += [f"## {case.name} {mode}", *gr.lines]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(record(*sys.argv[1:3]))
