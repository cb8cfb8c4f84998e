"""A small byte-level language model that trains offline on 2 CPU cores: data, model, training, evaluation, generation.

The corpus is the Python standard library's own source code, read at run time
from the interpreter's installation (``sysconfig.get_paths()["stdlib"]``):
every install has it, nothing is downloaded. A fixed, sorted file list and a
fixed byte budget per file make it deterministic for one Python version; the
stdlib differs between 3.11, 3.12 and 3.13, so results record the version
(:func:`corpus_info`) and tests assert only version-independent properties.

Tokens are bytes (a vocabulary of 256): no tokenizer to ship, and the quality
measure is **bits per byte** (bpb), the cross-entropy in base 2 per byte of
held-out text — lower is better; 8 bpb means no better than uniform.

The model is a pre-LayerNorm decoder-only transformer (GPT-2 shape) with a
key/value cache for generation: each new token attends to the stored keys and
values of the tokens before it instead of recomputing them, which turns
decoding into a loop of batch-1 matrix-vector products — the memory-bound
workload that weight-only quantization speeds up on large models.
"""

from __future__ import annotations

import math
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import runtimes

#: Bytes taken from the start of each stdlib file: many modules, a little of each.
BYTES_PER_FILE = 12_000
#: Every ``SPLIT_EVERY``-th file (by sorted index) is validation (offset 1) or test (offset 0): held-out modules.
SPLIT_EVERY = 10
#: The cached checkpoint that ``python -m course_lib lm-train`` writes (float16 weights, about 1.7 MB).
CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "tiny_lm.pt"


# --- data ---------------------------------------------------------------------------------------


def stdlib_files(stdlib_dir: str | Path | None = None) -> list[Path]:
    """The top-level ``*.py`` files of the standard library, sorted by name (the corpus's fixed order)."""
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if len(files) < 3 * SPLIT_EVERY:
        raise FileNotFoundError(f"found only {len(files)} .py files in {root}: is this a Python standard library folder?")
    return files


def corpus_splits(bytes_per_file: int = BYTES_PER_FILE, stdlib_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Train / validation / test byte arrays (uint8), split by file so the test modules are never trained on.

    File ``i`` (sorted) goes to test if ``i % 10 == 0``, to validation if
    ``i % 10 == 1``, else to train; each contributes its first
    ``bytes_per_file`` bytes. Splitting by file rather than by position
    keeps near-duplicate text (a module's own repeated idioms) out of the
    held-out sets.
    """
    if not isinstance(bytes_per_file, int) or bytes_per_file < 256:
        raise ValueError(f"bytes_per_file must be an integer >= 256, got {bytes_per_file!r}")
    parts: dict[str, list[bytes]] = {"train": [], "val": [], "test": []}
    for i, path in enumerate(stdlib_files(stdlib_dir)):
        split = "test" if i % SPLIT_EVERY == 0 else "val" if i % SPLIT_EVERY == 1 else "train"
        parts[split].append(path.read_bytes()[:bytes_per_file])
    return {k: np.frombuffer(b"".join(v), dtype=np.uint8).copy() for k, v in parts.items()}


def corpus_info(splits: dict[str, np.ndarray]) -> dict[str, Any]:
    """What the corpus was: Python version (the stdlib differs between versions) and bytes per split."""
    return {"python": sys.version.split()[0], **{f"{k}_bytes": int(v.size) for k, v in splits.items()}}


def eval_windows(data: np.ndarray, context: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows of ``context + 1`` bytes (inputs and next-byte targets), as a (N, context + 1) int64 tensor.

    Windows are the unit of the bootstrap: bytes inside one window are not
    independent, windows far apart nearly are. ``max_windows`` takes evenly
    spaced windows across the whole split, not its first modules only.
    """
    n = (len(data) - 1) // (context + 1)
    if n < 1:
        raise ValueError(f"a split of {len(data)} bytes has no window of {context + 1} bytes")
    idx = np.arange(n) if max_windows is None or max_windows >= n else np.linspace(0, n - 1, max_windows).round().astype(int)
    starts = idx * (context + 1)
    return torch.from_numpy(np.stack([data[s: s + context + 1] for s in starts]).astype(np.int64))


# --- model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LMConfig:
    """Shape of the model. Defaults: 4 blocks, d_model 128, 4 heads, context 128 (about 0.85 M parameters)."""

    vocab: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    context: int = 128
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab", "d_model", "n_layers", "n_heads", "context", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LMConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)). Four Linear layers: qkv, proj, fc1, fc2."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.mlp_ratio * d)
        self.fc2 = nn.Linear(cfg.mlp_ratio * d, d)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor | None = None,
                past_v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the new hidden states and this block's keys and values (past and new, concatenated)."""
        b, t, d = x.shape
        h, hd = self.cfg.n_heads, self.cfg.head_dim
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.reshape(b, t, h, hd).transpose(1, 2) for z in (q, k, v))
        if past_k is not None and past_v is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
            # One new token may see every stored one; several new tokens need a causal mask shifted by the past.
            mask = None if t == 1 else torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return x, k, v


