"""The student's side of grading: runs inside the sandboxed process, never in the grader.

``python -I -m course_lib.grading.child NOTEBOOK REQUEST_FD RESPONSE_FD SKIP_IDS_JSON``

1. Executes the submission's code cells in order in an IPython shell
   (magics work), skipping the test cells: the grader owns those. A cell that
   raises is recorded and the next cell runs, so one broken answer does not
   cost the others.
2. Reports ``ready`` and then answers the grader's requests: call a name
   defined by the notebook with arguments the grader sent, read an attribute
   or item, turn an object into plain data, or snapshot a model as data
   (:mod:`course_lib.grading.snapshot`) for the grader to measure itself.
   Answers are JSON only. No library function is ever run here on the
   grader's behalf to compute a checked value.

The test cells' code, the expected values and the comparisons never come
here; this process only ever sees the arguments of the calls it is asked to
make.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any


def _send(stream: Any, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message, allow_nan=False) + "\n")
    stream.flush()


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 500 else text[:497] + "..."


def _park() -> None:
    """A forked copy of this process (a fork bomb) stops here, silent, until the grader kills it.

    Exiting instead would free its process slot and let the bomb go on forking; parked copies
    keep the process limit reached, so the bomb fails fast and the notebook goes on.
    """
    import signal

    while True:
        signal.pause()


def main(argv: list[str]) -> None:
    notebook_path, request_fd, response_fd, skip_json = argv
    requests = os.fdopen(int(request_fd), "r", encoding="utf-8")
    responses = os.fdopen(int(response_fd), "w", encoding="utf-8")
    skip_ids = set(json.loads(skip_json))

    # Imports after the pipes are taken: nothing of the student's has run yet.
    import nbformat
    from IPython.core.interactiveshell import InteractiveShell

    from course_lib.grading import protocol

    try:
        nb = nbformat.read(notebook_path, as_version=4)
    except Exception as exc:  # malformed file: tell the grader, stop
        _send(responses, {"op": "fatal", "error": f"the notebook could not be read: {_error_text(exc)}"})
        return

    main_pid = os.getpid()  # a forked copy of this process (fork bomb) must not speak for it
    shell = InteractiveShell.instance()
    namespace = shell.user_ns
    cell_errors: list[dict[str, Any]] = []
    code_cells = [c for c in nb.cells if c.get("cell_type") == "code"]
    for index, cell in enumerate(code_cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in skip_ids:
            continue
        _send(responses, {"op": "cell", "index": index, "grade_id": grade_id})
        result = shell.run_cell(cell.get("source", ""), store_history=True, silent=False)
        if os.getpid() != main_pid:
            _park()
        error = result.error_before_exec or result.error_in_exec
        if error is not None:
            cell_errors.append({"index": index, "grade_id": grade_id, "error": _error_text(error)})

    handles = protocol.Handles()
    _send(responses, {"op": "ready", "cell_errors": cell_errors})

    def resolve(ref: dict[str, Any]) -> Any:
        if "handle" in ref:
            return handles.objects[int(ref["handle"])]
        name = ref["name"]
        if name not in namespace:
            raise NameError(f"name '{name}' is not defined in your notebook")
        return namespace[name]

    for line in requests:
        if os.getpid() != main_pid:
            _park()
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            op = request["op"]
            if op == "quit":
                break
            target = resolve(request["ref"])
            if op == "snapshot":  # the object as data for the grader to measure (see grading.snapshot)
                from course_lib.grading import snapshot

                args, _ = protocol.load_args(request["args"], resolve)
                value = snapshot.KINDS[request["kind"]](target, *args)
            elif op == "call":
                args, kwargs = protocol.load_args(request["args"], resolve)
                value = target(*args, **kwargs)
            elif op == "getattr":
                value = getattr(target, request["attr"])
            elif op == "getitem":
                args, _ = protocol.load_args(request["args"], resolve)
                value = target[args[0]]
            elif op == "len":
                value = len(target)
            elif op == "get":
                value = target
            else:
                raise ValueError(f"unknown request {op!r}")
            _send(responses, {"id": request.get("id"), "value": protocol.encode(value, handles)})
        except BaseException as exc:  # noqa: BLE001 - any failure of student code is an answer, not a crash
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            _send(responses, {"id": request.get("id"), "error": detail[:500] if detail else _error_text(exc)})


if __name__ == "__main__":
    main(sys.argv[1:])
