"""Is a circuit faithful to its model?  The evaluations of spec §11, as pure computation.

Given a circuit (its critical neurons per layer and its core sets with importances), the model
and held-out images of the circuit's class (the test split: never the circuit's own concept
data), three families of numbers:

1. **Fidelity of core neurons** (`kind = "fidelity"`): at each analysed layer (depth >= 1) zero
   the critical set (`mode = "mask"`) or zero everything but it (`mode = "retain"`), in that
   layer alone (`scope = "single"`) or in it and every analysed layer above it, each with its
   own critical set (`scope = "multi"`); class top-1 accuracy of the masked model, against
   random channel sets of the same sizes (`draws` seeded draws: mean and std).
2. **Optimality** (`kind = "optimality"`): for sampled critical neurons `u`, the top-k overlap
   `|T_u ∩ T_u^masked| / k` after zeroing `u`'s core set in the layer below, against
   `opt_random` random subsets of the same size; the value is the fraction of random sets whose
   overlap is strictly higher than the core set's (1 = the core set beats every random set).
3. **Edge-weight fidelity** (`kind = "edge_weight"`): for the same sampled neurons, random sets
   of lower neurons of sizes {1, 5, 10, 20, 50} (capped below the layer width) are zeroed; the
   Pearson / Spearman correlation between the top-k overlap and the summed (`mode = "sum"`) or
   averaged (`mode = "mean"`) importance `I_u(v)` of the masked set.  Importances: the
   circuit's own for core neurons, integrated gradients over `u`'s top held-out crops for the
   other lower channels.  Negative = the importances point at what matters.

`D`, the crop set for 2 and 3, is every crop (the circuit's granularities) of the first
`crop_images` held-out images.  Many masks share one forward pass through `(B, C)` masks
(images repeated once per mask), and a layer's masked forward starts from the cached output
of that layer, not from the input.  Every random draw comes from a generator seeded by
`(seed, class, depth, purpose)`, so a run is reproducible and classes are independent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from neurflow.circuit import LOGITS, Circuit, Params
from neurflow.errors import NeurflowInputError
from neurflow.hooks import capture, spatial_mean
from neurflow.images import crop_boxes, cut_crops, has_content
from neurflow.subnetwork import build_subnetworks

KINDS = ("fidelity", "optimality", "edge_weight")
EDGE_SIZES = (1, 5, 10, 20, 50)


@dataclass(frozen=True)
class EvalSettings:
    """Every knob of an evaluation run (part of each stored row, for reproducibility)."""

    draws: int = 5  # random sets per fidelity measurement
    seed: int = 0
    test_images: int = 300  # held-out images of the class for fidelity
    crop_images: int = 8  # held-out images whose crops form D (optimality, edge weights)
    opt_neurons: int = 8  # sampled critical neurons per layer (optimality, edge weights)
    opt_random: int = 100  # random core-sized subsets per sampled neuron
    edge_sizes: tuple[int, ...] = EDGE_SIZES
    edge_sets: int = 50  # random sets per size (the paper: 500)
    ig_steps: int | None = None  # IG steps for non-core importances (default: the circuit's)
    batch_rows: int = 1024  # rows per masked forward pass (a memory knob)

    def validate(self) -> "EvalSettings":
        for name in ("draws", "test_images", "crop_images", "opt_neurons", "opt_random", "edge_sets", "batch_rows"):
            if getattr(self, name) < 1:
                raise NeurflowInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.edge_sizes or min(self.edge_sizes) < 1:
            raise NeurflowInputError(f"edge set sizes must be positive, got {list(self.edge_sizes)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["edge_sizes"] = list(self.edge_sizes)
        return d


@dataclass
class CircuitView:
    """What the evaluations need of a circuit; from a `Circuit` or read back from the store."""

    uid: str
    class_index: int
    layers: list[tuple[str, int]]  # (name, channels) by depth; depth 0 = logits
    critical: dict[int, list[int]]  # depth -> channels
    core: dict[tuple[int, int], list[tuple[int, float]]]  # (depth, channel) -> [(lower channel, importance)] by rank
    params: Params = field(default_factory=Params)

    @classmethod
    def from_circuit(cls, circuit: Circuit) -> "CircuitView":
        core: dict[tuple[int, int], list[tuple[int, float]]] = {}
        for rec in sorted(circuit.core, key=lambda r: (r.depth, r.channel, r.rank)):
            core.setdefault((rec.depth, rec.channel), []).append((rec.lower_channel, rec.importance))
        return cls(
            uid=circuit.uid,
            class_index=circuit.class_index,
            layers=[(rec.name, rec.channels) for rec in sorted(circuit.layers, key=lambda r: r.depth)],
            critical={d: circuit.critical(d) for d in circuit.depths},
            core=core,
            params=circuit.params,
        )

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.layers]


@dataclass(frozen=True)
class EvalRow:
    """One measured number (with its random baseline) of one circuit.

    fidelity: `value` = class accuracy with the core sets masked/retained, `random_*` = the same
    with random sets, `baseline` = accuracy of the untouched model, `size` = critical set size.
    optimality: `value` = mean fraction of random sets the core set beats, `baseline` = mean
    top-k overlap after masking the core set, `random_*` = overlap after masking random sets.
    edge_weight: `value` = mean correlation over the sampled neurons (`value_std` its std),
    `size` = masked sets per neuron.  `layer`/`depth`: the masked layer for fidelity, the upper
    layer for the others (`lower`: the masked one)."""

    kind: str
    layer: str
    depth: int
    mode: str
    scope: str
    value: float
    value_std: float = float("nan")
    random_mean: float = float("nan")
    random_std: float = float("nan")
    baseline: float = float("nan")
    size: float = float("nan")
    n: int = 0
    lower: str = ""

    def key(self) -> str:
        return f"{self.kind}/{self.layer}/{self.mode}/{self.scope}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- helpers
def _rng(settings: EvalSettings, class_index: int, depth: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([settings.seed, class_index, depth, purpose])


def _ones(c: int, zero: list[int] | np.ndarray) -> torch.Tensor:
    m = torch.ones(c)
    m[torch.as_tensor(np.asarray(zero, dtype=np.int64))] = 0
    return m


def _only(c: int, keep: list[int] | np.ndarray) -> torch.Tensor:
    m = torch.zeros(c)
    m[torch.as_tensor(np.asarray(keep, dtype=np.int64))] = 1
    return m


def _apply(h: torch.Tensor, masks: torch.Tensor, per: int) -> torch.Tensor:
    """Multiply `h` (rows = masks x `per`, mask-major) by one (C,) mask per group of `per` rows."""
    m = masks.to(h.device, h.dtype)
    shaped = h.reshape((m.shape[0], per) + tuple(h.shape[1:]))
    return (shaped * m.reshape((m.shape[0], 1, m.shape[1]) + (1,) * (h.ndim - 2))).reshape(h.shape)


def _masked_copies(h: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`h` once per mask, each copy multiplied by its (C,) mask: rows mask-major, in one pass."""
    m = masks.to(h.device, h.dtype)
    out = h.unsqueeze(0) * m.reshape((m.shape[0], 1, m.shape[1]) + (1,) * (h.ndim - 2))
    return out.reshape((-1,) + tuple(h.shape[1:]))


