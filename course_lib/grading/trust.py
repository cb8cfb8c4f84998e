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

import ast
import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# --- messages ------------------------------------------------------------------------------------

#: Longest error text the grader keeps from a submission (feedback, CSV).
MAX_ERROR_CHARS = 500
#: Most cell errors a ``ready`` message may list (a notebook with more code cells is refused).
MAX_CELL_ERRORS = 1000
#: Longest ``grade_id`` a message may name.
MAX_ID_CHARS = 200
_ANSWER_ID = re.compile(r"[0-9a-f]{16}")


class MessageError(ValueError):
    """A message from the submission's process broke the schema; the text says how (one line)."""


def _text(value: Any, what: str, limit: int = MAX_ERROR_CHARS) -> str:
    if not isinstance(value, str):
        raise MessageError(f"{what} is not text")
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _index(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 1_000_000:
        raise MessageError(f"{what} is not a cell index")
    return value


def _grade_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
        raise MessageError("grade_id is not a short text")
    return value


def _cell_error(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"index", "grade_id", "error"}:
        raise MessageError("a cell error is not {index, grade_id, error}")
    return {"index": _index(value.get("index"), "a cell error's index"), "grade_id": _grade_id(value.get("grade_id")),
            "error": _text(value.get("error"), "a cell error's text")}


def parse_message(line: bytes) -> dict[str, Any]:
    """One line from the submission's process as a validated message, or :class:`MessageError`.

    The only shapes accepted (anything else, extra keys included, is refused):

    * ``{"op": "cell", "index": int, "grade_id": str | None}`` — a code cell starts;
    * ``{"op": "ready", "cell_errors": [{"index", "grade_id", "error"}, ...]}`` — the notebook ran;
    * ``{"op": "fatal", "error": str}`` — the notebook could not be run;
    * ``{"id": 16 hex digits, "value": <encoded value>}`` or ``{"id": ..., "error": str}`` — an answer.

    Texts are cut to :data:`MAX_ERROR_CHARS`; the encoded ``value`` is decoded
    later by :func:`course_lib.grading.protocol.decode`, which has its own limits.
    """
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: "[" * 100000 is valid-looking JSON
        raise MessageError("the notebook's process sent malformed data") from None
    if not isinstance(message, dict):
        raise MessageError("the notebook's process sent malformed data")
    op = message.get("op")
    keys = set(message)
    if op == "cell" and keys <= {"op", "index", "grade_id"}:
        return {"op": "cell", "index": _index(message.get("index"), "the cell index"), "grade_id": _grade_id(message.get("grade_id"))}
    if op == "ready" and keys <= {"op", "cell_errors"}:
        errors = message.get("cell_errors", [])
        if not isinstance(errors, list) or len(errors) > MAX_CELL_ERRORS:
            raise MessageError(f"cell_errors is not a list of at most {MAX_CELL_ERRORS} errors")
        return {"op": "ready", "cell_errors": [_cell_error(e) for e in errors]}
    if op == "fatal" and keys <= {"op", "error"}:
        return {"op": "fatal", "error": _text(message.get("error"), "the fatal error")}
    if "op" not in message and "id" in message and (keys == {"id", "value"} or keys == {"id", "error"}):
        answer_id = message["id"]
        if not isinstance(answer_id, str) or not _ANSWER_ID.fullmatch(answer_id):
            raise MessageError("an answer carries a malformed id")
        if "error" in message:
            return {"id": answer_id, "error": _text(message["error"], "an answer's error")}
        return {"id": answer_id, "value": message["value"]}
    raise MessageError(f"the notebook's process sent an unknown message (op {str(op)[:40]!r})")


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


# --- facts measured from a learner's snapshot ---------------------------------------------------

_QUANTIZATION = {"dtype": str, "scale": float, "zero_point": int}
#: What each kind of measurement returns: key → type (``"array"`` for a NumPy array); ``?`` marks optional keys.
FACT_SCHEMAS: dict[str, dict[str, Any]] = {
    "torch": {"parameters": int, "is_pruned": bool, "quantize_nodes": int, "sparsity?": float, "macs?": int, "logits?": "array",
              "weighted_ops?": int, "dequantized_weights?": int},
    "tflite": {"bytes": int, "input": _QUANTIZATION, "output": _QUANTIZATION, "kernels": "kernels", "float_ops": int,
               "logits?": "array"},
    "onnx": {"bytes": int, "outputs": "arrays"},
    "artefact": {"bytes": int, "gzip_bytes": int, "logits": "array", "latency_ms": float},
    "capstone": {"format": str, "bytes": int, "gzip_bytes": int, "baseline_format": str, "baseline_gzip_bytes": int,
                 "latency_ms": float, "baseline_latency_ms": float, "speedup": float, "speedup_low": float,
                 "speedup_high": float, "top1": float, "evaluated_on": str, "images": int},
}


def _conforms(value: Any, kind: Any) -> bool:
    import numpy as np

    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return type(value) is int
    if kind is bool or kind is str:
        return type(value) is kind
    if kind == "array":
        return isinstance(value, np.ndarray)
    if kind == "arrays":
        return isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values())
    if kind == "kernels":
        return isinstance(value, dict) and all(isinstance(v, list) and len(v) == 2 and all(type(n) is int for n in v)
                                               for v in value.values())
    if isinstance(kind, dict):
        return isinstance(value, dict) and set(value) == set(kind) and all(_conforms(value[k], t) for k, t in kind.items())
    return False


