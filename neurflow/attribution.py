"""Integrated Gradients of upper neurons with respect to the lower layer (spec §3), batched.

The reference code calls IG once per upper neuron.  Here every (upper neuron, top sample)
pair of a layer is one row of a batch with its own target channel, so one captum call serves
many neurons and the sub-network runs on large batches.  Rows are sorted by crop so that a
chunk needs few distinct lower activations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum.attr import IntegratedGradients
from torch import nn

from neurflow.hooks import spatial_mean


class _NeuronActivation(nn.Module):
    """`h -> a(g(h))`: spatial-mean activations of every channel of the upper layer."""

    def __init__(self, sub: nn.Module):
        super().__init__()
        self.sub = sub

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return spatial_mean(self.sub(h))


def integrated_gradients(
    sub: nn.Module,
    lower: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = 50,
    internal_batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """IG of `a_target(g(h))` w.r.t. `h = lower`, zero baseline, spatially averaged: `(B, C_lower)`."""
    ig = IntegratedGradients(_NeuronActivation(sub))
    ctx = (
        torch.autocast(device_type=lower.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else torch.autocast(device_type=lower.device.type, enabled=False)
    )
    with ctx:
        attr = ig.attribute(
            lower,
            baselines=torch.zeros_like(lower),
            target=targets,
            n_steps=steps,
            internal_batch_size=internal_batch_size,
        )
    return spatial_mean(attr.float())


def layer_attributions(
    sub: nn.Module,
    pairs: list[tuple[int, int]],
    lower_maps: Callable[[list[int]], torch.Tensor],
    *,
    steps: int,
    rows_per_call: int,
    internal_batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Attributions for every `(upper channel, crop id)` pair, in the order given: `(P, C_lower)`.

    `lower_maps(crop_ids)` returns the lower layer's full outputs of those crops."""
    order = sorted(range(len(pairs)), key=lambda i: (pairs[i][1], pairs[i][0]))
    result: torch.Tensor | None = None
    for start in range(0, len(order), rows_per_call):
        rows = order[start : start + rows_per_call]
        crops = sorted({pairs[i][1] for i in rows})
        position = {c: j for j, c in enumerate(crops)}
        maps = lower_maps(crops).to(device)
        h = maps[torch.tensor([position[pairs[i][1]] for i in rows], device=device)]
        targets = torch.tensor([pairs[i][0] for i in rows], device=device)
        attr = integrated_gradients(
            sub, h, targets, steps=steps, internal_batch_size=internal_batch_size, autocast_dtype=autocast_dtype
        ).cpu()
        if result is None:
            result = torch.empty((len(pairs), attr.shape[1]), dtype=torch.float32)
        result[torch.tensor(rows)] = attr
        if on_rows:
            on_rows(len(rows))
    assert result is not None
    return result
