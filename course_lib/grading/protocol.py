"""What crosses between the grader and the student's process, and how.

Grader → student: requests as JSON lines; arguments the grader built (a
model, a tensor) are pickled, with the student's own objects referenced by
name or handle. The grader is trusted, so the student side may unpickle.

Student → grader: JSON only - numbers, strings, lists, dicts, arrays as
lists with a dtype and shape, and opaque *handles* for objects that are not
plain data. The grader never unpickles or evaluates anything that the
student's process wrote, so no object of the student's reaches its
comparisons.
"""

from __future__ import annotations

import base64
import io
import json
import math
import pickle
import sys
from typing import Any

import numpy as np

#: Largest array (elements) a result may carry; larger results are refused, not truncated.
MAX_ARRAY_ELEMENTS = 4_000_000
#: Largest response line the grader reads (bytes).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class Handles:
    """The student-side table of objects the grader refers to by number."""

    def __init__(self) -> None:
        self.objects: dict[int, Any] = {}

    def add(self, obj: Any) -> int:
        handle = len(self.objects) + 1
        self.objects[handle] = obj
        return handle


def encode(value: Any, handles: Handles, depth: int = 0) -> Any:
    """Turn a student-side value into JSON-safe plain data (student side)."""
    if depth > 20:
        raise ValueError("result nested more than 20 levels deep")
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return {"__float__": repr(f)} if math.isnan(f) or math.isinf(f) else f
    if isinstance(value, str):
        return str.__str__(value)
    array = _as_array(value)
    if array is not None:
        if array.size > MAX_ARRAY_ELEMENTS:
            raise ValueError(f"result array has {array.size} elements; at most {MAX_ARRAY_ELEMENTS} are accepted")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"arrays of dtype {array.dtype} cannot be returned; use numbers or booleans")
        kind = "bool" if array.dtype.kind == "b" else ("int64" if array.dtype.kind in "iu" else "float64")
        flat = array.astype(kind).ravel()
        payload = base64.b64encode(flat.tobytes()).decode("ascii")
        return {"__ndarray__": payload, "dtype": kind, "shape": list(array.shape)}
    if isinstance(value, (list, tuple)):
        return [encode(v, handles, depth + 1) for v in list.__iter__(list(value))]
    if isinstance(value, dict):
        return {"__dict__": [[str(k), encode(v, handles, depth + 1)] for k, v in dict.items(value)]}
    return {"__handle__": handles.add(value), "type": type(value).__name__}


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return np.asarray(value)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype.is_floating_point:
            tensor = tensor.float()  # float16 / bfloat16 have no NumPy twin everywhere
        return tensor.numpy()
    return None


def decode(data: Any, make_handle: Any) -> Any:
    """Turn plain data from the student's process back into values (grader side). Never executes anything."""
    if isinstance(data, list):
        return [decode(v, make_handle) for v in data]
    if isinstance(data, dict):
        if "__ndarray__" in data:
            dtype = {"bool": np.bool_, "int64": np.int64, "float64": np.float64}.get(str(data.get("dtype")))
            shape = data.get("shape")
            if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
                raise ValueError("malformed array from the submission's process")
            raw = base64.b64decode(data["__ndarray__"], validate=True)
            flat: np.ndarray = np.frombuffer(raw, dtype=dtype)
            if flat.size != int(np.prod(shape)):
                raise ValueError("array size does not match its shape")
            return flat.reshape(shape).copy()
        if "__float__" in data:
            if data["__float__"] not in ("nan", "inf", "-inf"):
                raise ValueError("malformed float from the submission's process")
            return float(data["__float__"])
        if "__handle__" in data:
            return make_handle(int(data["__handle__"]), str(data.get("type", "object")))
        if "__dict__" in data:
            return {str(k): decode(v, make_handle) for k, v in data["__dict__"]}
        raise ValueError("malformed value from the submission's process")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    raise ValueError("malformed value from the submission's process")


class RefPickler(pickle.Pickler):
    """Pickles grader-built arguments; student objects become references (persistent ids)."""

    def persistent_id(self, obj: Any) -> Any:
        ref = getattr(obj, "_grading_ref", None) if type(obj).__name__ == "Remote" else None
        return ("ref", json.dumps(ref)) if ref is not None else None


def dump_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    buffer = io.BytesIO()
    RefPickler(buffer, protocol=4).dump((args, kwargs))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class RefUnpickler(pickle.Unpickler):
    """Student side: resolves references to the student's own objects."""

    def __init__(self, data: bytes, resolve: Any) -> None:
        super().__init__(io.BytesIO(data))
        self._resolve = resolve

    def persistent_load(self, pid: Any) -> Any:
        kind, ref = pid
        if kind != "ref":
            raise pickle.UnpicklingError(f"unknown reference {kind}")
        return self._resolve(json.loads(ref))


def load_args(payload: str, resolve: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return RefUnpickler(base64.b64decode(payload), resolve).load()
