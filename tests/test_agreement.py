"""The one hard requirement: the Z3 terms of a step, evaluated on a concrete state, equal the
concrete interpreter's step, field by field, in every era."""
from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmaflags.conformance.strategies import scripts, steps
from vmaflags.model import ERAS, concrete, symbolic
from vmaflags.model import step as S
from vmaflags.model.backend import PY
from vmaflags.model.state import empty_state
from vmaflags.model.syscalls import Script


# every era, and Debian 6.1 (the within-era features of ERAS["mmf"].at("6.1"))
AGREEMENT_ERAS = {**ERAS, "mmf@6.1": ERAS["mmf"].at("6.1")}


@lru_cache(maxsize=None)
def _sym(era_id: str, shp: tuple[int, ...], kind: tuple) -> symbolic.Step:
    return symbolic.Step.build(AGREEMENT_ERAS[era_id], shp, kind_sample[kind])


kind_sample: dict[tuple, object] = {}


@pytest.mark.parametrize("era_id", list(AGREEMENT_ERAS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=scripts(blocks=2, max_steps=8), last=steps(2), sysfs=st.integers(0, 2))
def test_symbolic_step_equals_concrete_step(era_id: str, prefix: Script, last, sysfs: int):
    era = AGREEMENT_ERAS[era_id]
    st_ = empty_state(prefix.arena, sysfs)
    for sc in prefix.steps:
        st_ = concrete.run_syscall(era, st_, sc).state
    pre, args = concrete.prepare(era, st_, last)
    if args is None:  # rejected by the byte-level argument checks
        return
    kind = symbolic.kind(last)
    kind_sample.setdefault(kind, last)
    sym = _sym(era_id, symbolic.shape(pre), kind).evaluate(pre, args)
    want = symbolic.outcome(PY, era, *S.transition(PY, era, pre, last, args))
    assert sym == want


# Scripts whose steps take the era-specific paths (the 6.1 merge and anon_vma quirks,
# khugepaged registration at each call site), checked step by step in the eras that differ.
PATH_SCRIPTS = [
    "arena 2\nmmap 0 4M\nuffd_copy 1M 8K\nmadvise 1M 2M collapse",
    "arena 2\nmmap 0 2M\nuffd_register 2044K 8K missing\nuffd_register 1M 1M missing\n"
    "uffd_unregister 1M 1M",
    "arena 2\nmmap 0 4M\nmadvise 1M 1M hugepage\ntouch 2044K 8K\nmmap 1M 1M",
    "arena 3\nmmap 0 2M\ntouch 0 4K\nmmap 4M 2M\ntouch 4M 4K\nmmap 2M 2M",
    "arena 2\nmmap 0 2M\nmadvise 0 2M hugepage\nuffd_register 0 2M missing\ntouch 0 4K",
    "arena 2\nprctl_set 1 0 0 0\nmmap 0 4M\nmadvise 0 4M hugepage\ntouch 0 4K\n"
    "prctl_set 0 0 0 0\nuffd_register 2M 2M missing\nuffd_unregister 2M 2M",
    "arena 2\nprctl_set 1 0 0 0\nmmap 0 4M\ntouch 0 4K\nprctl_set 0 0 0 0\n"
    "madvise 3M 4K hugepage",
]


@pytest.mark.parametrize("era_id", ["mmf@6.1", "mmf", "mmf-except-advised"])
@pytest.mark.parametrize("text", PATH_SCRIPTS)
@pytest.mark.parametrize("sysfs", [0, 1])
def test_symbolic_step_equals_concrete_step_on_paths(era_id: str, text: str, sysfs: int):
    from vmaflags.model import parse_script

    era = AGREEMENT_ERAS[era_id]
    script = parse_script(text)
    st_ = empty_state(script.arena, sysfs)
    for sc in script.steps:
        pre, args = concrete.prepare(era, st_, sc)
        kind = symbolic.kind(sc)
        kind_sample.setdefault(kind, sc)
        sym = _sym(era_id, symbolic.shape(pre), kind).evaluate(pre, args)
        assert sym == symbolic.outcome(PY, era, *S.transition(PY, era, pre, sc, args)), sc.text()
        st_ = concrete.run_syscall(era, st_, sc).state