class TinyLM(nn.Module):
    """Byte-level decoder-only transformer: token + learned position embeddings, blocks, final LN, output Linear."""

    def __init__(self, cfg: LMConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LMConfig()
        self.tok = nn.Embedding(self.cfg.vocab, self.cfg.d_model)
        self.pos = nn.Embedding(self.cfg.context, self.cfg.d_model)
        self.blocks = nn.ModuleList(Block(self.cfg) for _ in range(self.cfg.n_layers))
        self.ln_f = nn.LayerNorm(self.cfg.d_model)
        self.head = nn.Linear(self.cfg.d_model, self.cfg.vocab)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def _check(self, idx: torch.Tensor, past: int) -> None:
        if idx.dtype not in (torch.int64, torch.int32) or idx.dim() != 2:
            raise ValueError(f"expected byte ids as a (batch, time) int64 tensor, got {tuple(idx.shape)} {idx.dtype}")
        if past + idx.shape[1] > self.cfg.context:
            raise ValueError(f"{past} cached + {idx.shape[1]} new tokens exceed the context of {self.cfg.context}")

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (batch, time, vocab) for every position of ``idx`` (training, evaluation, prefill)."""
        logits, _, _ = self.step(idx)
        return logits

    def step(self, idx: torch.Tensor, past_k: torch.Tensor | None = None,
             past_v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits for ``idx`` given a KV cache; returns ``(logits, keys, values)`` with the cache grown by ``idx``.

        The cache holds every block's keys and values stacked:
        ``(n_layers, batch, n_heads, cached_tokens, head_dim)`` each.
        """
        past = 0 if past_k is None else past_k.shape[3]
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            self._check(idx, past)
        positions = torch.arange(past, past + idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(positions)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, None if past_k is None else past_k[i], None if past_v is None else past_v[i])
            keys.append(k)
            values.append(v)
        return self.head(self.ln_f(x)), torch.stack(keys), torch.stack(values)


class DecodeStep(nn.Module):
    """``forward(idx, past_k, past_v)`` = ``model.step``: the exportable decode step (cache in, logits and cache out)."""

    def __init__(self, model: TinyLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.step(idx, past_k, past_v)


def params_per_block(cfg: LMConfig) -> dict[str, int]:
    """Parameters of one block by layer, from the formula (weights + biases): attention 4d² + 4d, MLP 2·r·d² + (r+1)·d, LNs 4d."""
    d, r = cfg.d_model, cfg.mlp_ratio
    return {"qkv": 3 * d * d + 3 * d, "proj": d * d + d, "fc1": r * d * d + r * d, "fc2": r * d * d + d, "layernorms": 4 * d}


def kv_cache_bytes(cfg: LMConfig, tokens: int, batch: int = 1, bytes_per_value: int = 4) -> int:
    """KV cache size: 2 (keys and values) · layers · batch · tokens · d_model · bytes per value."""
    if tokens < 0 or batch < 1 or bytes_per_value < 1:
        raise ValueError("tokens must be >= 0, batch and bytes_per_value >= 1")
    return 2 * cfg.n_layers * batch * tokens * cfg.d_model * bytes_per_value


# --- training -----------------------------------------------------------------------------------


def random_batch(data: np.ndarray, batch: int, context: int, generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random windows: inputs (B, T) and the next bytes as targets (B, T)."""
    starts = generator.integers(0, len(data) - context - 1, size=batch)
    chunk = torch.from_numpy(np.stack([data[s: s + context + 1] for s in starts]).astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def train_lm(model: TinyLM, train: np.ndarray, steps: int = 600, batch: int = 32, lr: float = 3e-3,
             seed: int = 0, log_every: int = 100, log: Callable[[str], None] = print) -> list[float]:
    """AdamW with a linear warm-up and cosine decay; returns the training loss (bits per byte) at each step.

    A short warm-up keeps the first large updates from blowing up the
    randomly initialized attention; cosine decay ends at a tenth of ``lr``.
    """
    if steps < 1 or batch < 1:
        raise ValueError("steps and batch must be >= 1")
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    model.train()
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        x, y = random_batch(train, batch, model.cfg.context, gen)
        loss = F.cross_entropy(model(x).reshape(-1, model.cfg.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item() / math.log(2))
        if log_every and (step + 1) % log_every == 0:
            log(f"step {step + 1}/{steps}: train {np.mean(losses[-log_every:]):.3f} bpb ({time.perf_counter() - start:.0f} s)")
    model.eval()
    return losses


def save_checkpoint(model: TinyLM, path: str | Path, meta: dict[str, Any]) -> Path:
    """Save the weights as float16 (half the bytes; the model runs in float32 from them) with config and metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"config": asdict(model.cfg), "state_dict": state, "meta": meta}, path)
    return path


def load_checkpoint(path: str | Path = CHECKPOINT) -> tuple[TinyLM, dict[str, Any]]:
    """The model (float32, eval mode) and its metadata (Python version, steps, seconds) from :func:`save_checkpoint`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: build it with `python -m course_lib lm-train` "
                                "(300 steps; it took 59 min on a heavily loaded 2-core machine)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = TinyLM(LMConfig(**blob["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return model.eval(), blob["meta"]


def build_checkpoint(path: str | Path = CHECKPOINT, steps: int = 300, batch: int = 16, threads: int = 2, seed: int = 0) -> Path:
    """What ``python -m course_lib lm-train`` runs: train the default model on the corpus and save it."""
    torch.set_num_threads(threads)
    splits = corpus_splits()
    model = TinyLM(LMConfig())
    start = time.perf_counter()
    losses = train_lm(model, splits["train"], steps=steps, batch=batch, seed=seed)
    seconds = time.perf_counter() - start
    val = bits_per_byte(model, eval_windows(splits["val"], model.cfg.context, max_windows=256))
    meta = {**corpus_info(splits), "steps": steps, "batch": batch, "seed": seed, "threads": threads, "train_seconds": round(seconds, 1),
            "final_train_bpb": round(float(np.mean(losses[-50:])), 4), "val_bpb": round(val.bpb, 4), "torch": str(torch.__version__)}
    print(f"trained {steps} steps in {seconds:.0f} s; validation {val.bpb:.3f} bpb; saved {path}")
    return save_checkpoint(model, path, meta)


# --- evaluation ---------------------------------------------------------------------------------


@dataclass
class BPB:
    """Bits per byte with a bootstrap interval over evaluation windows; ``per_window`` kept for paired comparisons."""

    bpb: float
    low: float
    high: float
    windows: int
    per_window: np.ndarray

    def __str__(self) -> str:
        return f"{self.bpb:.3f} bpb (95% CI {self.low:.3f}–{self.high:.3f}, {self.windows} windows)"


def bootstrap_ci(values: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling the windows with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ValueError("need at least two values to bootstrap")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


@torch.inference_mode()
def window_bits(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], windows: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Mean bits per byte of each window (cross-entropy of every next byte, in base 2). ``model`` maps ids to logits."""
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"expected windows of shape (N, context + 1), got {tuple(windows.shape)}")
    out = []
    for i in range(0, len(windows), batch):
        chunk = windows[i: i + batch]
        logits = torch.as_tensor(model(chunk[:, :-1])).float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="none")
        out.append((nll.reshape(chunk.shape[0], -1).mean(dim=1) / math.log(2)).numpy())
    return np.concatenate(out)


