"""Hardware-aware architecture search with a weight-sharing supernet (the architecture search lecture).

Lecture 01 trained every candidate on its own. Once-for-all (Cai et al., ICLR 2020)
and BigNAS (Yu et al., ECCV 2020) train *one* network whose sub-networks share its
weights, then search among the sub-networks without retraining. This module is a
CPU-sized version of that recipe for the digits task:

* :class:`SearchSpace` - the choices: input resolution, depth per stage, and per
  block a depthwise kernel size and an expansion ratio (the block's width). A
  *config* is plain data (a dict of ints and lists), so it prints, saves and grades.
* :class:`SuperNet` - inverted-residual blocks holding the largest weights; a
  config picks the first channels (elastic width), the centre of the 7×7 kernel
  (elastic kernel) and the first blocks of each stage (elastic depth).
* :func:`train_supernet` - the *sandwich rule*: every step trains the largest, the
  smallest and two random sub-networks on the same batch.
* :func:`extract_subnet` - a standalone plain ``nn.Module`` with the weights
  copied out, to measure, fine-tune or export like any model; :func:`calibrate_bn`
  re-estimates its BatchNorm statistics (shared statistics fit no sub-network).
* :class:`LatencyTable` / :func:`measure_latency_table` - a per-layer lookup table
  timed on this CPU (one thread, batch 1) and a predictor that sums it plus the
  measured cost of one call.
* :func:`evolutionary_search` - the best config under a predicted latency budget,
  deterministic for a seed.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import data

Config = dict[str, Any]


# --- the search space ------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """What the search may choose, and the fixed skeleton around it.

    The network is a 3×3 stem, then ``len(stage_channels)`` stages of inverted-residual
    blocks (the first block of each stage has stride 2), global pooling and a linear
    classifier. Each stage keeps between ``min(depths)`` and ``max(depths)`` blocks;
    every block *slot* has its own kernel size and expansion ratio.
    """

    resolutions: tuple[int, ...] = (8, 12, 16)
    depths: tuple[int, ...] = (1, 2, 3)
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (2, 3, 4)
    stem_channels: int = 16
    stage_channels: tuple[int, ...] = (16, 32)

    def __post_init__(self) -> None:
        for name in ("resolutions", "depths", "kernels", "expands", "stage_channels"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be a non-empty tuple of positive integers, got {values!r}")
            if list(values) != sorted(set(values)) and name != "stage_channels":
                raise ValueError(f"{name} must be sorted and without repeats, got {values!r}")
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernel sizes must be odd (a centre to crop around), got {self.kernels}")

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def num_slots(self) -> int:
        """Block slots in the largest network: one kernel and one expansion entry each."""
        return len(self.stage_channels) * self.max_depth

    def largest(self) -> Config:
        """Every choice at its maximum."""
        return _config(max(self.resolutions), [self.max_depth] * len(self.stage_channels),
                       [max(self.kernels)] * self.num_slots, [max(self.expands)] * self.num_slots)

    def smallest(self) -> Config:
        """Every choice at its minimum."""
        return _config(min(self.resolutions), [min(self.depths)] * len(self.stage_channels),
                       [min(self.kernels)] * self.num_slots, [min(self.expands)] * self.num_slots)

    def sample(self, rng: random.Random) -> Config:
        """A config with every choice drawn uniformly (``rng`` makes it repeatable)."""
        return _config(rng.choice(self.resolutions), [rng.choice(self.depths) for _ in self.stage_channels],
                       [rng.choice(self.kernels) for _ in range(self.num_slots)],
                       [rng.choice(self.expands) for _ in range(self.num_slots)])

    def validate(self, config: Config) -> Config:
        """``config`` if every entry is a choice of this space; a ``ValueError`` naming the bad entry if not."""
        if not isinstance(config, dict) or set(config) != {"resolution", "depths", "kernels", "expands"}:
            raise ValueError("a config is a dict with keys 'resolution', 'depths', 'kernels', 'expands', "
                             f"got {config!r}")
        checks = [("resolution", [config["resolution"]], self.resolutions, 1),
                  ("depths", config["depths"], self.depths, len(self.stage_channels)),
                  ("kernels", config["kernels"], self.kernels, self.num_slots),
                  ("expands", config["expands"], self.expands, self.num_slots)]
        for name, values, allowed, length in checks:
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            if len(values) != length:
                raise ValueError(f"config[{name!r}] needs {length} entries, got {len(values)}")
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ValueError(f"config[{name!r}] has {bad[0]!r}, not one of {allowed}")
        return config

    def mutate(self, config: Config, rng: random.Random, prob: float = 0.3) -> Config:
        """A copy of ``config`` where each choice is redrawn with probability ``prob``."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.validate(config)

        def redraw(value: int, choices: tuple[int, ...]) -> int:
            return rng.choice(choices) if rng.random() < prob else value

        return _config(redraw(config["resolution"], self.resolutions),
                       [redraw(d, self.depths) for d in config["depths"]],
                       [redraw(k, self.kernels) for k in config["kernels"]],
                       [redraw(e, self.expands) for e in config["expands"]])

    def crossover(self, a: Config, b: Config, rng: random.Random) -> Config:
        """Each choice taken from ``a`` or ``b`` with equal chance."""
        self.validate(a)
        self.validate(b)

        def pick(x: Any, y: Any) -> Any:
            return x if rng.random() < 0.5 else y

        return _config(pick(a["resolution"], b["resolution"]), [pick(x, y) for x, y in zip(a["depths"], b["depths"])],
                       [pick(x, y) for x, y in zip(a["kernels"], b["kernels"])],
                       [pick(x, y) for x, y in zip(a["expands"], b["expands"])])


