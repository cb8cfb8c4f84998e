"""The grader's trust boundary, in one place: what a submission may send, see and decide.

Everything that crosses from a submission's process into the grader is
validated here before any other code reads it, and every decision about
what a submission's process may see is made here. An auditor reads this
module to know what the grader trusts.

* **Messages** (:func:`validate_message`): every line the student's process
  writes is checked against a schema (types, lengths, counts, nesting) and
  turned into a plain, bounded value, or refused with a one-line reason.
* **Visibility** (see the section below): which paths a submission's process
  can see (an allow-list: the interpreter, the environment, ``course_lib``
  read-only and its scratch directory — nothing else of the repository).
* **Values** (:func:`refuse_as_expected`): nothing that came from the
  submission's process is ever used as an expected value.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

# --- messages ------------------------------------------------------------------------------------

# --- visibility ----------------------------------------------------------------------------------
#
# An allow-list, applied by course_lib.grading.jail in a private mount namespace: the whole file
# system is read-only; every repository that holds something the process needs (course_lib's own
# checkout, a checkout holding the venv, a pyenv clone) is covered by an empty tmpfs, and only the
# interpreter, the environment's import paths and course_lib/ are bound back, read-only. The
# solutions, the submissions' folders and the output folder are covered too. The scratch
# directory is the one writable place besides private, empty /tmp, /var/tmp, /dev/shm, /run/lock.
# A covered folder above a visible path (``/tmp`` above the scratch directory, the repository
# above course_lib) gets that path bound back, so hiding never cuts a needed path off.

#: Never covered, whatever folder a submission or output lies in: the system the interpreter runs on.
SYSTEM_FOLDERS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
                            "/proc", "/run", "/sbin", "/sys", "/usr", "/var"})

#: The ways a submission's process can be confined, most isolated first.
ISOLATION_MODES = ("root", "userns", "none")


class IsolationUnavailable(ValueError):
    """The grader cannot confine submissions here and was not told to run them unconfined.

    A ``ValueError``: the command line reports it as ``error: ...`` and exits with code 2.
    """


@functools.cache
def _child_import_paths() -> tuple[str, ...]:
    """``sys.path`` of ``python -I`` with this interpreter: what the submission's process imports from."""
    out = subprocess.run([sys.executable, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return tuple(json.loads(out))


def _course_lib_dir() -> str:
    import course_lib

    return str(Path(course_lib.__file__).resolve().parent)


def checkout_root(path: str | Path) -> str | None:
    """The nearest folder at or above ``path`` holding a ``.git``: a repository, to be hidden as a whole."""
    current = Path(path).resolve()
    for folder in (current, *current.parents):
        if (folder / ".git").exists():
            return str(folder)
    return None


def course_repository() -> str | None:
    """The checkout that holds ``course_lib`` (a git clone, or an unpacked source tree), if any."""
    parent = Path(_course_lib_dir()).parent
    if (parent / "pyproject.toml").is_file() or (parent / ".git").exists():
        return str(parent)
    return checkout_root(parent)


def visible_paths() -> list[str]:
    """What a submission's process may read: the interpreter, the environment, ``course_lib``. Read-only."""
    prefixes = {sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix}
    candidates = {os.path.realpath(p) for p in (*prefixes, *_child_import_paths()) if p and os.path.exists(p)}
    candidates = {p if os.path.isdir(p) else os.path.dirname(p) for p in candidates}  # a zip on sys.path
    repositories = {r for r in (course_repository(), *map(checkout_root, candidates)) if r}
    # An entry that is (or holds) a repository is the editable install's source root: only course_lib of it.
    allowed = {p for p in candidates if not any(r == p or r.startswith(p.rstrip("/") + "/") for r in repositories)}
    allowed.add(_course_lib_dir())
    return sorted(p for p in allowed if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in allowed))


def _git_dirs(repository: str) -> list[str]:
    """Where a checkout's history lives when ``.git`` is a file (a worktree or submodule): ``gitdir: ...``."""
    marker = Path(repository) / ".git"
    if not marker.is_file():
        return []
    text = marker.read_text(errors="replace").strip()
    if not text.startswith("gitdir:"):
        return []
    git_dir = (Path(repository) / text[len("gitdir:"):].strip()).resolve()
    common = git_dir / "commondir"  # a worktree's objects live in the main repository's .git
    found = [git_dir] + ([(git_dir / common.read_text().strip()).resolve()] if common.is_file() else [])
    return [str(p) for p in found if p.is_dir()]


def paths_to_hide(paths: Iterable[str | Path]) -> list[str]:
    """``paths`` (solutions, submissions' folders, output) plus every repository of a visible path, history included."""
    hidden = {os.path.realpath(p) for p in paths}
    repositories = {r for r in (course_repository(), *map(checkout_root, visible_paths())) if r}
    hidden |= repositories | {d for r in repositories for d in _git_dirs(r)}
    return sorted(hidden - SYSTEM_FOLDERS)


def isolation_mode(unsafe_same_user: bool = False) -> str:
    """How submissions will be confined here: ``"root"``, ``"userns"`` or ``"none"``.

    Root gives each submission a uid of its own; without root, an unprivileged
    user namespace gives the same namespaces and mounts. Where neither works,
    running submissions as the grader's own user lets them kill the grader and
    rewrite course_lib, which the grader then imports: refuse unless the
    caller said ``unsafe_same_user`` explicitly.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "root"
    from course_lib.grading.sandbox import namespaces_problem

    problem = namespaces_problem()
    if problem is None:
        return "userns"
    if unsafe_same_user:
        return "none"
    raise IsolationUnavailable(
        "cannot isolate submissions: not running as root, and unprivileged user namespaces do not work here "
        f"({problem}). Grade as root (e.g. in a container), allow user namespaces "
        "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0), or pass --unsafe-same-user "
        "to run submissions as your own user: they could then kill the grader and rewrite course_lib.")

# --- values --------------------------------------------------------------------------------------
