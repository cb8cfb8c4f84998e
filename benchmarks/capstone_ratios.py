"""The capstone's ratios, re-measured on this machine: size, speed and accuracy against the fp32 baseline.

Not a test: the figures depend on the machine. Run with `make bench` (a fresh
run of the pipeline without the cold starts, a few minutes on 2 cores), or
print the ratios of a stored run with
`python benchmarks/capstone_ratios.py --from results/summary.json`.

For every step (design, pruned, int8) and runtime (PyTorch, ExecuTorch, ONNX
Runtime, LiteRT) it prints: the file's raw and gzip size as a fraction of the
baseline file in the same runtime, the batch-1 one-thread speedup against the
fastest fp32 file of the baseline (with its interval) and against the same
runtime's baseline, the top-1 change in points, and the verdict per budget
line. `--repeat N` runs the pipeline N times and prints the spread of the
speedups, the largest relative move of a speedup between runs (what
`capstone.Budget.speed_tolerance` must cover), and whether any verdict
flipped between met and not met (a borderline line should read
"inconclusive" instead).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import course_lib as cl


def ratios(records: list) -> object:
    from course_lib import capstone

    table = capstone.check_budget(records)
    table = table[table["step"] != "baseline"].copy()
    table["bytes / baseline"] = (1 / table["raw_size_ratio"]).round(3)
    table["gzip / baseline"] = (1 / table["size_ratio"]).round(3)
    table["× fastest fp32 [CI]"] = [f"{e:.2f} [{lo:.2f}, {hi:.2f}]" for e, lo, hi in
                                    zip(table["speedup"], table["speedup_low"], table["speedup_high"])]
    table["× same runtime"] = table["within_speedup"].round(2)
    table["top-1 change (points)"] = (100 * table["top1_change"]).round(1)
    return table[["step", "runtime", "format", "bytes / baseline", "gzip / baseline", "speedup", "× fastest fp32 [CI]",
                  "× same runtime", "top-1 change (points)", "size", "speed", "accuracy"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", help="print the ratios of a stored results/summary.json instead of measuring")
    parser.add_argument("--repeat", type=int, default=1, help="run the pipeline this many times (speedup spread)")
    args = parser.parse_args()

    import pandas as pd

    pd.set_option("display.width", 200)
    from course_lib import capstone, data
    from course_lib.report import Record

    if args.source:
        results = capstone.load_results(args.source)
        print(f"stored run: `{results['command']}` on {results['date']}, {results['machine']['cpu']}")
        print(ratios([Record.from_dict(r) for r in results["records"]]).to_string(index=False))
        return

    cl.setup(seed=0, threads=2)
    cl.import_tensorflow()
    runs = []
    for run in range(args.repeat):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            records, _ = capstone.run_pipeline(data.load_digits(), Path(folder), cold=False)
        table = ratios(records)
        runs.append(table)
        print(f"\nrun {run + 1} of {args.repeat} ({time.perf_counter() - start:.0f} s):")
        print(table.to_string(index=False))
        print(capstone.verdict(records))
    if args.repeat > 1:
        every = pd.concat(runs)
        speedups = every.groupby(["step", "runtime"], sort=False)["speedup"].agg(["min", "median", "max"])
        speedups["max move"] = speedups["max"] / speedups["min"] - 1
        print("\nspeedup against the fastest fp32 file over the runs (min / median / max; max / min - 1):")
        print(speedups.round(3).to_string())
        print(f"largest move of a speedup between runs: {100 * speedups['max move'].max():.1f} % "
              f"(Budget.speed_tolerance: {100 * capstone.Budget().speed_tolerance:g} %)")
        for line in ("size", "speed", "accuracy"):
            seen = every.groupby(["step", "runtime"], sort=False)[line].agg(set)
            flips = seen[seen.map(lambda v: {"met", "not met"} <= v)]
            moved = seen[seen.map(len) > 1]
            print(f"{line}: verdicts flipping between met and not met: {list(flips.index) or 'none'}; "
                  f"any change (e.g. to inconclusive): {dict(moved.map(sorted)) or 'none'}")


if __name__ == "__main__":
    main()
