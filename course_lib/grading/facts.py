"""Measure a learner's model from its snapshot, with trusted code only.

The grader never evaluates a library function in the submission's process
(where the learner could have replaced it). Instead the submission hands
over a snapshot (:mod:`course_lib.grading.snapshot`: an exported program,
a ``.tflite``, an ``.onnx``) and the functions here compute every fact a
check compares — parameters, sparsity, MACs, quantize operations, logits,
input quantization, bytes, latency — from that snapshot.

Under the grader they run in a **fresh process confined like a submission**
(:func:`measure_confined`: its own uid and private mounts when root, limits,
a timeout) that never ran learner code. The snapshot is still untrusted
input to native parsers, so it is parsed there and not in the grader;
loaders that could unpickle are forced to ``weights_only=True`` first
(:func:`_safe_loading`), so a crafted file cannot run code and forge the
answer. Results come back as protocol-encoded JSON, validated by
:func:`course_lib.grading.trust.validate_facts`. In a learner's own notebook
the same functions run in-process, so visible checks behave the same.

``python -I -m course_lib.grading.facts KIND`` (in a directory holding the
kind's files) prints one line ``FACTS <json>``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: Ops whose second argument is a weight that pruning can zero (aten, as ``torch.export`` writes them).
_WEIGHTED_OPS = ("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.convolution", "aten.linear")


@contextlib.contextmanager
def _safe_loading() -> Iterator[None]:
    """Load a learner's program with no unpickling of anything but plain tensors.

    ``torch.export.load`` falls back to ``torch.load(weights_only=False)`` for
    tensors it cannot read otherwise, and unpickles "opaque" and "custom"
    constants with ``pickle.loads`` / ``torch._C._pickle_load_obj``: on a
    learner's file any of these would run whatever the pickle says (and could
    print forged facts). This code is trusted and measures untrusted data, so
    while the program loads, ``torch.load`` is forced to ``weights_only=True``
    and the other two refuse. (Restored afterwards: in a learner's own
    notebook the measurement runs in their kernel.)
    """
    import pickle

    import torch

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("the grader loads only plain tensors from a model file, not pickled objects")

    original_load, original_loads = torch.load, pickle.loads
    original_obj = getattr(torch._C, "_pickle_load_obj", None)

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(f, *args, **kwargs)

    torch.load = load
    pickle.loads = refuse
    if original_obj is not None:
        torch._C._pickle_load_obj = refuse
    try:
        yield
    finally:
        torch.load = original_load
        pickle.loads = original_loads
        if original_obj is not None:
            torch._C._pickle_load_obj = original_obj


# --- PyTorch programs ---------------------------------------------------------------------------


def torch_facts(program: bytes, inputs: np.ndarray | None = None) -> dict[str, Any]:
    """Facts of a saved ``torch.export`` program; ``inputs`` (N × ...) give MACs (first row) and logits.

    * ``parameters``: parameter elements (a pruned layer's ``weight_orig`` counts once, like ``model.parameters()``);
    * ``is_pruned``: pruning masks still attached (``weight_orig`` / ``weight_mask`` in the state);
    * ``sparsity``: zeros among the weights that convolutions and linear layers actually use,
      captured while the graph runs (masks applied, int8 weights dequantized);
    * ``quantize_nodes``: quantize operations in the graph (0 for a float model);
    * ``macs`` and ``logits`` when ``inputs`` are given.
    """
    import io

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        import torchao.quantization.pt2e  # noqa: F401  (registers the quantize ops a PT2E graph uses)
    except ImportError:  # pragma: no cover - torchao is pinned
        pass
    with _safe_loading():
        exported = torch.export.load(io.BytesIO(program))
    module = exported.module()
    state = exported.state_dict
    names = set(exported.graph_signature.parameters)
    parameters = sum(int(state[name].numel()) for name in names if name in state)
    is_pruned = any(key.endswith("_orig") or key.endswith("_mask") for key in (*state, *exported.graph_signature.buffers))
    quantize_nodes = sum(1 for node in exported.graph.nodes if node.op == "call_function"
                         and "quantize_per" in str(node.target) and "dequantize" not in str(node.target))
    facts: dict[str, Any] = {"parameters": parameters, "is_pruned": is_pruned, "quantize_nodes": quantize_nodes}
    if inputs is None:
        return facts
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    weights: list[torch.Tensor] = []
    parameter_names = {name for name, _ in module.named_parameters()}

    def from_parameters(node: Any, depth: int = 0) -> bool:
        """Whether a weight argument is computed from the program's parameters (a mask applied, say).

        Buffers and constants do not count: a zero buffer fed to an extra linear op
        would otherwise pass for pruned weights.
        """
        if not isinstance(node, torch.fx.Node) or depth > 6:
            return False
        if node.op == "get_attr":
            return str(node.target) in parameter_names
        return any(from_parameters(arg, depth + 1) for arg in node.all_input_nodes)

    weighted_ops = [n for n in module.graph.nodes if n.op == "call_function" and str(n.target).startswith(_WEIGHTED_OPS)]
    # int8 weights: the weight a conv / linear uses is dequantized from an int8 constant in the graph
    dequantized = sum(1 for n in weighted_ops if len(n.args) > 1 and isinstance(n.args[1], torch.fx.Node)
                      and "dequantize" in str(n.args[1].target))

    class WeightRecorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            if n.op == "call_function" and str(n.target).startswith(_WEIGHTED_OPS) and len(n.args) > 1:
                value = self.env.get(n.args[1]) if isinstance(n.args[1], torch.fx.Node) else None
                if isinstance(value, torch.Tensor) and from_parameters(n.args[1]):
                    weights.append(value.detach())
            return result

    batch = _static_batch(exported)  # None: the program takes any batch size
    step = batch or 256
    with torch.no_grad():
        one = x[:1] if batch is None else _padded(x[:1], batch)
        WeightRecorder(module).run(one)
        with FlopCounterMode(display=False) as counter:
            module(one)
        chunks = [module(_padded(x[i : i + step], batch))[: len(x[i : i + step])] for i in range(0, len(x), step)]
        logits = torch.cat(chunks) if chunks else torch.zeros(0)
    total = sum(int(w.numel()) for w in weights)
    facts.update({
        "sparsity": float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0,
        "macs": int(counter.get_total_flops() // 2 // (batch or 1)),
        "weighted_ops": len(weighted_ops),
        "dequantized_weights": dequantized,
        "logits": logits.float().numpy(),
    })
    return facts


def _static_batch(exported: Any) -> int | None:
    """The batch size a program was exported for, or None when its batch dimension is dynamic."""
    import torch

    placeholders = [n for n in exported.graph.nodes if n.op == "placeholder" and n.name in exported.graph_signature.user_inputs]
    value = placeholders[0].meta.get("val") if placeholders else None
    if value is None or not value.shape:
        return None
    first = value.shape[0]
    return int(first) if isinstance(first, int) and not isinstance(first, torch.SymInt) else None


def _padded(x: Any, batch: int | None) -> Any:
    """``x`` repeated up to ``batch`` rows (a program exported for a fixed batch accepts only that)."""
    import torch

    if batch is None or len(x) == batch:
        return x
    reps = -(-batch // len(x))
    return torch.cat([x] * reps)[:batch]


# --- LiteRT files -------------------------------------------------------------------------------


def tflite_facts(model: bytes, inputs: np.ndarray | None = None) -> dict[str, Any]:
    """Facts of a ``.tflite``: bytes, input/output quantization, zeros per weight tensor, logits on NHWC ``inputs``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(model), num_threads=1)
    interpreter.allocate_tensors()

    def quantization(detail: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = detail["quantization"]
        return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}

    kernels: dict[str, list[int]] = {}
    for op in interpreter._get_ops_details():  # the weight of each conv / fully connected op
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(op["inputs"]) > 1:
            index = int(op["inputs"][1])
            detail = interpreter._get_tensor_details(index, 0)
            try:
                values = interpreter.get_tensor(index)
            except ValueError:  # not a constant: computed at run time
                continue
            kernels[str(detail["name"])] = [int((values == 0).sum()), int(values.size)]
    from course_lib import tflite

    facts: dict[str, Any] = {
        "bytes": len(model),
        "input": quantization(interpreter.get_input_details()[0]),
        "output": quantization(interpreter.get_output_details()[0]),
        "kernels": kernels,
        # ops that read or write a float tensor: 0 for full integer ("no float op left")
        "float_ops": sum(any(t.startswith("float") for t in op["inputs"] + op["outputs"]) for op in tflite.op_dtypes(bytes(model))),
    }
    if inputs is not None:

        facts["logits"] = np.asarray(tflite.predict(bytes(model), np.asarray(inputs, dtype=np.float32)), dtype=np.float64)
    return facts


