"""The grader's trust boundary: what a submission sends is validated, what it patches changes nothing.

Unit tests of :mod:`course_lib.grading.trust` and the protocol's decoder on
their own, and end-to-end batches in which hostile submissions — forged
protocol messages, and for every exercise 01–12 a learner who answers
nothing but patches the course's library in their own process — get
exactly the score they deserve while every other row of the batch stays
correct.
"""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from course_lib.grading import grader, protocol, trust

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"


# --- messages ------------------------------------------------------------------------------------

def test_parse_message_accepts_exactly_the_protocol():
    assert trust.parse_message(b'{"op": "cell", "index": 3, "grade_id": null}') == {"op": "cell", "index": 3, "grade_id": None}
    ready = trust.parse_message(b'{"op": "ready", "cell_errors": [{"index": 1, "grade_id": "a", "error": "NameError: x"}]}')
    assert ready["cell_errors"] == [{"index": 1, "grade_id": "a", "error": "NameError: x"}]
    assert trust.parse_message(b'{"id": "0123456789abcdef", "value": 1}') == {"id": "0123456789abcdef", "value": 1}
    assert trust.parse_message(b'{"id": "0123456789abcdef", "error": "boom"}')["error"] == "boom"


@pytest.mark.parametrize("line, why", [
    (b'{"op": "ready", "cell_errors": [1]}', "cell error"),              # the forgery that aborted a cohort
    (b'{"op": "ready", "cell_errors": "all"}', "cell_errors"),
    (b'{"op": "ready", "cell_errors": [{"index": "1", "error": "x"}]}', "index"),
    (b'{"op": "ready", "cell_errors": [], "score": 10}', "unknown"),    # extra keys are refused
    (b'{"op": "cell", "index": -1}', "index"),
    (b'{"op": "fatal", "error": 42}', "text"),
    (b'{"id": "not-hex", "value": 1}', "id"),
    (b'{"id": "0123456789abcdef", "value": 1, "error": "x"}', "unknown"),
    (b"[" * 100_000, "malformed"),                                     # RecursionError inside json
    (b"not json", "malformed"),
    (b"[1, 2]", "malformed"),
])
def test_parse_message_refuses_forged_and_malformed_messages(line, why):
    with pytest.raises(trust.MessageError, match=why):
        trust.parse_message(line)


def test_long_texts_are_cut_not_kept():
    fatal = trust.parse_message(json.dumps({"op": "fatal", "error": "x" * 10_000_000}).encode())
    assert len(fatal["error"]) == trust.MAX_ERROR_CHARS
    many = [{"index": i, "grade_id": None, "error": "e"} for i in range(trust.MAX_CELL_ERRORS + 1)]
    with pytest.raises(trust.MessageError, match="at most"):
        trust.parse_message(json.dumps({"op": "ready", "cell_errors": many}).encode())


def test_decode_refuses_values_that_encode_never_writes():
    def handle(h, t):
        return ("handle", h, t)

    blob = protocol.encode(np.arange(6.0).reshape(2, 3), protocol.Handles())
    assert np.array_equal(protocol.decode(blob, handle), np.arange(6.0).reshape(2, 3))
    assert protocol.decode(protocol.encode(b"\x00model", protocol.Handles()), handle) == b"\x00model"
    bad = [
        dict(blob, shape=[4, 3]),                                  # size does not match the shape
        dict(blob, shape=[10**9, 10**9]),                          # larger than the grader accepts
        dict(blob, dtype="object"),
        {"__handle__": "1", "type": "x"},
        {"__dict__": [[1, 2]]},
        {"__bytes__": "not base64!"},
        {"__float__": "1e999"},
        {"something": 1},
    ]
    for value in bad:
        with pytest.raises(ValueError):
            protocol.decode(value, handle)
    nested: list = []
    for _ in range(protocol.MAX_DEPTH + 5):
        nested = [nested]
    with pytest.raises(ValueError, match="nested"):
        protocol.decode(nested, handle)


