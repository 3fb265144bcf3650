"""The proofs' counterexamples replayed on this machine's kernel.

Every refuted obligation of the live kernel's era is a set of scripts (one per process: the
dumped process and the restore, or the runs with and without toggles); each must run on the
kernel exactly as the model predicted, so the refutation is a fact about the kernel too.
"""
from __future__ import annotations

import pytest

from vmaflags.conformance import host
from vmaflags.conformance.catalogue import replay
from vmaflags.model import ERAS
from vmaflags.model.syscalls import SYSFS_MODES, Script, parse_step
from vmaflags.proofs.command import obligations, run

LIVE_ERA = "mmf-except-advised"

skip = host.no_thp() or host.no_executor()
pytestmark = pytest.mark.skipif(bool(skip), reason=skip or "")


def refutations():
    rows = run(obligations(None, [ERAS[LIVE_ERA]]), show_progress=False)
    return [r for r in rows if r.verdict == "refuted"]


def scripts_of(row) -> list[tuple[str, Script, int]]:
    out = []
    for process in dict.fromkeys(s["process"] for s in row.counterexample):
        steps = [s for s in row.counterexample if s["process"] == process]
        script = Script(tuple(parse_step(s["syscall"]) for s in steps), steps[0]["arena"])
        out.append((process, script, SYSFS_MODES.index(steps[0]["sysfs"])))
    return out


def test_live_era_has_refutations_to_replay():
    names = {r.name for r in refutations()}
    assert "criu-restore-original:3.19-lazy-predump:mmf-except-advised" in names
    assert "no-collapse-window:naive:mmf-except-advised" in names


@pytest.mark.parametrize("row", refutations(), ids=lambda r: r.name)
def test_counterexample_replays_on_the_kernel(row):
    """Through the conformance catalogue's replay: the sysfs guard sets the trace's mode, and a
    khugepaged step gets khugepaged tuned fast, as in the khugepaged scenarios."""
    for process, script, sysfs in scripts_of(row):
        needs_root = sysfs != host.live_mode() or "khugepaged" in script.text()
        if needs_root and host.not_root():
            pytest.skip(f"{process} needs sysfs {SYSFS_MODES[sysfs]}: {host.not_root()}")
        text = f"#! sysfs: {SYSFS_MODES[sysfs]}\n{script.text()}"
        d = replay(text, LIVE_ERA)
        assert d is None, f"{process}:\n{d.text()}"
