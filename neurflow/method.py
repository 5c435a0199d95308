"""`build_circuit`: the NeurFlow method from a model, a layer list and one class's images.

Pipeline (spec section in brackets):
  validate input -> keep images predicted as the class [§1] -> cut crops [§1]
  -> one forward pass per crop batch reads every layer [§2]
  -> per layer, top to bottom: top samples [§2], batched IG [§3], core sets [§3, §4],
     concepts and edge weights [§5, §6]
  -> groups per layer [§7] -> group edges [§8] -> a `Circuit`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from neurflow.progress import tqdm

from neurflow import __version__
from neurflow.adaptive import DEFAULT_ON as _ADAPTIVE_DEFAULT
from neurflow.allocator import keep_freed_memory
from neurflow.attribution import IGRun, auto_max_rows, available_bytes
from neurflow.circuit import (
    LOGITS,
    Circuit,
    ConceptMemberRec,
    ConceptRec,
    CoreRec,
    CropRec,
    EdgeRec,
    ImageRec,
    LayerRec,
    NeuronRec,
    Params,
    Identity,
    TopSampleRec,
    data_fingerprint,
)
from neurflow.concepts import neuron_concepts
from neurflow.groups import group_edges, layer_groups
from neurflow.hooks import capture, fired_once, output_tensor, run_once, spatial_mean, valid_layer_names
from neurflow.errors import class_label, option
from neurflow.images import ImageSet, NeurflowInputError, crop_boxes, cut_crops, has_content
from neurflow.ig_strategy import IGStrategy, LayerIG, choose as _choose_ig, tf32
from neurflow.forward_copy import forward_copy
from neurflow.subnetwork import build_subnetworks, check_cuts, fold_batchnorm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """How the work is batched and which speed-ups run.

    Batching, memory layout, the BatchNorm folds, map reuse and the allocator setting change the
    stored numbers by float rounding at most and are no part of a circuit's identity.  The IG
    strategy (`ig_strategy`: exact, adaptive, certified low precision) is recorded in the
    circuit's identity (`precision`): adaptive IG stores values within its tolerance of the
    full-step ones, and bf16/TF32 keep the core sets but not every stored importance bit for
    bit, so each is another circuit."""

    crop_batch: int | None = None  # crops per forward pass when reading activations; None: by image size
    ig_internal_batch: int | None = None  # IG path points per forward pass; None: from free memory
    autocast_dtype: torch.dtype | None = None  # torch.bfloat16: IG in bf16, close calls redone in fp32
    tf32: bool = False  # CUDA: IG convolutions in TF32, close calls redone in fp32 (otherwise TF32 is off)
    channels_last: bool | None = None  # NHWC convolutions; None: for images of 64 px and more, or on a GPU
    fold_batchnorm: bool = True  # fold eval BatchNorm into the convs of the IG sub-networks
    reuse_maps: bool = True  # IG reads the lower maps the activation pass read (False: a forward pass again)
    # fp32 IG on a ladder of step counts, each neuron stopping where its core set, ranks and stored
    # values are certified (neurflow/adaptive.py); False (--exact-ig): every neuron at ig_steps
    adaptive_ig: bool = _ADAPTIVE_DEFAULT
    # glibc keeps freed blocks for the next batch instead of faulting fresh pages in (neurflow/allocator.py;
    # process-wide, once): 2x on the CPU activation pass of 224 px crops, same numbers
    keep_freed_memory: bool = True
    # the forward passes over images and crops run a copy of the model with eval BatchNorm folded into the
    # convs and ReLUs in place where safe (neurflow.forward_copy): the same means up to fp32 rounding of the
    # size channels-last gives (README, Ingestion speed); None: with adaptive IG (the default path), off with --exact-ig
    forward_copy: bool | None = None

    @property
    def fast_forward(self) -> bool:
        return self.adaptive_ig if self.forward_copy is None else self.forward_copy

    def ig_strategy(self) -> IGStrategy:
        """A fresh IG strategy for one circuit (`neurflow.ig_strategy`; adaptive IG keeps state
        from layer to layer): the one place the budget's IG options are read."""
        return _choose_ig(self.autocast_dtype, self.tf32, self.adaptive_ig)

    @property
    def precision(self) -> str:
        """How IG was computed, as recorded in a circuit's identity (the strategy's name for it)."""
        return self.ig_strategy().precision


