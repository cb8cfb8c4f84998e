import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from course_lib import measure, models

# --- agreement with independent counts (published figures for torchvision models) ---------------

@pytest.mark.parametrize(
    "name, gmacs, mparams",
    [("resnet18", 1.82, 11.69), ("mobilenet_v2", 0.30, 3.50)],
)
def test_macs_and_params_match_published_figures(name, gmacs, mparams):
    model = getattr(torchvision.models, name)(weights=None)
    macs = measure.count_macs(model, torch.zeros(1, 3, 224, 224))
    params = measure.count_parameters(model)
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.02)
    assert params / 1e6 == pytest.approx(mparams, rel=0.02)


def test_macs_by_formula_for_the_small_cnn():
    model = models.small_cnn()
    table = measure.mac_table(model, torch.zeros(1, 1, 8, 8))
    by_layer = dict(zip(table["layer"], table["macs"]))
    # conv: H_out·W_out·C_out·C_in·k·k ; linear: in·out
    assert by_layer == {
        "features.0": 8 * 8 * 32 * 1 * 9,
        "features.2": 8 * 8 * 64 * 32 * 9,
        "classifier.1": 1024 * 32,
        "classifier.3": 32 * 10,
    }
    assert measure.count_macs(model, torch.zeros(1, 1, 8, 8)) == sum(by_layer.values())
    assert measure.count_macs(model, torch.zeros(4, 1, 8, 8)) == 4 * sum(by_layer.values())


def test_depthwise_conv_macs_use_groups():
    depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    assert measure.count_macs(depthwise, torch.zeros(1, 32, 10, 10)) == 10 * 10 * 32 * 9


def test_wrong_input_shape_is_a_clear_error():
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match=r"input of shape \(1, 1, 224, 224\).*expects N × 3 × H × W"):
        measure.count_macs(model, torch.zeros(1, 1, 224, 224))
    mlp = nn.Sequential(nn.Linear(10, 5))
    with pytest.raises(ValueError, match="expects N × 10"):
        measure.measure_latency(mlp, torch.zeros(2, 7), repeats=1)


# --- parameters ---------------------------------------------------------------------------------

def test_count_parameters_total_and_nonzero_after_pruning():
    import torch.nn.utils.prune as prune

    layer = nn.Linear(10, 10)
    assert measure.count_parameters(layer) == 110 == sum(p.numel() for p in layer.parameters())
    prune.l1_unstructured(layer, "weight", amount=0.3)
    # weight_orig is the parameter now; the count must still see 110 weights, 30 of them zero
    assert measure.count_parameters(layer) == 110
    assert measure.count_parameters(layer, nonzero=True) == 110 - 30
    table = measure.parameter_table(layer)
    # pruning re-registers the weight as weight_orig, after the bias: compare by name
    assert dict(zip(table["name"], table["nonzero"])) == {"weight": 70, "bias": 10}
    with pytest.raises(TypeError, match="torch.nn.Module"):
        measure.count_parameters("not a model")


# --- sizes --------------------------------------------------------------------------------------

def test_file_size_raw_and_gzip(tmp_path):
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(bytes(100_000))
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(100_000))
    assert measure.file_size(zeros).bytes == 100_000
    assert measure.file_size(zeros).gzip_bytes < 1_000  # zeros compress away
    assert measure.file_size(noise).gzip_bytes > 99_000  # noise does not
    both = measure.file_size(zeros, noise)
    assert both.bytes == 200_000
    assert measure.file_size(tmp_path).bytes == 200_000  # a folder counts all its files
    assert measure.file_size(zeros).gzip_ratio > 100


def test_file_size_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        measure.file_size(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="at least one path"):
        measure.file_size()


def test_state_dict_size_is_about_four_bytes_per_parameter(tmp_path):
    model = models.small_cnn()
    size = measure.state_dict_size(model)
    params = measure.count_parameters(model)
    assert params * 4 < size.bytes < params * 4 + 10_000  # fp32 data plus a small header
    path = tmp_path / "cnn.pth"
    torch.save(model.state_dict(), path)
    # the zip inside a .pth names its folder after the file, so on disk it differs by a few bytes
    assert abs(measure.file_size(path).bytes - size.bytes) < 200


def test_gzip_size_is_reproducible(monkeypatch):
    """gzip writes the time into its header unless mtime=0: two different clocks must give the same bytes."""
    import gzip

    data = bytes(range(256)) * 40
    assert measure.gzip_size(data) == len(gzip.compress(data, compresslevel=9, mtime=0))
    compressed = []
    real_compress = gzip.compress

    def spy(payload, compresslevel=9, *, mtime=None):
        out = real_compress(payload, compresslevel, mtime=mtime)
        compressed.append(out)
        return out

    monkeypatch.setattr(gzip, "compress", spy)
    monkeypatch.setattr("time.time", lambda: 1_000_000.0)
    measure.gzip_size(data)
    monkeypatch.setattr("time.time", lambda: 2_000_000.0)
    measure.gzip_size(data)
    assert compressed[0] == compressed[1]  # without mtime=0 the header's timestamps would differ


# --- latency and memory -------------------------------------------------------------------------