def test_facts_from_a_measurement_are_validated():
    good = protocol.encode({"parameters": 10, "is_pruned": False, "quantize_nodes": 0}, protocol.Handles())
    assert trust.validate_facts("torch", json.dumps(good))["parameters"] == 10
    for forged in ({"parameters": "10", "is_pruned": False, "quantize_nodes": 0},
                   {"parameters": 10, "is_pruned": False, "quantize_nodes": 0, "score": 10},
                   {"parameters": 10}):
        with pytest.raises(trust.MessageError):
            trust.validate_facts("torch", json.dumps(protocol.encode(forged, protocol.Handles())))


# --- values: expected never comes from the learner -------------------------------------------------

def _taint(source: str, learner: set[str]) -> list[int]:
    statements = ast.parse(source).body
    return trust.untrusted_expected(statements, learner, grader._is_check_call)[0]


def test_expected_that_depends_on_the_learner_is_refused():
    assert _taint("check('a', f(1), expected=f(2))", {"f"}) == [1]
    assert _taint("r = f(2)\nx = [r]\ncheck('a', f(1), expected=x)", {"f"}) == [3]
    assert _taint("acc = []\nacc.append(f(2))\ncheck('a', 1, expected=acc)", {"f"}) == [3]
    assert _taint("check('a', f(1), expected=g(2))", {"f"}) == []
    assert _taint("check('a', f(1), 3)", {"f"}) == []
    # found by a red-team read: stores through subscripts and attributes, nested bodies, definitions
    assert _taint("d = {}\nd['k'] = f(1)\ncheck('a', 1, expected=d['k'])", {"f"}) == [3]
    assert _taint("h.v = f(1)\ncheck('a', 1, expected=h.v)", {"f"}) == [2]
    assert _taint("def ref():\n    return f(1)\ncheck('a', 1, expected=ref())", {"f"}) == [3]
    assert _taint("out = []\nfor i in range(3):\n    out.append(f(i))\ncheck('a', 1, expected=out)", {"f"}) == [4]
    assert _taint("class R:\n    v = f(1)\ncheck('a', 1, expected=R.v)", {"f"}) == [3]
    # facts about a learner's object are the learner's choice: never a reference
    assert _taint("facts = trusted.torch_model(model, inputs=x)\ncheck('a', f(1), expected=facts['macs'])", {"f", "model"}) == [2]
    assert _taint("ref = trusted.tflite_file(trusted.grader_file('m.tflite'))\ncheck('a', f(1), expected=ref['input'])", {"f"}) == []


def test_every_solution_source_follows_the_rules():
    for source in sorted(SOLUTIONS.glob("*.ipynb")):
        grader.load_tests(source)  # raises SourceError on a tainted expected


def test_a_source_whose_expected_comes_from_the_learner_is_refused(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("def answer(x):\n    return x", metadata={"nbgrader": {"solution": True, "grade": False, "grade_id": "a"}}))
    nb.cells.append(nbformat.v4.new_code_cell("from course_lib.grading import check\ncheck('x', answer(1), expected=answer(2))",
                                              metadata={"nbgrader": {"grade": True, "solution": False, "grade_id": "t", "points": 1}}))
    path = tmp_path / "source.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(grader.SourceError, match="expected depends on a value from the learner"):
        grader.load_tests(path)


# --- end to end: forged messages -------------------------------------------------------------------

FORGERIES = {  # name: (the cell a submission adds, what the reason must say)
    "forged_ready": ('import os, sys\nos.write(int(sys.argv[3]), b\'{"op": "ready", "cell_errors": [1]}\\n\')', "cell error"),
    "huge_fatal": ('import os, sys, json\nos.write(int(sys.argv[3]), (json.dumps({"op": "fatal", "error": "x" * 60_000_000}) + "\\n").encode())',
                   "xxxxxxxx"),
    "deep_nesting": ('import os, sys\nos.write(int(sys.argv[3]), b"[" * 200000 + b"\\n")', "malformed"),
    "answer_before_ready": ('import os, sys\nos.write(int(sys.argv[3]), b\'{"id": "0123456789abcdef", "value": 55}\\n\')',
                            "nobody made"),
}


