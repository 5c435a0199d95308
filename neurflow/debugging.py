"""Image debugging (spec §9): which neuron groups of a circuit fire on a query image, and what
zeroing a group's channels does to the prediction.  Pure computation: the groups come in as
plain records (read from the store or from a `Circuit`), the model as an `nn.Module`.

    groups = groups_from_circuit(circuit)                 # ingest.jobs.image_debugging; or read_groups(store, ...)
    scores = score_groups(model, image, groups)           # ranked, best first
    change = ablate_group(model, image, groups[0])        # logits before / after zeroing the group

Score of group `G` (members `n_i = (layer, channel)`, reference activation `abar_i` = mean of the
neuron's stored concept `mean_activation`s within `G`) on a crop `x`:
`s(x, G) = mean_i log(max(a_{n_i}(x), 0) / (|abar_i| + eps) + eps)`; the group score is
`exp(max_x s(x, G))`, and crops with `exp(s) >= threshold` are the evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch import nn

from neurflow.circuit import LOGITS
from neurflow.errors import NeurflowInputError
from neurflow.hooks import capture, masked_channels
from neurflow.images import crop_boxes, cut_crops, has_content

if TYPE_CHECKING:  # pragma: no cover
    from neurflow.circuit import Circuit

DEBUG_GRANULARITIES = (0.25, 0.5, 1.0)  # the paper's; a circuit built with others is debugged with its own
EPS = 1e-6
THRESHOLD = 0.8


@dataclass
class GroupRef:
    """One group of a circuit as debugging needs it."""

    uid: str
    layer: str
    depth: int
    index: int
    members: list[tuple[int, float]]  # (channel, reference activation abar), one row per neuron
    label: str | None = None
    thumbnails: list[str] = field(default_factory=list)  # representative crops (artifact-relative paths)

    @property
    def channels(self) -> list[int]:
        return [ch for ch, _ in self.members]


@dataclass
class GroupScore:
    group: GroupRef
    score: float  # exp(max_x s(x, G))
    crop_scores: list[float]  # exp(s(x, G)) for every crop x
    evidence: list[int]  # crop indices with exp(s) >= threshold, best first

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group.uid, "layer": self.group.layer, "depth": self.group.depth,
                "label": self.group.label, "score": self.score, "evidence": self.evidence,
                "evidence_scores": [self.crop_scores[i] for i in self.evidence]}  # fmt: skip


@dataclass
class Ablation:
    group: str
    layer: str
    channels: list[int]
    before: list[float]  # logits of the query image
    after: list[float]  # logits with the group's channels zeroed

    @property
    def delta(self) -> list[float]:
        return [a - b for a, b in zip(self.after, self.before)]

    @property
    def predicted_before(self) -> int:
        return max(range(len(self.before)), key=self.before.__getitem__)

    @property
    def predicted_after(self) -> int:
        return max(range(len(self.after)), key=self.after.__getitem__)

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "layer": self.layer, "channels": self.channels, "before": self.before,
                "after": self.after, "delta": self.delta, "predicted_before": self.predicted_before,
                "predicted_after": self.predicted_after}  # fmt: skip


# --------------------------------------------------------------------------- group records
def make_group(uid: str, layer: str, depth: int, index: int, concept_rows: Iterable[tuple[int, float]],
               label: str | None = None, thumbnails: list[str] | None = None) -> GroupRef:
    """A `GroupRef` from the group's (channel, concept mean_activation) rows: abar per neuron is the
    mean over that neuron's concepts in the group."""
    acc: dict[int, list[float]] = {}
    for channel, mean_activation in concept_rows:
        acc.setdefault(int(channel), []).append(float(mean_activation))
    members = [(ch, sum(v) / len(v)) for ch, v in sorted(acc.items())]
    if not members:
        raise NeurflowInputError(f"group {uid} has no members")
    return GroupRef(uid, layer, int(depth), int(index), members, label, list(thumbnails or []))


# --------------------------------------------------------------------------- computation
def _as_batch(image: torch.Tensor) -> torch.Tensor:
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[0] != 1:
        raise NeurflowInputError(f"the query image must be one (C, H, W) tensor, got shape {tuple(image.shape)}")
    return image


