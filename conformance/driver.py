"""Run a script on the kernel (the C executor) and on the model, and compare step by step."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass

from vmaflags.model import concrete
from vmaflags.model.eras import Era
from vmaflags.model.errno import ret_parse
from vmaflags.model.observe import Observation, Vma
from vmaflags.model.syscalls import Script

from .build import executor_path


class ExecutorError(RuntimeError):
    """The executor failed or printed something we cannot parse."""


def parse_line(line: str) -> tuple[str, Observation]:
    """`3 ret=0 get=0 thp=1 vmas=...` -> ("3", Observation)."""
    label, *fields = line.split()
    kv = dict(f.split("=", 1) for f in fields)
    vmas = []
    for item in filter(None, kv["vmas"].split(",")):
        rng, flags, elig, ahp = item.split(":")
        s, e = rng.split("-")
        vmas.append(Vma(int(s, 16), int(e, 16), flags, None if elig == "-" else int(elig),
                        int(ahp)))
    return label, Observation(ret_parse(kv["ret"]), ret_parse(kv["get"]),
                              None if kv["thp"] == "-" else int(kv["thp"]), tuple(vmas))


def run_kernel(script: Script, clr_hugepage: int | None = None, timeout: float = 60
               ) -> list[tuple[str, Observation]]:
    exe = executor_path(clr_hugepage)
    p = subprocess.run([str(exe), "-"], input=script.text(), capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise ExecutorError(f"executor exited {p.returncode}: {p.stderr.strip()}")
    try:
        return [parse_line(ln) for ln in p.stdout.splitlines() if ln.strip()]
    except (ValueError, KeyError) as e:
        raise ExecutorError(f"unparsable executor output: {e}") from None


def run_model(era: Era, script: Script, sysfs: int) -> list[tuple[str, Observation]]:
    out = []
    for n, o in enumerate(concrete.run(era, script, sysfs), 1):
        if o.child is not None:
            out.append((f"{n}c", o.child))
        out.append((str(n), o.obs))
    return out


@dataclass
class Divergence:
    step: str  # "3" or "3c"
    syscall: str
    model: Observation | None
    kernel: Observation | None

    def text(self) -> str:
        m = "-" if self.model is None else self.model.text()
        k = "-" if self.kernel is None else self.kernel.text()
        return f"step {self.step} `{self.syscall}`:\n  model:  {m}\n  kernel: {k}"


def compare(script: Script, model: list[tuple[str, Observation]],
            kernel: list[tuple[str, Observation]]) -> Divergence | None:
    """The first step where model and kernel differ, or None."""
    for i in range(max(len(model), len(kernel))):
        m = model[i] if i < len(model) else None
        k = kernel[i] if i < len(kernel) else None
        if m != k:
            label = (m or k)[0]
            sc = script.steps[int(label.rstrip("c")) - 1].text()
            return Divergence(label, sc, m and m[1], k and k[1])
    return None
