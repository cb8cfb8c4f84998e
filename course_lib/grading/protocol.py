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
#: Largest ``bytes`` value (a model file) a result may carry.
MAX_BYTES = 32 << 20
#: Deepest nesting of lists and dicts a result may have.
MAX_DEPTH = 20
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
    if depth > MAX_DEPTH:
        raise ValueError(f"result nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return {"__float__": repr(f)} if math.isnan(f) or math.isinf(f) else f
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        blob = bytes(value)
        if len(blob) > MAX_BYTES:
            raise ValueError(f"result has {len(blob):,} bytes; at most {MAX_BYTES:,} are accepted")
        return {"__bytes__": base64.b64encode(blob).decode("ascii")}
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


def decode(data: Any, make_handle: Any, depth: int = 0) -> Any:
    """Turn plain data from the student's process back into values (grader side). Never executes anything.

    Raises ``ValueError`` for anything that is not exactly one of the encodings
    :func:`encode` writes (so a forged or malformed value is refused, not guessed at).
    """
    if depth > MAX_DEPTH:
        raise ValueError(f"value nested more than {MAX_DEPTH} levels deep")
    if isinstance(data, list):
        return [decode(v, make_handle, depth + 1) for v in data]
    if isinstance(data, dict):
        if "__ndarray__" in data:
            dtype: Any = {"bool": np.bool_, "int64": np.int64, "float64": np.float64}.get(str(data.get("dtype")))
            shape = data.get("shape")
            payload = data["__ndarray__"]
            if (dtype is None or not isinstance(payload, str) or not isinstance(shape, list) or len(shape) > 32
                    or not all(type(s) is int and s >= 0 for s in shape)):
                raise ValueError("malformed array from the submission's process")
            if math.prod(shape) > MAX_ARRAY_ELEMENTS:
                raise ValueError("array from the submission's process is larger than the grader accepts")
            flat: np.ndarray = np.frombuffer(base64.b64decode(payload, validate=True), dtype=dtype)
            if flat.size != math.prod(shape):
                raise ValueError("array size does not match its shape")
            return flat.reshape(shape).copy()
        if "__bytes__" in data:
            if not isinstance(data["__bytes__"], str) or len(data["__bytes__"]) > (MAX_BYTES // 3 + 1) * 4:
                raise ValueError("malformed bytes from the submission's process")
            return base64.b64decode(data["__bytes__"], validate=True)
        if "__float__" in data:
            if data["__float__"] not in ("nan", "inf", "-inf"):
                raise ValueError("malformed float from the submission's process")
            return float(data["__float__"])
        if "__handle__" in data:
            handle, type_name = data["__handle__"], data.get("type", "object")
            if type(handle) is not int or not isinstance(type_name, str):
                raise ValueError("malformed handle from the submission's process")
            return make_handle(handle, type_name[:100])
        if "__dict__" in data:
            items = data["__dict__"]
            if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) for i in items):
                raise ValueError("malformed dict from the submission's process")
            return {k: decode(v, make_handle, depth + 1) for k, v in items}
        raise ValueError("malformed value from the submission's process")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    raise ValueError("malformed value from the submission's process")


class RefPickler(pickle.Pickler):
    """Pickles grader-built arguments; student objects become references (persistent ids)."""

    def persistent_id(self, obj: Any) -> Any:
        ref = getattr(obj, "_grading_ref", None) if getattr(type(obj), "is_remote_proxy", False) else None
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