def test_latency_statistics_are_consistent():
    model = models.small_cnn()
    torch.set_num_threads(2)  # whatever the suite's cap: the point is that timing on 1 thread restores it
    stats = measure.measure_latency(model, torch.zeros(4, 1, 8, 8), warmup=2, repeats=20, threads=1)
    assert stats.repeats == 20 == len(stats.samples_ms)
    assert stats.threads == 1 and stats.batch_size == 4
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.max_ms
    assert "samples_ms" not in stats.summary()
    assert torch.get_num_threads() == 2  # restored


def test_latency_of_a_plain_callable():
    calls = []
    stats = measure.measure_latency(lambda x: calls.append(x), 5, warmup=3, repeats=7)
    assert len(calls) == 10 and stats.batch_size is None


@pytest.mark.parametrize(
    "kwargs, message",
    [({"repeats": -3}, "repeats must be a positive integer, got -3"),
     ({"repeats": 0}, "repeats must be a positive integer"),
     ({"warmup": -1}, "warmup must be a non-negative integer"),
     ({"threads": 0}, "threads must be a positive integer"),
     ({"repeats": 2.5}, "repeats must be a positive integer")],
)
def test_latency_rejects_bad_counts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure.measure_latency(models.small_cnn(), torch.zeros(1, 1, 8, 8), **kwargs)


def test_peak_memory_sees_a_large_allocation():
    """A call that holds 64 MB at its peak must show at least most of it (and a small one must not)."""
    def allocate_and_free(megabytes):
        block = np.ones(megabytes * 1024 * 1024 // 8)  # written, so the pages are resident
        return float(block[-1])

    big = measure.peak_memory(allocate_and_free, 64)
    small = measure.peak_memory(allocate_and_free, 1)
    assert big.peak_bytes >= 48 * 1024 * 1024, big
    assert small.peak_bytes < 32 * 1024 * 1024, small
    assert big.rss_before_bytes > 0


# --- accuracy, agreement, masks -----------------------------------------------------------------

def test_topk_accuracy():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 1])  # row 2 ties 0.1/0.1: the lower index (1) wins, so label 2 is only in the top 3
    result = measure.topk_accuracy(logits, labels, k=(1, 2, 3))
    assert result == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3), "top3": 1.0}
    assert measure.topk_accuracy(torch.tensor(logits), torch.tensor(labels), k=1) == {"top1": pytest.approx(1 / 3)}


def test_topk_accuracy_errors():
    with pytest.raises(ValueError, match="k=5 is out of range for 3 classes"):
        measure.topk_accuracy(np.zeros((2, 3)), np.zeros(2, int), k=5)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        measure.topk_accuracy(np.zeros((2, 3)), np.zeros(3, int), k=1)
    with pytest.raises(ValueError, match="N × classes"):
        measure.topk_accuracy(np.zeros(3), np.zeros(3, int), k=1)


def test_agreement_metrics():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    same = measure.agreement(a, a.copy())
    assert same.top1_agreement == 1.0 and same.cosine_similarity == pytest.approx(1.0)
    assert same.euclidean_distance == 0.0 and same.max_abs_diff == 0.0
    b = np.array([[0.0, 1.0], [0.0, 2.0]])  # first row orthogonal and disagreeing, second identical
    diff = measure.agreement(a, b)
    assert diff.top1_agreement == 0.5
    assert diff.cosine_similarity == pytest.approx(0.5)
    assert diff.euclidean_distance == pytest.approx(math.sqrt(2) / 2)
    assert diff.max_abs_diff == 1.0 and diff.samples == 2
    with pytest.raises(ValueError, match="same shape"):
        measure.agreement(np.zeros((2, 3)), np.zeros((3, 3)))


def test_hamming_distance():
    a = np.array([[1, 0, 1], [0, 0, 1]])
    b = np.array([[1, 1, 1], [0, 1, 1]])
    assert measure.hamming_distance(a, b) == 2
    assert measure.hamming_distance(a, b, normalized=True) == pytest.approx(2 / 6)
    assert measure.hamming_distance(torch.tensor(a, dtype=torch.bool), torch.tensor(a)) == 0
    with pytest.raises(ValueError, match="binary"):
        measure.hamming_distance(a * 2, b)
    with pytest.raises(ValueError, match="same shape"):
        measure.hamming_distance(a, b.T)


def test_latency_in_a_fresh_process_uses_the_requested_threads():
    stats = measure.measure_latency_in_subprocess(models.small_cnn(), torch.zeros(1, 1, 8, 8), threads=1, repeats=5)
    assert stats.threads == 1 and stats.repeats == 5 and stats.median_ms > 0


def test_latency_in_subprocess_explains_an_unpicklable_model():
    class LocalModel(nn.Module):  # defined inside a function: the child cannot import it
        def forward(self, x):
            return x * 2

    with pytest.raises(TypeError, match="class must be importable"):
        measure.measure_latency_in_subprocess(LocalModel(), torch.zeros(1, 3), repeats=1)


def test_cpu_int8_features_reads_x86_and_arm_flags(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert measure.cpu_int8_features(x86) == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False,
                                              "amx_int8": False, "asimddp": False, "i8mm": False}
    arm = tmp_path / "arm"
    arm.write_text("Features\t: fp asimd asimddp\n")
    assert measure.cpu_int8_features(arm)["asimddp"] and not measure.cpu_int8_features(arm)["avx2"]
    assert not any(measure.cpu_int8_features(tmp_path / "missing").values())


def test_saved_size_counts_a_views_whole_storage():
    big = torch.zeros(10_000)
    assert measure.saved_size(big[:10]) > 10 * measure.saved_size(big[:10].clone())