def _nanstats(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std())


def _sample_sets(rng: np.random.Generator, c: int, size: int, count: int) -> list[np.ndarray]:
    return [np.sort(rng.choice(c, size=size, replace=False)) for _ in range(count)]


def build_subs(model: nn.Module, view: CircuitView, input_shape: tuple[int, ...]) -> list[nn.Module]:
    return build_subnetworks(model, view.names, input_shape)


# ----------------------------------------------------------------------------- 1. fidelity
def fidelity(
    model: nn.Module, view: CircuitView, pixels: torch.Tensor, settings: EvalSettings, subs: list[nn.Module],
    device: torch.device = torch.device("cpu"),
) -> list[EvalRow]:
    """Class accuracy with critical sets masked / retained against random sets (see module doc)."""
    names, cls = view.names, view.class_index
    bottom = len(names) - 1
    x = pixels[: settings.test_images].to(device)
    n = x.shape[0]
    with torch.no_grad():
        acts = capture(model, x, names, reduce=False, stop_early=False)
    base = float((acts[LOGITS].argmax(1) == cls).float().mean())
    widths = {d: view.layers[d][1] for d in range(1, bottom + 1)}
    crit = {d: view.critical.get(d, []) for d in range(1, bottom + 1)}

    # configs: (depth, mode, scope, draw) -> {depth: mask}; draw -1 is the core set
    configs: list[tuple[tuple[int, str, str, int], dict[int, torch.Tensor]]] = []
    for d in range(1, bottom + 1):
        if not crit[d]:
            continue
        for mode_i, mode in enumerate(("mask", "retain")):
            make = _ones if mode == "mask" else _only
            for scope_i, scope in enumerate(("single", "multi")):
                span = [d] if scope == "single" else [e for e in range(1, d + 1) if crit[e]]
                configs.append(((d, mode, scope, -1), {e: make(widths[e], crit[e]) for e in span}))
                rng = _rng(settings, cls, d, 10 + 2 * mode_i + scope_i)
                for draw in range(settings.draws):
                    masks = {e: make(widths[e], rng.choice(widths[e], size=len(crit[e]), replace=False)) for e in span}
                    configs.append(((d, mode, scope, draw), masks))

    accuracy: dict[tuple[int, str, str, int], float] = {}
    per_chunk = max(1, settings.batch_rows // n)
    for d in range(1, bottom + 1):  # configs whose lowest masked layer is d start from its cached output
        group = [c for c in configs if c[0][0] == d]
        for start in range(0, len(group), per_chunk):
            chunk = group[start : start + per_chunk]
            with torch.no_grad():
                first = torch.stack([masks[d] for _, masks in chunk])
                h = _masked_copies(acts[names[d]], first)
                for e in range(d - 1, -1, -1):
                    h = subs[e](h)
                    if e >= 1 and any(e in masks for _, masks in chunk):
                        stacked = torch.stack([masks.get(e, torch.ones(widths[e])) for _, masks in chunk])
                        h = _apply(h, stacked, n)
                correct = (h.argmax(1) == cls).float().reshape(len(chunk), n).mean(1)
            for (key, _), acc in zip(chunk, correct.tolist()):
                accuracy[key] = acc

    rows = []
    for d in range(1, bottom + 1):
        if not crit[d]:
            continue
        for mode in ("mask", "retain"):
            for scope in ("single", "multi"):
                rand = [accuracy[(d, mode, scope, i)] for i in range(settings.draws)]
                rows.append(EvalRow(
                    "fidelity", names[d], d, mode, scope, accuracy[(d, mode, scope, -1)],
                    random_mean=float(np.mean(rand)), random_std=float(np.std(rand)), baseline=base,
                    size=float(len(crit[d])), n=n,
                ))  # fmt: skip
    return rows


# ----------------------------------------------------------- 2 + 3. optimality, edge weights
def _overlaps(
    sub: nn.Module, h: torch.Tensor, units: list[int], masks: torch.Tensor, k: int, base_top: torch.Tensor,
    batch_rows: int,
) -> np.ndarray:
    """Top-k overlap of each unit's top crops after each mask: `(n_masks, n_units)`."""
    n = h.shape[0]
    member = torch.zeros(n, len(units), dtype=torch.bool)
    member.scatter_(0, base_top, True)
    out = np.empty((masks.shape[0], len(units)))
    per = max(1, batch_rows // n)
    unit_idx = torch.as_tensor(units)
    for start in range(0, masks.shape[0], per):
        m = masks[start : start + per]
        acts = []
        with torch.no_grad():
            for c0 in range(0, n, batch_rows):  # crops in pieces too when D alone exceeds a batch
                part = h[c0 : c0 + batch_rows]
                rows = _masked_copies(part, m)
                a = spatial_mean(sub(rows))[:, unit_idx].float().cpu().reshape(m.shape[0], part.shape[0], len(units))
                acts.append(a)
        a = torch.cat(acts, dim=1)  # (masks, crops, units)
        top = a.topk(k, dim=1).indices  # (masks, k, units)
        hit = torch.gather(member.unsqueeze(0).expand(m.shape[0], -1, -1), 1, top)
        out[start : start + m.shape[0]] = hit.float().mean(1).numpy()
    return out


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy import stats  # heavy (about 1 s): only an evaluation run needs it, not its importers

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(stats.pearsonr(x, y)[0]), float(stats.spearmanr(x, y)[0])


def crop_set(view: CircuitView, pixels: torch.Tensor, settings: EvalSettings) -> torch.Tensor:
    """D of optimality and edge weights: crops of held-out images at the circuit's granularities,
    without the crops its `min_crop_std` left out of the concept data (top samples are never
    blank there, so blank crops here would only add ties at the bottom of every ranking)."""
    images = pixels[: settings.crop_images]
    crops = cut_crops(images, crop_boxes(images.shape[-1], view.params.granularities))
    if view.params.min_crop_std > 0:
        crops = crops[has_content(crops, view.params.min_crop_std)]
    return crops


def optimality_and_edges(
    model: nn.Module, view: CircuitView, pixels: torch.Tensor, settings: EvalSettings, subs: list[nn.Module],
    device: torch.device = torch.device("cpu"),
) -> list[EvalRow]:
    from neurflow.attribution import integrated_gradients  # loads captum (0.8 s): not for importers of KINDS / EvalSettings

    names, cls = view.names, view.class_index
    crops = crop_set(view, pixels, settings).to(device)
    k = view.params.k
    if k >= crops.shape[0]:
        raise NeurflowInputError(
            f"k={k} needs more than {crops.shape[0]} held-out crops: raise --crop-images (now {settings.crop_images})"
        )
    steps = settings.ig_steps or view.params.ig_steps
    rows: list[EvalRow] = []
    for d in range(len(names) - 1):
        lower_name, width = names[d + 1], view.layers[d + 1][1]
        candidates = [u for u in view.critical.get(d, []) if view.core.get((d, u))]
        if not candidates:
            continue
        rng = _rng(settings, cls, d, 1)
        units = sorted(rng.choice(candidates, size=min(settings.opt_neurons, len(candidates)), replace=False).tolist())
        with torch.no_grad():
            h = capture(model, crops, [lower_name], reduce=False)[lower_name]
            base_acts = spatial_mean(subs[d](h))[:, torch.as_tensor(units)].float().cpu()
        base_top = base_acts.topk(k, dim=0).indices  # (k, units)

        # masks: one core mask per unit, then random core-sized subsets per size, then edge sets
        core_sets = [[v for v, _ in view.core[(d, u)]] for u in units]
        masks: list[torch.Tensor] = [_ones(width, s) for s in core_sets]
        opt_sets: dict[int, list[np.ndarray]] = {}
        for size in sorted({len(s) for s in core_sets}):
            opt_sets[size] = _sample_sets(_rng(settings, cls, d, 100 + size), width, size, settings.opt_random)
        opt_at = {}
        for size, sets in opt_sets.items():
            opt_at[size] = len(masks)
            masks += [_ones(width, s) for s in sets]
        sizes = sorted({min(s, width - 1) for s in settings.edge_sizes if width > 1})
        edge_sets = [s for size in sizes for s in _sample_sets(_rng(settings, cls, d, 1000 + size), width, size, settings.edge_sets)]
        edge_at = len(masks)
        masks += [_ones(width, s) for s in edge_sets]
        ov = _overlaps(subs[d], h, units, torch.stack(masks), k, base_top, settings.batch_rows)

        # optimality
        beats, core_ov, rand_ov = [], [], []
        for j, s in enumerate(core_sets):
            r = ov[opt_at[len(s)] : opt_at[len(s)] + settings.opt_random, j]
            beats.append(float((r > ov[j, j]).mean()))
            core_ov.append(float(ov[j, j]))
            rand_ov.extend(r.tolist())
        b_mean, b_std = _nanstats(beats)
        rows.append(EvalRow(
            "optimality", names[d], d, "mask", "core_vs_random", b_mean, value_std=b_std,
            random_mean=float(np.mean(rand_ov)), random_std=float(np.std(rand_ov)), baseline=float(np.mean(core_ov)),
            size=float(np.mean([len(s) for s in core_sets])), n=len(units), lower=lower_name,
        ))  # fmt: skip

        # edge weights: importance of every lower channel for each sampled unit
        sub = subs[d]
        corr: dict[tuple[str, str], list[float]] = {(a, b): [] for a in ("sum", "mean") for b in ("pearson", "spearman")}
        for j, u in enumerate(units):
            top = h[base_top[:, j].to(h.device)]
            ig = integrated_gradients(sub, top, torch.full((k,), u, device=h.device), steps=steps,
                                      internal_batch_size=settings.batch_rows)
            importance = ig.abs().mean(0).cpu().numpy().astype(float)
            for v, imp in view.core[(d, u)]:
                importance[v] = imp
            summed = np.array([importance[s].sum() for s in edge_sets])
            meaned = np.array([importance[s].mean() for s in edge_sets])
            y = ov[edge_at:, j]
            for agg, x in (("sum", summed), ("mean", meaned)):
                p, s = _correlations(x, y)
                corr[(agg, "pearson")].append(p)
                corr[(agg, "spearman")].append(s)
        for (agg, method), values in corr.items():
            mean, std = _nanstats(values)
            rows.append(EvalRow("edge_weight", names[d], d, agg, method, mean, value_std=std,
                                size=float(len(edge_sets)), n=len(units), lower=lower_name))
    return rows


def evaluate_circuit(
    model: nn.Module, view: CircuitView, pixels: torch.Tensor, settings: EvalSettings = EvalSettings(),
    *, device: str | torch.device = "cpu", kinds: tuple[str, ...] = KINDS,
    on_phase: Callable[[str], None] | None = None,
) -> list[EvalRow]:
    """All evaluations of one circuit on held-out `pixels` of its class (preprocessed for `model`)."""
    settings.validate()
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise NeurflowInputError(f"unknown evaluation kind {unknown[0]!r}: use {', '.join(KINDS)}")
    if pixels.ndim != 4 or pixels.shape[0] == 0:
        raise NeurflowInputError(f"need a non-empty (N, C, H, W) batch of held-out images, got {tuple(pixels.shape)}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        subs = build_subs(model, view, tuple(pixels.shape[1:]))
        for s in subs:
            s.to(device)
        rows: list[EvalRow] = []
        if "fidelity" in kinds:
            on_phase and on_phase("fidelity")
            rows += fidelity(model, view, pixels, settings, subs, device)
        if "optimality" in kinds or "edge_weight" in kinds:
            on_phase and on_phase("optimality + edge weights")
            rows += [r for r in optimality_and_edges(model, view, pixels, settings, subs, device) if r.kind in kinds]
    finally:
        model.train(was_training)
    return rows


def settings_json(settings: EvalSettings) -> str:
    return json.dumps(settings.to_dict(), sort_keys=True)
