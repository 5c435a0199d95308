"""The library's front door: `neurflow.load_model`, `neurflow.load_images`, `neurflow.build_circuit`.

Three calls take a notebook user from a model and a folder of images to a `Circuit`, with the
command line's defaults (both read `Params`, the one source of defaults).  The machinery
underneath (`neurflow.method.build_circuit`, `neurflow.datasets.load_images`,
`neurflow.models.registry.load_model`) stays available for callers that want every knob.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurflow.circuit import Circuit, Params
from neurflow.errors import NeurflowInputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from neurflow.images import ImageSet
    from neurflow.models.registry import LoadedModel

_D = Params()


def load_model(name: str, weights: str | Path | None = None, *, device: str = "auto", random_init: bool = False,
               class_names: str | Path | None = None) -> "LoadedModel":
    """Load a model by name, with its weights, layers, preprocessing and class names.

    Parameters
    ----------
    name : str
        A registry name (``"fashion-resnet"``, ``"fashion-cnn"``, ``"resnet50"``, ``"efficientnet-lite0"``, ...) or any
        other form ``neurflow --model`` accepts (see the README's "Models" section).
    weights : str or Path, optional
        A state-dict file; the registry's own weights when omitted (`fashion-resnet`, the demo
        model, ships its weights; `fashion-cnn` is trained on first use).
    device : str, default "auto"
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    random_init : bool, default False
        Random weights (timing and tests only).
    class_names : str or Path, optional
        A class-names file (one per line, or a JSON list / dict); otherwise the names come from
        the model or its data set.

    Returns
    -------
    LoadedModel
        ``.module`` (eval mode), ``.spec`` (default layers, input size, mean/std), ``.uid``,
        ``.class_names``.

    Examples
    --------
    >>> import neurflow
    >>> model = neurflow.load_model("fashion-resnet")
    >>> model.spec.layers
    ('block4', 'block3', 'block2', 'block1')
    """
    from neurflow.models.registry import load_model as _load_model

    return _load_model(name, str(weights) if weights is not None else None, device=device, random_init=random_init,
                       train_if_missing=True, class_names=class_names)


def _spec(model: Any):
    from neurflow.models.registry import LoadedModel, ModelSpec

    if isinstance(model, LoadedModel):
        return model.spec
    if isinstance(model, ModelSpec):
        return model
    raise NeurflowInputError(
        f"loading images needs a model from neurflow.load_model (for its input size and normalisation), got {type(model).__name__}"
    )


def _class_index(model: Any, class_index: int | str) -> int:
    """A class index, or a class named by name or id (the command line's look-up: `neurflow.classes`)."""
    if isinstance(class_index, str) and not class_index.strip().lstrip("-").isdigit():
        from neurflow.classes import ClassNames

        spec = getattr(model, "spec", None)
        lookup = ClassNames(getattr(model, "class_names", []) or [], getattr(spec, "class_ids", ()) or ())
        found = lookup.find(class_index)
        if found is None:
            raise NeurflowInputError(f"unknown class name {class_index!r}: {lookup.suggestion(class_index)}")
        return found
    return int(class_index)


def load_images(data: str | Path, model: Any, class_index: int | str, *, split: str = "train", limit: int | None = None) -> "ImageSet":
    """The images of one class, preprocessed for `model`.

    Parameters
    ----------
    data : str or Path
        ``"fashion-mnist"`` or an ImageFolder-style folder (one sub-folder per class).
    model : LoadedModel
        From :func:`load_model`: gives the input size, channels and normalisation.
    class_index : int or str
        The model's class index, or its name.
    split : {"train", "test"}, default "train"
        For data sets with splits.
    limit : int, optional
        Keep the first `limit` images (deterministic order).

    Returns
    -------
    ImageSet
        ``.pixels`` ``(N, C, S, S)``, ``.sources``, ``.labels``, ``.sha256``.

    Examples
    --------
    >>> import neurflow
    >>> model = neurflow.load_model("fashion-resnet")
    >>> images = neurflow.load_images("fashion-mnist", model, class_index="Coat", limit=8)
    >>> tuple(images.pixels.shape)
    (8, 1, 28, 28)
    """
    from neurflow.datasets import load_images as _load_images

    return _load_images(str(data), _spec(model), _class_index(model, class_index), split=split, limit=limit)


def build_circuit(
    model: "LoadedModel | nn.Module",
    images: "ImageSet | torch.Tensor | str | Path",
    class_index: int | str,
    *,
    layers: list[str] | tuple[str, ...] | None = None,
    tau: int = _D.tau,
    k: int = _D.k,
    ig_steps: int = _D.ig_steps,
    max_images: int | None = _D.max_images,
    granularities: tuple[float, ...] = _D.granularities,
    num_groups: int | None = _D.num_groups,
    epsilon: float = _D.epsilon,
    predicted_only: bool = _D.predicted_only,
    seed: int = _D.seed,
    min_crop_std: float = _D.min_crop_std,
    device: str = "auto",
    progress: bool = True,
) -> Circuit:
    """Build the NeurFlow circuit of one class: its core concept neurons, concepts, groups and edges.

    Parameters
    ----------
    model : LoadedModel or nn.Module
        From :func:`load_model`, or any classifier module (then `layers` is required and the
        images must already be preprocessed).
    images : ImageSet, Tensor, str or Path
        The class's images: an `ImageSet`, a ``(N, C, H, W)`` tensor of ``[0, 1]`` pixels (made
        ready for a `LoadedModel`, used as given for a plain module), or a data set name /
        ImageFolder folder (needs a `LoadedModel`).
    class_index : int or str
        The class (index, or name for a `LoadedModel`).
    layers : list of str, optional
        Module names, top to bottom; the model's default layers for a `LoadedModel`.  A first
        layer whose output is the model output (``fc``) is taken as the logits.
    tau, k, ig_steps, max_images, granularities, num_groups, epsilon, predicted_only, seed
        The method's options, with the command line's defaults (`neurflow.Params`): core
        neurons per neuron, top samples per neuron, Integrated-Gradients steps, images used,
        crop granularities, groups per layer (None: best silhouette), core-set pruning
        tolerance (< 0: off), keep only images predicted as the class, random seed.
    min_crop_std : float, default 0
        Leave crops whose pixel std is below this out of the concept data (0: the paper's rule,
        every crop; the demo uses 0.2 on Fashion-MNIST, whose crops are often uniform background).
    device : str, default "auto"
        Where to compute.
    progress : bool, default True
        Progress bars.

    Returns
    -------
    Circuit
        ``.summary()``, ``.critical(depth)``, ``.core_of(depth, channel)``, ``.groups(depth)``,
        ``.save(folder)`` (Parquet) and the record tables.

    Examples
    --------
    >>> import neurflow
    >>> model = neurflow.load_model("fashion-resnet")
    >>> images = neurflow.load_images("fashion-mnist", model, class_index=3, limit=24)
    >>> circuit = neurflow.build_circuit(model, images, class_index=3, tau=6, k=20, ig_steps=16)
    >>> circuit.critical(0)
    [3]
    """
    import torch

    from neurflow.datasets import images_from_tensor
    from neurflow.images import ImageSet
    from neurflow.method import RunOptions, build_circuit as _build
    from neurflow.models.registry import LoadedModel, resolve_device

    params = Params(tau=tau, k=k, ig_steps=ig_steps, max_images=max_images, granularities=tuple(granularities),
                    num_groups=num_groups, epsilon=epsilon, predicted_only=predicted_only, seed=seed,
                    min_crop_std=min_crop_std)
    loaded = model if isinstance(model, LoadedModel) else None
    module = loaded.module if loaded else model
    if not isinstance(module, torch.nn.Module):
        raise NeurflowInputError(f"model must be a LoadedModel or a torch.nn.Module, got {type(model).__name__}")
    c = _class_index(loaded, class_index) if loaded else int(class_index)
    if isinstance(images, (str, Path)):
        images = load_images(images, loaded if loaded else model, c)
    elif isinstance(images, torch.Tensor):
        images = (images_from_tensor(images, loaded.spec, [c] * len(images)) if loaded
                  else ImageSet(images.float(), [f"tensor:{i}" for i in range(len(images))], [c] * len(images)))
    elif not isinstance(images, ImageSet):
        raise NeurflowInputError(f"images must be an ImageSet, a tensor or a folder, got {type(images).__name__}")
    if layers is None:
        if loaded is None:
            raise NeurflowInputError("a plain nn.Module needs layers=[...] (module names, top to bottom)")
        layers = list(loaded.spec.layers)
    names = loaded.class_names if loaded else []
    run = RunOptions(model_uid=loaded.uid if loaded else type(module).__name__.lower(),
                     class_name=names[c] if c < len(names) else None, device=resolve_device(device), progress=progress)
    return _build(module, list(layers), images, c, params, run=run)
