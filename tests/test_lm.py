"""course_lib.lm: the stdlib corpus, the tiny transformer and its KV cache, bits per byte, generation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import lm

SMALL = lm.LMConfig(d_model=32, n_layers=2, n_heads=4, context=24)


def _fake_stdlib(tmp_path: Path, files: int = 40) -> Path:
    for i in range(files):
        (tmp_path / f"mod{i:02d}.py").write_bytes(f"# module {i}\n".encode() * 50)
    (tmp_path / "notes.txt").write_text("not python")
    return tmp_path


def test_splits_are_by_file_deterministic_and_within_budget(tmp_path):
    root = _fake_stdlib(tmp_path)
    a = lm.corpus_splits(bytes_per_file=300, stdlib_dir=root)
    b = lm.corpus_splits(bytes_per_file=300, stdlib_dir=root)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["test"].size == 4 * 300 and a["val"].size == 4 * 300 and a["train"].size == 32 * 300
    assert a["test"].tobytes().startswith(b"# module 0\n") and a["val"].tobytes().startswith(b"# module 1\n")


def test_the_real_stdlib_corpus_has_three_nonempty_splits():
    splits = lm.corpus_splits(bytes_per_file=1000)
    info = lm.corpus_info(splits)
    assert info["python"].count(".") == 2
    assert info["train_bytes"] > 5 * info["test_bytes"] > 0 and info["val_bytes"] > 0
    assert b"import" in splits["train"].tobytes()


def test_bad_corpus_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="standard library"):
        lm.stdlib_files(tmp_path)
    with pytest.raises(ValueError, match="bytes_per_file"):
        lm.corpus_splits(bytes_per_file=10)
    with pytest.raises(ValueError, match="no window"):
        lm.eval_windows(np.zeros(10, dtype=np.uint8), context=16)


def test_windows_are_non_overlapping_and_evenly_spaced():
    data = np.arange(250, dtype=np.uint8)
    w = lm.eval_windows(data, context=9)
    assert w.shape == (24, 10) and w[1, 0] == 10
    assert lm.eval_windows(data, context=9, max_windows=3)[:, 0].tolist() == [0, 120, 230]


def test_params_per_block_formula_matches_the_model():
    model = lm.TinyLM(SMALL)
    block = model.blocks[0]
    formula = lm.params_per_block(SMALL)
    assert sum(formula.values()) == sum(p.numel() for p in block.parameters())
    assert formula["fc1"] == sum(p.numel() for p in block.fc1.parameters())


def test_kv_cache_gives_the_same_logits_and_its_size_follows_the_formula():
    torch.manual_seed(0)
    model = lm.TinyLM(SMALL).eval()
    ids = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        full = model(ids)
        logits, k, v = model.step(ids[:, :6])
        for t in range(6, 10):
            step_logits, k, v = model.step(ids[:, t: t + 1], k, v)
            torch.testing.assert_close(step_logits[:, 0], full[:, t], atol=1e-5, rtol=1e-4)
        chunk, _, _ = model.step(ids[:, 6:], *model.step(ids[:, :6])[1:])  # several new tokens at once: shifted causal mask
    torch.testing.assert_close(chunk, full[:, 6:], atol=1e-5, rtol=1e-4)
    assert k.shape == (2, 2, 4, 10, 8)
    assert k.nbytes + v.nbytes == lm.kv_cache_bytes(SMALL, tokens=10, batch=2)


def test_generation_with_and_without_cache_agree():
    torch.manual_seed(1)
    model = lm.TinyLM(SMALL).eval()
    cached, cache = lm.generate(model, b"def f", 12)
    plain, _ = lm.generate(model, b"def f", 12, use_cache=False)
    assert cached == plain and len(cached) == 17
    assert cache["bytes"] == lm.kv_cache_bytes(SMALL, tokens=17)
    sampled, _ = lm.generate(model, b"def f", 12, temperature=1.0, seed=3)
    assert sampled == lm.generate(model, b"def f", 12, temperature=1.0, seed=3)[0]


def test_model_and_generation_reject_bad_input():
    model = lm.TinyLM(SMALL)
    with pytest.raises(ValueError, match="exceed the context"):
        model(torch.zeros(1, 25, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="exceed the context"):
        lm.generate(model, b"abc", 30)
    with pytest.raises(ValueError, match="at least one byte"):
        lm.generate(model, b"", 3)
    with pytest.raises(ValueError, match="divisible"):
        lm.LMConfig(d_model=30, n_heads=4)


def test_bits_per_byte_of_a_uniform_model_is_eight_and_paired_difference():
    windows = torch.randint(0, 256, (20, 9))
    uniform = lm.bits_per_byte(lambda x: torch.zeros(*x.shape, 256), windows)
    assert uniform.bpb == pytest.approx(8.0) and uniform.low == pytest.approx(8.0)
    peaked = lm.bits_per_byte(lambda x: torch.nn.functional.one_hot(x, 256).float() * 3, windows)
    same = lm.paired_difference(uniform, uniform)
    assert same["delta"] == 0 and same["verdict"] == "no measurable difference"
    assert lm.paired_difference(uniform, peaked)["delta"] != 0


def test_bootstrap_interval_brackets_the_mean():
    values = np.random.default_rng(0).normal(2.0, 0.5, size=400)
    low, high = lm.bootstrap_ci(values)
    assert low < values.mean() < high and high - low < 0.2
    with pytest.raises(ValueError, match="two values"):
        lm.bootstrap_ci(np.array([1.0]))


def test_a_few_training_steps_lower_the_loss_and_checkpoint_round_trip(tmp_path):
    model = lm.TinyLM(SMALL)
    data = np.frombuffer(b"abcabcabd" * 200, dtype=np.uint8)
    losses = lm.train_lm(model, data, steps=30, batch=8, log_every=0)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0 and losses[0] == pytest.approx(math.log2(256), abs=0.5)
    path = lm.save_checkpoint(model, tmp_path / "m.pt", {"note": "test"})
    loaded, meta = lm.load_checkpoint(path)
    assert meta == {"note": "test"} and loaded.cfg == SMALL
    ids = torch.randint(0, 256, (1, 8))
    torch.testing.assert_close(loaded(ids), model.half().float()(ids))
    with pytest.raises(FileNotFoundError, match="lm-train"):
        lm.load_checkpoint(tmp_path / "missing.pt")


def test_time_calls_gives_round_paired_timings_and_a_speedup_near_the_true_ratio():
    import time as _time

    from course_lib import runtimes

    timed = lm.time_calls({"fast": lambda: _time.sleep(0.001), "slow": lambda: _time.sleep(0.003)}, rounds=3, repeats=3, warmup=0)
    assert len(timed["fast"].round_medians_ms) == 3 and timed["slow"].median_ms > timed["fast"].median_ms
    ratio = runtimes.speedup(timed["slow"], timed["fast"])
    assert 1.5 < ratio.estimate < 4.0
    with pytest.raises(ValueError, match="rounds"):
        lm.time_calls({"a": lambda: None}, rounds=1)
    with pytest.raises(ValueError, match="at least one"):
        lm.time_calls({})


def test_cpu_facts_has_the_expected_keys():
    facts = lm.cpu_facts()
    assert set(facts) == {"model", "flags", "caches"} and isinstance(facts["flags"], list)


def test_onnx_prefill_and_decode_match_pytorch_and_int4_file_is_smaller(tmp_path):
    torch.manual_seed(0)
    cfg = lm.LMConfig(d_model=64, n_layers=1, n_heads=2, context=16)
    model = lm.TinyLM(cfg).eval()
    paths = lm.export_onnx(model, tmp_path)
    int4 = {p: lm.onnx_matmul_nbits(path, tmp_path / f"{p}_int4.onnx", block_size=32) for p, path in paths.items()}
    fp32, quantized = lm.OrtLM(paths["prefill"], paths["decode"]), lm.OrtLM(int4["prefill"], int4["decode"])
    ids = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        np.testing.assert_allclose(fp32(ids), model(ids).numpy(), atol=1e-4)
        k, v = lm.zero_cache(cfg, 5)
        reference = model.step(torch.tensor([[32]]), k, v)[0].numpy()
    np.testing.assert_allclose(fp32.decode_session.run(None, fp32.decode_feed(5))[0], reference, atol=1e-4)
    assert quantized.nbytes < fp32.nbytes / 2
    calls = fp32.timing_calls(prompt_tokens=8, past_tokens=4)
    rows = lm.time_prefill_decode({"fp32": calls}, prompt_tokens=8, rounds=2, repeats=2, warmup=0)
    assert {r["phase"] for r in rows} == {"prefill", "decode"} and all(r["tokens_per_s"] > 0 for r in rows)


def test_pytorch_timing_calls_batched_prefill_runs_the_batch():
    model = lm.TinyLM(SMALL).eval()
    calls = lm.pytorch_timing_calls(model, prompt_tokens=8, past_tokens=4, batch=3)
    assert calls["prefill"]().shape[0] == 3 and calls["decode"]()[0].shape[0] == 1
    with pytest.raises(ValueError, match="batch"):
        lm.pytorch_timing_calls(model, prompt_tokens=8, past_tokens=4, batch=0)
