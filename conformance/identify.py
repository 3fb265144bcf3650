"""Era identification by behaviour, as CRIU's kerndat probes classify a kernel: run the probe
scenarios (`#! probe: yes`) on the kernel once, compare with every era's prediction, and report
the eras that agree on everything and, for each other era, the first step where it departs.
`uname -r` is never consulted."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vmaflags.model.eras import ERAS, Era

from . import catalogue, driver, host
from .driver import Divergence


@dataclass
class Verdict:
    era: str
    matches: bool
    probe: str = ""  # the first probe that diverged
    divergence: Divergence | None = None

    def as_dict(self) -> dict:
        d: dict = {"era": self.era, "matches": self.matches}
        if self.divergence is not None:
            d["probe"] = self.probe
            d["divergence"] = self.divergence.as_dict()
        return d


@dataclass
class Identification:
    verdicts: list[Verdict] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)  # those that ran
    skipped: dict[str, str] = field(default_factory=dict)  # probe -> reason
    transitions: int = 0

    @property
    def matching(self) -> list[str]:
        return [v.era for v in self.verdicts if v.matches]

    @property
    def era(self) -> str | None:
        """The one matching era, or None (no probe ran, none matches, or several do)."""
        m = self.matching
        return m[0] if len(m) == 1 and self.probes else None

    def as_dict(self) -> dict:
        return {"era": self.era, "matching": self.matching, "probes": self.probes,
                "skipped": self.skipped, "eras": [v.as_dict() for v in self.verdicts]}


def probes() -> list[catalogue.Scenario]:
    return [sc for sc in catalogue.load() if sc.probe]


def identify(eras: Iterable[Era] | None = None,
             on_probe: Callable[[str], None] | None = None) -> Identification:
    """Run the probes (each once per MADV_CLR_HUGEPAGE number the eras use) and judge every era."""
    eras = list(ERAS.values() if eras is None else eras)
    out = Identification()
    first: dict[str, tuple[str, Divergence]] = {}
    mode = None
    for sc in probes():
        why = catalogue.blocker(sc, catalogue.LIVE, None)
        if why:
            out.skipped[sc.name] = why
            continue
        mode = host.live_mode() if mode is None else mode
        out.probes.append(sc.name)
        kernel: dict[int | None, driver.Trace] = {}
        for e in eras:
            clr = driver.clr_number(e)
            if clr not in kernel:
                kernel[clr] = driver.run_kernel(sc.script, clr)
                out.transitions += len(kernel[clr])
            if e.id in first:
                continue
            d = driver.compare(sc.script, driver.run_model(e, sc.script, mode), kernel[clr])
            if d is not None:
                d.era = e.id
                first[e.id] = (sc.name, d)
        if on_probe:
            on_probe(sc.name)
    for e in eras:
        probe, d = first.get(e.id, ("", None))
        out.verdicts.append(Verdict(e.id, d is None and bool(out.probes), probe, d))
    return out
