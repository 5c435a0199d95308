"""Forward hooks on the module tree: read layer outputs, stop a forward early, mask channels.

Everything the method knows about a model's insides comes through these hooks, so any
`nn.Module` whose analysed layers are named submodules works, whatever its forward code does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from neurflow.circuit import LOGITS
from neurflow.images import NeurflowInputError


class _StopForward(Exception):
    """Raised by a hook once every wanted output is captured, to skip the rest of the model."""


def module_of(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise NeurflowInputError(f"unknown layer {name!r}; valid layers: {', '.join(valid_layer_names(model))}")
    return modules[name]


def valid_layer_names(model: nn.Module) -> list[str]:
    return [LOGITS] + [n for n, _ in model.named_modules() if n]


def spatial_mean(t: torch.Tensor) -> torch.Tensor:
    """Neuron activation of spec §Notation: the spatial mean of a channel (vectors as they are)."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:  # (B, C, L) sequences
        return t.mean(dim=2)
    if t.ndim == 2:
        return t
    raise NeurflowInputError(f"layer output of shape {tuple(t.shape)} is not (B, C[, H, W])")


def output_tensor(output) -> torch.Tensor:
    """A layer's or the model's output as a tensor (an output object's `logits`, a tuple's first item)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise NeurflowInputError(f"cannot read a tensor from a layer output of type {type(output).__name__}")


def capture(
    model: nn.Module, x: torch.Tensor, names: Iterable[str], *, reduce: bool = True, stop_early: bool = True
) -> dict[str, torch.Tensor]:
    """Run `model(x)` once and return the outputs of the named layers (spatial means if `reduce`).

    `LOGITS` names the model output.  With `stop_early`, the forward is cut as soon as every
    named module has fired, so reading a low layer costs only the layers below it.
    """
    names = list(names)
    wanted = {n for n in names if n != LOGITS}
    out: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            t = output_tensor(output)
            out[name] = spatial_mean(t) if reduce else t
            if stop_early and LOGITS not in names and wanted.issubset(out):
                raise _StopForward

        return hook

    for name in wanted:
        handles.append(module_of(model, name).register_forward_hook(make_hook(name)))
    try:
        result = model(x)
        if LOGITS in names:
            out[LOGITS] = output_tensor(result)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = wanted - set(out)
    if missing:
        raise NeurflowInputError(f"layer(s) {sorted(missing)} never ran in the model's forward pass")
    return out


def run_once(model: nn.Module, x: torch.Tensor, names: Iterable[str]) -> tuple[list[str], dict[str, object], object]:
    """One forward pass: the firing order of the named modules (a module that fires twice is
    listed twice), their last raw outputs, and the model output.  What `execution_order`,
    `capture` and the logits check of `neurflow.method` each ran a pass for, read from one."""
    fired: list[str] = []
    outputs: dict[str, object] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            fired.append(name)
            outputs[name] = output

        return hook

    for name in dict.fromkeys(names):
        if name != LOGITS:
            handles.append(module_of(model, name).register_forward_hook(make_hook(name)))
    try:
        result = model(x)
    finally:
        for h in handles:
            h.remove()
    return fired, outputs, result


def execution_order(model: nn.Module, x: torch.Tensor, names: Iterable[str]) -> list[str]:
    """The order in which the named modules fire on `x` (each must fire exactly once)."""
    with torch.no_grad():
        fired, _, _ = run_once(model, x, names)
    return fired_once(fired)


def fired_once(fired: list[str]) -> list[str]:
    """`fired` (a firing order from `run_once`) if no module in it fired twice."""
    repeated = sorted({n for n in fired if fired.count(n) > 1})
    if repeated:
        raise NeurflowInputError(f"layer(s) {repeated} run more than once per forward pass; pick modules that run once")
    return fired


@contextlib.contextmanager
def masked_channels(model: nn.Module, masks: dict[str, torch.Tensor]) -> Iterator[None]:
    """Multiply named layer outputs by per-channel masks while the context is open.

    A mask is `(C,)` (one mask for every sample) or `(B, C)` (one mask per sample, which lets
    many masking experiments share one forward pass).  0 zeroes a channel, 1 keeps it."""
    handles = []

    def make_hook(mask: torch.Tensor):
        def hook(_module, _inputs, output):
            t = output_tensor(output)
            m = mask.to(device=t.device, dtype=t.dtype)
            shape = (1 if m.ndim == 1 else m.shape[0], m.shape[-1]) + (1,) * (t.ndim - 2)
            return t * m.reshape(shape)

        return hook

    for name, mask in masks.items():
        if name == LOGITS:
            raise NeurflowInputError("the logits layer cannot be masked")
        handles.append(module_of(model, name).register_forward_hook(make_hook(mask)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