def _config(resolution: int, depths: list[int], kernels: list[int], expands: list[int]) -> Config:
    return {"resolution": int(resolution), "depths": [int(d) for d in depths], "kernels": [int(k) for k in kernels],
            "expands": [int(e) for e in expands]}


@dataclass(frozen=True)
class BlockSpec:
    """One active block of a config: where it sits and what it computes."""

    stage: int
    index: int  # within its stage; 0 is the stride-2 block
    slot: int
    c_in: int
    c_out: int
    stride: int
    kernel: int
    expand: int
    side_in: int  # input height = width


def conv_out_side(side: int, stride: int) -> int:
    """Output side of an odd-kernel convolution padded by ``k // 2`` ('same' padding)."""
    return (side - 1) // stride + 1


def active_blocks(config: Config, space: SearchSpace) -> list[BlockSpec]:
    """The blocks a config runs, in order; slots past each stage's depth are skipped."""
    space.validate(config)
    specs, c_in, side = [], space.stem_channels, config["resolution"]
    for stage, c_out in enumerate(space.stage_channels):
        for index in range(config["depths"][stage]):
            slot = stage * space.max_depth + index
            stride = 2 if index == 0 else 1
            specs.append(BlockSpec(stage, index, slot, c_in, c_out, stride, config["kernels"][slot],
                                   config["expands"][slot], side))
            c_in, side = c_out, conv_out_side(side, stride)
    return specs


def config_key(config: Config, space: SearchSpace) -> tuple:
    """What makes two configs the same network: resolution and the active blocks (inactive slots ignored)."""
    return (config["resolution"],) + tuple((b.stage, b.kernel, b.expand) for b in active_blocks(config, space))


# --- plain modules (what extract_subnet returns) -----------------------------------------------


class MBConv(nn.Module):
    """Inverted residual with a k×k depthwise conv: 1×1 expand → k×k depthwise → 1×1 linear project (+ skip)."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_skip = stride == 1 and c_in == c_out
        self.block = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_skip else out


def stem(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 convolution + BatchNorm + ReLU6 at full resolution."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class Head(nn.Module):
    """Global average pooling and a linear classifier."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SubNet(nn.Sequential):
    """A sub-network as a plain ``nn.Sequential`` (stem, blocks, head); ``resolution`` is the input side it was chosen for."""

    def __init__(self, *modules: nn.Module, resolution: int) -> None:
        super().__init__(*modules)
        self.resolution = resolution


# --- the supernet ------------------------------------------------------------------------------


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BatchNorm over the first ``channels`` of ``bn`` (its statistics and affine parameters sliced)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("the supernet's BatchNorm layers must track running statistics")
    return F.batch_norm(x, bn.running_mean[:channels], bn.running_var[:channels], bn.weight[:channels],
                        bn.bias[:channels], bn.training, bn.momentum if bn.momentum is not None else 0.1, bn.eps)