def circuit_identity(images: ImageSet, params: Params, layers: list[str], budget: Budget = Budget()) -> Identity:
    """The identity `build_circuit` gives the circuit of these inputs, known before it is built
    (ingestion's skip check): the one place that says which inputs make up a circuit's identity.

    The fingerprint is of the images handed in: the selection (predicted only, max_images)
    follows from them and the parameters."""
    return Identity(params, tuple(layers), images.origin, data_fingerprint(images.sha256), budget.precision)


PhaseCallback = Callable[[str, int, int], None]
"""`(phase, done, total)`: lets callers (the ingest CLI) draw their own progress."""


@dataclass(frozen=True)
class RunOptions:
    """Who the circuit is of and how one build reports, apart from what it computes.

    The names are recorded in the circuit as given (`model_uid`, `class_name`; None: the class
    index as text); the device is where the method runs; `progress` draws bars and `on_phase`
    hands `(phase, done, total)` to a caller that draws its own.  None of them enters a
    circuit's identity (`circuit_identity`)."""

    model_uid: str = "model"
    class_name: str | None = None
    device: str | torch.device = "cpu"
    progress: bool = True
    on_phase: PhaseCallback | None = None


def validate_layers(model: nn.Module, layers: list[str], example: torch.Tensor) -> list[str]:
    """Return the full layer list (logits first) after checking names and top-to-bottom order."""
    return resolve_layers(model, layers, example)[0]


def resolve_layers(model: nn.Module, layers: list[str], example: torch.Tensor) -> tuple[list[str], list[str]]:
    """`(full layer list with logits first, notes)` after checking names and top-to-bottom order.

    A first layer whose output is the model output (the paper's code writes `fc` for a ResNet)
    is the logits: it is taken as the logits pseudo-layer, with a note, instead of becoming an
    extra identity layer whose core sets would be filled with zero-importance channels."""
    return _resolve_layers(model, layers, example)[:2]


def _resolve_layers(
    model: nn.Module, layers: list[str], example: torch.Tensor
) -> tuple[list[str], list[str], dict[str, torch.Tensor]]:
    """`resolve_layers`, plus `example`'s spatial means at every resolved layer and its logits,
    all from one forward pass of `example` (it used to take three)."""
    layers, notes = list(layers), []
    if layers and layers[0] == LOGITS:
        layers = layers[1:]
    modules = dict(model.named_modules())
    with torch.no_grad():
        fired, outputs, result = run_once(model, example, [n for n in layers if n in modules])
    logits = output_tensor(result)
    if layers and layers[0] in modules:
        if layers[0] not in outputs:
            raise NeurflowInputError(f"layer(s) {[layers[0]]} never ran in the model's forward pass")
        first = output_tensor(outputs[layers[0]])
        if first.shape == logits.shape and torch.equal(first, logits):
            notes.append(f"layer {layers[0]!r} outputs the model's logits: it is the class-logit layer, not a layer below it")
            layers = layers[1:]
    layers = [LOGITS] + layers
    if len(layers) < 2:
        raise NeurflowInputError("give at least one layer below the logits")
    if len(set(layers)) != len(layers):
        raise NeurflowInputError(f"layer list has duplicates: {layers}")
    unknown = [n for n in layers[1:] if n not in modules]
    if unknown:
        raise NeurflowInputError(f"unknown layer(s) {unknown}; valid layers: {', '.join(valid_layer_names(model))}")
    for a in layers[1:]:
        for b in layers[1:]:
            if a != b and b.startswith(a + "."):
                raise NeurflowInputError(f"layer {b!r} lies inside layer {a!r}; analyse one or the other")
    analysed = set(layers[1:])
    order = fired_once([n for n in fired if n in analysed])
    if list(reversed(order)) != layers[1:]:
        raise NeurflowInputError(
            f"layer list must be ordered top to bottom (output side first): expected {list(reversed(order))}, got {layers[1:]}"
        )
    means = {LOGITS: logits, **{n: spatial_mean(output_tensor(outputs[n])) for n in layers[1:]}}
    return layers, notes, means


