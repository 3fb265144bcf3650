"""The per-VMA flag state machine of an era, computed from the model (never drawn by hand).

A state is one VMA's `hg`/`nh` with the process's PR_GET_THP_DISABLE value; its label adds
smaps THPeligible under sysfs `madvise` and `always`.  From each state every syscall of
`EDGES` that the era accepts is run on the concrete interpreter (vmaflags.model.concrete) over a
VMA of one PMD that has been written to; the state it leads to is read off the observation.
`mmap` is a MAP_FIXED mapping over the VMA: the flags a new VMA gets in that process.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from vmaflags.model import concrete, parse_script
from vmaflags.model.eras import Era
from vmaflags.model.syscalls import SYSFS_MODES

FLAGS = ("-", "hg", "nh")
_SET_FLAGS = {"-": "", "hg": "madvise 0 2M hugepage\n", "nh": "madvise 0 2M nohugepage\n"}
_SET_GET = {0: "", 1: "prctl_set 1 0 0 0\n", 3: "prctl_set 1 2 0 0\n"}
EDGES = ("madvise 0 2M hugepage", "madvise 0 2M nohugepage", "madvise 0 2M clr_hugepage",
         "prctl_set 1 0 0 0", "prctl_set 1 2 0 0", "prctl_set 0 0 0 0", "mmap 0 2M")


@dataclass(frozen=True)
class Node:
    flags: str  # "-", "hg" or "nh"
    get: int  # PR_GET_THP_DISABLE

    def name(self) -> str:
        return f"{self.flags} get={self.get}"


@dataclass(frozen=True)
class Edge:
    src: Node
    dst: Node
    syscall: str

    @property
    def label(self) -> str:
        w = self.syscall.split()
        return {"madvise": w[-1].upper(), "prctl_set": f"prctl({w[1]},{w[2]})",
                "mmap": "mmap"}[w[0]]


def _script(node: Node, extra: str = "") -> str:
    return ("arena 1\nmmap 0 2M\ntouch 0 4K\n" + _SET_FLAGS[node.flags] + _SET_GET[node.get]
            + extra)


def _run(era: Era, text: str, sysfs: str = "madvise") -> tuple[int, str, int | None, int]:
    """(ret, flags, THPeligible, PR_GET) after the script's last step."""
    obs = concrete.run(era, parse_script(text), SYSFS_MODES.index(sysfs))[-1].obs
    v = obs.vmas[0]
    flags = "+".join(f for f in v.flags.split("+") if f in ("hg", "nh")) or "-"
    return obs.ret, flags, v.eligible, obs.get


@functools.cache
def machine(era: Era) -> tuple[list[Node], list[Edge]]:
    """The states reachable from a fresh VMA in a fresh process, and the edges between them."""
    start = Node("-", 0)
    seen, todo, edges = {start}, [start], []
    while todo:
        n = todo.pop(0)
        for sc in EDGES:
            if sc.endswith("clr_hugepage") and era.clr_hugepage is None:
                continue
            ret, flags, _, get = _run(era, _script(n, sc + "\n"))
            if ret != 0:
                continue
            m = Node(flags, get)
            if m != n:
                edges.append(Edge(n, m, sc))
            if m not in seen:
                seen.add(m)
                todo.append(m)
    nodes = sorted(seen, key=lambda x: (x.get, FLAGS.index(x.flags)))
    return nodes, edges


def eligible(era: Era, node: Node) -> dict[str, int | None]:
    """smaps THPeligible of the node's VMA, per sysfs mode."""
    return {mode: _run(era, _script(node), mode)[2] for mode in ("madvise", "always")}


def dot(era: Era) -> str:
    """The machine in graphviz's language: one cluster per PR_GET value."""
    import graphviz

    nodes, edges = machine(era)
    g = graphviz.Digraph(era.id, graph_attr={"rankdir": "LR", "fontname": "Helvetica",
                                             "label": f"{era.id} ({era.kernels})",
                                             "labelloc": "t"},
                         node_attr={"shape": "box", "style": "rounded", "fontname": "Helvetica",
                                    "fontsize": "11"},
                         edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    for get in sorted({n.get for n in nodes}):
        with g.subgraph(name=f"cluster_{get}") as c:
            c.attr(label=f"PR_GET_THP_DISABLE = {get}", style="dashed")
            for n in (x for x in nodes if x.get == get):
                e = eligible(era, n)
                elig = ("" if e["madvise"] is None else  # no THPeligible before 5.0
                        f"\nTHPeligible: madvise {e['madvise']}, always {e['always']}")
                c.node(n.name(), ("neither" if n.flags == "-" else n.flags) + elig)
    for e in edges:
        g.edge(e.src.name(), e.dst.name(), e.label)
    return g.source


def svg(era: Era) -> str:
    """The machine as an SVG document (graphviz's `dot`)."""
    import graphviz

    return graphviz.Source(dot(era)).pipe(format="svg", encoding="utf-8")


def text(era: Era) -> list[str]:
    """The edges as lines for a mail: `from -> to  by`."""
    nodes, edges = machine(era)
    out = [f"{era.id}: (one VMA's hg/nh, PR_GET) and the syscalls between them"]
    out += [f"  {e.src.name():<12} -> {e.dst.name():<12} {e.syscall}" for e in edges]
    return out
