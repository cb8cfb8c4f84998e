"""Grading through a Dask cluster vs local jobs, on the same cores: time, ratio, throughput per worker core.

Not a test: numbers depend on the machine and on what else runs on it. Run with
`.venv/bin/python benchmarks/grading_cluster.py [--n 20] [--rounds 2] [--heavy 03_pruning_pytorch --heavy-n 4]`.

Both paths grade the same batch (copies of the solution and of the blank exercise, alternating) on
two cores: a local two-worker Dask cluster (one thread each, loopback only) and ``--jobs 2``. Rounds
alternate the order (cluster first, then local first, ...) so that a change in the machine's load
hits both; the cluster is started once and both paths are warmed up (two submissions each) outside
the timing, as a running cluster and grader would be. The canary is off here (it is one more
submission on either path). Also checks both give the same CSV.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from course_lib.grading import grader

ROOT = Path(__file__).resolve().parent.parent
CORES = 2  # two single-thread workers, or two local jobs


def make_batch(folder: Path, exercise: str, n: int) -> list[tuple[str, Path]]:
    for i in range(n):
        student = folder / f"student{i:02d}"
        student.mkdir(parents=True)
        shutil.copyfile(ROOT / ("solutions" if i % 2 == 0 else "exercises") / exercise, student / exercise)
    return grader.find_submissions([folder])


def rows_without_seconds(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(path, encoding="utf-8"))]


def compare(exercise: str, n: int, rounds: int, scheduler: str) -> None:
    source = ROOT / "solutions" / exercise
    times: dict[str, list[float]] = {"cluster": [], "local": []}
    with tempfile.TemporaryDirectory() as tmp:
        batch = make_batch(Path(tmp) / "in", exercise, n)
        # Untimed warm-up of both paths: each worker process and this one import torch & co. once, as a running
        # cluster (after the canary) and a running grader would have (measured cold: the first cluster round 1.5x).
        for path in ("cluster", "local"):
            grader.grade_batch(batch[:2], source, Path(tmp) / f"warm-{path}", jobs=CORES, progress=False, canary=False,
                               scheduler=scheduler if path == "cluster" else None)
        for round_number in range(rounds):
            order = ["cluster", "local"] if round_number % 2 == 0 else ["local", "cluster"]
            for path in order:
                out = Path(tmp) / f"{path}{round_number}"
                start = time.perf_counter()
                grader.grade_batch(batch, source, out, jobs=CORES, progress=False, canary=False,
                                   scheduler=scheduler if path == "cluster" else None)
                times[path].append(time.perf_counter() - start)
                print(f"  round {round_number + 1}, {path:7}: {times[path][-1]:6.1f} s", flush=True)
            same = rows_without_seconds(Path(tmp) / f"cluster{round_number}" / "grades.csv") == \
                rows_without_seconds(Path(tmp) / f"local{round_number}" / "grades.csv")
            if not same:
                raise SystemExit(f"round {round_number + 1}: the cluster's CSV differs from the local one")
    ratios = [c / l for c, l in zip(times["cluster"], times["local"])]
    for path in ("cluster", "local"):
        median = statistics.median(times[path])
        print(f"{exercise}, {n} submissions, {path:7}: median {median:6.1f} s over {rounds} round(s) "
              f"(min {min(times[path]):.1f}, max {max(times[path]):.1f}); "
              f"{n / median * 60 / CORES:.1f} submissions/minute per worker core")
    print(f"cluster / local time ratio per round: {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(1.00 = no difference; same CSV in every round)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="submissions of exercise 00 (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--heavy", help="a heavier exercise too, e.g. 03_pruning_pytorch")
    parser.add_argument("--heavy-n", type=int, default=4, help="submissions of the heavier exercise (default 4)")
    args = parser.parse_args()

    from distributed import LocalCluster

    print(f"machine: {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.1f} at start")
    with LocalCluster(n_workers=CORES, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        compare("00_measuring_models.ipynb", args.n, args.rounds, cluster.scheduler_address)
        if args.heavy:
            compare(f"{args.heavy}.ipynb", args.heavy_n, args.rounds, cluster.scheduler_address)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
