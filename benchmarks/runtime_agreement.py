"""Do the course's runtime-only latencies agree with the runtime's own benchmark tool? (LiteRT; not a test.)

Of the pinned packages only LiteRT ships a benchmark tool:
``ai_edge_litert/tools/benchmark_litert_model.py`` (the Python twin of LiteRT's
C++ ``benchmark_model``; it runs the file through LiteRT's CompiledModel API,
not the Interpreter the course uses). ONNX Runtime's ``onnxruntime_perf_test``
and ExecuTorch's ``executor_runner`` are not in their wheels, so for those
the course's numbers stand alone.

For each ``.tflite`` file given, in alternating rounds: LiteRT's tool in a
fresh process (one thread, its median) and the course's
``runtimes.time_interleaved`` (one thread, runtime-only); then the int8 / fp32
ratio by each. The tool rounds its JSON to 0.01 ms, so compare with that
resolution in mind.

    python benchmarks/runtime_agreement.py model_fp32.tflite model_int8.tflite --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import course_lib as cl


def tool_median_ms(path: Path, runs: int, threads: int = 1) -> float:
    """Median latency from LiteRT's own benchmark tool, in a fresh process."""
    import ai_edge_litert

    tool = Path(ai_edge_litert.__file__).parent / "tools" / "benchmark_litert_model.py"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run([sys.executable, str(tool), f"--model={path}", f"--num_runs={runs}", "--warmup_runs=20",
                        f"--num_threads={threads}", f"--result_json={out}"], check=True, capture_output=True, text=True)
        return float(json.loads(out.read_text())["latency"]["median_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help=".tflite files (e.g. an fp32 and an int8 one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    cl.setup(seed=0, threads=1)
    import numpy as np

    from course_lib import runtimes

    models = {p.name: runtimes.load(p, threads=1) for p in args.files}
    shape = models[args.files[0].name].model.input_shape  # NHWC of the file
    x = np.random.default_rng(0).random((1, shape[3], shape[1], shape[2]), dtype=np.float32)
    tool: dict[str, list[float]] = {name: [] for name in models}
    course: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for path in args.files:
            tool[path.name].append(tool_median_ms(path, args.runs))
        timings = runtimes.time_interleaved(models, x, rounds=3, repeats=args.runs // 3)
        for name, timing in timings.items():
            course[name].append(timing.median_ms)
    print(f"{'file':28} {'LiteRT tool ms (rounds)':>34} {'course ms (rounds)':>34}")
    for name in models:
        print(f"{name:28} {statistics.median(tool[name]):>8.3f} {str([round(v, 3) for v in tool[name]]):>25} "
              f"{statistics.median(course[name]):>8.3f} {str([round(v, 3) for v in course[name]]):>25}")
    if len(models) == 2:
        first, second = list(models)
        ratio_tool = [a / b for a, b in zip(tool[first], tool[second])]
        ratio_course = [a / b for a, b in zip(course[first], course[second])]
        print(f"{first} / {second}: tool {min(ratio_tool):.2f}–{max(ratio_tool):.2f}, "
              f"course {min(ratio_course):.2f}–{max(ratio_course):.2f} (min–max over rounds)")


if __name__ == "__main__":
    main()
