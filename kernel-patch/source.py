"""The pristine kernel source: Debian's linux-source package at an exact version, fetched with
`apt-get download` and unpacked once into the cache.  Nothing ever writes into that tree; builds
patch a hard-link copy of it (see build.py)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import Iterator

from vmaflags.conformance.build import cache_dir

DONE = ".vmaflags-unpacked"  # written last: the tree is complete


class Skip(RuntimeError):
    """The build cannot run here; str() says what is missing (Debian package names)."""


def cache_root() -> pathlib.Path:
    """The project's cache directory's kernel/ (vmaflags.conformance.build.cache_dir: ~/.cache,
    $XDG_CACHE_HOME, or a per-user directory under the temp dir)."""
    try:
        return cache_dir("kernel")
    except RuntimeError as e:
        raise Skip(str(e)) from None


@contextlib.contextmanager
def locked(path: pathlib.Path) -> Iterator[None]:
    """An exclusive flock on `path` (created): one unpack or build of a thing at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def deb_name(package: str, version: str) -> str:
    # Debian escapes the epoch colon as %3a in file names; these versions have none.
    return f"{package}_{version.replace(':', '%3a')}_all.deb"


def fetch_deb(package: str, version: str, root: pathlib.Path) -> pathlib.Path:
    """The .deb in <cache>/deb/, downloaded with apt-get if it is not there yet."""
    deb = root / "deb" / deb_name(package, version)
    if deb.is_file():
        return deb
    if shutil.which("apt-get") is None:
        raise Skip(f"no apt-get to fetch {package}={version}; put {deb.name} in {deb.parent}/")
    deb.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=deb.parent, prefix=".dl-") as tmp:
        # As root, apt drops to _apt for downloads, which cannot write a root-owned dir.
        res = subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
                              f"{package}={version}"], cwd=tmp, capture_output=True, text=True,
                             timeout=1800, check=False)
        got = list(pathlib.Path(tmp).glob("*.deb"))
        if res.returncode != 0 or not got:
            last = (res.stderr.strip().splitlines() or ["no .deb"])[-1]
            raise Skip(f"cannot download {package}={version} ({last}); run `apt-get update`, "
                       f"or put {deb.name} in {deb.parent}/")
        os.replace(got[0], deb)
    return deb


def pristine(package: str, version: str, root: pathlib.Path | None = None) -> pathlib.Path:
    """The unpacked, unmodified source tree (the directory holding its top-level Makefile)."""
    root = root or cache_root()
    base = root / "src" / f"{package}_{version}"
    tree = base / package
    if (base / DONE).is_file():
        return tree
    with locked(root / "src" / f".{package}_{version}.lock"):
        if (base / DONE).is_file():  # unpacked while we waited
            return tree
        deb = fetch_deb(package, version, root)
        for tool, pkg in (("dpkg-deb", "dpkg"), ("tar", "tar"), ("xz", "xz-utils")):
            if shutil.which(tool) is None:
                raise Skip(f"no `{tool}` to unpack {deb.name} (apt-get install {pkg})")
        if base.exists():
            shutil.rmtree(base)  # an unpack that did not finish
        stage = base.with_name(base.name + ".partial")
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        # linux-source-X.Y.deb holds usr/src/linux-source-X.Y.tar.xz: stream it out of the .deb
        # and unpack the tarball inside, without keeping a copy of either.
        err = _pipeline([["dpkg-deb", "--fsys-tarfile", str(deb)],
                         ["tar", "-xO", f"./usr/src/{package}.tar.xz"],
                         ["tar", "-xJ", "-C", str(stage)]])
        if err or not (stage / package / "Makefile").is_file():
            shutil.rmtree(stage, ignore_errors=True)
            raise RuntimeError(f"cannot unpack {deb}: {err or 'no Makefile in it'}")
        (stage / DONE).write_text(f"{package}={version}\n")
        os.replace(stage, base)
    return tree


def _pipeline(cmds: list[list[str]]) -> str:
    """Run cmds[0] | cmds[1] | ...; '' on success, else the first failure's stderr."""
    procs: list[subprocess.Popen] = []
    for i, cmd in enumerate(cmds):
        procs.append(subprocess.Popen(
            cmd, stdin=procs[-1].stdout if procs else subprocess.DEVNULL,
            stdout=subprocess.PIPE if i < len(cmds) - 1 else subprocess.DEVNULL,
            stderr=subprocess.PIPE))
        if len(procs) > 1:
            procs[-2].stdout.close()  # type: ignore[union-attr]  # SIGPIPE reaches the writer
    errs = [(p.stderr.read().decode(errors="replace"), p.wait())  # type: ignore[union-attr]
            for p in reversed(procs)]
    for (text, rc), cmd in zip(reversed(errs), cmds):
        if rc != 0:
            return f"{cmd[0]} exited {rc}: {text.strip()[-300:]}"
    return ""
