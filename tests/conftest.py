"""Shared fixtures."""
from __future__ import annotations

import os
import pathlib
import uuid

import pytest


class Tagged:
    """An environment that marks every process started with it (and their descendants, which
    inherit it): after a run is killed, /proc shows which of its processes are left."""

    def __init__(self) -> None:
        self.value = uuid.uuid4().hex
        self.env = dict(os.environ, VMAFLAGS_TEST_RUN=self.value)

    def alive(self) -> dict[int, str]:
        """pid -> command line of the live processes that carry the tag (not zombies)."""
        mark = f"VMAFLAGS_TEST_RUN={self.value}".encode()
        out = {}
        for d in pathlib.Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if mark in (d / "environ").read_bytes().split(b"\0"):
                    out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace").strip()
            except OSError:  # gone, or not ours to read
                continue
        return out


@pytest.fixture
def tagged() -> Tagged:
    return Tagged()
