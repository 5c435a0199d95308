"""Weights files into modules, for every kind of model (`neurflow.models.registry` and the
torchvision and factory loaders of `neurflow.models.loaders`): read a state dict, check it key by
key against the module it is for, load it.

A module that takes a file is built on the meta device (no random initialisation to throw
away: every tensor comes from the file) and built for real only when it keeps a buffer the file
does not hold (a non-persistent buffer)."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from neurflow.errors import NeurflowInputError

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net")  # what `read_state_dict` unwraps


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
        for key in CHECKPOINT_KEYS:
            if _is_tensor_dict(obj.get(key)):
                obj = obj[key]
                break
    if not _is_tensor_dict(obj):
        raise NeurflowInputError(f"weights file {path} is not a state dict (a dict of tensors): {fix}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def check_match(name: str, path: Path, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """One `NeurflowInputError` line naming the missing and unexpected keys and the shape
    mismatches of `state` against `module` (`name`: the model, as the message shows it)."""
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


def _on_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


def load_into(name: str, path: Path, module: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """`state` (floats as float32, the precision models run in) into `module`, built on the meta
    device or for real, checked key by key first."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    check_match(name, path, module, state)
    module.load_state_dict(state, strict=True, assign=_on_meta(module))
    return module


def load_built(name: str, path: Path, build: Callable[[], nn.Module], state: dict[str, torch.Tensor]) -> nn.Module:
    """`build()` with `state` loaded: built on the meta device, for real only when a buffer the
    file does not hold is left on it."""
    with torch.device("meta"):
        module = build()
    module = load_into(name, path, module, state)
    if _on_meta(module):  # a non-persistent buffer
        module = load_into(name, path, build(), state)
    return module


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """`build()` with random weights from `seed`, the global RNG left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
