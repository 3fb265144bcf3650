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


@lru_cache(maxsize=None)
def _sym(era_id: str, shp: tuple[int, ...], kind: tuple) -> symbolic.Step:
    return symbolic.Step.build(ERAS[era_id], shp, kind_sample[kind])


kind_sample: dict[tuple, object] = {}


@pytest.mark.parametrize("era_id", list(ERAS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=scripts(blocks=2, max_steps=8), last=steps(2), sysfs=st.integers(0, 2))
def test_symbolic_step_equals_concrete_step(era_id: str, prefix: Script, last, sysfs: int):
    era = ERAS[era_id]
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
