"""The `vmaflags` command as a newcomer meets it: every bad input is one line on stderr and exit
2 (never a traceback), and the commands work for a user whose HOME cannot be written."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from vmaflags.conformance import host

EXE = os.path.join(os.path.dirname(sys.executable), "vmaflags")
why = host.no_thp() or host.no_executor()
needs_kernel = pytest.mark.skipif(bool(why), reason=why or "")


def vmaflags(*args: str, stdin: bytes = b"", env: dict | None = None,
             user: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(user or []), EXE, *args], input=stdin, capture_output=True,
                          timeout=600, env=env, check=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("scripts")
    (d / "latin1.vmf").write_bytes(b"# caf\xe9: a Latin-1 comment\narena 1\nmmap 0 2M\n")
    (d / "bad.vmf").write_bytes(b"arena 1\nmmap 0 2M\nmadvise 0 4M hugepage\n")
    (d / "nul.vmf").write_bytes(b"arena 1\nmmap 0 2M\x00\n")
    (d / "dir.vmf").mkdir()
    return d


BAD = [
    (["run", "{d}/missing.vmf"], "No such file or directory"),
    (["run", "{d}/dir.vmf"], "Is a directory"),
    (["run", "{d}/bad.vmf"], "line 3: range 0x0+0x400000 leaves the arena"),
    (["run", "{d}/nul.vmf"], "line 2: NUL byte"),
    (["run", "{d}/latin1.vmf", "--era", "bogus"], "unknown era 'bogus'"),
    (["run", "{d}/latin1.vmf", "--sysfs", "sometimes"], "unknown sysfs mode"),
    (["run"], "Missing argument"),
    (["replay", "{d}/missing.vmf"], "No such file or directory"),
    (["replay", "{d}/dir.vmf"], "Is a directory"),
    (["replay", "{d}/bad.vmf", "--era", "mmf"], "line 3: range 0x0+0x400000 leaves the arena"),
    (["replay", "{d}/bad.vmf", "--era", "bogus"], "unknown era 'bogus'"),
    (["replay", "{d}/bad.vmf", "--kernel", "bogus"], "unknown kernel 'bogus'"),
    (["prove", "--json", "--ktap"], "choose one of --json and --ktap"),
    (["prove", "--era", "bogus"], "unknown era"),
    (["prove", "--theorem", "bogus"], "unknown theorem"),
    (["conform", "--era", "bogus"], "unknown era"),
    (["conform", "--json", "--ktap"], "choose one of --json and --ktap"),
    (["conform", "--examples", "-1"], "--examples must be from 0"),
    (["conform", "--examples", "100000000000000000000"], "--examples must be from 0"),
    (["conform", "--seed", "abc"], "Invalid value for '--seed'"),
    (["conform", "--scenario", "bogus"], "unknown scenario 'bogus'"),
    (["conform", "--frobnicate"], "No such option"),
    (["vm", "run"], "Missing option '--kernel'"),
    (["vm", "run", "--kernel", "bogus"], "unknown kernel 'bogus'"),
    (["vm", "run", "--kernel", "{d}/missing-bzImage"], "no kernel image"),
    (["vm", "run", "--kernel", "debian-6.12", "--examples", "-3"], "--examples must be from 0"),
    (["vm", "run", "--kernel", "debian-6.12", "--json", "--ktap"], "choose one of"),
    (["vm", "matrix", "--examples", "-1"], "--examples must be from 0"),
    (["stress", "--tries", "0"], "--tries must be >= 1"),
    (["stress", "--seconds", "nan"], "--seconds > 0 (finite)"),
    (["kernel", "build", "bogus"], "unknown kernel 'bogus'"),
    (["kernel", "build", "patched-6.12", "--jobs", "0"], "--jobs must be >= 1"),
    (["kernel", "list", "extra"], "unexpected extra argument"),
    (["eras", "extra"], "unexpected extra argument"),
    (["frobnicate"], "No such command"),
]


@pytest.mark.parametrize("args, msg", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(files, args, msg):
    p = vmaflags(*(a.format(d=files) for a in args))
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert len(err.splitlines()) == 1 and msg in err and err.startswith("vmaflags"), err
    assert p.stdout == b""


def test_run_takes_any_bytes_in_comments(files):
    """A script need not be UTF-8 (SCRIPT.md): from a file as from stdin."""
    from_file = vmaflags("run", str(files / "latin1.vmf"))
    from_stdin = vmaflags("run", "-", stdin=(files / "latin1.vmf").read_bytes())
    assert from_file.returncode == from_stdin.returncode == 0, from_file.stderr
    assert from_file.stdout == from_stdin.stdout == b"1 ret=0 get=0 thp=1 vmas=0x0-0x200000:-:0:0\n"


def _no_home(tmp_path: pathlib.Path) -> dict:
    """HOME where nothing can be created, not even by root; TMPDIR of our own."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    env.update(HOME="/proc/vmaflags-no-home", TMPDIR=str(tmp_path))
    return env


@needs_kernel
def test_conform_without_a_writable_home(tmp_path):
    """The executor is built into a per-user cache under the temp dir instead."""
    p = vmaflags("conform", "--scenario", "split-merge", "--examples", "5", "--seed", "1",
                 "--json", env=_no_home(tmp_path))
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads(p.stdout)["random"]["examples"] == 5
    assert list((tmp_path / f"vmaflags-cache-{os.getuid()}").glob("executor-*"))


def _as_nobody() -> list[str] | str:
    """The command prefix that runs as nobody, or why it cannot."""
    if os.geteuid() != 0:
        return "not root: cannot switch to nobody"
    user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    # as conform starts its workers: sys.executable from a process of that interpreter
    spawn = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
             "'import vmaflags.conformance'], check=True)")
    try:
        ok = subprocess.run([*user, sys.executable, "-c", spawn], capture_output=True,
                            timeout=60).returncode == 0
    except OSError as e:
        return f"setpriv: {e.strerror}"
    return user if ok else f"nobody cannot run {sys.executable} and vmaflags from here"


@needs_kernel
def test_conform_as_nobody(tmp_path):
    """`vmaflags conform` as nobody with HOME=/nonexistent: root's scenarios SKIP with their
    reason, the rest pass, the cache falls back to the temp dir."""
    user = _as_nobody()
    if isinstance(user, str):
        pytest.skip(user)
    tmp_path.chmod(0o777)
    env = dict(_no_home(tmp_path), HOME="/nonexistent")
    p = vmaflags("conform", "--examples", "20", "--seed", "1", "--json", env=env, user=user)
    assert p.returncode == 0, p.stderr.decode()
    d = json.loads(p.stdout)
    assert d["random"]["examples"] == 20
    skips = {s["reason"] for s in d["scenarios"] if s["status"] == "skip"}
    assert skips and all("root" in r for r in skips), skips
    assert (tmp_path / "vmaflags-cache-65534").is_dir()