def bits_per_byte(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], windows: torch.Tensor, seed: int = 0) -> BPB:
    """Bits per byte on ``windows`` with a 95 % bootstrap interval over windows."""
    per = window_bits(model, windows)
    low, high = bootstrap_ci(per, seed=seed)
    return BPB(float(per.mean()), low, high, len(per), per)


def paired_difference(a: BPB, b: BPB, seed: int = 0) -> dict[str, float | str]:
    """``b - a`` in bits per byte on the same windows, with a paired bootstrap interval and a verdict.

    Pairing (the same windows for both) removes the variation between
    windows, which is much larger than the difference between two close
    models; the verdict is "no measurable difference" when the interval
    contains 0.
    """
    if a.windows != b.windows:
        raise ValueError(f"paired comparison needs the same windows, got {a.windows} and {b.windows}")
    diff = b.per_window - a.per_window
    low, high = bootstrap_ci(diff, seed=seed)
    verdict = "no measurable difference" if low <= 0 <= high else ("higher (worse)" if low > 0 else "lower (better)")
    return {"delta": float(diff.mean()), "low": low, "high": high, "verdict": verdict}


# --- generation ---------------------------------------------------------------------------------


@torch.inference_mode()
def generate(model: TinyLM, prompt: bytes, new_tokens: int, temperature: float = 0.0, seed: int = 0,
             use_cache: bool = True) -> tuple[bytes, dict[str, Any]]:
    """Continue ``prompt`` by ``new_tokens`` bytes; greedy at temperature 0, else sampled. Returns the bytes and the final cache.

    With ``use_cache`` the prompt is run once (prefill) and each new byte
    costs one step over one token; without it every step reruns the whole
    sequence — the same output, much more work.
    """
    if not prompt:
        raise ValueError("the prompt must hold at least one byte")
    if len(prompt) + new_tokens > model.cfg.context:
        raise ValueError(f"prompt ({len(prompt)}) + new_tokens ({new_tokens}) exceed the context of {model.cfg.context}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([list(prompt)], dtype=torch.int64)
    out = list(prompt)
    k = v = None
    logits, k, v = model.step(ids) if use_cache else (model(ids), None, None)
    for _ in range(new_tokens):
        last = logits[0, -1]
        nxt = int(last.argmax()) if temperature == 0 else int(torch.multinomial(F.softmax(last / temperature, -1), 1, generator=gen))
        out.append(nxt)
        if use_cache:
            logits, k, v = model.step(torch.tensor([[nxt]]), k, v)
        else:
            logits = model(torch.tensor([out]))
    cache = {"keys": k, "values": v, "bytes": 0 if k is None or v is None else k.nbytes + v.nbytes}
    return bytes(out), cache


# --- runtimes: ONNX Runtime (fp32 and MatMulNBits 4-bit), timing prefill and decode ---------------


def zero_cache(cfg: LMConfig, tokens: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A KV cache of ``tokens`` positions (zeros): the decode step's cost depends on its length, not its values."""
    shape = (cfg.n_layers, batch, cfg.n_heads, tokens, cfg.head_dim)
    return torch.zeros(shape), torch.zeros(shape)


def export_onnx(model: TinyLM, folder: str | Path) -> dict[str, Path]:
    """Export the prefill graph (ids → logits, any length) and the decode step (id + cache → logits + cache) to ONNX.

    Two graphs, as LLM runtimes ship them: prefill processes the prompt in
    one batched pass; decode runs once per generated token with the cache
    as input and output. The dynamo exporter, weights inside the file.
    """
    import warnings

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    model = model.eval()
    length = torch.export.Dim("length", min=2, max=cfg.context)
    past = torch.export.Dim("past", min=1, max=cfg.context - 1)
    k, v = zero_cache(cfg, 8)
    paths = {"prefill": folder / "prefill.onnx", "decode": folder / "decode.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 16, dtype=torch.int64),), paths["prefill"], dynamo=True, external_data=False,
                          dynamic_shapes=({1: length},), input_names=["idx"], output_names=["logits"], verbose=False)
        torch.onnx.export(DecodeStep(model), (torch.zeros(1, 1, dtype=torch.int64), k, v), paths["decode"], dynamo=True,
                          external_data=False, dynamic_shapes=(None, {3: past}, {3: past}), verbose=False,
                          input_names=["idx", "past_k", "past_v"], output_names=["logits", "keys", "values"])
    return paths


def onnx_matmul_nbits(path: str | Path, out: str | Path, bits: int = 4, block_size: int = 32, accuracy_level: int = 4) -> Path:
    """ONNX Runtime's weight-only quantizer: every MatMul with a constant weight → ``MatMulNBits`` (asymmetric, per block).

    ``accuracy_level=4`` lets the kernel quantize activations to int8 and use
    integer dot products (the contrib op's documented levels: 0 unset,
    1 fp32, 2 fp16, 3 bf16, 4 int8).
    """
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(path)), bits=bits, block_size=block_size, is_symmetric=False, accuracy_level=accuracy_level)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return Path(out)


