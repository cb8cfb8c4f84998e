"""``course-lib <command>`` (or ``python -m course_lib <command>``): the course's command line.

* ``doctor`` - versions, CPU, threads, and which runtimes import here;
* ``run [NOTEBOOK ...]`` - execute lecture notebooks headless, in order, with a
  progress bar and a summary (the headless way to take the course);
* ``release [--check]`` - generate ``exercises/`` from ``solutions/``;
* ``grade SUBMISSION_OR_FOLDER ...`` - grade submissions in sandboxed processes,
  in parallel, into a CSV and one feedback file per student;
* ``lm-train`` - train the transformer lecture's small language model and
  cache it in ``checkpoints/tiny_lm.pt`` (300 steps; 59 min measured on a heavily loaded 2-core machine);
* ``report`` - the capstone's measured pipeline end to end, without the
  notebook: ``results/summary.json`` / ``summary.md`` / ``tradeoffs.png``
  and the README's results table rendered from that JSON;
* ``site`` / ``slides`` - the website and the reveal.js decks, English and Korean, from the
  notebooks' stored outputs (:mod:`course_lib.publish`);
* ``i18n status|stub|accept`` - the translations' state and the translators' workflow
  (:mod:`course_lib.i18n`).

Commands that read or write the course's folders work on the checkout found
from the current directory, or the one given with ``--repo DIR``
(:mod:`course_lib.repo`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import platform
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import course_lib
from course_lib import _env
from course_lib._util import quiet_native_stderr
from course_lib.repo import NotACourseCheckout, find_repo

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
    ("litert-quantizer", "litert_quantizer"),
    ("onnx2torch", "onnx2torch"),
    ("onnx2pytorch", "onnx2pytorch"),
    ("torch-pruning", "torch_pruning"),
    ("jupyterlab", "jupyterlab"),
    ("nbval", "nbval"),
    ("nbgrader", "nbgrader"),
]

#: The ``--repo`` option of this invocation (None: search from the current directory).
_repo_option: str | None = None


def repository() -> Path:
    """The course checkout this command works on (raises :class:`NotACourseCheckout` with a clear message)."""
    return find_repo(_repo_option)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """Keep an import's log lines (TF's cudart_stub, torch's _pytree notice, setuptools) out of the table.

    A failing import still raises, and the table shows its message.
    """
    pytree = logging.getLogger("torch.utils._pytree")
    level = pytree.level
    pytree.setLevel(logging.ERROR)
    try:
        with quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pytree.setLevel(level)


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
    if check_imports:
        _env.prepare_process()  # import TensorFlow the way the course does (Keras 2, Triton first)
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
                with _quiet_import():
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

    if paths:
        notebooks = [Path(p) for p in paths]
        missing = [p for p in notebooks if not p.is_file()]
        if missing:
            print(f"error: notebook not found: {', '.join(map(str, missing))}", file=sys.stderr)
            return 2
    else:
        notebooks = sorted((repository() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        if not notebooks:
            print(f"error: no notebooks in {repository() / 'notebooks'}", file=sys.stderr)
            return 2
    out_dir = Path(output_dir) if output_dir else Path("build/executed") if inplace else repository() / "build" / "executed"
    if not inplace:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: cannot create --output-dir {out_dir}: {exc.strerror}", file=sys.stderr)
            return 2
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


def release_command(check: bool) -> int:
    """Generate exercises/ from solutions/ (or only check that it is up to date)."""
    from course_lib.grading.release import release

    repo = repository()
    solution_dir, exercise_dir = repo / "solutions", repo / "exercises"
    problems = release(solution_dir, exercise_dir, check_only=check)
    if check:
        if problems:
            print("exercises/ is out of date:\n  " + "\n  ".join(problems) + "\nRun `make exercises`.", file=sys.stderr)
            return 1
        print("exercises/ is up to date with solutions/")
        return 0
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"wrote {len(list(solution_dir.glob('*.ipynb')))} exercise notebook(s) into {exercise_dir}")
    return 0


def grade_command(
    paths: Sequence[str],
    source: str | None,
    out: str,
    jobs: int,
    timeout: float,
    memory_mb: int,
    canary: bool = True,
    scheduler: str | None = None,
    unsafe_same_user: bool = False,
    lang: str = "en",
) -> int:
    """Grade submissions; print a summary table. ``lang``: the language of the learners' feedback files.

    Exit code: 0 when every submission was graded (whatever the scores, and even when a submission
    crashed or timed out: that is the learner's result); 1 when the grader itself failed (broken
    source, canary short of full marks, output folder not writable, no cluster, or an internal error on
    some submission: its row says "grader error"); 2 for usage errors and missing input.
    """
    from course_lib.grading import grader
    from course_lib.grading.sandbox import Limits

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    submissions = grader.find_submissions(Path(p) for p in paths)
    if not submissions:
        print("error: no .ipynb submissions found in the given paths", file=sys.stderr)
        return 2
    if source is None:
        try:
            sources = {grader.default_source_for(path, repository() / "solutions") for _, path in submissions}
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if len(sources) != 1:
            print("error: the submissions belong to several assignments; grade one at a time or pass --source",
                  file=sys.stderr)
            return 2
        source_path = sources.pop()
    else:
        source_path = Path(source)
        if not source_path.is_file():
            print(f"error: source notebook not found: {source_path}", file=sys.stderr)
            return 2
    if unsafe_same_user:
        print("warning: --unsafe-same-user: where user namespaces do not work, submissions run as your own user, "
              "unconfined (limits and a timeout only): they can kill the grader and rewrite course_lib.",
              file=sys.stderr)
    limits = Limits(timeout_s=timeout, memory_bytes=memory_mb << 20)
    out_dir = Path(out)
    try:
        results = grader.grade_batch(submissions, source_path, out_dir, jobs=jobs, limits=limits, canary=canary, lang=lang,
                                     scheduler=scheduler, unsafe_same_user=unsafe_same_user)
    except grader.SourceError as exc:
        print(f"error: the source notebook is broken, nothing was graded: {exc}", file=sys.stderr)
        return 1
    except grader.GraderFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - an internal error: one clear line, exit 1
        print(f"error: the grader failed ({type(exc).__name__}: {str(exc)[:500]}); nothing may have been written",
              file=sys.stderr)
        return 1
    print(f"\n{'student':24} {'score':>12}  status")
    for r in results:
        print(f"{r.student:24} {r.score:>6g} / {r.max_score:<4g}  {r.status}{': ' + r.reason if r.reason else ''}")
    print(f"\n{len(results)} graded against {source_path.name}; CSV: {out_dir / 'grades.csv'}; "
          f"feedback: {out_dir / 'feedback'}/")
    failed = [r.student for r in results if r.status == grader.GRADER_ERROR]
    if failed:
        print(f"error: the grader failed on {len(failed)} submission(s) ({', '.join(failed[:10])}): their rows say "
              f"{grader.GRADER_ERROR!r}; every other row is correct", file=sys.stderr)
        return 1
    return 0


def machine_summary() -> dict[str, Any]:
    """CPU, cores and the runtime versions a measurement depends on (for results files)."""
    versions = []
    for dist in ("torch", "executorch", "onnxruntime", "ai-edge-litert", "tensorflow"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} -")
    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": sys.version.split()[0], "versions": ", ".join(versions)}


def _results_dir(out: str | None) -> tuple[Path, bool]:
    """The folder results go to, and whether it is the repository's ``results/`` (the README table's source)."""
    if out is None:
        return repository() / "results", True
    try:
        into_repository = Path(out).resolve() == (repository() / "results").resolve()
    except NotACourseCheckout:  # --out elsewhere works without a checkout
        into_repository = False
    return Path(out), into_repository


def _refresh_readme(results: dict[str, Any]) -> None:
    from course_lib import capstone

    changed = capstone.update_readme(repository() / "README.md", results)
    print(f"README.md: results table {'updated' if changed else 'already up to date'}")


def render_command(out: str | None) -> int:
    """Re-render summary.md (and, for the repository's results/, the README table) from an existing summary.json."""
    from course_lib import capstone

    out_dir, into_repository = _results_dir(out)
    try:
        results = capstone.load_results(out_dir / "summary.json")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (out_dir / "summary.md").write_text(capstone.summary_markdown(results), encoding="utf-8")
    print(f"re-rendered {out_dir / 'summary.md'} from {out_dir / 'summary.json'} (nothing re-measured)")
    if into_repository:
        _refresh_readme(results)
    return 0


def report_command(out: str | None, keep_artefacts: bool, quick: bool = False) -> int:
    """Run the capstone pipeline headless and write the results; return 0 on success.

    Into the repository's ``results/`` (the default) the README's results
    table is refreshed too: the JSON is its source, and the two must not
    disagree. Into any other folder (``--out``) the README is left alone.
    ``quick`` trains one epoch per model and times 3 rounds: it checks the
    whole path end to end (the tests use it), its figures mean nothing, and
    it refuses to write into the repository's ``results/``.
    """
    import datetime
    import shutil
    import tempfile

    from tqdm import tqdm

    out_dir, into_repository = _results_dir(out)
    if quick and into_repository:
        print("error: --quick figures mean nothing; write them elsewhere with --out", file=sys.stderr)
        return 2
    try:  # fail now, not after a minute of training
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create the results folder {out_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    stages = ["train the baseline", "train the half-width variants", "prune and fine-tune", "export and quantize",
              "measure every step"]
    start = time.perf_counter()
    course_lib.setup(seed=0, threads=2)
    course_lib.import_tensorflow()  # after course_lib (see README, Troubleshooting); the LiteRT files need the Keras twin
    from course_lib import capstone, data

    work = out_dir / "artefacts" if keep_artefacts else Path(tempfile.mkdtemp(prefix="capstone-"))
    bar = tqdm(total=len(stages) + 1, desc="capstone", unit="stage")

    started = [False]

    def progress(message: str) -> None:
        if started[0]:
            bar.update(1)  # the previous stage is done
        started[0] = True
        bar.set_postfix_str(message)

    try:
        recipe = capstone.Recipe(epochs=1, finetune_epochs=1, rounds=3, repeats=10) if quick else capstone.Recipe()
        records, _ = capstone.run_pipeline(data.load_digits(), work, recipe, progress=progress)
        bar.update(1)
        bar.set_postfix_str("write results")
        argv = " ".join(["python -m course_lib report"] + ([] if into_repository else [f"--out {out}"])
                        + (["--quick"] if quick else []))
        meta = {"command": argv, "date": datetime.date.today().isoformat(),
                "seconds": round(time.perf_counter() - start, 1), "machine": machine_summary()}
        paths = capstone.write_results(records, out_dir, meta)
        bar.update(1)
    finally:
        bar.close()
        if not keep_artefacts:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(capstone.budget_markdown(records))
    print()
    print(capstone.verdict(records))
    print(f"\nwrote {paths['json']}, {paths['markdown']}, {paths['plot']} in {meta['seconds']:.0f} s")
    if into_repository:
        _refresh_readme(capstone.load_results(paths["json"]))  # exactly what the README test will render
    return 0


def supernet_command(out: str | None, epochs: int, threads: int) -> int:
    """Train the supernet the architecture search lecture loads (it takes longer than a lecture may run)."""
    import course_lib
    from course_lib import search

    course_lib.setup(seed=0, threads=threads)
    start = time.perf_counter()
    path = search.train_default_supernet(out or search.DEFAULT_CHECKPOINT, epochs=epochs, seed=0)
    print(f"wrote {path} ({path.stat().st_size:,} bytes) in {time.perf_counter() - start:.0f} s")
    return 0


def _grade(args: argparse.Namespace) -> int:
    if (args.jobs is not None and args.jobs < 1) or args.timeout <= 0 or args.memory_mb < 256:
        args.parser.error("--jobs must be ≥ 1, --timeout > 0 and --memory-mb ≥ 256")
    if args.jobs is not None and args.scheduler:
        args.parser.error("--jobs is for grading on this machine; with --scheduler, the cluster's workers set it")
    if args.scheduler and not re.fullmatch(r"(tcp|tls)://[^/\s]+:\d+", args.scheduler):
        args.parser.error(f"--scheduler must look like tcp://HOST:PORT, got {args.scheduler!r}")
    try:
        return grade_command(args.paths, args.source, args.out, args.jobs or 1, args.timeout, args.memory_mb,
                             canary=not args.no_canary, scheduler=args.scheduler, unsafe_same_user=args.unsafe_same_user,
                             lang=args.lang)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _lm_train(args: argparse.Namespace) -> int:
    from course_lib import lm

    if args.steps < 1:
        args.parser.error("--steps must be >= 1")
    lm.build_checkpoint(args.out or lm.CHECKPOINT, steps=args.steps)
    return 0


def _supernet(args: argparse.Namespace) -> int:
    if args.epochs < 1 or args.threads < 1:
        args.parser.error("--epochs and --threads must be ≥ 1")
    return supernet_command(args.out, args.epochs, args.threads)


def _report(args: argparse.Namespace) -> int:
    if args.render_only:
        if args.keep_artefacts:
            args.parser.error("--render-only measures nothing, so there are no artefacts to --keep-artefacts")
        return render_command(args.out)
    return report_command(args.out, args.keep_artefacts, quick=args.quick)


def site_command(out: str, languages: list[str], jobs: int) -> int:
    """Build the website from the notebooks' stored outputs (``make site``)."""
    from course_lib import publish

    root = repository()
    target = (root / out) if not Path(out).is_absolute() else Path(out)
    try:
        publish.build_site(root, target, tuple(languages), jobs=jobs)
    except (publish.PublishError, i18n_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    remote = publish.external_references(target)
    if remote:
        print("error: the built pages load assets from the network:\n  " + "\n  ".join(remote[:20]), file=sys.stderr)
        return 1
    print(f"site: {target / 'index.html'} ({', '.join(languages)})")
    return 0


def slides_command(out: str, languages: list[str]) -> int:
    """Build one reveal.js deck per lecture and language (``make slides``)."""
    from course_lib import publish

    root = repository()
    target = (root / out) if not Path(out).is_absolute() else Path(out)
    try:
        decks = publish.build_slides(root, target, tuple(languages))
    except (publish.PublishError, i18n_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"slides: {len(decks)} decks under {target} ({', '.join(languages)}); open {target / 'index.html'}")
    return 0


def i18n_errors() -> type[Exception]:
    from course_lib.i18n import TranslationError

    return TranslationError


def i18n_command(action: str, notebooks: list[str], cells: list[str], lang: str, list_missing: bool) -> int:
    """``i18n status`` / ``i18n stub NOTEBOOK...`` / ``i18n accept NOTEBOOK CELL...``."""
    from course_lib import i18n

    root = repository()
    try:
        if action == "status":
            statuses = [i18n.check(root / nb, root, lang)[0] for nb in notebooks] if notebooks else i18n.status_all(root, lang)
            print(i18n.format_status(statuses, list_missing=list_missing))
            return 1 if any(s.stale for s in statuses) else 0
        if action == "stub":
            if not notebooks:
                print("error: name the notebooks to stub, e.g. notebooks/00_measuring_models.ipynb", file=sys.stderr)
                return 2
            for nb in notebooks:
                path, added = i18n.stub(Path(nb).resolve(), root, lang)
                print(f"{path.relative_to(root)}: {added} cell(s) added for translation")
            return 0
        if len(notebooks) != 1 or not cells:
            print("error: usage: i18n accept NOTEBOOK CELL_KEY [CELL_KEY ...]", file=sys.stderr)
            return 2
        path = i18n.accept(Path(notebooks[0]).resolve(), root, cells, lang)
        print(f"{path.relative_to(root)}: {len(cells)} translation(s) marked as matching the current English text")
        return 0
    except (i18n.TranslationError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def build_parser(prog: str = "course-lib") -> argparse.ArgumentParser:
    """The command line: one sub-parser per command, each with the function that runs it (``func``)."""
    parser = argparse.ArgumentParser(prog=prog, description="Lightweight DL course tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {course_lib.__version__}")
    parser.add_argument("--repo", metavar="DIR",
                        help="the course checkout to work on (default: the one holding the current directory)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_doc = sub.add_parser("doctor", help="versions, CPU, threads, and which runtimes import")
    p_doc.add_argument("--quick", action="store_true", help="list versions without importing (a few seconds instead of ~30)")
    p_doc.set_defaults(func=lambda args: doctor(check_imports=not args.quick))

    p_run = sub.add_parser("run", help="execute lecture notebooks headless, in order")
    p_run.add_argument("notebooks", nargs="*", help="notebooks to run (default: every notebooks/NN_*.ipynb)")
    p_run.add_argument("--output-dir", help="where executed copies go (default: build/executed)")
    p_run.add_argument("--inplace", action="store_true", help="overwrite the notebooks with their new outputs")
    p_run.add_argument("--timeout", type=int, default=600, help="seconds one cell may take (default 600)")
    p_run.set_defaults(func=lambda args: run_notebooks(args.notebooks, args.output_dir, args.inplace, args.timeout))

    p_rel = sub.add_parser("release", help="generate exercises/ from solutions/")
    p_rel.add_argument("--check", action="store_true", help="only check that exercises/ is up to date")
    p_rel.set_defaults(func=lambda args: release_command(args.check))

    p_grade = sub.add_parser("grade", help="grade submissions (files or folders) in sandboxed processes")
    p_grade.add_argument("paths", nargs="+", help="submission notebooks, or folders of them (student/NN.ipynb or student.ipynb)")
    p_grade.add_argument("--source", help="the source notebook (default: solutions/<same file name>)")
    p_grade.add_argument("--out", default="grades", help="output folder for grades.csv and feedback/ (default: grades)")
    p_grade.add_argument("--jobs", type=int, help="submissions graded at once on this machine (default 1)")
    p_grade.add_argument("--timeout", type=float, default=120.0, help="seconds per submission (default 120)")
    p_grade.add_argument("--memory-mb", type=int, default=3072, help="memory per submission in MB (default 3072)")
    p_grade.add_argument("--unsafe-same-user", action="store_true",
                         help="without root and without user namespaces, run submissions unconfined as your own user "
                              "(they could kill the grader and rewrite course_lib); otherwise grading refuses to start")
    p_grade.add_argument("--no-canary", action="store_true",
                         help="skip the canary (grading the source solution first, which must get full marks)")
    p_grade.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                         help="grade on a Dask cluster (workers started with the course's environment) instead of "
                              "--jobs local processes")
    p_grade.add_argument("--lang", default="en", choices=["en", "ko"],
                         help="language of the feedback files' own words (default en; ko: Korean)")
    p_grade.set_defaults(func=_grade, parser=p_grade)

    p_rep = sub.add_parser("report", help="run the capstone pipeline headless; write results/ (table, JSON, plot)")
    p_rep.add_argument("--out", help="folder for summary.json, summary.md, tradeoffs.png (default: the repository's "
                       "results/, which also refreshes the README's results table)")
    p_rep.add_argument("--render-only", action="store_true",
                       help="measure nothing: re-render summary.md and the README table from the existing summary.json")
    p_rep.add_argument("--keep-artefacts", action="store_true", help="keep the .pte/.onnx/.tflite files in OUT/artefacts")
    p_rep.add_argument("--quick", action="store_true",
                       help="one epoch per model, 3 timing rounds: checks the pipeline end to end; figures meaningless "
                            "(needs --out)")
    p_rep.set_defaults(func=_report, parser=p_rep)

    p_sup = sub.add_parser("supernet", help="train the architecture search lecture's supernet and save it (a few minutes)")
    p_sup.add_argument("--out", help="checkpoint path (default: course_lib/assets/supernet_digits.pt, which the lecture loads)")
    p_sup.add_argument("--epochs", type=int, default=12, help="sandwich-rule epochs (default 12)")
    p_sup.add_argument("--threads", type=int, default=1, help="PyTorch threads (default 1: the saved file is then bit-reproducible)")
    p_sup.set_defaults(func=_supernet, parser=p_sup)

    p_lm = sub.add_parser("lm-train", help="train the transformer lecture's byte-level model into checkpoints/tiny_lm.pt")
    p_lm.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p_lm.add_argument("--out", help="checkpoint path (default: checkpoints/tiny_lm.pt in the repository)")
    p_lm.set_defaults(func=_lm_train, parser=p_lm)

    languages = ["en", "ko"]
    p_site = sub.add_parser("site", help="build the course website (stored outputs, no execution) into build/site")
    p_site.add_argument("--out", default="build/site", help="output folder (default build/site)")
    p_site.add_argument("--lang", nargs="+", default=languages, choices=languages, help="languages to build (default: all)")
    p_site.add_argument("--jobs", type=int, default=2, help="Sphinx worker processes (default 2)")
    p_site.set_defaults(func=lambda args: site_command(args.out, args.lang, args.jobs))

    p_slides = sub.add_parser("slides", help="build a reveal.js deck per lecture into build/slides")
    p_slides.add_argument("--out", default="build/slides", help="output folder (default build/slides)")
    p_slides.add_argument("--lang", nargs="+", default=languages, choices=languages, help="languages to build (default: all)")
    p_slides.set_defaults(func=lambda args: slides_command(args.out, args.lang))

    p_i18n = sub.add_parser("i18n", help="translations: status, stub (prepare a file for a translator), accept (after updating)")
    p_i18n.add_argument("action", choices=["status", "stub", "accept"])
    p_i18n.add_argument("notebook", nargs="*", help="status/stub: notebooks (default for status: all); accept: one notebook")
    p_i18n.add_argument("--cell", nargs="+", default=[], metavar="KEY", help="accept: the cell keys whose translations were updated")
    p_i18n.add_argument("--lang", default="ko", help="translation language (default ko)")
    p_i18n.add_argument("--missing", action="store_true", help="status: also list the untranslated cells")
    p_i18n.set_defaults(func=lambda args: i18n_command(args.action, args.notebook, args.cell, args.lang, args.missing))
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "course-lib") -> int:
    """Run one command; return its exit code (0 ok, 1 failures found, 2 usage or missing input)."""
    global _repo_option
    args = build_parser(prog).parse_args(argv)
    _repo_option = args.repo
    try:
        return int(args.func(args))
    except NotACourseCheckout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2



if __name__ == "__main__":
    sys.exit(main())