# --- ONNX files and deployable artefacts --------------------------------------------------------


def onnx_facts(model: bytes, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Outputs of an ``.onnx`` file in ONNX Runtime (one thread) for each named input batch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(bytes(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = {key: np.asarray(session.run(None, {name: np.asarray(x, dtype=np.float32)})[0], dtype=np.float64)
               for key, x in inputs.items()}
    return {"bytes": len(model), "outputs": outputs}


def artefact_facts(fmt: str, model: bytes, inputs: np.ndarray, rounds: int = 5, repeats: int = 50) -> dict[str, Any]:
    """Bytes, gzip bytes, logits on NCHW ``inputs`` and batch-1 one-thread median latency of a model file."""
    import tempfile

    from course_lib import deploy
    from course_lib.measure import measure_latency_interleaved

    with tempfile.TemporaryDirectory(prefix="facts-") as folder:
        path = Path(folder) / f"model{fmt}"
        path.write_bytes(bytes(model))
        x = np.asarray(inputs, dtype=np.float32)
        x_run = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if fmt == ".tflite" else x
        with deploy.executorch_threads(1 if fmt == ".pte" else None):
            loaded = deploy.load_artefact(path)
            logits = np.asarray(loaded.predict(x_run), dtype=np.float64)
            stats = measure_latency_interleaved({"model": (loaded, x_run[:1])}, rounds=rounds, repeats=repeats, threads=1)
    return {"bytes": len(model), "gzip_bytes": len(gzip.compress(bytes(model), 9, mtime=0)), "logits": logits,
            "latency_ms": float(stats["model"].median_ms)}


# --- the confined entry point -------------------------------------------------------------------


def _read_request(folder: Path) -> tuple[str, dict[str, Any]]:
    request = json.loads((folder / "request.json").read_text())
    return str(request["kind"]), dict(request.get("options", {}))


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def compute(kind: str, folder: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The facts of ``kind`` for the files in ``folder`` (``model.bin``, ``inputs.npz``)."""
    if kind == "capstone":
        from course_lib.grading import artefact

        baselines = {fmt: folder / f"baseline{fmt}" for fmt in artefact.FORMATS if (folder / f"baseline{fmt}").is_file()}
        return artefact.measure_for_grading(folder / f"submission{options['format']}", baselines, on=str(options["on"]))
    model = (folder / "model.bin").read_bytes()
    arrays = _load_arrays(folder / "inputs.npz") if (folder / "inputs.npz").is_file() else {}
    if kind == "torch":
        return torch_facts(model, arrays.get("x"))
    if kind == "tflite":
        return tflite_facts(model, arrays.get("x"))
    if kind == "onnx":
        return onnx_facts(model, arrays)
    if kind == "artefact":
        return artefact_facts(str(options["format"]), model, arrays["x"])
    raise ValueError(f"unknown kind of facts {kind!r}")


def main(argv: list[str]) -> None:
    import course_lib
    from course_lib.grading import protocol

    course_lib.setup(threads=1)
    folder = Path.cwd()
    kind, options = _read_request(folder)
    facts = compute(kind, folder, options)
    print("FACTS " + json.dumps(protocol.encode(facts, protocol.Handles()), allow_nan=False), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