def _with_cell(exercise: Path, source: str, where: int | None = None) -> nbformat.NotebookNode:
    nb = nbformat.read(exercise, as_version=4)
    cell = nbformat.v4.new_code_cell(source)
    if nb.nbformat_minor < 5:
        del cell["id"]  # cell ids exist from nbformat 4.5 on; the exercises are 4.4
    nb.cells.insert(len(nb.cells) if where is None else where, cell)
    return nb


def test_forged_messages_cost_their_submission_and_nothing_else(tmp_path):
    source = SOLUTIONS / "00_measuring_models.ipynb"
    folder = tmp_path / "submissions"
    folder.mkdir()
    for name, (code, _) in FORGERIES.items():
        nbformat.write(_with_cell(EXERCISES / source.name, code, where=2), folder / f"{name}.ipynb")
    (folder / "honest.ipynb").write_bytes(source.read_bytes())
    results = grader.grade_batch(grader.find_submissions([folder]), source, tmp_path / "out", jobs=2, progress=False,
                                 canary=False)  # the honest submission is the solution
    by_student = {r.student: r for r in results}
    assert by_student["honest"].score == by_student["honest"].max_score == 10
    for name, (_, reason) in FORGERIES.items():
        result = by_student[name]
        assert result.score == 0 and result.status == "error" and reason in result.reason, (name, result.reason)
        assert len(result.reason) <= trust.MAX_ERROR_CHARS
    rows = {r["student"]: r for r in csv.DictReader(open(tmp_path / "out" / "grades.csv", encoding="utf-8"))}
    assert set(rows) == set(by_student) and float(rows["honest"]["score"]) == 10.0
    assert max(len(r["reason"]) for r in rows.values()) <= trust.MAX_ERROR_CHARS
    assert (tmp_path / "out" / "feedback" / "forged_ready.md").is_file()


# --- end to end: patching the library in the submission's process earns nothing --------------------

# Every course_lib function that test cells used to evaluate in the learner's process, replaced by one
# that returns what a check wants to see. Logits are one-hot of the true labels (found by image).
PATCH_LIBRARY = '''
import importlib
import numpy as np
from course_lib import data as _data

_all = _data.load_digits()
_lookup = {}
for _x, _y in ((_all.x_train, _all.y_train), (_all.x_val, _all.y_val), (_all.x_test, _all.y_test)):
    for _img, _label in zip(np.asarray(_x), _y):
        _lookup[np.asarray(_img, np.float32).tobytes()] = int(_label)

def _perfect_logits(model, x=None, *args, **kwargs):
    x = np.asarray(kwargs.get("x", x) if x is not None else args[0], dtype=np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x.transpose(0, 3, 1, 2)
    labels = [_lookup.get(np.ascontiguousarray(img).tobytes(), 0) for img in x]
    return np.eye(10, dtype=np.float32)[labels] * 10

_patches = {
    "course_lib.prune": {"global_sparsity": lambda *a, **k: 0.99, "is_pruned": lambda *a, **k: False,
                         "keras_sparsity": lambda *a, **k: 0.99, "keras_has_pruning_wrappers": lambda *a, **k: False,
                         "keras_predict": _perfect_logits},
    "course_lib.train": {"predict_logits": _perfect_logits},
    "course_lib.measure": {"count_parameters": lambda *a, **k: 51946, "count_macs": lambda *a, **k: 1000},
    "course_lib.quantize": {"count_quantize_nodes": lambda *a, **k: 12},
    "course_lib.tflite": {"predict": _perfect_logits,
                          "io_quantization": lambda *a, **k: {"input": {"dtype": "int8", "scale": 1.0, "zero_point": 0},
                                                              "output": {"dtype": "int8", "scale": 1.0, "zero_point": 0}}},
    "course_lib.onnx_io": {"export_and_compare": lambda *a, **k: {"max_abs_diff": 0.0}, "onnx_bytes": lambda *a, **k: 10},
    "course_lib.deploy": {"predict_artefact": _perfect_logits, "artefact_latency_ms": lambda *a, **k: 0.01},
    "course_lib.grading.checks": {"compare": lambda *a, **k: (True, "")},
}
for _module, _names in _patches.items():
    _m = importlib.import_module(_module)
    for _name, _function in _names.items():
        setattr(_m, _name, _function)
'''

