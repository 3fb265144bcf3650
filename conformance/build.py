"""Build the conformance executor (executor.c) once and cache the static binary.

`executor_path()` compiles with the system `cc -static-pie -O2` (or `-static`) on first use and
keeps the result in ~/.cache/vmaflags/executor-<hash>, where <hash> covers the source and the
compiler flags, so a changed source or a different MADV_CLR_HUGEPAGE number gets its own
binary.  Builds go to a temporary file and are renamed into place, so parallel callers never
see a half-written binary.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

BASE_FLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra")
# Tried in order until one links.  static-pie puts the whole executor (text, heap, stack) above
# the arena, so its smaps reads stop after the arena's records; with plain -static they must
# go past the executable's four VMAs first.  Fewer VMAs make every smaps read (the hot path)
# cheaper: one R+X segment instead of r--/r-x/r--, and no RELRO split.
LINK_VARIANTS = (("-static-pie", "-Wl,-z,noseparate-code", "-Wl,-z,norelro"),
                 ("-static", "-Wl,-z,noseparate-code", "-Wl,-z,norelro"),
                 ("-static",))

# executor.c's MADV_CLR_HUGEPAGE number when none is compiled in (its CLR_HUGEPAGE default).
DEFAULT_CLR_HUGEPAGE = 26


def cache_dir(*sub: str) -> pathlib.Path:
    """~/.cache/vmaflags (or $XDG_CACHE_HOME/vmaflags)/SUB..., created; when that cannot be
    written (a read-only or missing HOME), a per-user directory under the temp dir."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for root in (pathlib.Path(base) / "vmaflags",
                 pathlib.Path(tempfile.gettempdir()) / f"vmaflags-cache-{os.getuid()}"):
        d = root.joinpath(*sub)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        # the shared temp dir: only a directory of our own (no one else's planted binaries)
        if os.access(d, os.W_OK | os.X_OK) and d.stat().st_uid == os.getuid():
            return d
    raise RuntimeError(f"no writable cache directory (tried {base} and {tempfile.gettempdir()})")


def source_path() -> pathlib.Path:
    """executor.c: $VMAFLAGS_EXECUTOR_SRC, beside this file, or the repository's conformance/."""
    env = os.environ.get("VMAFLAGS_EXECUTOR_SRC")
    here = pathlib.Path(__file__).resolve().parent
    candidates = [pathlib.Path(env)] if env else []
    candidates += [here / "executor.c", *(p / "conformance" / "executor.c" for p in here.parents)]
    for c in candidates:
        if c.is_file():
            return c
    raise RuntimeError(f"executor.c not found (looked beside {here} and in conformance/)")


def _flags(clr_hugepage: int | None) -> list[str]:
    flags = list(BASE_FLAGS)
    if clr_hugepage is not None:
        flags.append(f"-DCLR_HUGEPAGE={int(clr_hugepage)}")
    return flags


def _first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for pick in (
        lambda ln: "error" in ln and not ln.startswith("collect2"),
        lambda ln: "cannot find" in ln or "undefined reference" in ln,
        lambda ln: "error" in ln,
        lambda ln: True,
    ):
        for ln in lines:
            if pick(ln):
                return ln
    return "no diagnostics"


def _compile(cc: str, src: pathlib.Path, flags: list[str], out: pathlib.Path, stem: str
             ) -> None:
    """cc FLAGS LINK -o out src with the first of LINK_VARIANTS that works.  RuntimeError."""
    err = ""
    for extra in LINK_VARIANTS:
        try:
            res = subprocess.run([cc, *flags, *extra, "-o", str(out), str(src)],
                                 capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"cannot build the {stem}: {cc}: {e}") from None
        if res.returncode == 0:
            return
        err = err or res.stderr
    raise RuntimeError(f"cannot build the {stem}: {_first_error(err)}")


def executor_path(clr_hugepage: int | None = None) -> pathlib.Path:
    """The cached static executor binary (built on first use).  RuntimeError if cc fails.

    `clr_hugepage` compiles in the MADV_CLR_HUGEPAGE number used for `madvise ... clr_hugepage`
    (default 26; the environment variable VMAFLAGS_CLR_HUGEPAGE overrides it at run time).
    """
    return _cached(source_path(), _flags(clr_hugepage), "executor")


def stress_path() -> pathlib.Path:
    """stress.c (the live races of `vmaflags stress`), built static and cached the same way."""
    return _cached(pathlib.Path(__file__).resolve().parent / "stress.c",
                   [*BASE_FLAGS, "-pthread"], "stress")


def _cached(src: pathlib.Path, flags: list[str], stem: str) -> pathlib.Path:
    h = hashlib.sha256(src.read_bytes())
    h.update("\0".join([*flags, *(f for v in LINK_VARIANTS for f in v)]).encode())
    cache = cache_dir()
    exe = cache / f"{stem}-{h.hexdigest()[:16]}"
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    cc = shutil.which("cc")
    if cc is None:
        raise RuntimeError(f"cannot build the {stem}: no C compiler `cc` on PATH")
    fd, tmp = tempfile.mkstemp(prefix=f".{exe.name}.", dir=cache)
    os.close(fd)
    tmp_path = pathlib.Path(tmp)
    try:
        _compile(cc, src, flags, tmp_path, stem)
        tmp_path.chmod(0o755)
        os.replace(tmp_path, exe)
    finally:
        tmp_path.unlink(missing_ok=True)
    return exe


if __name__ == "__main__":
    import sys

    try:
        print(executor_path(int(sys.argv[1]) if len(sys.argv) > 1 else None))
    except RuntimeError as e:
        sys.exit(str(e))
