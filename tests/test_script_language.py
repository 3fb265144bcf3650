"""One script language: the C executor's parser and the model's (vmaflags.model.syscalls) accept
the same scripts and reject the others on the same line with the same message.

Hypothesis feeds both random token soup and mutations of valid scripts (numbers out of range,
signs, suffixes, unknown words, extra or missing tokens, odd separators, comments, NUL and
non-ASCII bytes, `arena` out of place); `executor --check` parses without running anything, so
no kernel state is touched.
"""
from __future__ import annotations

import functools
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmaflags.conformance import catalogue, host
from vmaflags.conformance.build import executor_path
from vmaflags.conformance.strategies import scripts
from vmaflags.model.syscalls import STEPS, Script, ScriptError, parse_script

why = host.no_executor()
needs_executor = pytest.mark.skipif(bool(why), reason=why or "")


def model_verdict(text: bytes) -> str:
    """"ok", or the error as the executor prints it."""
    try:
        parse_script(text)
    except ScriptError as e:
        return f"executor: {e}"
    return "ok"


@functools.cache
def _executor() -> str:
    return str(executor_path())


def executor_verdict(text: bytes) -> str:
    r = subprocess.run([_executor(), "--check", "-"], input=text, capture_output=True,
                       timeout=10)
    err = r.stderr.decode("ascii")  # a parse error is printable ASCII, one line
    if r.returncode == 0 and not err:
        return "ok"
    assert r.returncode == 2 and err.count("\n") == 1, (r.returncode, err)
    return err.rstrip("\n")


def assert_same(text: bytes) -> None:
    assert model_verdict(text) == executor_verdict(text), text


# --- what scripts are made of ---------------------------------------------------------------

WORDS = [*STEPS, "arena", "hugepage", "nohugepage", "collapse", "clr_hugepage", "missing", "wp",
         "missing+wp", "wp+missing", "missing+", "+wp", "always", "madvise", "never", "MMAP",
         "khugepaged:", "fork()"]
NUMBERS = ["0", "1", "4", "64", "65", "4096", "4K", "2M", "0x1000", "0x200000", "0X10", "0x",
           "007", "000", "1_000", "+1", "-0", "-1", "-5", "0o7", "0b1", "2k", "2G", "2MM", "1.5",
           "2147483647", "2147483648", "9223372036854775807", "9223372036854775808",
           "-9223372036854775808", "-9223372036854775809", "18446744073709551615",
           "18446744073709551616", "99999999999999999999", "0xffffffffffffffff",
           "0x10000000000000000", "0x000000000000000001", "16777215M", "17592186044416M",
           "0x100000000000K", "\u0663", "\uff12M", "\u00b2"]
SEPARATORS = [" ", "  ", "\t", "\r", "\v", "\f", " \t ", "\u00a0", "\x1c", "\x85", "\u2028"]
ODD = ["\x00", "\x01", "\x7f", "\u00e9", "\ufeff", "\U0001f600"]
RAW = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]  # not UTF-8

words = st.sampled_from(WORDS)
numbers = st.sampled_from(NUMBERS) | st.integers(-(1 << 65), 1 << 65).map(str) \
    | st.integers(0, 1 << 66).map(hex)
junk = st.text(st.sampled_from("abz09_+-xKM#!:" + "".join(ODD)), min_size=1, max_size=6)
tokens = words | numbers | junk
separators = st.sampled_from(SEPARATORS)


@st.composite
def soup(draw) -> bytes:
    """Lines of random tokens, separators and comments."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        toks = draw(st.lists(tokens, max_size=6))
        line = "".join(t + draw(separators) for t in toks)
        if draw(st.booleans()):
            line += "#" + draw(st.text(max_size=8))
        lines.append(line.encode("utf-8", "surrogatepass"))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))


def valid_texts() -> st.SearchStrategy[str]:
    """Valid scripts: the catalogue's and random ones on 1-4 PMD arenas."""
    catalogue_texts = [p.read_text() for p in sorted(catalogue.SCENARIO_DIR.glob("*.vmf"))]
    random = st.integers(1, 4).flatmap(lambda b: scripts(blocks=b, max_steps=8)).map(Script.text)
    return st.sampled_from(catalogue_texts) | random


