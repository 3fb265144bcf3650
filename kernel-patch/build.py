"""Build a kernel of spec.KERNELS: bzImage, config, release and its static kselftests, cached.

    <cache>/builds/<name>-<key>/   bzImage  config  kselftest/<name>  build.log  built.json

built.json is written last: a directory without it is an unfinished build and is started over.
The steps: the pristine source (source.py) is copied as hard links (`cp -al`, a second or two
for 87k files), the series applied and checkpatch'ed in the copy (series.py), tinyconfig plus
the fragments made and checked, then `make bzImage headers` (the patched uapi headers for the
kselftests, which the selftests' own Makefile then builds with LDFLAGS=-static).  The copy and
the object tree are deleted after a successful build; on failure they stay for inspection.
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)

from . import series, source, spec
from .source import Skip
from .spec import KERNELS, Kernel

ARCH = "x86_64"  # the qemu test VMs are x86-64
# The build's quiet-mode lines ("  CC      mm/madvise.o") count its steps; a first build has no
# earlier count, and uses this one (tinyconfig + config/guest.config + headers, 6.12: 2,234).
DEFAULT_STEPS = 2250
TOOLS = {"cc": "gcc", "make": "make", "flex": "flex", "bison": "bison", "bc": "bc",
         "perl": "perl", "git": "git", "xz": "xz-utils", "cpio": "cpio", "dpkg-deb": "dpkg"}
# objtool (x86-64) needs libelf; certs/ and scripts/ tools include openssl's headers.
HEADERS = {"gelf.h": "libelf-dev", "openssl/evp.h": "libssl-dev"}
STEP = re.compile(r"^  [A-Z][A-Z0-9_-]* +\S")
ERROR = re.compile(r"(?:\berror\b:|\*\*\* .*\bError \d+|: undefined reference to)")


class BuildError(RuntimeError):
    """The build failed; str() is one line (the failing hunk, the first compiler error, the
    config options that did not survive), `.log` the full build log."""

    def __init__(self, msg: str, log: pathlib.Path):
        super().__init__(msg)
        self.log = log


@dataclass
class Built:
    name: str
    image: pathlib.Path  # bzImage
    config: pathlib.Path
    release: str  # `make kernelrelease`
    selftests: dict[str, pathlib.Path]  # name -> static binary
    log: pathlib.Path
    cached: bool
    seconds: float


__all__ = ["KERNELS", "BuildError", "Built", "Kernel", "Skip", "build", "build_dir", "cached"]


def build_dir(k: spec.Kernel, root: pathlib.Path | None = None) -> pathlib.Path:
    return (root or source.cache_root()) / "builds" / f"{k.name}-{spec.cache_key(k)}"


def cached(name: str) -> Built | None:
    """The cached build of kernel `name` for the current inputs, or None."""
    k = spec.kernel(name)
    return _load(build_dir(k), True, 0.0)


def build(name: str, jobs: int | None = None, progress: bool = True) -> Built:
    """The built kernel `name` of KERNELS: from the cache when its inputs are unchanged.
    ValueError for an unknown name, Skip when a tool or the source cannot be had here,
    BuildError when the build fails."""
    t0 = time.monotonic()
    k = spec.kernel(name)
    root = source.cache_root()
    bdir = build_dir(k, root)
    done = _load(bdir, True, 0.0)
    if done is not None:
        done.seconds = time.monotonic() - t0
        return done
    missing = blockers()
    if missing:
        raise Skip("cannot build a kernel here: " + "; ".join(missing))
    with source.locked(bdir.with_name(f".{bdir.name}.lock")):
        done = _load(bdir, True, 0.0)  # built by another process while we waited
        if done is None:
            if bdir.exists():
                shutil.rmtree(bdir)
            bdir.mkdir(parents=True)
            with _Display(name, progress) as ui:
                _build(k, root, bdir, jobs or os.cpu_count() or 1, ui)
            done = _load(bdir, False, 0.0)
            assert done is not None
    done.seconds = time.monotonic() - t0
    return done


def blockers() -> list[str]:
    """What is missing to build here, each with the Debian package that provides it."""
    out = []
    if platform.machine() != ARCH:
        out.append(f"the test kernels are {ARCH} and this is {platform.machine()}")
    for tool, pkg in TOOLS.items():
        if shutil.which(tool) is None:
            out.append(f"no `{tool}` (apt-get install {pkg})")
    if shutil.which("cc"):
        for header, pkg in HEADERS.items():
            res = subprocess.run(["cc", "-E", "-x", "c", "-o", os.devnull, "-"],
                                 input=f"#include <{header}>\n", capture_output=True, text=True,
                                 timeout=60, check=False)
            if res.returncode != 0:
                out.append(f"no <{header}> (apt-get install {pkg})")
        libc = subprocess.run(["cc", "-print-file-name=libc.a"], capture_output=True, text=True,
                              timeout=60, check=False).stdout.strip()
        if not os.path.isabs(libc):
            out.append("no static libc for the kselftests (apt-get install libc6-dev)")
    return out


# ---- the steps ---------------------------------------------------------------------------------

def _build(k: spec.Kernel, root: pathlib.Path, bdir: pathlib.Path, jobs: int,
           ui: _Display) -> None:
    logp = bdir / "build.log"
    phases: dict[str, float] = {}
    with open(logp, "w", buffering=1) as log:
        log.write(f"kernel {k.name}: {k.package}={k.version}, series {', '.join(k.series)}, "
                  f"config {', '.join(k.config)}, key {bdir.name.rsplit('-', 1)[1]}\n"
                  f"compiler: {spec.compiler()}\n")

        def phase(what: str, total: int | None = None) -> None:
            now = time.monotonic()
            if phases:
                last = next(reversed(phases))
                phases[last] = round(now - phases[last], 1)
                log.write(f"== {last}: {phases[last]} s\n")
            phases[what] = now
            log.write(f"== {what}\n")
            ui.phase(what, total)

        def fail(msg: str) -> BuildError:
            log.write(f"FAILED: {msg}\n")
            return BuildError(f"{k.name}: {msg}", logp)

        phase("source")
        try:
            tree = source.pristine(k.package, k.version, root)
        except Skip:
            raise
        except RuntimeError as e:  # the .deb did not unpack
            raise fail(str(e)) from None
        phase("copy")
        src, obj = bdir / "src", bdir / "obj"
        _run(["cp", "-al", str(tree), str(src)], log, fail)
        obj.mkdir()
        phase("apply")
        try:
            series.apply(k.patches, src, log)
            phase("checkpatch")
            series.checkpatch(k.patches, src, log)
        except series.PatchError as e:
            raise fail(str(e)) from None
        make = ["make", "-C", str(src), f"O={obj}", f"ARCH={ARCH}", f"LOCALVERSION=-{k.name}"]
        env = {**os.environ, "LC_ALL": "C", "KBUILD_BUILD_USER": "vmaflags",
               "KBUILD_BUILD_HOST": "vmaflags",
               "KBUILD_BUILD_TIMESTAMP": time.strftime(
                   "%Y-%m-%d %H:%M:%S UTC", time.gmtime((tree / "Makefile").stat().st_mtime))}
        phase("config")
        _config(k, src, obj, make, env, log, fail)
        phase(f"make -j{jobs}", _steps_estimate(root))
        # `headers`: the patched uapi headers in obj/usr/include, for the kselftests
        steps = _make([*make, f"-j{jobs}", "bzImage", "headers"], env, log, fail, ui)
        release = _run([*make, "-s", "--no-print-directory", "kernelrelease"], log, fail,
                       env).strip().splitlines()[-1]
        phase("kselftests")
        tests = {}
        for t in k.selftests:
            tests[pathlib.Path(t).name] = _selftest(t, src, obj, bdir, env, log, fail, ui)
        phase("done")
        shutil.copy(obj / "arch" / "x86" / "boot" / "bzImage", bdir / "bzImage")
        shutil.copy(obj / ".config", bdir / "config")
        phases.pop("done")
        meta = {"name": k.name, "package": k.package, "version": k.version,
                "series": list(k.series), "config": list(k.config), "release": release,
                "selftests": {n: str(p.relative_to(bdir)) for n, p in tests.items()},
                "steps": steps, "phases": phases,
                "seconds": round(sum(phases.values()), 1), "jobs": jobs}
        log.write(f"built {k.name} {release} in {meta['seconds']} s\n")
    shutil.rmtree(src)
    shutil.rmtree(obj)
    tmp = bdir / "built.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, bdir / "built.json")


def _config(k: spec.Kernel, src: pathlib.Path, obj: pathlib.Path, make: list[str],
            env: dict[str, str], log, fail) -> None:
    """tinyconfig, the fragments merged in order, olddefconfig; every fragment line must then
    be in the .config as written (an option whose dependencies are missing is dropped)."""
    _run([*make, "tinyconfig"], log, fail, env)
    frags = [str(f) for f in k.fragments]
    _run(["sh", str(src / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(obj),
          str(obj / ".config"), *frags], log, fail, env, cwd=src)
    _run([*make, "olddefconfig"], log, fail, env)
    have = _options((obj / ".config").read_text())
    want: dict[str, str] = {}
    for f in k.fragments:
        want.update(_options(f.read_text()))
    lost = [f"{o}={v} (got {have.get(o, 'n')})" for o, v in want.items() if have.get(o, "n") != v]
    if lost:
        raise fail("config options lost in olddefconfig: " + ", ".join(lost))


def _options(text: str) -> dict[str, str]:
    out = {}
    for ln in text.splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", ln) or re.match(r"^# (CONFIG_\w+) is not set$", ln)
        if m:
            out[m.group(1)] = m.group(2) if m.lastindex == 2 else "n"
    return out


def _selftest(test: str, src: pathlib.Path, obj: pathlib.Path, bdir: pathlib.Path,
              env: dict[str, str], log, fail, ui: _Display) -> pathlib.Path:
    """tools/testing/selftests/<dir>/<name>.c built by its Makefile, static, against the
    patched tree's uapi headers (obj/usr/include from `make headers`)."""
    sub, name = test.rsplit("/", 1)
    out = bdir / "kselftest" / sub
    out.mkdir(parents=True, exist_ok=True)
    _make(["make", "-C", str(src / "tools/testing/selftests" / sub), f"OUTPUT={out}",
           f"KHDR_INCLUDES=-isystem {obj / 'usr/include'}", "LDFLAGS=-static",
           str(out / name)], env, log, fail, ui)
    binary = out / name
    if not _is_static(binary):
        raise fail(f"kselftest {test} is not a static binary")
    final = bdir / "kselftest" / name
    shutil.copy(binary, final)
    shutil.rmtree(bdir / "kselftest" / sub.split("/")[0])
    return final