class OrtLM:
    """A prefill and a decode ONNX file in ONNX Runtime sessions (one thread each by default)."""

    def __init__(self, prefill: str | Path, decode: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.threads = threads
        self.paths = (Path(prefill), Path(decode))
        self.prefill_session = ort.InferenceSession(str(prefill), options, providers=["CPUExecutionProvider"])
        self.decode_session = ort.InferenceSession(str(decode), options, providers=["CPUExecutionProvider"])

    @property
    def nbytes(self) -> int:
        """Bytes of the decode file (the prefill file holds the same weights)."""
        return self.paths[1].stat().st_size

    def __call__(self, idx: torch.Tensor) -> np.ndarray:
        """Logits for a batch of sequences (run one sequence at a time: the graph was exported with batch 1)."""
        ids = np.asarray(idx, dtype=np.int64)
        return np.concatenate([self.prefill_session.run(None, {"idx": row[None]})[0] for row in ids])

    def decode_feed(self, past_tokens: int, token: int = 32) -> dict[str, np.ndarray]:
        cfg_shape = self.decode_session.get_inputs()[1].shape
        k = np.zeros((cfg_shape[0], 1, cfg_shape[2], past_tokens, cfg_shape[4]), dtype=np.float32)
        return {"idx": np.array([[token]], dtype=np.int64), "past_k": k, "past_v": k.copy()}

    def timing_calls(self, prompt_tokens: int, past_tokens: int) -> dict[str, Callable[[], Any]]:
        """Runtime-only calls to time: ``prefill`` over ``prompt_tokens`` and one ``decode`` step after ``past_tokens``."""
        prompt = {"idx": (np.arange(prompt_tokens, dtype=np.int64) % 256)[None]}
        feed = self.decode_feed(past_tokens)
        return {"prefill": lambda: self.prefill_session.run(None, prompt), "decode": lambda: self.decode_session.run(None, feed)}


def pytorch_timing_calls(model: TinyLM, prompt_tokens: int, past_tokens: int, batch: int = 1) -> dict[str, Callable[[], Any]]:
    """The same two calls for an eager PyTorch model (inference mode), to time beside :meth:`OrtLM.timing_calls`.

    ``batch`` > 1 makes ``prefill`` a batched forward (``batch`` sequences of
    ``prompt_tokens``): the workload where int8 matmuls can pay.
    """
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    prompt = (torch.arange(prompt_tokens) % 256)[None].repeat(batch, 1)
    k, v = zero_cache(model.cfg, past_tokens)
    token = torch.tensor([[32]])

    def prefill() -> Any:
        with torch.inference_mode():
            return model(prompt)

    def decode() -> Any:
        with torch.inference_mode():
            return model.step(token, k, v)

    return {"prefill": prefill, "decode": decode}


def time_calls(calls: Mapping[str, Callable[[], Any]], rounds: int = 9, repeats: int = 20, warmup: int = 3,
               batch_size: int = 1) -> dict[str, runtimes.Timing]:
    """Runtime-only zero-argument calls timed in interleaved rounds, as :class:`course_lib.runtimes.Timing`.

    The language model's inputs are token ids and caches, not the float
    images :func:`course_lib.runtimes.time_interleaved` takes, so this is its
    counterpart for prepared calls (an ONNX Runtime ``session.run`` on ready
    feeds, an eager module under ``inference_mode``). PyTorch's thread count
    is *not* changed here — switching it inside one process gives erratic
    timings — so set it once (``course_lib.setup(threads=1)``); ONNX Runtime
    sessions carry their own. Pair two results with :func:`course_lib.runtimes.speedup`.
    """
    from course_lib import measure

    if not calls:
        raise ValueError("give at least one call to time")
    if rounds < 2:
        raise ValueError(f"rounds must be at least 2 (a ratio interval pairs rounds), got {rounds}")
    measured = measure.measure_latency_interleaved({name: (fn, None) for name, fn in calls.items()},
                                                   rounds=rounds, repeats=repeats, warmup=warmup, threads=None)
    threads = torch.get_num_threads()
    return {name: runtimes.Timing(s.median_ms, s.p90_ms, min(s.round_medians_ms), max(s.round_medians_ms), threads,
                                  batch_size, list(s.round_medians_ms))
            for name, s in measured.items()}


def time_prefill_decode(calls: dict[str, dict[str, Callable[[], Any]]], prompt_tokens: int, rounds: int = 9,
                        repeats: int = 20, warmup: int = 3) -> list[dict[str, Any]]:
    """Tokens per second of prefill and decode for several models, every call timed in interleaved rounds.

    ``calls``: model name → the dict from :meth:`OrtLM.timing_calls` or
    :func:`pytorch_timing_calls`. Prefill tokens/s = ``prompt_tokens`` / median
    time; decode tokens/s = 1 / median time of one step. The spread is the
    range of the per-round medians, as tokens/s; ``timing`` pairs with another
    row's in :func:`course_lib.runtimes.speedup`.
    """
    timed = time_calls({f"{n} | {p}": fn for n, phases in calls.items() for p, fn in phases.items()},
                       rounds=rounds, repeats=repeats, warmup=warmup)
    rows = []
    for name, phases in calls.items():
        for phase in phases:
            t = timed[f"{name} | {phase}"]
            tokens = prompt_tokens if phase == "prefill" else 1
            rows.append({"model": name, "phase": phase, "median_ms": t.median_ms, "tokens_per_s": tokens * 1000 / t.median_ms,
                         "tokens_per_s_range": (tokens * 1000 / t.max_ms, tokens * 1000 / t.min_ms), "timing": t})
    return rows


def cpu_facts() -> dict[str, Any]:
    """This CPU's model, the SIMD flags that decide int8/int4 kernel speed, and its cache sizes (Linux).

    Read from ``/proc/cpuinfo`` and ``/sys/devices/system/cpu/cpu0/cache``, so
    a lecture prints what the machine has instead of asserting it in prose.
    Missing files (other systems) give empty values, not an error.
    """
    facts: dict[str, Any] = {"model": "", "flags": [], "caches": {}}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not facts["model"]:
            facts["model"] = value.strip()
        elif key.strip() == "flags" and not facts["flags"]:
            wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_tile", "asimddp", "i8mm")
            present = set(value.split())
            facts["flags"] = [flag for flag in wanted if flag in present]
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        facts["caches"][f"L{level}{'' if kind == 'Unified' else kind[0].lower()}"] = size
    return facts
