"""Saved results: the JSON files of earlier runs, recognised by their shape.

| command | JSON |
|---|---|
| `vmaflags prove --json` | `{"results": [...]}` |
| `vmaflags conform --json` | one run: `kernel`, `scenarios`, `identification`, ... |
| `vmaflags vm run --json` | the same, with `spec`, `expected_era`, `selftests` |
| `vmaflags vm matrix --json` | `{"seed", "examples", "kernels": [runs]}` |
| `vmaflags vm criu --json` | `{"kernel", "criu", "cases": [...]}` |
| `vmaflags stress --json` | `{"kernel", "era", "races": [...]}` |

Each result keeps the file it came from (`source`, its name only) and the command that
produces it again (`command`), rebuilt from what the file records (seed, examples, kernel).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any


class BadResults(ValueError):
    """A file that is not JSON of a vmaflags command: str() is one line naming it."""


def kind(doc: Any) -> str:
    if not isinstance(doc, dict):
        return ""
    if "proofs" in doc and "eras" in doc:
        return "report"
    if isinstance(doc.get("results"), list):
        return "prove"
    if "cases" in doc and "criu" in doc:
        return "criu"
    if "races" in doc:
        return "stress"
    if isinstance(doc.get("kernels"), list):
        return "matrix"
    if "scenarios" in doc or "spec" in doc:
        return "conform"
    return ""


def _scenario_args(run: dict) -> str:
    """--scenario NAME for each scenario of a run that did not run the whole catalogue."""
    from vmaflags.conformance import catalogue

    ran = dict.fromkeys(s["name"].split("@")[0] for s in run.get("scenarios", []))
    every = [sc.name for sc in catalogue.load()]
    if not ran or set(ran) == set(every):
        return ""
    return "".join(f" --scenario {n}" for n in ran)


def conform_command(run: dict) -> str:
    rnd = run.get("random") or {}
    args = _scenario_args(run)
    if rnd.get("examples") or not args:
        args += f" --examples {rnd.get('examples', 0)}"
    if rnd.get("seed") is not None:
        args += f" --seed {rnd['seed']}"
    spec = run.get("spec")
    head = ("vmaflags conform" if spec in (None, "host")
            else f"vmaflags vm run --kernel {spec}")
    return f"{head}{args} --json"


def criu_command(doc: dict) -> str:
    """`vm criu` records the guest's uname and CRIU's version, not the SPEC: the standard
    Debian kernel of that version, and the release whose Debian suite has that CRIU."""
    from vmaflags.conformance.vm.criu import RELEASES
    from vmaflags.conformance.vm.kernels import STANDARD

    mm = ".".join(str(doc.get("kernel", "")).split(".")[:2])
    rel = ".".join(str(doc.get("criu", "")).split(".")[:2])
    spec = f"debian-{mm}-std"
    args = f" --kernel {spec}" if spec in STANDARD else ""
    args += f" --criu {rel}" if rel in RELEASES else ""
    return f"vmaflags vm criu{args} --json"


def load_dir(path: pathlib.Path) -> dict[str, list]:
    """Every *.json file of `path`, by kind: proofs, conformance, criu, stress."""
    if not path.is_dir():
        raise BadResults(f"{path}: not a directory")
    out: dict[str, list] = {"proofs": [], "conformance": [], "criu": [], "stress": []}
    files = sorted(path.glob("*.json"))
    if not files:
        raise BadResults(f"{path}: no .json files")
    for f in files:
        add(f.name, load(f), out)
    return out


def load(f: pathlib.Path) -> Any:
    try:
        return json.loads(f.read_text())
    except OSError as e:
        raise BadResults(f"{f}: {e.strerror}") from None
    except ValueError as e:
        raise BadResults(f"{f}: not JSON ({e})") from None


def add(name: str, doc: Any, out: dict[str, list]) -> None:
    k = kind(doc)
    src = {"source": name}
    if k == "prove":
        out["proofs"].append({"rows": doc["results"], "command": "vmaflags prove --json",
                              **src})
    elif k == "conform":
        out["conformance"].append({**doc, **src, "command": conform_command(doc)})
    elif k == "matrix":
        specs = [r.get("spec") for r in doc["kernels"] if r.get("spec") not in (None, "host")]
        cmd = ("vmaflags vm matrix" + "".join(f" --kernel {s}" for s in specs)
               + f" --examples {doc.get('examples')} --seed {doc.get('seed')} --json")
        out["conformance"] += [{**r, **src, "command": cmd} for r in doc["kernels"]]
    elif k == "criu":
        out["criu"].append({**doc, **src, "command": criu_command(doc)})
    elif k == "stress":
        tries = max((r.get("tries", 0) for r in doc["races"]), default=0)
        out["stress"].append({**doc, **src, "command": "vmaflags stress"
                              + (f" --tries {tries}" if tries else "") + " --json"})
    else:
        raise BadResults(f"{name}: not the JSON of vmaflags prove, conform, vm run, vm matrix, "
                         "vm criu or stress" + (" (a report's results.json: use --from)"
                                                if k == "report" else ""))