def _block_layers(block: nn.Sequential) -> tuple[nn.Conv2d, nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d]:
    """An MBConv's expand conv, BN, depthwise conv, BN, projection conv, BN (its activations skipped), typed."""
    layers = (block[0], block[1], block[3], block[4], block[6], block[7])
    kinds = (nn.Conv2d, nn.BatchNorm2d) * 3
    if not all(isinstance(layer, kind) for layer, kind in zip(layers, kinds, strict=True)):
        raise TypeError("not an MBConv block: expected conv, BN, act, conv, BN, act, conv, BN")
    return cast(tuple[nn.Conv2d, nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d], layers)


class ElasticMBConv(nn.Module):
    """An :class:`MBConv` holding the largest weights; ``forward`` runs any (kernel, expand) by slicing them.

    * width: the first ``c_in · expand`` hidden channels (the smallest sub-network
      always trains the first channels, so they learn to carry the most);
    * kernel: the centre ``k × k`` of the largest depthwise kernel (once-for-all
      also learns a small linear transform per kernel size; the crop alone is the simplest form).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, max_kernel: int, max_expand: int) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride, self.max_kernel = c_in, c_out, stride, max_kernel
        self.full = MBConv(c_in, c_out, stride, max_kernel, max_expand)

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        expand_conv, bn1, dw, bn2, project, bn3 = _block_layers(self.full.block)
        hidden, crop = self.c_in * expand, (self.max_kernel - kernel) // 2
        out = F.relu6(_bn(F.conv2d(x, expand_conv.weight[:hidden]), bn1, hidden))
        dw_weight = dw.weight[:hidden, :, crop:crop + kernel, crop:crop + kernel]
        out = F.relu6(_bn(F.conv2d(out, dw_weight, None, self.stride, kernel // 2, 1, hidden), bn2, hidden))
        out = _bn(F.conv2d(out, project.weight[:, :hidden]), bn3, self.c_out)
        return x + out if self.full.use_skip else out

    def extract(self, kernel: int, expand: int) -> MBConv:
        """A plain :class:`MBConv` with this block's weights for (kernel, expand) copied in."""
        hidden, crop = self.c_in * expand, (self.max_kernel - kernel) // 2
        block = MBConv(self.c_in, self.c_out, self.stride, kernel, expand)
        src, dst = _block_layers(self.full.block), _block_layers(block.block)
        with torch.no_grad():
            dst[0].weight.copy_(src[0].weight[:hidden])
            dst[2].weight.copy_(src[2].weight[:hidden, :, crop:crop + kernel, crop:crop + kernel])
            dst[4].weight.copy_(src[4].weight[:, :hidden])
            for i, channels in ((1, hidden), (3, hidden), (5, self.c_out)):
                _copy_bn(cast(nn.BatchNorm2d, src[i]), cast(nn.BatchNorm2d, dst[i]), channels)
        return block


def _copy_bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:channels])