# Answers that do no work but do not raise, so that every check runs (on the old grader, the patches
# above then earned about a quarter of the points of the old exercises 01-08).
NO_WORK = {
    "01_lightweight_design": "separable_macs = lambda *a: 0\nbest_under_budget = lambda *a: None\n"
                             "make_separable_block = lambda c_in, c_out, stride=1: nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride))",
    "03_pruning_pytorch": "magnitude_prune = lambda w, s: w\nsparsity_by_layer = lambda m: {'total': 0.0}\n"
                          "prune_to_80 = lambda model, loaders: model",
    "04_pruning_keras": "polynomial_sparsity = lambda *a, **k: 0.0\nmask_update_steps = lambda *a: []\n"
                        "prune_keras = lambda model, x, y: model",
    "05_quantization_pytorch": "qparams = lambda x, bits=8, symmetric=False, axis=None: (1.0, 0)\n"
                               "quantize_array = lambda x, s, z, bits=8: np.zeros(np.shape(x), dtype=np.int64)\n"
                               "dequantize_array = lambda q, s, z: np.zeros(np.shape(q))\ncalibrate_int8 = lambda model, loader, example: model",
    "06_quantization_tflite": "input_quantization = lambda b: ('float32', 1.0, 0)\nrun_int8 = lambda b, x: np.zeros((len(x), 10))\n"
                              "convert_full_int8 = lambda model, representative: tflite.convert_keras(model, 'fp32')",
    "09_onnx_roundtrip": "parity_stats = lambda r, c: {}\nfirst_mismatch = lambda *a: None\nmake_exportable = lambda gate: gate",
    "10_edge_deployment": "verify = lambda *a, **k: {}\n"
                          "build_artefact = lambda model, images, folder: Path(folder).mkdir(exist_ok=True) or onnx_io.export_onnx(\n"
                          "    model, torch.as_tensor(images[:32]), Path(folder) / 'm.onnx')",
    "12_capstone": "train_compressed_model = lambda split: capstone.cnn(seed=0).eval()\n"
                   "export_artefact = lambda model, images, folder: Path(folder).mkdir(exist_ok=True) or onnx_io.export_onnx(\n"
                   "    model, torch.as_tensor(images[:32]), Path(folder) / 'm.onnx', external_data=False)",
}
# What those do-nothing answers score on their own (measured with the grader; a patched library must not add a point).
NO_WORK_SCORES = {
    "01_lightweight_design": 1.07, "03_pruning_pytorch": 3.6, "04_pruning_keras": 2.93, "05_quantization_pytorch": 0.0,
    "06_quantization_tflite": 0.75, "09_onnx_roundtrip": 0.57, "10_edge_deployment": 0.0, "12_capstone": 2.0,
}


def _grade_no_work(name: str, extra: str, tmp_path: Path) -> grader.GradeResult:
    """Grade exercise ``name`` answered with :data:`NO_WORK` plus the hostile cell ``extra``."""
    source = SOLUTIONS / f"{name}.ipynb"
    imports = "from pathlib import Path\nimport numpy as np\nimport torch\nfrom torch import nn\nfrom course_lib import capstone, onnx_io, tflite\n"
    nbformat.write(_with_cell(EXERCISES / source.name, imports + NO_WORK[name] + "\n" + extra), tmp_path / "hostile.ipynb")
    result = grader.grade_submission(tmp_path / "hostile.ipynb", source, "hostile")
    assert result.status == "graded", result.reason
    return result


@pytest.mark.parametrize("name", sorted(NO_WORK), ids=str)
def test_patching_the_library_in_the_submission_earns_nothing(name, tmp_path):
    result = _grade_no_work(name, PATCH_LIBRARY, tmp_path)
    detail = [(c.grade_id, c.earned, [(k.name, k.passed, k.message) for k in c.checks]) for c in result.cells]
    assert result.score == NO_WORK_SCORES[name], (result.score, detail)


