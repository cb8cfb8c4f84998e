"""``python -m course_lib <command>``: the course's command line.

* ``doctor`` - versions, CPU, threads, and which runtimes import here;
* ``run [NOTEBOOK ...]`` - execute lecture notebooks headless, in order, with a
  progress bar and a summary (the headless way to take the course).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Sequence

#: (distribution on PyPI, module to import) for every runtime the course uses.
RUNTIMES = [
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("tensorflow", "tensorflow"),
    ("tf-keras", "tf_keras"),
    ("tensorflow-model-optimization", "tensorflow_model_optimization"),
    ("onnx", "onnx"),
    ("onnxruntime", "onnxruntime"),
    ("onnxscript", "onnxscript"),
    ("torchao", "torchao"),
    ("executorch", "executorch.runtime"),
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("onnx2torch", "onnx2torch"),
    ("onnx2pytorch", "onnx2pytorch"),
    ("torch-pruning", "torch_pruning"),
    ("jupyterlab", "jupyterlab"),
    ("nbval", "nbval"),
    ("nbgrader", "nbgrader"),
]

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def doctor(check_imports: bool = True) -> int:
    """Print what the course needs to know about this machine; return 1 if a runtime is missing."""
    print(f"python      {sys.version.split()[0]} ({sys.executable})")
    print(f"platform    {platform.platform()}")
    print(f"cpu         {_cpu_name()}; {os.cpu_count()} logical cores")
    try:
        import torch

        print(f"torch       threads={torch.get_num_threads()}, cpu capability={torch.backends.cpu.get_cpu_capability()}, "
              f"cuda available={torch.cuda.is_available()} (not needed: the course runs on the CPU)")
    except ImportError:
        print("torch       NOT INSTALLED")
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "TF_USE_LEGACY_KERAS", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    print(f"environment {env or '(no thread or Keras variables set)'}")
    print()
    missing = 0
    print(f"{'package':32} {'version':14} {'import':8} seconds")
    for dist, module in RUNTIMES:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "-"
        status, seconds = "skipped", ""
        if check_imports:
            start = time.perf_counter()
            try:
                importlib.import_module(module)
                status = "ok"
            except Exception as exc:  # report, do not crash: the point is to see every problem at once
                status = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                missing += 1
            seconds = f"{time.perf_counter() - start:.1f}"
        elif version == "-":
            missing += 1
        print(f"{dist:32} {version:14} {status:8} {seconds}")
    print()
    print("all runtimes import" if check_imports and not missing else
          f"{missing} package(s) missing or failing: run `make setup` (or see README, Troubleshooting)" if missing else
          "versions listed (imports not checked; drop --quick to check)")
    return 1 if missing else 0


def run_notebooks(paths: Sequence[str], output_dir: str | None, inplace: bool, timeout: int) -> int:
    """Execute notebooks with nbclient, in order; print a summary; return 1 if any failed."""
    import nbformat
    from nbclient import NotebookClient
    from tqdm import tqdm

    notebooks = [Path(p) for p in paths] if paths else sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    missing = [p for p in notebooks if not p.is_file()]
    if missing:
        print(f"error: notebook not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    if not notebooks:
        print(f"error: no notebooks in {NOTEBOOK_DIR}", file=sys.stderr)
        return 2
    out_dir = Path(output_dir) if output_dir else REPO_ROOT / "build" / "executed"
    if not inplace:
        out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    bar = tqdm(notebooks, desc="notebooks", unit="nb")
    for path in bar:
        bar.set_postfix_str(path.name)
        start = time.perf_counter()
        try:
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
            client.execute()
            target = path if inplace else out_dir / path.name
            nbformat.write(nb, target)
            results.append((path.name, "ok", time.perf_counter() - start, str(target)))
        except Exception as exc:
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()  # drop ANSI colours
            reason = next((line for line in reversed(message) if line.strip()), type(exc).__name__)
            results.append((path.name, f"FAILED ({reason[:120]})", time.perf_counter() - start, ""))
    bar.close()
    print()
    print(f"{'notebook':40} {'seconds':>8}  status")
    for name, status, seconds, _ in results:
        print(f"{name:40} {seconds:8.1f}  {status}")
    failed = sum(1 for r in results if r[1] != "ok")
    where = "in place" if inplace else f"into {out_dir}"
    print(f"\n{len(results) - failed} of {len(results)} notebooks ran ({where}).")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib", description="Lightweight DL course tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_doc = sub.add_parser("doctor", help="versions, CPU, threads, and which runtimes import")
    p_doc.add_argument("--quick", action="store_true", help="list versions without importing (a few seconds instead of ~30)")

    p_run = sub.add_parser("run", help="execute lecture notebooks headless, in order")
    p_run.add_argument("notebooks", nargs="*", help="notebooks to run (default: every notebooks/NN_*.ipynb)")
    p_run.add_argument("--output-dir", help="where executed copies go (default: build/executed)")
    p_run.add_argument("--inplace", action="store_true", help="overwrite the notebooks with their new outputs")
    p_run.add_argument("--timeout", type=int, default=600, help="seconds one cell may take (default 600)")

    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor(check_imports=not args.quick)
    if args.command == "run":
        return run_notebooks(args.notebooks, args.output_dir, args.inplace, args.timeout)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