class SuperNet(nn.Module):
    """The largest network of a :class:`SearchSpace`; ``forward(x, config)`` runs the sub-network ``config``.

    The input must already be at the config's resolution (see :func:`images_at`);
    global pooling makes every resolution fit the same classifier.
    """

    def __init__(self, space: SearchSpace | None = None, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.space = space or SearchSpace()
        self.in_channels = in_channels
        self.stem = stem(in_channels, self.space.stem_channels)
        blocks, c_in = [], self.space.stem_channels
        for c_out in self.space.stage_channels:
            for index in range(self.space.max_depth):
                blocks.append(ElasticMBConv(c_in, c_out, 2 if index == 0 else 1, max(self.space.kernels),
                                            max(self.space.expands)))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(c_in, num_classes)

    def forward(self, x: torch.Tensor, config: Config | None = None) -> torch.Tensor:
        config = self.space.largest() if config is None else config
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SuperNet expects N × {self.in_channels} × H × W, got {tuple(x.shape)}")
        out = self.stem(x)
        for spec in active_blocks(config, self.space):
            out = self.blocks[spec.slot](out, spec.kernel, spec.expand)
        return self.head(out)


def extract_subnet(supernet: SuperNet, config: Config) -> SubNet:
    """The sub-network ``config`` as a standalone plain module with copied weights (eval mode).

    Its outputs equal ``supernet(x, config)`` in eval mode. It owns its tensors:
    training or calibrating it leaves the supernet untouched.
    """
    modules: list[nn.Module] = [copy.deepcopy(supernet.stem)]
    blocks = cast(list[ElasticMBConv], list(supernet.blocks))
    modules += [blocks[s.slot].extract(s.kernel, s.expand) for s in active_blocks(config, supernet.space)]
    modules.append(copy.deepcopy(supernet.head))
    return SubNet(*modules, resolution=config["resolution"]).eval()


# --- saving and loading ------------------------------------------------------------------------

#: Where ``python -m course_lib supernet`` writes the trained supernet the lecture loads.
DEFAULT_CHECKPOINT = Path(__file__).parent / "assets" / "supernet_digits.pt"


def save_supernet(supernet: SuperNet, path: str | Path, **meta: Any) -> Path:
    """Save the weights, the search space and ``meta`` (e.g. how it was trained) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"space": asdict(supernet.space), "in_channels": supernet.in_channels,
                "num_classes": supernet.head.classifier.out_features, "state_dict": supernet.state_dict(),
                "meta": meta}, path)
    return path


def load_supernet(path: str | Path = DEFAULT_CHECKPOINT) -> tuple[SuperNet, dict[str, Any]]:
    """The supernet saved at ``path`` (eval mode) and its ``meta``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no supernet checkpoint at {path}; train one with `python -m course_lib supernet`")
    saved = torch.load(path, weights_only=True)
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["space"].items()}
    space = SearchSpace(**fields)
    supernet = SuperNet(space, saved["in_channels"], saved["num_classes"])
    supernet.load_state_dict(saved["state_dict"])
    return supernet.eval(), saved["meta"]


# --- data at several resolutions, training, BatchNorm calibration ------------------------------


def images_at(split: data.Split, resolutions: Iterable[int]) -> dict[int, data.Split]:
    """``split`` resized to each resolution (bilinear, as :func:`course_lib.data.resize`), same samples and labels."""
    out = {}
    for size in resolutions:
        if size == split.input_shape[-1]:
            out[size] = split
            continue
        parts = {p: data.resize(getattr(split, f"x_{p}"), size) for p in ("train", "val", "test")}
        out[size] = data.Split(f"{split.name}@{size}", parts["train"], split.y_train, parts["val"], split.y_val,
                               parts["test"], split.y_test, split.num_classes, split.class_names)
    return out


@dataclass
class SupernetHistory:
    """Mean training loss per epoch of the largest and the smallest sub-network."""

    largest_loss: list[float] = field(default_factory=list)
    smallest_loss: list[float] = field(default_factory=list)


def train_supernet(
    supernet: SuperNet, splits: dict[int, data.Split], epochs: int = 10, lr: float = 3e-3, batch_size: int = 64,
    random_subnets: int = 2, seed: int = 0, progress: bool = False,
) -> SupernetHistory:
    """Train with the sandwich rule: per batch, the largest, the smallest and ``random_subnets`` random sub-networks.

    Their gradients add up before one optimizer step. The largest sub-network
    sets the upper bound and the smallest the lower one; training both every
    step keeps the extremes good, and the random ones fill in between (BigNAS;
    slimmable networks). Each sub-network sees the batch at its own resolution.
    ``splits`` maps every resolution of the space to the data (:func:`images_at`).
    """
    missing = set(supernet.space.resolutions) - set(splits)
    if missing:
        raise ValueError(f"splits lacks resolutions {sorted(missing)}; build them with images_at(split, space.resolutions)")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    space = supernet.space
    # channels-last: PyTorch's CPU depthwise convolutions ran several times faster in that layout here
    x = {r: torch.from_numpy(s.x_train).contiguous(memory_format=torch.channels_last) for r, s in splits.items()}
    supernet.to(memory_format=torch.channels_last)
    y = torch.from_numpy(next(iter(splits.values())).y_train)
    optimizer = torch.optim.Adam(supernet.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * math.ceil(len(y) / batch_size))
    history = SupernetHistory()
    generator = torch.Generator().manual_seed(seed)
    supernet.train()
    from tqdm import tqdm

    for _ in tqdm(range(epochs), desc="supernet epochs", disable=not progress, leave=False):
        sums = [0.0, 0.0]
        for idx in torch.randperm(len(y), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            configs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(random_subnets)]
            for i, config in enumerate(configs):
                loss = F.cross_entropy(supernet(x[config["resolution"]][idx], config), y[idx])
                loss.backward()
                if i < 2:
                    sums[i] += float(loss.detach()) * len(idx)
            optimizer.step()
            schedule.step()
        history.largest_loss.append(sums[0] / len(y))
        history.smallest_loss.append(sums[1] / len(y))
    supernet.to(memory_format=torch.contiguous_format).eval()
    return history