# Answers that hard-code what the visible checks showed (the reference file's scales and zero points) and do
# the rest properly: hidden checks on files the learner was not shown must keep them from full marks.
HARD_CODED = {
    "06_quantization_tflite": (
        "input_quantization = lambda b: ('int8', 0.003921568859368563, -128)\n"
        "def run_int8(b, x):\n"
        "    from ai_edge_litert.interpreter import Interpreter\n"
        "    interpreter = Interpreter(model_content=b)\n"
        "    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]\n"
        "    interpreter.resize_tensor_input(inp['index'], x.shape)\n"
        "    interpreter.allocate_tensors()\n"
        "    interpreter.set_tensor(inp['index'], np.clip(np.round(x / 0.003921568859368563) - 128, -128, 127).astype(np.int8))\n"
        "    interpreter.invoke()\n"
        "    return (interpreter.get_tensor(out['index']).astype(np.float32) - 7) * 0.012756729498505592\n"
        "convert_full_int8 = lambda model, representative: tflite.convert_keras(model, 'int8', representative=representative)"),
}
# Their scores (measured with the grader): the hidden checks on a second int8 file and a float file cost them points.
HARD_CODED_SCORES = {"06_quantization_tflite": 7.25}


@pytest.mark.parametrize("name", sorted(HARD_CODED), ids=str)
def test_hard_coding_the_visible_answers_does_not_earn_full_marks(name, tmp_path):
    source = SOLUTIONS / f"{name}.ipynb"
    imports = "import numpy as np\nfrom course_lib import tflite\n"
    nbformat.write(_with_cell(EXERCISES / source.name, imports + HARD_CODED[name]), tmp_path / "hard_coded.ipynb")
    result = grader.grade_submission(tmp_path / "hard_coded.ipynb", source, "hard_coded")
    assert result.status == "graded", result.reason
    detail = [(c.grade_id, c.earned, [(k.name, k.passed) for k in c.checks]) for c in result.cells]
    assert result.score == HARD_CODED_SCORES[name] < 10, (result.score, detail)


LEAK = '''
_seen = []

def conv2d_macs(*args, **kwargs):
    _seen.append(repr((args, kwargs)))
    return 0

def topk_accuracy(*args, **kwargs):
    raise ValueError("LEAK " + "; ".join(_seen))
'''


def test_hidden_inputs_do_not_leak_through_later_visible_feedback(tmp_path):
    """A learner's function records the hidden inputs it is called with; a later visible check raises with them."""
    source = SOLUTIONS / "00_measuring_models.ipynb"
    nbformat.write(_with_cell(EXERCISES / source.name, "import numpy as np\n" + LEAK), tmp_path / "leak.ipynb")
    result = grader.grade_submission(tmp_path / "leak.ipynb", source, "leak")
    feedback = grader.feedback_markdown(result)
    assert "10, 10" not in feedback and "LEAK (" not in feedback, feedback
    assert "withheld" in feedback and "ValueError" in feedback  # the built-in exception's name is kept


SUBSTITUTE_SNAPSHOT = '''
import io
import torch
from course_lib.grading import snapshot
from course_lib.models.blocks import DepthwiseSeparable

def _claim_a_right_block(module, example):
    """Hand the grader a correct block's program, whatever the learner's function returned."""
    c_in = torch.as_tensor(example).shape[1]
    right = DepthwiseSeparable(c_in, 32 if c_in == 16 else 40, stride=2 if c_in == 16 else 1).eval()
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(right, (torch.as_tensor(example),)), buffer)
    return buffer.getvalue()

snapshot.KINDS["torch_program"] = _claim_a_right_block
'''


def test_a_snapshot_that_is_not_the_learners_model_earns_nothing(tmp_path):
    """The red team's attack: replace the snapshot code to hand over a correct model; the live object disagrees."""
    name = "01_lightweight_design"
    result = _grade_no_work(name, SUBSTITUTE_SNAPSHOT, tmp_path)
    # no point more than the do-nothing answer (fewer: the checks after the refused snapshot do not run)
    assert result.score <= NO_WORK_SCORES[name], [(c.grade_id, [(k.name, k.passed, k.message) for k in c.checks]) for c in result.cells]
    messages = [k.message for c in result.cells for k in c.checks]
    assert any("does not compute what your model computes" in m for m in messages), messages