def check_tau(tau: int, layers: list[str], channels: list[int]) -> None:
    """tau (core-set size) must fit in every analysed layer below the logits."""
    for name, c in zip(layers[1:], channels[1:]):
        if tau > c:
            raise NeurflowInputError(f"tau={tau} is larger than layer {name!r}'s {c} channels; pass {option('tau', c)} or less")


def preflight(model: nn.Module, layers: list[str], example: torch.Tensor, classes: list[int], params: Params) -> list[str]:
    """Every check of `build_circuit` that needs only the model, the arguments and one image, for
    all `classes` at once; returns the resolved layer list (logits first).

    Commands run it before anything with side effects (starting the embedded store, opening a
    connection, the first image pass), so a `--tau` too large for a layer, an unknown layer, a
    class out of range or images with the wrong channel count is one error line and nothing
    else happens.  `build_circuit` makes the same checks again for each class (a caller of the
    library gets them without this).  `example` is one preprocessed image `(1, C, S, S)`."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        _check_channels(model, example)
        resolved, _, first = _resolve_layers(model, layers, example.to(device))
    num_classes = first[LOGITS].shape[1]
    for c in classes:
        if not 0 <= c < num_classes:
            raise NeurflowInputError(f"class index {c} out of range: the model has classes 0..{num_classes - 1}")
    check_tau(params.tau, resolved, [first[name].shape[1] for name in resolved])
    check_cuts(model, resolved)
    return resolved


def _check_channels(model: nn.Module, images: torch.Tensor) -> None:
    expected = _expected_channels(model)
    if expected is not None and images.shape[1] != expected:
        raise NeurflowInputError(f"images have {images.shape[1]} channel(s) but the model expects {expected}")


def _expected_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


@contextmanager
def _frozen(model: nn.Module, channels_last: bool = False):
    """Eval mode, no parameter gradients (IG needs input gradients only) and, if asked,
    channels-last conv weights; all restored afterwards."""
    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    data = [p.data for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(False)
        if channels_last and p.ndim == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for p, f, d in zip(params, flags, data):
            p.data = d
            p.requires_grad_(f)
        model.train(was_training)


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Move a batch of pixels or maps to the device (pinned and asynchronous to a GPU)."""
    if device.type == "cuda" and x.device.type == "cpu":
        x = x.pin_memory().to(device, non_blocking=True)
    else:
        x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _top_k(values: np.ndarray, k: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Ids of the `k` largest values; with `keep` (a mask over the ids), only among those kept."""
    if keep is not None:
        values = np.where(keep, values, -np.inf)
    return np.argsort(-values, kind="stable")[:k]


def _content_mask(crops: "_CropSource", min_std: float, batch: int) -> np.ndarray | None:
    """Which crops carry content: pixel std (every channel and pixel) at least `min_std` (Params.min_crop_std).

    `None` when the option is off (0), so the paper's rule runs exactly as before."""
    if min_std <= 0:
        return None
    keep = [has_content(crops.get(list(range(start, min(start + batch, len(crops))))), min_std)
            for start in range(0, len(crops), batch)]
    return torch.cat(keep).numpy()


class _CropSource:
    """Crops by id (`image * boxes + box`), cut on demand so they never all sit in memory."""

    def __init__(self, pixels: torch.Tensor, boxes):
        self.pixels, self.boxes = pixels, boxes

    def __len__(self) -> int:
        return self.pixels.shape[0] * len(self.boxes)

    def get(self, ids: list[int]) -> torch.Tensor:
        nb = len(self.boxes)
        out = torch.empty((len(ids),) + tuple(self.pixels.shape[1:]), dtype=self.pixels.dtype)
        by_box: dict[int, list[int]] = {}
        for pos, cid in enumerate(ids):
            by_box.setdefault(cid % nb, []).append(pos)
        for b, positions in by_box.items():
            images = self.pixels[[ids[p] // nb for p in positions]]
            out[positions] = cut_crops(images, [self.boxes[b]])
        return out


class _MapReader:
    """Full lower-layer maps of crops for IG, with reuse across layers.

    Reading layer `d`'s maps runs the model up to it, passing layer `d + 1` on the way: those
    maps are kept (within a memory budget) for the next layer's IG, which mostly wants the
    same crops, and re-reads within a layer (fp32 close calls, pruning) hit the cache too."""

    def __init__(self, model: nn.Module, layers: list[str], crops: _CropSource, device, budget: Budget):
        self.model, self.layers, self.crops, self.device, self.budget = model, layers, crops, device, budget
        self.cache: dict[tuple[int, int], torch.Tensor] = {}
        self.bytes = 0
        self.limit = available_bytes(torch.device(device)) // 4

    def keep(self, depth: int, ids: list[int], t: torch.Tensor) -> None:
        """Keep layer `depth`'s maps of these crops (read by the activation pass) if they fit."""
        size = t.numel() * t.element_size()
        if self.bytes + size <= self.limit:
            for j, i in enumerate(ids):
                self.cache[(depth, i)] = t[j]
            self.bytes += size

    def reader(self, depth: int) -> Callable[[list[int]], torch.Tensor]:
        for key in [k for k in self.cache if k[0] < depth]:  # layers above are done with
            self.bytes -= self.cache[key].numel() * self.cache[key].element_size()
            del self.cache[key]
        return lambda ids: self.read(depth, ids)

    def read(self, depth: int, ids: list[int]) -> torch.Tensor:
        missing = [i for i in ids if (depth, i) not in self.cache]
        if not missing:
            return torch.stack([self.cache[(depth, i)] for i in ids])
        wanted = [d for d in (depth, depth + 1) if d < len(self.layers)]
        step = self.budget.crop_batch or len(missing)  # big batches of big crops thrash caches (build_circuit)
        with torch.no_grad():
            parts = [
                capture(self.model, _to_device(self.crops.get(missing[start : start + step]), self.device,
                                               self.budget.channels_last), [self.layers[d] for d in wanted], reduce=False)
                for start in range(0, len(missing), step)
            ]
        out = parts[0] if len(parts) == 1 else {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        fresh = {i: j for j, i in enumerate(missing)}
        for d in wanted:
            t = out[self.layers[d]]
            size = t[0].numel() * t.element_size()
            if self.bytes + size * len(missing) <= self.limit:
                for i, j in fresh.items():
                    self.cache[(d, i)] = t[j]
                self.bytes += size * len(missing)
        current = out[self.layers[depth]]
        return torch.stack([current[fresh[i]] if i in fresh else self.cache[(depth, i)] for i in ids])


def build_circuit(
    model: nn.Module,
    layers: list[str],
    images: ImageSet,
    class_index: int,
    params: Params = Params(),
    *,
    budget: Budget = Budget(),
    run: RunOptions = RunOptions(),
) -> Circuit:
    """Build the NeurFlow circuit of `class_index` (see the module docstring for the steps)."""
    started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    device = torch.device(run.device)
    budget = _settled_budget(budget, images, device)
    _seed(params.seed)
    if budget.keep_freed_memory:
        keep_freed_memory()
    phase = run.on_phase or (lambda *_: None)
    model = model.to(device)
    identity = circuit_identity(images, params, [], budget)  # its layers are the resolved ones, below

    with _frozen(model, budget.channels_last), tf32(False):
        _check_channels(model, images.pixels)
        example = _to_device(images.pixels[:1], device, budget.channels_last)
        # one image through every analysed layer: names, order, class and channel counts, cheaply
        layers, notes, first = _resolve_layers(model, layers, example)
        num_classes = first[LOGITS].shape[1]
        if not 0 <= class_index < num_classes:
            raise NeurflowInputError(f"class index {class_index} out of range: the model has classes 0..{num_classes - 1}")
        check_tau(params.tau, layers, [first[name].shape[1] for name in layers])  # before the activation pass
        # g_l of every layer pair before the activation pass too: a layer list that is no chain of
        # cuts fails in a fraction of a second (walking the traced graph), not after the pass
        subs = build_subnetworks(model, layers, tuple(images.pixels.shape[1:]))
        if budget.fold_batchnorm:
            subs = [fold_batchnorm(sub) for sub in subs]

        forward = _forward_model(model, budget, layers)
        images = _select_images(forward, images, class_index, params, device, budget, run.class_name)
        boxes = crop_boxes(images.size, params.granularities)
        crops = _CropSource(images.pixels, boxes)
        if params.k > len(crops):
            raise NeurflowInputError(f"k={params.k} is larger than the {len(crops)} crops available; lower k or add images")
        maps = _MapReader(forward, layers, crops, device, budget)
        means = _collect_means(forward, layers, crops, device, budget, run.progress, phase,
                               maps if budget.reuse_maps else None)
        keep = _content_mask(crops, params.min_crop_std, budget.crop_batch)
        if keep is not None and params.k > int(keep.sum()):
            raise NeurflowInputError(
                f"k={params.k} is larger than the {int(keep.sum())} crops with content (pixel std >= "
                f"{params.min_crop_std:g}) of {len(crops)}; lower k or min_crop_std, or add images"
            )
        channels = [means[name].shape[1] for name in layers]
        circuit = Circuit(
            model=run.model_uid,
            class_index=class_index,
            class_name=run.class_name if run.class_name is not None else str(class_index),
            params=params,
            image_size=images.size,
            neurflow_version=__version__,
            data_source=identity.data_source,
            data_fingerprint=identity.data_fingerprint,
            precision=identity.precision,
            notes=notes + [note for note in [images.channel_note(), images.upscale_note(params.granularities),
                                            _blank_note(keep, params)] if note],
            started_at=started_at,
            layers=[LayerRec(depth=d, name=n, channels=c) for d, (n, c) in enumerate(zip(layers, channels))],
            images=[
                ImageRec(image_id=i, source=images.sources[i], sha256=images.sha256[i], label=int(images.labels[i]))
                for i in range(len(images))
            ],
        )
        build = _Build(circuit, params, budget, device, crops, keep, budget.ig_strategy(), run.progress, phase)
        critical: list[list[int]] = [[class_index]]
        for d in range(len(layers) - 1):
            critical.append(_analyse_layer(build, d, critical[d], means[layers[d]].numpy(),
                                           means[layers[d + 1]].numpy(), subs[d], maps.reader(d + 1)))
        _add_bottom(build, critical[-1], means[layers[-1]])
        zero = circuit.zero_importance_core()
        if zero:
            circuit.notes.append(
                f"{zero} core neuron(s) have importance 0: ties broken by channel order, not by the data "
                "(too few top samples, dead channels, or tau larger than the neurons that matter)"
            )
        _add_groups(circuit, params, phase)
        nb = len(boxes)
        circuit.crops = [
            CropRec(cid, cid // nb, *boxes[cid % nb][:4], granularity=boxes[cid % nb][4]) for cid in sorted(build.used_crops)
        ]
    circuit.seconds = time.perf_counter() - started
    circuit.finished_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return circuit


def _settled_budget(budget: Budget, images: ImageSet, device: torch.device) -> Budget:
    """`budget` with its by-size defaults (None) filled in for these images on this device."""
    if budget.crop_batch is None:  # 512 small images, ~40 at 224 px: big batches of big images only thrash caches
        budget = replace(budget, crop_batch=int(min(512, max(16, 512 * 64 * 64 // max(1, images.pixels.shape[-2] * images.pixels.shape[-1])))))
    if budget.channels_last is None:  # measured: 0.9-2x faster for ResNet50 crops, 3x slower at 28 px
        budget = replace(budget, channels_last=device.type == "cuda" or min(images.pixels.shape[-2:]) >= 64)
    return budget


def _add_bottom(build: _Build, critical: list[int], means: torch.Tensor) -> None:
    """The bottom layer's critical neurons and their top samples (no core sets below them)."""
    circuit, bottom = build.circuit, len(build.circuit.layers) - 1
    circuit.neurons += [NeuronRec(depth=bottom, channel=c) for c in critical]
    for c in critical:
        for r, cid in enumerate(_top_k(means.numpy()[:, c], build.params.k, build.keep)):
            circuit.top_samples.append(TopSampleRec(bottom, c, r, int(cid), float(means[cid, c])))
            build.used_crops.add(int(cid))


def _blank_note(keep: np.ndarray | None, params: Params) -> str | None:
    """One line for the circuit's notes when `min_crop_std` left crops out of the concept data."""
    if keep is None:
        return None
    return (f"{int((~keep).sum())} of {len(keep)} crops left out of the concept data as (nearly) uniform "
            f"(pixel std < {params.min_crop_std:g}, min_crop_std)")


def _forward_model(model: nn.Module, budget: Budget, layers: list[str]) -> nn.Module:
    """The model the forward passes over images and crops run: on the default path a copy with
    eval BatchNorm folded into the convolutions and ReLUs in place where nothing read is
    overwritten (`Budget.forward_copy`, `forward_copy`; ResNet50 crops: the activation pass
    10-14 % faster), sharing the weights it does not change; else the model."""
    if not budget.fast_forward:
        return model
    folded = forward_copy(model, [name for name in layers if name != LOGITS])
    if folded is None:
        return model
    if budget.channels_last:  # the new (folded) conv weights; the shared ones are channels-last already (_frozen)
        for p in folded.parameters():
            if p.ndim == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    return folded


def _select_images(model, images: ImageSet, class_index: int, params: Params, device, budget: Budget,
                   class_name: str | None = None) -> ImageSet:
    """Spec §1: keep the images the model predicts as the class (if asked), then cap the count."""
    if params.predicted_only:
        keep = []
        with torch.no_grad():
            for start in range(0, len(images), budget.crop_batch):
                x = _to_device(images.pixels[start : start + budget.crop_batch], device, budget.channels_last)
                pred = capture(model, x, [LOGITS])[LOGITS].argmax(dim=1).cpu()
                keep += [start + i for i in torch.nonzero(pred == class_index).flatten().tolist()]
                if params.max_images is not None and len(keep) >= params.max_images:
                    break  # the first max_images predicted ones are all that is kept: predict no more
        if not keep:
            raise NeurflowInputError(
                f"the model predicts class {class_label(class_index, class_name)} for none of the {len(images)} "
                f"images given; pass images of that class, or {option('predicted_only', False)} to keep the images "
                "the model misclassifies (random weights misclassify nearly all)"
            )
        images = images.subset(keep)
    if params.max_images is not None and len(images) > params.max_images:
        images = images.subset(list(range(params.max_images)))
    return images


def _collect_means(model, layers, crops: _CropSource, device, budget: Budget, progress, phase,
                   maps: _MapReader | None = None) -> dict[str, torch.Tensor]:
    """One forward pass per crop batch reads the spatial means of every analysed layer (spec §2).

    With `maps`, the same pass hands it the full maps of the layers below the logits (as far as
    they fit its memory budget): IG reads the lower maps of the top crops, which would otherwise
    cost a second forward pass of those crops (measured on the demo model: 1.2 s of an 11 s build)."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    total = len(crops)
    bar = tqdm(total=total, desc="activations", unit="crop", disable=not progress, leave=False)
    with torch.no_grad():
        for start in range(0, total, budget.crop_batch):
            ids = list(range(start, min(start + budget.crop_batch, total)))
            out = capture(model, _to_device(crops.get(ids), device, budget.channels_last), layers, stop_early=False,
                          reduce=maps is None)
            for d, name in enumerate(layers):
                if maps is not None and d > 0:
                    maps.keep(d, ids, out[name])
                    out[name] = spatial_mean(out[name])
                parts[name].append(out[name].float().cpu())
            bar.update(len(ids))
            phase("activations", min(start + budget.crop_batch, total), total)
    bar.close()
    means = {name: torch.cat(p) for name, p in parts.items()}
    for name, m in means.items():
        if not torch.isfinite(m).all():
            raise NeurflowInputError(f"layer {name!r} produced NaN or infinite activations; check the weights and inputs")
    return means


@dataclass
class _Build:
    """What the layers of one circuit share while `build_circuit` analyses them top to bottom."""

    circuit: Circuit
    params: Params
    budget: Budget
    device: torch.device
    crops: _CropSource
    keep: np.ndarray | None  # crops with content (`_content_mask`); None: all
    strategy: IGStrategy  # chosen once from the budget; adaptive IG carries its verdict down the layers
    progress: bool
    phase: PhaseCallback
    used_crops: set[int] = field(default_factory=set)


def _analyse_layer(build: _Build, d: int, upper: list[int], upper_means: np.ndarray, lower_means: np.ndarray,
                   sub: nn.Module, lower_maps) -> list[int]:
    """Top samples, IG, core sets, concepts and edge weights for the critical neurons at depth `d`.

    Returns the critical neurons one layer down (the union of the core sets, spec §4)."""
    tops = {u: _top_k(upper_means[:, u], build.params.k, build.keep) for u in upper}
    pairs = [(u, int(cid)) for u in upper for cid in tops[u]]
    attributions = _layer_ig(build, d, upper, pairs, sub, lower_maps)
    below: set[int] = set()
    for i, u in enumerate(upper):
        core = _add_neuron(build, d, u, attributions[i], tops[u], (upper_means, lower_means), sub, lower_maps)
        below.update(int(v) for v in core)
    return sorted(below)


def _layer_ig(build: _Build, d: int, upper: list[int], pairs: list[tuple[int, int]], sub: nn.Module,
              lower_maps) -> np.ndarray:
    """`(neurons, k, C)` attributions of the layer at depth `d`, by the circuit's IG strategy."""
    budget, name = build.budget, build.circuit.layers[d].name
    bar = tqdm(total=len(pairs), desc=f"IG {name}", unit="pair", disable=not build.progress, leave=False)
    done = [0]

    def on_rows(n: int) -> None:
        bar.update(n)
        done[0] += n
        build.phase(f"IG {name}", done[0], len(pairs))

    max_rows = budget.ig_internal_batch or auto_max_rows(
        sub, lower_maps([pairs[0][1]]), build.device, autocast_dtype=budget.autocast_dtype,
        channels_last=budget.channels_last,
    )
    layer = LayerIG(name, sub, upper, pairs, build.params.k, build.params.tau, build.params.ig_steps, lower_maps,
                    IGRun(build.device, max_rows, None, budget.channels_last), on_rows)
    attributions = build.strategy.attributions(layer)
    bar.close()
    return attributions


def _add_neuron(build: _Build, d: int, u: int, a_u: np.ndarray, top: np.ndarray,
                means: tuple[np.ndarray, np.ndarray], sub: nn.Module, lower_maps) -> np.ndarray:
    """Neuron `u`'s core set, top samples, concepts and edges into the circuit (spec §3-6);
    returns the core set.  `means` are the upper and lower layers' spatial means per crop."""
    circuit, params = build.circuit, build.params
    upper_means, lower_means = means
    circuit.neurons.append(NeuronRec(depth=d, channel=u))
    importance = np.abs(a_u).mean(axis=0)
    core = np.argsort(-importance, kind="stable")[:params.tau]
    if params.epsilon >= 0:
        core = _prune(build, sub, u, core, top, lower_maps)
    for r, v in enumerate(core):
        circuit.core.append(CoreRec(d, u, int(v), r, float(importance[v])))
    for r, cid in enumerate(top):
        circuit.top_samples.append(TopSampleRec(d, u, r, int(cid), float(upper_means[cid, u])))
        build.used_crops.add(int(cid))
    nc = neuron_concepts(
        lower_means[top], upper_means[top, u], a_u, core,
        max_concepts=params.max_concepts, num_representatives=params.num_representatives,
    )
    for j in range(len(nc.vectors)):
        circuit.concepts.append(
            ConceptRec(d, u, j, int((nc.labels == j).sum()), float(nc.mean_activations[j]),
                       tuple(float(x) for x in nc.vectors[j]))
        )
        rep_rank = {pos: r for r, pos in enumerate(nc.representatives[j])}
        for pos in np.flatnonzero(nc.labels == j):
            circuit.concept_members.append(
                ConceptMemberRec(d, u, j, int(top[pos]), float(upper_means[top[pos], u]), rep_rank.get(int(pos), -1))
            )
        for col, v in enumerate(core):
            circuit.edges.append(EdgeRec(d, u, j, int(v), float(nc.weights[j, col])))
    return core


def _prune(build: _Build, sub, u, ranked, top, lower_maps) -> np.ndarray:
    """Optional pruning of spec §3: the shortest prefix whose top-k overlap is near the minimum."""
    params, device, batch, n_crops = build.params, build.device, build.budget.crop_batch, len(build.crops)
    k = params.k
    prefixes = [torch.as_tensor(ranked[:i].copy(), device=device) for i in range(1, len(ranked) + 1)]
    values: list[list[torch.Tensor]] = [[] for _ in prefixes]
    for start in range(0, n_crops, batch):
        ids = list(range(start, min(start + batch, n_crops)))
        lower = lower_maps(ids).to(device)  # read once per batch, masked once per prefix
        for i, prefix in enumerate(prefixes):
            h = lower.clone()
            h[:, prefix] = 0
            with torch.no_grad():
                values[i].append(spatial_mean(sub(h))[:, u].float().cpu())
    acts = [torch.cat(v).numpy() for v in values]
    base = set(int(c) for c in top)
    acc = np.array([len(base & set(int(c) for c in _top_k(a, k, build.keep))) / k for a in acts])
    length = int(np.flatnonzero(acc < acc.min() + params.epsilon)[0]) + 1 if params.epsilon > 0 else int(np.argmin(acc)) + 1
    return ranked[:length]


def _add_groups(circuit: Circuit, params: Params, phase) -> None:
    """Spec §7-8: groups in every layer that has concepts, then edges between adjacent layers."""
    depths = sorted({c.depth for c in circuit.concepts})
    for d in depths:
        rows = [c for c in circuit.concepts if c.depth == d]
        vectors = np.array([c.vector for c in rows])
        circuit.group_members += layer_groups(
            d, [(c.channel, c.index) for c in rows], vectors,
            num_groups=params.num_groups, max_groups=params.max_groups, num_top_vecs=params.num_top_vecs,
        )
        phase("groups", depths.index(d) + 1, len(depths))
    for d in depths:
        if d + 1 in depths:
            circuit.group_edges += group_edges(d, circuit.group_members, circuit.edges)