@st.composite
def mutated(draw) -> bytes:
    """A valid script with one to three mutations of its lines, tokens or bytes."""
    lines = draw(valid_texts()).split("\n")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        toks = lines[i].split(" ")
        j = draw(st.integers(0, len(toks) - 1))
        kind = draw(st.integers(0, 11))
        if kind == 0:  # a number or word replaced
            toks[j] = draw(numbers if draw(st.booleans()) else tokens)
        elif kind == 1:  # an extra token
            toks.insert(j + 1, draw(tokens))
        elif kind == 2 and len(toks) > 1:  # a missing one
            del toks[j]
        elif kind == 3:  # another separator
            lines[i] = draw(separators).join(toks)
            continue
        elif kind == 4:  # a comment, or a header
            toks.append(draw(st.sampled_from(["#", "#!", " # ", "#!x:"])) + draw(st.text(max_size=6)))
        elif kind == 5:  # a stray character inside a token
            t = toks[j]
            k = draw(st.integers(0, len(t)))
            toks[j] = t[:k] + draw(st.sampled_from(ODD + ["#", "-", "K"])) + t[k:]
        elif kind == 6:  # arena moved or repeated
            lines.insert(draw(st.integers(0, len(lines))), f"arena {draw(numbers)}")
        elif kind == 7:  # a line dropped or duplicated
            if draw(st.booleans()):
                del lines[i]
            else:
                lines.insert(i, lines[i])
            if not lines:
                lines = [""]
            continue
        elif kind == 8:  # CR line ends
            lines = [ln + "\r" for ln in lines]
            continue
        elif kind == 9:  # a range stretched past the arena
            if len(toks) >= 3 and toks[0] in ("mmap", "munmap", "touch", "madvise"):
                toks[2] = draw(st.sampled_from(["8M", "16M", "128M", "0x7fffffffffffffff"]))
        elif kind == 10:  # a huge number anywhere
            toks[j] = draw(st.sampled_from(["99999999999999999999", "-5", "1" * 40]))
        else:  # an empty script
            lines = [""]
            continue
        lines[i] = " ".join(toks)
    text = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # a byte that is not UTF-8
        k = draw(st.integers(0, len(text)))
        text = text[:k] + draw(st.sampled_from(RAW)) + text[k:]
    return text


def runs(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck),
                    database=None)


@needs_executor
@runs(400)
@given(mutated())
def test_mutated_scripts_parse_alike(text):
    assert_same(text)


@needs_executor
@runs(300)
@given(soup())
def test_random_scripts_parse_alike(text):
    assert_same(text)


@needs_executor
@pytest.mark.parametrize("text, verdict", [
    # the cases: one rule each, on both sides (the model used to accept them)
    (b"khugepaged -5\n", "line 1: number '-5' out of range (0..18446744073709551615)"),
    (b"madvise 0 2M 99999999999999999999\n",
     "line 1: number '99999999999999999999' out of range (0..2147483647)"),
    (b"arena 1\nmmap 0 2M\nmadvise 0 4M hugepage\n",
     "line 3: range 0x0+0x400000 leaves the arena (0x200000 bytes)"),
    (b"mmap 007 2M\n", "ok"),  # leading zeros are decimal (a traceback in the model before)
    (b"mmap 0 \xd9\xa2M\n", "line 1: bad size '\\xd9\\xa2M'"),  # no Unicode digits
    (b"mmap\xc2\xa00 2M\n", "line 1: unknown step 'mmap\\xc2\\xa00'"),  # nor spaces
    (b"mmap 0 2M\x00junk\n", "line 1: NUL byte"),
    (b"# caf\xe9 \xff\r\nmmap 0 2M\r\n", "ok"),  # any byte in a comment; CR LF line ends
    (b"madvise 0 2M -1\n", "line 1: bad advice '-1'"),  # not the model's clr_hugepage
    (b"prctl_set -1 0 0 0\n", "ok"),  # an unsigned long, as in C
    (b"arena 2\nmmap 0 2M\narena 2\n", "line 3: arena comes once, before the first step"),
    (b"prctl_set 0o7\n", "line 1: bad number '0o7'"),
    (b"", "ok"),
])
def test_decided_rules(text, verdict):
    """The rules SCRIPT.md states, pinned: both parsers give exactly this."""
    want = verdict if verdict == "ok" else f"executor: {verdict}"
    assert model_verdict(text) == want
    assert executor_verdict(text) == want


def test_scripts_the_model_prints_parse_back():
    """Script.text() is in the language: the proofs' counterexamples replay."""
    for blocks in (1, 4):
        text = ("arena %d\nprctl_set -1 2 0 0\nkhugepaged 0\nmadvise %dM 4K clr_hugepage\n"
                "uffd_register 0 2M missing+wp\n" % (blocks, 2 * blocks - 1))
        assert parse_script(parse_script(text).text()) == parse_script(text)
