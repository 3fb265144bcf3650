"""`vmaflags stress`: the concurrency theorems' races on this machine's kernel (bounded)."""
from __future__ import annotations

import json
import subprocess

import pytest
from typer.testing import CliRunner

from vmaflags.cli import app
from vmaflags.conformance import host
from vmaflags.conformance.build import stress_path

why = host.no_thp() or host.no_executor()


def test_bad_arguments_are_one_line_and_exit_2():
    r = CliRunner().invoke(app, ["stress", "--tries", "0"])
    assert r.exit_code == 2 and "--tries" in r.output
    res = subprocess.run([str(stress_path()), "nosuch", "1", "1"], capture_output=True,
                         text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1


@pytest.mark.skipif(bool(why), reason=why or "")
def test_live_races_agree_with_the_model():
    """No race the model proves impossible is seen, and the control sees its collapses; the
    fault race (possible from 6.4) is reported, seen or not."""
    r = CliRunner().invoke(app, ["stress", "--tries", "100", "--seconds", "15", "--json"])
    out = json.loads(r.output)
    races = {x["race"]: x for x in out["races"]}
    assert races["collapse-alone"]["verdict"] == "control ok", races
    for name in ("collapse-vs-nh", "collapse-vs-prctl"):
        assert races[name]["model"] == "impossible" and races[name]["sightings"] == 0, races
    assert r.exit_code == 0, races
    print({k: (v["windows"], v["sightings"]) for k, v in races.items()})