def validate_facts(kind: str, text: str) -> dict[str, Any]:
    """The facts a confined measurement printed, decoded and checked against :data:`FACT_SCHEMAS`.

    The measuring process never ran learner code, but it parsed a learner's
    file with native code: its answer is validated like any other message.
    """
    from course_lib.grading import protocol

    schema = FACT_SCHEMAS[kind]

    def no_handles(handle: int, type_name: str) -> Any:
        raise ValueError("a measurement may not return objects")

    try:
        value = protocol.decode(json.loads(text), no_handles)
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"the measurement returned malformed data ({str(exc)[:100]})") from None
    if not isinstance(value, dict):
        raise MessageError("the measurement returned malformed data")
    required = {k for k in schema if not k.endswith("?")}
    allowed = {k.rstrip("?"): t for k, t in schema.items()}
    if not required <= set(value) <= set(allowed):
        raise MessageError(f"the measurement returned keys {sorted(value)[:20]}, expected {sorted(allowed)}")
    for key, item in value.items():
        if not _conforms(item, allowed[key]):
            raise MessageError(f"the measurement's {key!r} has the wrong type")
    return value


# --- values --------------------------------------------------------------------------------------

def _names_read(node: ast.AST) -> set[str]:
    """Names an expression or statement reads (loads), anywhere inside it."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _base_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _names_written(node: ast.AST) -> set[str]:
    """Names a statement may change: assigned names, the objects behind ``d[k] = ...`` / ``o.a = ...``,
    the receivers of methods called for their effect (``results.append(x)`` changes ``results``), and defined functions and classes."""
    written: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            written.add(n.id)
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, (ast.Store, ast.Del)):
            base = _base_name(n)
            if base:
                written.add(base)
        elif isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Attribute):
            base = _base_name(n.value.func.value)  # a method called for its effect: results.append(x)
            if base:
                written.add(base)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            written.add(n.name)
    return written


def _expected_argument(call: ast.Call) -> ast.AST | None:
    for keyword in call.keywords:
        if keyword.arg == "expected":
            return keyword.value
    return call.args[2] if len(call.args) > 2 else None


def untrusted_expected(statements: list[ast.stmt], learner_names: set[str], is_check: Any) -> tuple[list[int], set[str]]:
    """Line numbers of checks whose ``expected`` depends on a value from the learner's process, and the tainted names.

    A forward taint analysis over a test cell's top-level statements: the
    learner's names are tainted; a statement that reads a tainted name (in
    any nested part) taints every name it may change (see :func:`_names_written`).
    Facts measured by :mod:`course_lib.grading.trusted` from a learner's object
    are tainted too — the learner chose the object — so a reference that a check
    compares with must come from objects the test builds. The returned names
    carry the taint into the next test cell.
    """
    tainted = set(learner_names)
    lines = []
    for statement in statements:
        if is_check(statement):
            expected = _expected_argument(statement.value)  # type: ignore[attr-defined]
            if expected is not None and _names_read(expected) & tainted:
                lines.append(statement.lineno)
            continue
        if _names_read(statement) & tainted:
            tainted |= _names_written(statement)
    return lines, tainted