def query_crops(image: torch.Tensor, granularities: tuple[float, ...] = DEBUG_GRANULARITIES):
    """The crops of one preprocessed image: `(crops (n, C, S, S), boxes [(x0, y0, x1, y1, g)])`."""
    image = _as_batch(image)
    boxes = crop_boxes(int(image.shape[-1]), tuple(granularities))
    return cut_crops(image, boxes), boxes


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def crop_activations(model: nn.Module, crops: torch.Tensor, layers: Iterable[str], batch: int = 256) -> dict[str, torch.Tensor]:
    """Neuron activations `(n_crops, C)` (float64, CPU) of the named layers on every crop."""
    layers = sorted(set(layers))
    dev = _device(model)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with torch.no_grad():
        for start in range(0, crops.shape[0], batch):
            out = capture(model, crops[start : start + batch].to(dev), layers)
            for name in layers:
                parts[name].append(out[name].detach().double().cpu())
    return {name: torch.cat(p) for name, p in parts.items()}


def crop_log_scores(acts: dict[str, torch.Tensor], group: GroupRef, eps: float = EPS) -> torch.Tensor:
    """`s(x, G)` for every crop (float64)."""
    a = acts[group.layer][:, group.channels]  # (n, m)
    ref = torch.tensor([abs(r) for _, r in group.members], dtype=torch.float64)
    return torch.log(a.clamp(min=0) / (ref + eps) + eps).mean(dim=1)


def score_groups(
    model: nn.Module,
    image: torch.Tensor,
    groups: list[GroupRef],
    *,
    granularities: tuple[float, ...] = DEBUG_GRANULARITIES,
    min_crop_std: float = 0.0,
    threshold: float = THRESHOLD,
    eps: float = EPS,
) -> list[GroupScore]:
    """Every group scored on the crops of `image`, best first (ties by uid).

    Pass the circuit's own `granularities` and `min_crop_std` (`Params`): its groups were found on
    crops of those sizes, and crops it left out as blank background would otherwise be evidence
    for groups that never saw them.  Such crops keep their index (boxes stay aligned) but score 0."""
    if not groups:
        return []
    crops, _ = query_crops(image, granularities)
    acts = crop_activations(model, crops, {g.layer for g in groups})
    blank = ~has_content(crops, min_crop_std) if min_crop_std > 0 else None
    out = []
    for g in groups:
        s = crop_log_scores(acts, g, eps)
        if blank is not None:
            s = s.masked_fill(blank, -math.inf) if not bool(blank.all()) else s
        es = torch.exp(s)
        order = torch.argsort(es, descending=True, stable=True).tolist()
        evidence = [i for i in order if es[i].item() >= threshold]
        out.append(GroupScore(g, math.exp(float(s.max())), es.tolist(), evidence))
    out.sort(key=lambda r: (-r.score, r.group.uid))
    return out


def logits(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The model's logits on one image `(num_classes,)` (CPU)."""
    with torch.no_grad():
        return capture(model, _as_batch(image).to(_device(model)), [LOGITS])[LOGITS][0].detach().cpu()


def ablate_channels(model: nn.Module, image: torch.Tensor, layer: str, channels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits before and after zeroing `channels` of `layer` (both `(num_classes,)`, CPU)."""
    if layer == LOGITS:
        raise NeurflowInputError("a group of the logits layer cannot be ablated (its channels are the outputs)")
    before = logits(model, image)
    x = _as_batch(image).to(_device(model))
    n = capture(model, x, [layer])[layer].shape[1]
    mask = torch.ones(n)
    mask[list(channels)] = 0.0
    with torch.no_grad(), masked_channels(model, {layer: mask}):
        after = capture(model, x, [LOGITS])[LOGITS][0].detach().cpu()
    return before, after


def ablate_group(model: nn.Module, image: torch.Tensor, group: GroupRef) -> Ablation:
    """Zero the group's member channels in its layer and report the logits before and after."""
    before, after = ablate_channels(model, image, group.layer, group.channels)
    return Ablation(group.uid, group.layer, group.channels, before.tolist(), after.tolist())