@torch.no_grad()
def calibrate_bn(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on ``images``, then switch to eval mode.

    A supernet's statistics mix all the sub-networks it trained, so each extracted
    sub-network gets its own from a few hundred training images (once-for-all does
    the same). No weight changes; this is not training.
    """
    x = torch.as_tensor(images)
    if x.dim() != 4 or len(x) == 0:
        raise ValueError(f"calibrate_bn needs a non-empty N × C × H × W batch, got shape {tuple(x.shape)}")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all calibration batches
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start:start + batch_size])
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return model.eval()


def ready_subnet(supernet: SuperNet, config: Config, splits: dict[int, data.Split], calibration: int = 500) -> SubNet:
    """:func:`extract_subnet` then :func:`calibrate_bn` on the first ``calibration`` training images at its resolution."""
    subnet = extract_subnet(supernet, config)
    return calibrate_bn(subnet, splits[config["resolution"]].x_train[:calibration])  # type: ignore[return-value]


def correct_predictions(model: nn.Module, split: data.Split, part: str = "val") -> np.ndarray:
    """Boolean array: which images of ``part`` the model classifies right (for accuracy and its interval)."""
    if part not in ("train", "val", "test"):
        raise ValueError(f"part must be 'train', 'val' or 'test', got {part!r}")
    from course_lib.train import predict_logits

    logits = predict_logits(model, getattr(split, f"x_{part}"))
    return logits.argmax(1) == getattr(split, f"y_{part}")


# --- latency: lookup table and predictor --------------------------------------------------------


def layer_keys(config: Config, space: SearchSpace) -> list[str]:
    """The lookup-table entries a config's forward pass is made of, in order."""
    keys = [f"stem r{config['resolution']}"]
    side = config["resolution"]
    for b in active_blocks(config, space):
        keys.append(f"stage{b.stage} {'first' if b.index == 0 else 'rest'} r{b.side_in} k{b.kernel} e{b.expand}")
        side = conv_out_side(b.side_in, b.stride)
    keys.append(f"head r{side}")
    return keys


def _layer_for_key(key: str, space: SearchSpace, in_channels: int, num_classes: int) -> tuple[nn.Module, torch.Tensor]:
    """A randomly initialised layer and a zero input of the shape it sees in the network (for timing)."""
    parts = key.split()
    side = int(parts[-1][1:]) if parts[0] in ("stem", "head") else int(parts[2][1:])
    if parts[0] == "stem":
        return stem(in_channels, space.stem_channels).eval(), torch.zeros(1, in_channels, side, side)
    if parts[0] == "head":
        c = space.stage_channels[-1]
        return Head(c, num_classes).eval(), torch.zeros(1, c, side, side)
    stage, first = int(parts[0][5:]), parts[1] == "first"
    kernel, expand = int(parts[3][1:]), int(parts[4][1:])
    c_out = space.stage_channels[stage]
    c_in = (space.stem_channels if stage == 0 else space.stage_channels[stage - 1]) if first else c_out
    block = MBConv(c_in, c_out, 2 if first else 1, kernel, expand).eval()
    return block, torch.zeros(1, c_in, side, side)


def all_layer_keys(space: SearchSpace) -> list[str]:
    """Every entry any config of ``space`` can need."""
    keys: set[str] = set()
    for r in space.resolutions:
        keys.add(f"stem r{r}")
        side = r
        for stage in range(len(space.stage_channels)):
            for k in space.kernels:
                for e in space.expands:
                    keys.add(f"stage{stage} first r{side} k{k} e{e}")
                    keys.add(f"stage{stage} rest r{conv_out_side(side, 2)} k{k} e{e}")
            side = conv_out_side(side, 2)
        keys.add(f"head r{side}")
    return sorted(keys)


@dataclass
class LatencyTable:
    """Per-layer latency (ms, one call's fixed cost removed) and the fixed cost of one call.

    ``predict(config)`` = ``call_ms`` + the sum of the config's layer entries: a
    forward pass costs what its layers cost, plus what calling a model costs
    once. Both parts were timed on this CPU with ``threads`` threads, batch 1.
    """

    entries: dict[str, float]
    call_ms: float
    threads: int
    space: SearchSpace = field(default_factory=SearchSpace)

    def predict(self, config: Config) -> float:
        """Predicted batch-1 latency (ms) of a config."""
        keys = layer_keys(config, self.space)
        missing = [k for k in keys if k not in self.entries]
        if missing:
            raise KeyError(f"the latency table has no entry {missing[0]!r}; measure it for this search space")
        return self.call_ms + sum(self.entries[k] for k in keys)


def measure_latency_table(
    space: SearchSpace, rounds: int = 3, repeats: int = 20, warmup: int = 3, threads: int = 1,
    in_channels: int = 1, num_classes: int = 10,
) -> LatencyTable:
    """Time every layer a config of ``space`` can contain, alone, at its input shape (batch 1).

    All layers and an empty call (``nn.Identity``, which costs only the timing
    harness's call) are timed in interleaved rounds; each layer's entry is its
    median minus the empty call's median, and the empty call's median is the
    table's ``call_ms``. The weights are random: latency does not depend on them.
    """
    from course_lib.measure import measure_latency_interleaved

    keys = all_layer_keys(space)
    targets = {key: _layer_for_key(key, space, in_channels, num_classes) for key in keys}
    targets["(empty call)"] = (nn.Identity(), torch.zeros(1, in_channels, 8, 8))
    stats = measure_latency_interleaved(targets, rounds=rounds, repeats=repeats, warmup=warmup, threads=threads)
    empty = stats.pop("(empty call)").median_ms
    return LatencyTable({k: max(0.0, s.median_ms - empty) for k, s in stats.items()}, empty, threads, space)


# --- search ------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """The best config found, its fitness and predicted latency, and what the search looked at."""

    best: Config
    fitness: Any
    latency_ms: float
    best_per_generation: list[Any]
    evaluated: int


def sample_under_budget(space: SearchSpace, latency_ms: Callable[[Config], float], budget_ms: float,
                        rng: random.Random, tries: int = 500) -> Config:
    """A random config whose predicted latency is within the budget (rejection sampling)."""
    for _ in range(tries):
        config = space.sample(rng)
        if latency_ms(config) <= budget_ms:
            return config
    smallest = latency_ms(space.smallest())
    raise ValueError(f"no config under {budget_ms:.3f} ms in {tries} random tries; the smallest config is predicted "
                     f"at {smallest:.3f} ms — raise the budget")


def evolutionary_search(
    space: SearchSpace, fitness: Callable[[Config], Any], latency_ms: Callable[[Config], float], budget_ms: float,
    population: int = 16, generations: int = 6, parents: int = 4, mutate_prob: float = 0.3, seed: int = 0,
) -> SearchResult:
    """Maximise ``fitness`` over configs with ``latency_ms(config) <= budget_ms`` by evolution.

    Start from random configs within the budget; each generation keeps the
    ``parents`` fittest, fills the rest half by mutation, half by crossover of
    two parents, and rejects children over the budget (once-for-all's search).
    ``fitness`` returns a number or a tuple compared in order (e.g. validation
    top-1, then minus validation loss, so that equal accuracies on a small
    validation set do not tie); remaining ties go to the faster config. It is
    called once per distinct network (cached); the same seed and the same
    latencies give the same result.
    """
    if not 1 <= parents < population:
        raise ValueError(f"need 1 ≤ parents < population, got parents={parents}, population={population}")
    if not isinstance(generations, int) or generations < 1:
        raise ValueError(f"generations must be a positive integer, got {generations!r}")
    rng = random.Random(seed)
    cache: dict[tuple, Any] = {}

    def score(config: Config) -> tuple[Any, float]:
        key = config_key(config, space)
        if key not in cache:
            cache[key] = fitness(config)
        return cache[key], -latency_ms(config)

    def child(make: Callable[[], Config]) -> Config:
        for _ in range(100):
            config = make()
            if latency_ms(config) <= budget_ms:
                return config
        return sample_under_budget(space, latency_ms, budget_ms, rng)

    pool = [sample_under_budget(space, latency_ms, budget_ms, rng) for _ in range(population)]
    best_per_generation = []
    for generation in range(generations):
        pool.sort(key=score, reverse=True)
        best_per_generation.append(score(pool[0])[0])
        if generation == generations - 1:
            break
        elite = pool[:parents]
        n_mutants = (population - parents) // 2
        def mutant(e: list[Config] = elite) -> Config:
            return space.mutate(rng.choice(e), rng, mutate_prob)

        def cross(e: list[Config] = elite) -> Config:
            a, b = rng.sample(e, 2) if parents > 1 else (e[0], e[0])
            return space.crossover(a, b, rng)

        mutants = [child(mutant) for _ in range(n_mutants)]
        crosses = [child(cross) for _ in range(population - parents - n_mutants)]
        pool = elite + mutants + crosses
    best = pool[0]
    return SearchResult(best, score(best)[0], latency_ms(best), best_per_generation, len(cache))


def random_search(
    space: SearchSpace, fitness: Callable[[Config], Any], latency_ms: Callable[[Config], float], budget_ms: float,
    evaluations: int, seed: int = 0, max_draws: int = 10_000,
) -> SearchResult:
    """The baseline any search must beat: ``evaluations`` distinct random configs within the budget, the fittest kept.

    Give it the same number of evaluations an :func:`evolutionary_search`
    used (its ``evaluated``): then the two differ only in *which* configs they
    looked at. ``best_per_generation`` holds the best fitness after each
    evaluation (the curve to compare with evolution's).
    """
    if not isinstance(evaluations, int) or evaluations < 1:
        raise ValueError(f"evaluations must be a positive integer, got {evaluations!r}")
    rng = random.Random(seed)
    seen: dict[tuple, tuple[Config, Any]] = {}
    best_so_far: list[Any] = []
    for _ in range(max_draws):
        if len(seen) == evaluations:
            break
        config = sample_under_budget(space, latency_ms, budget_ms, rng)
        key = config_key(config, space)
        if key in seen:
            continue
        seen[key] = (config, fitness(config))
        best_so_far.append(max(value for _, value in seen.values()))
    else:
        raise ValueError(f"found only {len(seen)} distinct configs within the budget in {max_draws} draws")
    best, value = max(seen.values(), key=lambda item: (item[1], -latency_ms(item[0])))
    return SearchResult(best, value, latency_ms(best), best_so_far, len(seen))


def train_default_supernet(path: str | Path = DEFAULT_CHECKPOINT, epochs: int = 15, seed: int = 0,
                           progress: bool = True) -> Path:
    """Train the lecture's supernet on the digits (default space) and save it: what ``python -m course_lib supernet`` runs.

    It takes longer than a lecture may (minutes on 2 cores), so the lecture loads
    the saved file; nothing is downloaded.
    """
    import time

    space = SearchSpace()
    split = data.load_digits()
    torch.manual_seed(seed)
    supernet = SuperNet(space)
    start = time.perf_counter()
    history = train_supernet(supernet, images_at(split, space.resolutions), epochs=epochs, seed=seed,
                             progress=progress)
    return save_supernet(supernet, path, epochs=epochs, seed=seed, lr=3e-3, batch_size=64, random_subnets=2,
                         seconds=round(time.perf_counter() - start, 1), threads=torch.get_num_threads(),
                         largest_loss=history.largest_loss, smallest_loss=history.smallest_loss)


# --- comparing accuracies ------------------------------------------------------------------------


def accuracy_difference(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float, float]:
    """Top-1 of A minus top-1 of B on the same test images, with a paired bootstrap interval.

    ``correct_*`` are per-image correctness (booleans, or the fraction of seeds
    right per image): resampling the images, not the models, keeps each
    image's pairing, so the interval measures how much the test set's draw
    could move the difference.
    """
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two per-image vectors of the same length, got shapes {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    diffs = (a[idx] - b[idx]).mean(axis=1)
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(a.mean() - b.mean()), float(low), float(high)


def verdict(low: float, high: float) -> str:
    """'A better', 'B better' or 'no measurable difference': whether the interval of A − B excludes zero."""
    if low > 0:
        return "A better"
    if high < 0:
        return "B better"
    return "no measurable difference"
