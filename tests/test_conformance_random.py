"""The issue's bar: at least 2,000 random sequences agree with the model on this kernel, in
every sysfs mode the machine lets us set (all three as root).  About a minute on 6.18."""
from __future__ import annotations

import pytest

from vmaflags.conformance import host, sequences, sysfs
from vmaflags.model import ERAS

EXAMPLES = 2000
why = host.no_thp() or host.no_executor()


@pytest.mark.skipif(bool(why), reason=why or "")
def test_two_thousand_random_sequences():
    live = sysfs.read("enabled")
    if sysfs.writable() is None:
        with sysfs.SysfsGuard() as g:
            modes = [live] + [m for m in ("madvise", "always", "never") if m != live]
            r = sequences.run(ERAS["mmf-except-advised"], EXAMPLES, 20251126, modes, g)
    else:
        r = sequences.run(ERAS["mmf-except-advised"], EXAMPLES, 20251126, [live], None)
    print(f"{r.examples} sequences, {r.transitions} transitions, {r.per_second:.0f}/s, "
          f"modes {r.modes}, flaky {len(r.flaky)}")
    assert r.examples == EXAMPLES
    assert not r.errors, r.errors
    assert not r.divergences, "\n\n".join(d["script"] + f"step {d['step']}:\n  model:  "
                                          f"{d['model']}\n  kernel: {d['kernel']}"
                                          for d in r.divergences)
