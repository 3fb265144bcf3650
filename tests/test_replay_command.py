"""`vmaflags replay`: a script on the kernel and the model, side by side (this machine)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vmaflags.cli import app
from vmaflags.conformance import host
from vmaflags.conformance.replay import split

why = host.no_thp() or host.no_executor()
CEX = """#! sysfs: live
#! process: dump
arena 1
mmap 0 2M
prctl_set 1 0 0 0
#! process: restore
arena 1
mmap 0 2M
touch 0 4K
"""


def test_split_by_process_keeps_the_common_headers_and_the_line_numbers():
    parts = split(CEX)
    assert [n for n, _ in parts] == ["dump", "restore"]
    assert all(t.startswith("#! sysfs: live\n") for _, t in parts)
    assert all(t.count("\n") == CEX.count("\n") for _, t in parts)
    assert split("arena 1\nmmap 0 2M\n") == [("process", "arena 1\nmmap 0 2M\n")]


def test_an_error_names_the_line_of_the_file(tmp_path):
    f = tmp_path / "cex.vmf"
    f.write_text(CEX.replace("touch 0 4K", "touch 0 4X"))
    r = CliRunner().invoke(app, ["replay", str(f)])
    assert r.exit_code == 2 and "line 9" in r.output, r.output


@pytest.mark.skipif(bool(why), reason=why or "")
def test_replay_agrees_in_the_identified_era_and_parts_in_another(tmp_path):
    f = tmp_path / "cex.vmf"
    f.write_text(CEX)
    r = CliRunner().invoke(app, ["replay", str(f)])
    assert r.exit_code == 0, r.output
    assert r.output.count("agrees with the model") == 2
    r = CliRunner().invoke(app, ["replay", str(f), "--era", "def-flags"])
    assert r.exit_code == 1 and "model and kernel part" in r.output
    assert all(len(ln) <= 80 for ln in r.output.splitlines()), r.output


def test_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.vmf"
    bad.write_bytes(b"arena 1\nmmap 0 \xff\n")
    for args in (["replay", str(bad)], ["replay", str(tmp_path / "missing")],
                 ["replay", "-", "--era", "nosuch"], ["replay", "-", "--kernel", "nosuch"]):
        r = CliRunner().invoke(app, args, input="arena 1\n")
        assert r.exit_code == 2 and r.output.count("\n") == 1, (args, r.output)
