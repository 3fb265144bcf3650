"""Applying a kernel's patch series to a copy of the pristine tree, and checkpatch on it.

Each patch is checked with `git apply --check` against the tree as the patches before it left
it (the first against the pristine source), then applied.  A patch that does not apply stops the
build with the patch and the hunk that failed.  `git apply` never writes into a file: it removes
the old one and creates the new one, which is what keeps the hard-linked pristine tree intact.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import tempfile


class PatchError(RuntimeError):
    """A patch does not apply or is not checkpatch-clean; str() is one line."""


def _git_env(tree: pathlib.Path) -> dict[str, str]:
    # Outside a repository `git apply` patches the working tree like patch(1); a repository
    # in some parent directory must not be discovered, or paths would be taken relative to it.
    return {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent), "LC_ALL": "C"}


def failed_hunk(patch: pathlib.Path, stderr: str) -> str:
    """'FILE hunk @@ -a,b +c,d @@ func' for git apply's "patch failed: FILE:LINE"."""
    m = re.search(r"patch failed: (\S+):(\d+)", stderr)
    if not m:
        last = [ln for ln in stderr.strip().splitlines() if ln.startswith("error:")]
        return (last or stderr.strip().splitlines() or ["git apply failed"])[-1]
    path, line = m.group(1), m.group(2)
    cur = None
    for ln in patch.read_text(errors="replace").splitlines():
        if ln.startswith("+++ "):
            cur = ln[4:].split("/", 1)[-1]
        elif ln.startswith("@@ ") and cur == path and re.match(rf"@@ -{line}(,\d+)? ", ln):
            return f"{path} hunk {ln}"
    return f"{path}:{line}"


def apply(patches: list[pathlib.Path], tree: pathlib.Path, log) -> None:
    """git apply --check, then git apply, each patch in order, in `tree`."""
    env = _git_env(tree)
    for p in patches:
        name = f"{p.parent.name}/{p.name}"
        for check in (True, False):
            cmd = ["git", "apply", "--verbose", *(["--check"] if check else []), str(p)]
            res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                                 timeout=300, check=False)
            log.write(f"$ {' '.join(cmd[:-1])} {name}\n{res.stdout}{res.stderr}")
            if res.returncode != 0:
                raise PatchError(f"{name} does not apply: {failed_hunk(p, res.stderr)}")


_TOTAL = re.compile(r"^total: (\d+) errors, (\d+) warnings, (?:(\d+) checks, )?\d+ lines checked",
                    re.MULTILINE)


def checkpatch(patches: list[pathlib.Path], tree: pathlib.Path, log) -> None:
    """scripts/checkpatch.pl --strict of the tree itself on every patch; each must be clean.

    One warning is a question, not a defect: FILE_PATH_CHANGES asks whether MAINTAINERS needs
    updating because the patch adds a file.  It counts as answered when scripts/get_maintainer.pl
    finds a maintainer (other than THE REST's) for every added file in the MAINTAINERS of the
    same tree."""
    for p in patches:
        name = f"{p.parent.name}/{p.name}"
        res = subprocess.run(["perl", "scripts/checkpatch.pl", "--strict", "--no-color",
                              "--show-types", str(p)], cwd=tree, env=_git_env(tree),
                             capture_output=True, text=True, timeout=600, check=False)
        out = res.stdout + res.stderr
        log.write(f"$ scripts/checkpatch.pl --strict {name}\n{out}")
        m = _TOTAL.search(out)
        if not m:
            raise PatchError(f"checkpatch on {name} gave no verdict (see the log)")
        errors, warnings, checks = (int(g or 0) for g in m.groups())
        types = re.findall(r"^(?:ERROR|WARNING|CHECK):(\w+):", out, re.MULTILINE)
        if types == ["FILE_PATH_CHANGES"]:
            _covered_by_maintainers(p, tree, log)
            warnings -= 1
        if errors or warnings or checks:
            raise PatchError(f"checkpatch --strict on {name}: {errors} errors, {warnings} "
                             f"warnings, {checks} checks ({', '.join(sorted(set(types)))})")


def added_files(patch: pathlib.Path) -> list[str]:
    text = patch.read_text(errors="replace")
    return re.findall(r"^diff --git a/\S+ b/(\S+)\nnew file mode", text, re.MULTILINE)


def _covered_by_maintainers(patch: pathlib.Path, tree: pathlib.Path, log) -> None:
    for f in added_files(patch):
        # get_maintainer.pl -f wants the file to exist; a one-file patch adding it works in the
        # pristine tree as well as in the patched one.
        with tempfile.NamedTemporaryFile("w", suffix=".patch") as one:
            one.write(f"diff --git a/{f} b/{f}\nnew file mode 100644\n--- /dev/null\n"
                      f"+++ b/{f}\n@@ -0,0 +1 @@\n+\n")
            one.flush()
            res = subprocess.run(["perl", "scripts/get_maintainer.pl", "--no-git", one.name],
                                 cwd=tree, env=_git_env(tree), capture_output=True, text=True,
                                 timeout=300, check=False)
        # THE REST (F: *) covers every path: only a real section answers the question.
        maint = [ln for ln in res.stdout.splitlines()
                 if "(maintainer:" in ln and "(maintainer:THE REST)" not in ln]
        log.write(f"$ scripts/get_maintainer.pl --no-git <a patch adding {f}>\n{res.stdout}")
        if not maint:
            raise PatchError(f"{patch.parent.name}/{patch.name} adds {f}, which no MAINTAINERS "
                             "entry covers (checkpatch FILE_PATH_CHANGES)")
        log.write(f"FILE_PATH_CHANGES answered: {f} is covered by {maint[0].strip()}\n")
