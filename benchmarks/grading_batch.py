"""How long does grading a cohort take? Prints wall-clock times for 10 and 20 submissions, 1 and 2 jobs.

Not a test: numbers depend on the machine. Run with `make bench-grading`.
The batch holds copies of the solution (full marks) and of the blank exercise (zero), alternating.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from course_lib.grading import grader

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "solutions" / "00_measuring_models.ipynb"
BLANK = ROOT / "exercises" / "00_measuring_models.ipynb"


def make_batch(folder: Path, n: int) -> list[tuple[str, Path]]:
    for i in range(n):
        student = folder / f"student{i:02d}"
        student.mkdir(parents=True)
        shutil.copyfile(SOURCE if i % 2 == 0 else BLANK, student / SOURCE.name)
    return grader.find_submissions([folder])


def main() -> None:
    timings = {}
    for n, jobs in [(10, 1), (20, 2), (20, 1)]:
        with tempfile.TemporaryDirectory() as tmp:
            batch = make_batch(Path(tmp) / "in", n)
            start = time.perf_counter()
            results = grader.grade_batch(batch, SOURCE, Path(tmp) / "out", jobs=jobs, progress=False)
            timings[(n, jobs)] = time.perf_counter() - start
            scores = sorted({r.score for r in results})
            print(f"{n:3d} submissions, --jobs {jobs}: {timings[(n, jobs)]:6.1f} s "
                  f"({timings[(n, jobs)] / n:.2f} s each; scores seen {scores})")
    ratio = timings[(20, 2)] / timings[(10, 1)]
    print(f"\n20 with 2 jobs / 10 with 1 job = {ratio:.2f} (2.0 would mean no gain from the second job)")
    print(f"20 with 1 job / 20 with 2 jobs = {timings[(20, 1)] / timings[(20, 2)]:.2f}x speedup from --jobs 2")


if __name__ == "__main__":
    main()