def test_a_small_but_slow_onnx_file_misses_the_latency_line(tmp_path):
    """Exercise 10: ORT dynamic quantization fits the size line but runs several times slower than fp32 (lecture 09)."""
    slow = ("build_artefact = lambda model, images, folder: Path(folder).mkdir(exist_ok=True) or onnx_io.ort_quantize_dynamic(\n"
            "    onnx_io.export_onnx(model, torch.as_tensor(images[:32]), Path(folder) / 'fp32.onnx'), Path(folder) / 'dyn.onnx')")
    result = _grade_no_work("10_edge_deployment", slow, tmp_path)
    checks = {k.name: k.passed for c in result.cells for k in c.checks}
    assert checks["an ONNX file of at most 100,000 bytes, external data included, that runs"]
    assert not checks["within the size budget and at most 1.25x the latency of the grader's fp32 file"], checks


# Exercise 05's qparams answered by looking up the visible checks' answers: the hidden inputs (symmetric,
# per channel, other tensors) must keep it far from full marks (it may earn only the visible checks' share).
HARD_CODED_QPARAMS = '''
def qparams(x, bits=8, symmetric=False, axis=None):
    x = np.asarray(x)
    if axis is not None:
        return np.ones(x.shape[axis]), np.zeros(x.shape[axis], dtype=np.int64)
    if symmetric:
        return 1.0, 0
    return (4 / 255, -64) if bits == 8 else (0.1, -8)
'''


def test_hard_coded_visible_answers_do_not_earn_the_hidden_points(tmp_path):
    result = _grade_no_work("05_quantization_pytorch", HARD_CODED_QPARAMS, tmp_path)
    qparams_cell = result.cells[0]
    visible = 4
    assert qparams_cell.earned <= round(qparams_cell.points * visible / len(qparams_cell.checks), 2) < qparams_cell.points / 2


# --- plausible wrong answers: the misconception a hidden check is there to catch loses points -----

WRONG_BUT_PLAUSIBLE = {
    # counts weight_orig on a pruned layer (the review's finding on the old reference answer)
    "00_measuring_models": ("test_count_params", "a globally pruned CNN: non-zeros of the weights it uses",
                            "def count_params(model, nonzero=False):\n"
                            "    return int(sum(int(torch.count_nonzero(p)) if nonzero else p.numel() for p in model.parameters()))\n"),
    # the stride on the 1×1 convolution: same output shape, 4× the depthwise MACs
    "01_lightweight_design": ("test_make_separable_block", "MACs of a stride-2 block: the stride belongs on the depthwise convolution",
                              "def make_separable_block(c_in, c_out, stride=1):\n"
                              "    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),\n"
                              "                         nn.ReLU(), nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())\n"),
}


@pytest.mark.parametrize("name", sorted(WRONG_BUT_PLAUSIBLE), ids=str)
def test_plausible_wrong_answers_lose_points_in_their_cell(name, tmp_path):
    grade_id, hidden_check, code = WRONG_BUT_PLAUSIBLE[name]
    source = SOLUTIONS / f"{name}.ipynb"
    assert hidden_check in source.read_text(encoding="utf-8")  # the check this answer is meant to fail still exists
    nbformat.write(_with_cell(EXERCISES / source.name, "import torch\nfrom torch import nn\n" + code), tmp_path / "wrong.ipynb")
    result = grader.grade_submission(tmp_path / "wrong.ipynb", source, "wrong")
    assert result.status == "graded", result.reason
    cell = next(c for c in result.cells if c.grade_id == grade_id)
    failed = [k.name for k in cell.checks if not k.passed]
    assert 0 < cell.earned < cell.points and failed, (cell.earned, [(k.name, k.passed, k.message) for k in cell.checks])
