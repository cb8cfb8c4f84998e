"""``check``: the one statement exercise test cells are written with.

A test cell in ``solutions/`` looks like::

    from course_lib.grading import check
    check("Linear(10, 5) has 55 parameters", count_params(nn.Linear(10, 5)), expected=55)
    ### BEGIN HIDDEN TESTS
    check("a 3-layer MLP", count_params(mlp), expected=32, hint="count biases too")
    ### END HIDDEN TESTS

In a learner's notebook (and under nbgrader) ``check`` compares right there
and prints a friendly line, or raises ``AssertionError`` saying what was
expected, what came back and a hint. Under the course's grader the same
line means something else: the grader executes the cell *in its own
process*, the student's names are proxies to a separate sandboxed process,
the value comes back as plain data, and :func:`compare` runs in the grader.
Nothing the student's code defines can change the comparison, and a fact
about a learner's model (its sparsity, MACs, accuracy) is measured by the
grader from a snapshot (:mod:`course_lib.grading.trusted`), never computed
in the learner's process.

Rules for authors: put each ``check(...)`` at the top level of a test cell
(not in a loop or function), one per line, with a literal or
grader-computable ``expected`` (never a value the learner's code returned:
:func:`course_lib.grading.trust.untrusted_expected` refuses such a source).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

# The grader installs a recorder for its own thread while it runs a test cell (several submissions
# are graded at once, one per thread); without one, check() compares locally.
_STATE = threading.local()


def _recorder() -> Any:
    return getattr(_STATE, "recorder", None)


def set_recorder(recorder: Any) -> None:
    """Install (or, with ``None``, remove) the grader's recorder for the current thread."""
    _STATE.recorder = recorder


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _to_array(x: Any) -> np.ndarray | None:
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return None


def _short(x: Any, limit: int = 120) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compare(got: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-9) -> tuple[bool, str]:
    """Compare a result with the expected value; return (ok, what differs).

    Numbers within ``rtol`` / ``atol``; arrays by shape then element-wise;
    lists, tuples and dicts item by item; everything else with ``==`` on
    plain types only. Under the grader ``got`` is always plain data decoded
    from JSON, so no object's own ``__eq__`` takes part.
    """
    exp_arr, got_arr = _to_array(expected), _to_array(got)
    if exp_arr is not None:
        if got_arr is None:
            try:
                got_arr = np.asarray(got)
                if got_arr.dtype.kind not in "biuf":
                    raise TypeError
                got_arr = got_arr if got_arr.dtype == bool else got_arr.astype(float)
            except (TypeError, ValueError):
                return False, f"expected an array of shape {exp_arr.shape}, got {type(got).__name__}"
        if got_arr.shape != exp_arr.shape:
            return False, f"expected shape {exp_arr.shape}, got shape {got_arr.shape}"
        if got_arr.dtype == bool and exp_arr.dtype != bool:
            # np.ones(shape, bool) must not "equal" every array without zeros
            return False, "expected an array of numbers, got booleans"
        if exp_arr.dtype == bool:
            if got_arr.dtype != bool and not np.isin(got_arr, (0, 1)).all():
                return False, "expected an array of booleans (or 0 / 1)"
            same = np.array_equal(exp_arr, got_arr.astype(bool))
        else:
            same = bool(np.allclose(got_arr.astype(float), exp_arr.astype(float), rtol=rtol, atol=atol, equal_nan=True))
        if same:
            return True, ""
        if exp_arr.dtype != bool:
            worst = float(np.nanmax(np.abs(got_arr.astype(float) - exp_arr.astype(float)))) if exp_arr.size else 0.0
            return False, f"values differ (largest difference {worst:.3g})"
        return False, f"{int(np.count_nonzero(exp_arr.astype(bool) != got_arr.astype(bool)))} entries differ"
    if isinstance(expected, (bool, np.bool_)):
        if not isinstance(got, (bool, np.bool_)):
            return False, f"expected {expected}, got {_short(got)} ({type(got).__name__})"
        return (bool(got) == bool(expected)), f"expected {expected}, got {got}"
    if _is_number(expected):
        if not _is_number(got):
            return False, f"expected a number close to {expected}, got {_short(got)} ({type(got).__name__})"
        g, e = float(got), float(expected)
        if math.isnan(e):
            return math.isnan(g), f"expected nan, got {g}"
        ok = abs(g - e) <= atol + rtol * abs(e)
        return ok, "" if ok else f"expected {expected}, got {got}"
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return False, f"expected a sequence of length {len(expected)}, got {type(got).__name__}"
        if len(got) != len(expected):
            return False, f"expected {len(expected)} items, got {len(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            ok, why = compare(g, e, rtol, atol)
            if not ok:
                return False, f"item {i}: {why}"
        return True, ""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return False, f"expected a dict with keys {sorted(map(str, expected))}, got {type(got).__name__}"
        if set(map(str, got)) != set(map(str, expected)):
            return False, f"expected keys {sorted(map(str, expected))}, got {sorted(map(str, got))}"
        got_by_key = {str(k): v for k, v in got.items()}
        for key, e in expected.items():
            ok, why = compare(got_by_key[str(key)], e, rtol, atol)
            if not ok:
                return False, f"key {key!r}: {why}"
        return True, ""
    if expected is None or isinstance(expected, str):
        ok = type(got) is type(expected) and got == expected
        return ok, "" if ok else f"expected {_short(expected)}, got {_short(got)}"
    raise TypeError(f"check() cannot compare expected values of type {type(expected).__name__}; use numbers, "
                    "strings, booleans, lists, dicts or arrays")


def check(
    name: str,
    value: Any,
    expected: Any,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    hint: str = "",
) -> None:
    """Check one result. Passes silently with a ✓ line, or raises ``AssertionError`` that explains.

    Args:
        name: what is being checked, shown in feedback.
        value: your result (under the grader: computed in your notebook's process, returned as data).
        expected: the right answer.
        rtol / atol: tolerances for numbers and arrays.
        hint: what to look at if it fails.
    """
    recorder = _recorder()
    if recorder is not None:
        recorder.record(name=name, value=value, expected=expected, rtol=rtol, atol=atol, hint=hint)
        return
    ok, why = compare(value, expected, rtol, atol)
    if ok:
        print(f"✓ {name}")
        return
    message = f"✗ {name}: {why}."
    if hint:
        message += f"\n  Hint: {hint}"
    raise AssertionError(message)


_SEED_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Build something with PyTorch's global generator seeded, as a learner's notebook did.

    Test cells run in the grader, several submissions at once in threads:
    the lock keeps another test's random draws out, and the generator's
    state is restored afterwards.
    """
    import torch

    with _SEED_LOCK, torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


class MeasurementError(Exception):
    """The grader could not measure a learner's object (it would not export, load or run)."""