def _is_static(path: pathlib.Path) -> bool:
    """An ELF64 executable without a PT_INTERP program header (no dynamic loader)."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    types = [int.from_bytes(data[phoff + i * phentsize:phoff + i * phentsize + 4], "little")
             for i in range(phnum)]
    return 3 not in types  # PT_INTERP


def _run(cmd: list[str], log, fail, env: dict[str, str] | None = None,
         cwd: pathlib.Path | None = None) -> str:
    log.write(f"$ {' '.join(cmd)}\n")
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False,
                         timeout=3600)
    log.write(res.stdout + res.stderr)
    if res.returncode != 0:
        raise fail(_first_error(res.stdout + res.stderr) or f"{cmd[0]} exited {res.returncode}")
    return res.stdout


def _make(cmd: list[str], env: dict[str, str], log, fail, ui: _Display) -> int:
    """Run make with its output in the log; the number of build steps it printed."""
    log.write(f"$ {' '.join(cmd)}\n")
    steps, first = 0, ""
    with subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as p:
        assert p.stdout is not None
        for line in p.stdout:
            log.write(line)
            if STEP.match(line):
                steps += 1
                ui.step(line.split(None, 1)[1].strip())
            elif not first and ERROR.search(line):
                first = line.strip()
    if p.returncode != 0:
        raise fail(first or f"make exited {p.returncode}")
    return steps


def _first_error(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ERROR.search(ln)), "")


def _steps_estimate(root: pathlib.Path) -> int:
    counts = []
    for meta in (root / "builds").glob("*/built.json"):
        try:
            counts.append(int(json.loads(meta.read_text())["steps"]))
        except (OSError, ValueError, KeyError):
            continue
    return max(counts, default=DEFAULT_STEPS)


def _load(bdir: pathlib.Path, was_cached: bool, seconds: float) -> Built | None:
    try:
        meta = json.loads((bdir / "built.json").read_text())
    except (OSError, ValueError):
        return None
    b = Built(meta["name"], bdir / "bzImage", bdir / "config", meta["release"],
              {n: bdir / p for n, p in meta["selftests"].items()}, bdir / "build.log",
              was_cached, seconds)
    if not (b.image.is_file() and all(p.is_file() for p in b.selftests.values())):
        return None
    return b


# ---- progress on stderr --------------------------------------------------------------------------

class _Display:
    """A rich progress line per phase on a terminal; plain phase lines otherwise."""

    def __init__(self, name: str, enabled: bool):
        self.name = name
        self.console = Console(stderr=True, highlight=False)
        self.live = enabled and self.console.is_terminal
        self.plain = enabled and not self.live
        self.task = None
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description:<20.20}"), BarColumn(bar_width=16),
            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[last]:.18}"),
            console=self.console) if self.live else None

    def __enter__(self) -> _Display:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress:
            if self.task is not None:
                self.progress.update(self.task, last="")
            self.progress.stop()

    def phase(self, what: str, total: int | None = None) -> None:
        if self.progress:
            if self.task is not None:
                t = self.progress.tasks[self.task]
                self.progress.update(self.task, total=t.completed or 1,
                                     completed=t.completed or 1, last="")
            self.task = None if what == "done" else self.progress.add_task(
                what, total=total, last="")
        elif self.plain and what != "done":
            self.console.print(f"kernel {self.name}: {what}")

    def step(self, what: str) -> None:
        if self.progress and self.task is not None:
            self.progress.update(self.task, advance=1, last=what)
