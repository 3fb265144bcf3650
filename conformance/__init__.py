"""Conformance: the live kernel checked against the model (README.md in this folder).

`replay(script_text, era)` runs one script (e.g. a proof's counterexample) on this kernel and on
the model and returns the first divergence or None; see catalogue.replay.
"""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m vmaflags.conformance.sysfs` (the guardian) imports nothing else.
    if name == "replay":
        from .catalogue import replay
        return replay
    raise AttributeError(name)
