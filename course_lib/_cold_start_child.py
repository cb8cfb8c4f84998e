"""Fresh-process side of :func:`course_lib.runtimes.cold_start`: import one runtime, load one file, run it once.

Run as a script (``python -I _cold_start_child.py FORMAT FILE INPUT.npy THREADS``),
not as part of ``course_lib``: importing the package would load more than the
runtime being measured. Prints one JSON line.
"""

import json
import os
import sys
import time


def _status_bytes(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _quiet_fd2():
    """Runtimes log their CPU probe to fd 2; keep the parent's stderr for real errors only."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    os.close(devnull)
    return saved


def main(fmt, path, input_path, threads):
    import numpy as np

    x = np.load(input_path)
    before = _status_bytes("VmRSS")
    saved = _quiet_fd2()
    t0 = time.perf_counter()
    if fmt == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        t1 = time.perf_counter()
        interpreter = Interpreter(model_path=path, num_threads=threads)
        detail = interpreter.get_input_details()[0]
        if tuple(detail["shape"]) != x.shape:
            interpreter.resize_tensor_input(detail["index"], x.shape)
        interpreter.allocate_tensors()
        t2 = time.perf_counter()
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    elif fmt == ".onnx":
        import onnxruntime as ort

        t1 = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        t2 = time.perf_counter()
        session.run(None, {session.get_inputs()[0].name: x})
    elif fmt == ".pte":
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        t1 = time.perf_counter()
        portable_lib._unsafe_reset_threadpool(threads)
        method = Runtime.get().load_program(path).load_method("forward")
        t2 = time.perf_counter()
        method.execute([torch.from_numpy(x)])
    else:
        raise SystemExit(f"unknown format {fmt}")
    t3 = time.perf_counter()
    os.dup2(saved, 2)
    peak = _status_bytes("VmHWM")
    print(json.dumps({
        "import_ms": 1000 * (t1 - t0), "load_ms": 1000 * (t2 - t1), "first_call_ms": 1000 * (t3 - t2),
        "peak_rss_bytes": peak, "runtime_peak_bytes": max(0, peak - before),
        "runtime_library_bytes": _mapped_library_bytes(_PACKAGES[fmt]),
    }))


#: The Python package whose native libraries make up each runtime here.
_PACKAGES = {".tflite": "ai_edge_litert", ".onnx": "onnxruntime", ".pte": "executorch"}


def _mapped_library_bytes(package):
    """Bytes of the runtime package's shared libraries this process actually mapped (``/proc/self/maps``)."""
    marker = os.sep + package + os.sep
    files = set()
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split(None, 5)
            if len(parts) == 6 and marker in parts[5] and ".so" in parts[5]:
                files.add(parts[5].strip())
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
