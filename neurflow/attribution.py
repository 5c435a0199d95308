"""Integrated Gradients of upper neurons with respect to the lower layer (spec §3).

Two implementations with one result:

* `integrated_gradients` is the plain captum call (one target per row).  The reference
  code calls it once per upper neuron (`per_neuron_attributions`); the benchmark's baseline
  and the tests use that.
* `layer_attributions` is what the pipeline runs.  For one crop, the IG path `alpha * h`
  is the same whatever upper neuron is the target; only the backward pass depends on the
  target.  So the (neuron, crop) pairs of a layer are grouped by crop, each crop's path
  goes forward once, and one backward pass per target reuses that graph.  Crops are batched
  with crops of as many targets where possible, so few backward passes carry idle rows.  The
  quadrature is captum's Gauss-Legendre rule and the quadrature weights ride in the
  backward pass's output gradient, so the sum over steps costs nothing extra.

The attribution of lower channel `v` is `mean_hw h_v * sum_s w_s d a_u(alpha_s h) / d h_v`,
as captum computes it with a zero baseline (tested against captum).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from numpy.polynomial import legendre, polynomial
from torch import nn

from neurflow.closed_form import closed_form_network
from neurflow.hooks import spatial_mean
from neurflow.subnetwork import input_taps, restrict_outputs

QUADRATURE = "gausslegendre"  # captum's default rule (spec §3)
# the closed form must match the step-by-step sum on a probe crop to this fraction of a row's L1
# norm (float rounding differs; a pre-activation within rounding of 0 may move one point's weight)
CLOSED_FORM_CHECK = 1e-3


class _NeuronActivation(nn.Module):
    """`h -> a(g(h))`: spatial-mean activations of every channel of the upper layer."""

    def __init__(self, sub: nn.Module):
        super().__init__()
        self.sub = sub

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return spatial_mean(self.sub(h))


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)


def integrated_gradients(
    sub: nn.Module,
    lower: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = 50,
    internal_batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """captum IG of `a_target(g(h))` w.r.t. `h = lower`, zero baseline, spatially averaged: `(B, C_lower)`."""
    ig = IntegratedGradients(_NeuronActivation(sub))
    with _autocast(lower.device, autocast_dtype):
        attr = ig.attribute(
            lower,
            baselines=torch.zeros_like(lower),
            target=targets,
            n_steps=steps,
            internal_batch_size=internal_batch_size,
            method=QUADRATURE,
        )
    return spatial_mean(attr.float())


def per_neuron_attributions(
    sub: nn.Module,
    pairs: list[tuple[int, int]],
    lower_maps: Callable[[list[int]], torch.Tensor],
    rule: "IGRule",
    run: "IGRun",
    *,
    on_rows: Callable[[int], None] | None = None,
    **_,
) -> torch.Tensor:
    """The reference code's loop: one captum IG call per upper neuron, its k top samples as one
    batch.  Same signature and result as `layer_attributions` (of `rule`, only the step count:
    the reference has no other rule); the benchmark's baseline and the tests that check the
    pipeline against it."""
    steps, device, autocast_dtype = rule.steps, torch.device(run.device), run.autocast_dtype
    by_neuron: dict[int, list[int]] = {}
    for i, (u, _) in enumerate(pairs):
        by_neuron.setdefault(u, []).append(i)
    result = None
    for u, rows in by_neuron.items():
        h = lower_maps([pairs[i][1] for i in rows]).to(device)
        attr = integrated_gradients(sub, h, torch.full((len(rows),), u, device=device), steps=steps,
                                    autocast_dtype=autocast_dtype).cpu()
        if result is None:
            result = torch.empty((len(pairs), attr.shape[1]))
        result[torch.tensor(rows)] = attr
        if on_rows:
            on_rows(len(rows))
    return result


def quadrature(steps: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """captum's IG nodes `alpha_s` and weights `w_s` for `steps` points."""
    step_sizes, alphas = approximation_parameters(QUADRATURE)
    return (
        torch.tensor(alphas(steps), dtype=torch.float32, device=device),
        torch.tensor(step_sizes(steps), dtype=torch.float32, device=device),
    )


@functools.lru_cache(maxsize=8)
def _kronrod_nodes(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Kronrod on [-1, 1]: the `2n + 1` nodes, their Kronrod weights and the `n`-point
    Gauss weights on the same nodes (0 at the nodes Kronrod added).

    Kronrod's rule keeps Gauss's `n` nodes and adds the `n + 1` roots of the Stieltjes polynomial
    `E` (monic, degree `n + 1`, orthogonal to `P_n x^k` for `k <= n`); its weights make it exact
    for polynomials up to degree `3n + 1` (checked in tests/test_attribution.py)."""
    xg, _ = legendre.leggauss(n)
    pn = legendre.leg2poly([0] * n + [1])

    def integral(p) -> float:
        antiderivative = polynomial.polyint(p)
        return float(polynomial.polyval(1.0, antiderivative) - polynomial.polyval(-1.0, antiderivative))

    a, b = np.zeros((n + 1, n + 1)), np.zeros(n + 1)
    for k in range(n + 1):
        base = polynomial.polymul(pn, [0] * k + [1])
        a[k] = [integral(polynomial.polymul(base, [0] * i + [1])) for i in range(n + 1)]
        b[k] = -integral(polynomial.polymul(base, [0] * (n + 1) + [1]))
    coefficients = np.linalg.lstsq(a, b, rcond=None)[0]  # half the rows vanish by parity
    added = np.real(polynomial.polyroots(np.concatenate([coefficients, [1.0]])))
    added[np.abs(added) < 1e-12] = 0.0
    x = np.sort(np.concatenate([xg, added]))
    moments = np.array([legendre.legval(x, [0] * j + [1]) for j in range(2 * n + 1)])
    wk = np.linalg.solve(moments, np.eye(2 * n + 1)[0] * 2.0)
    _, wg_sorted = legendre.leggauss(n)
    wg = np.zeros_like(x)
    for node, weight in zip(xg, wg_sorted):
        wg[np.argmin(np.abs(x - node))] = weight
    return x, wk, wg


def kronrod_quadrature(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """IG nodes on `[0, 1]` of the `(n, 2n + 1)` Gauss-Kronrod pair and its two weight rows:
    `weights[0]` Kronrod's, `weights[1]` Gauss's `n`-point rule (captum's nodes and weights for
    `n` steps, up to rounding).  One pass over the `2n + 1` path points gives both integrals:
    the Kronrod value and an estimate of its error, `|Kronrod - Gauss|` (adaptive IG's first rung)."""
    x, wk, wg = _kronrod_nodes(n)
    return (torch.tensor(0.5 * (x + 1.0), dtype=torch.float32, device=device),
            torch.tensor(np.stack([0.5 * wk, 0.5 * wg]), dtype=torch.float32, device=device))


def plan_chunks(pairs: list[tuple[int, int]], steps: int, max_rows: int) -> list[list[tuple[int, list[int]]]]:
    """Group pair indices by crop, then crops with the same number of targets into batches of at
    most `max_rows` path points.

    Each chunk is a list of `(crop id, [pair index, ...])`.  A chunk's forward pass is shared by
    its targets, but each of its backward passes runs over every row of the chunk: a crop with
    fewer targets than the chunk's most would ride along idle (measured on the demo model's block2
    layer: 683 crop-backward passes for 260 pairs when crops of 1 to 13 targets shared chunks, 2x
    slower than one captum call per neuron).  So a chunk holds crops of one target count only, and
    the backward passes run over exactly one row per (pair, step); chunks go most targets first."""
    by_crop: dict[int, list[int]] = {}
    for i, (_, crop) in enumerate(pairs):
        by_crop.setdefault(crop, []).append(i)
    order = sorted(by_crop, key=lambda c: (-len(by_crop[c]), c))
    per_chunk = max(1, max_rows // steps)
    chunks: list[list[tuple[int, list[int]]]] = []
    for crop in order:
        entry = (crop, by_crop[crop])
        if chunks and len(chunks[-1]) < per_chunk and len(chunks[-1][0][1]) == len(entry[1]):
            chunks[-1].append(entry)
        else:
            chunks.append([entry])
    return chunks


def _path(maps: torch.Tensor, alphas: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`(n, *shape) -> (n * steps, *shape)`: row `c * steps + s` is `alpha_s * h_c`."""
    n, shape = maps.shape[0], maps.shape[1:]
    x = (alphas.view(1, -1, *([1] * len(shape))) * maps.unsqueeze(1)).reshape(n * alphas.numel(), *shape)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _features_last(t: torch.Tensor) -> torch.Tensor:
    """`(B, C, *spatial) -> (B, positions, C)`, without a copy when `t` is channels-last."""
    if t.ndim == 2:
        return t[:, None, :]
    return t.flatten(2).transpose(1, 2) if t.ndim == 3 else t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, t.shape[1])


def _contract(grad: torch.Tensor, maps: torch.Tensor, steps: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """`attr[c, v] = mean_pos h[c, v, pos] * sum_s grad[c * steps + s, v, pos]`, read in memory order.

    With `weights` `(R, steps)` (the gradients then carry no quadrature weight), one such sum per
    weight row: `(R, n, C)` instead of `(n, C)`."""
    g = _features_last(grad.float())
    g = g.reshape(maps.shape[0], steps, *g.shape[1:])
    if weights is None:
        return (_features_last(maps) * g.sum(dim=1)).mean(dim=1)
    per_point = (_features_last(maps)[:, None] * g).mean(dim=2)  # (n, steps, C): the spatial mean first
    return torch.einsum("rs,nsc->rnc", weights.to(per_point.dtype), per_point)


def _target_network(
    sub: nn.Module, targets: list[int], probe: torch.Tensor, restrict: bool
) -> tuple[nn.Module, dict[int, int]]:
    """`sub` cut down to the target channels when that gives the same values on `probe`,
    with each target's column in its output; otherwise `sub` itself."""
    full = {u: u for u in targets}
    if not restrict:
        return sub, full
    try:
        small = restrict_outputs(sub, targets)
        if small is None:
            return sub, full
        with torch.no_grad():
            want, got = sub(probe)[:, targets], small(probe)
    except Exception:  # an op the rewrite does not understand: run the whole sub-network
        return sub, full
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-7):
        return sub, full
    return small, {u: j for j, u in enumerate(targets)}


@dataclass(frozen=True)
class IGRule:
    """Which sum of gradients one `layer_attributions` call computes: captum's `steps`-point
    Gauss-Legendre rule; with `kronrod`, the `(steps, 2 steps + 1)` Gauss-Kronrod pair on shared
    points (adaptive IG's first rung); with `closed_form`, the `steps`-point sum from one path
    point per crop where the sub-network allows it (`neurflow.closed_form`)."""

    steps: int
    kronrod: bool = False
    closed_form: bool = False


@dataclass(frozen=True)
class IGRun:
    """Where and how the path points run: none of it changes the sum computed, except
    `autocast_dtype` (bf16 IG, which `neurflow.precision` certifies).  `max_rows` bounds the path
    points per forward pass (`auto_max_rows`)."""

    device: torch.device | str
    max_rows: int
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False


def layer_attributions(
    sub: nn.Module,
    pairs: list[tuple[int, int]],
    lower_maps: Callable[[list[int]], torch.Tensor],
    rule: IGRule,
    run: IGRun,
    *,
    targets: list[int] | None = None,
    restrict: bool = True,
    on_rows: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Attributions for every `(upper channel, crop id)` pair, in the order given: `(P, C_lower)`.

    `lower_maps(crop_ids)` returns the lower layer's full outputs of those crops; `restrict`
    computes only the target channels of the upper layer (`restrict_outputs`): those of `pairs`,
    or `targets` (a superset) so that calls on subsets of a layer's pairs run the same sub-network.

    With `rule.kronrod`, the result is `(2, P, C_lower)`: Kronrod's attributions, then the
    `steps`-point Gauss rule's from the same gradients.  With `rule.closed_form`, the closed form
    is checked on the first crop against the step-by-step sum; where the sub-network has none, or
    the check fails, the sum is computed step by step.  Otherwise the gradients carry captum's
    weights exactly as `--exact-ig` has always computed them."""
    device = torch.device(run.device)
    steps, kronrod = rule.steps, rule.kronrod
    alphas, weights = kronrod_quadrature(steps, device) if kronrod else quadrature(steps, device)
    chunks = plan_chunks(pairs, alphas.numel(), run.max_rows)
    first = chunks[0][:2] if chunks else []
    probe = lower_maps([crop for crop, _ in first]).to(device).float()
    net, column = _target_network(sub, sorted(set(targets or ()) | {u for u, _ in pairs}), probe, restrict)
    if rule.closed_form and not kronrod:
        result = _closed_form(net, column, pairs, first, probe, lower_maps, alphas, weights, run, device, on_rows)
        if result is not None:
            return result
    return _run_chunks(net, column, pairs, chunks, lower_maps, alphas, weights, device, run.autocast_dtype,
                       run.channels_last, on_rows, kronrod)


def _closed_form(net, column, pairs, first, probe, lower_maps, alphas, weights, run: IGRun, device,
                 on_rows) -> torch.Tensor | None:
    """`layer_attributions` in closed form, or None where `net` has none or it disagrees with the
    step-by-step sum on the first crop (then with a warning)."""
    closed = closed_form_network(net, alphas, weights, probe)
    if closed is None:
        return None
    check = list(first[0][1])  # the first crop's pairs: both ways, compared
    probe_pairs = [pairs[i] for i in check]
    stepwise = _run_chunks(net, column, probe_pairs, plan_chunks(probe_pairs, alphas.numel(), run.max_rows),
                           lower_maps, alphas, weights, device, None, run.channels_last, None, kronrod=False)
    result = _run_chunks(closed.net, column, pairs, plan_chunks(pairs, 1, run.max_rows), lower_maps,
                         torch.ones(1, device=device), torch.full((1,), closed.scale, device=device),
                         device, None, run.channels_last, on_rows, kronrod=False)
    if _agree(result[check], stepwise):
        return result
    warnings.warn("IG's closed form disagreed with the step-by-step sum on a probe crop; "
                  "computing this layer step by step")
    return None


def _agree(closed: torch.Tensor, stepwise: torch.Tensor, tolerance: float = CLOSED_FORM_CHECK) -> bool:
    """Whether every row of the closed form is within `tolerance` of the step-by-step row (L1);
    a row near zero (a neuron dead on the probe crop) is measured against the probe's largest row."""
    diff = (closed - stepwise).abs().sum(dim=1)
    norm = stepwise.abs().sum(dim=1)
    return bool((diff <= tolerance * (norm + 1e-3 * norm.max()) + 1e-30).all())


def _run_chunks(net, column, pairs, chunks, lower_maps, alphas, weights, device, autocast_dtype, channels_last,
                on_rows, kronrod) -> torch.Tensor:
    """The forward and backward passes of `layer_attributions` over its planned chunks."""
    points = alphas.numel()
    result: torch.Tensor | None = None
    for chunk in chunks:
        maps = lower_maps([crop for crop, _ in chunk]).to(device).float()
        x = _path(maps, alphas, channels_last).requires_grad_(True)
        with _autocast(device, autocast_dtype):
            out = spatial_mean(net(x)).float()
        taps = [t for t in input_taps(net) if t.last is not None]  # slices of x whose gradient autograd leaves to us
        if result is None:
            result = torch.empty(((2,) if kronrod else ()) + (len(pairs), maps.shape[1]), dtype=torch.float32)
        passes = max(len(targets) for _, targets in chunk)
        for j in range(passes):
            slots = [(c, targets[j]) for c, (_, targets) in enumerate(chunk) if j < len(targets)]
            rows = torch.tensor([c for c, _ in slots], device=device)
            cols = torch.tensor([column[pairs[i][0]] for _, i in slots], device=device)
            grad_out = torch.zeros(len(chunk), points, out.shape[1], device=device)
            grad_out[rows[:, None], torch.arange(points, device=device)[None, :], cols[:, None]] = 1.0 if kronrod else weights
            grad, *tapped = torch.autograd.grad(out, [x] + [t.last for t in taps], grad_out.view_as(out),
                                                retain_graph=j < passes - 1, allow_unused=True)
            for tap, g in zip(taps, tapped):
                if g is not None:
                    grad[:, tap.channels] += g.to(grad.dtype)
            which = torch.tensor([i for _, i in slots])
            if kronrod:
                result[:, which] = _contract(grad, maps, points, weights)[:, rows].cpu()
            else:
                result[which] = _contract(grad, maps, points)[rows].cpu()
            if on_rows:
                on_rows(len(slots))
        del out, x
    assert result is not None
    return result


def available_bytes(device: torch.device) -> int:
    """Memory the IG batches may use: half the free GPU memory, or a quarter of the free RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        return info["MemAvailable"] // 4
    except (OSError, KeyError, ValueError):
        return 2 << 30


def auto_max_rows(
    sub: nn.Module, example: torch.Tensor, device: torch.device, *, autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False, cap: int | None = None,
) -> int:
    """Path points per forward pass that fit the free memory, from one measured row.

    The bytes autograd saves for the backward pass are counted with saved-tensor hooks on a
    two-row probe; a row also holds its input, its gradient and their float copies."""
    device = torch.device(device)
    saved = [0]

    def pack(t: torch.Tensor):
        saved[0] += t.numel() * t.element_size()
        return t

    x = example[:1].to(device).float().expand(2, *example.shape[1:]).clone()
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(device, autocast_dtype):
        out = spatial_mean(sub(x)).float()
    del out
    per_row = saved[0] / 2 + 4 * x[0].numel() * 4
    if cap is None:
        cap = 65536 if device.type == "cuda" else 4096
    return int(max(1, min(cap, available_bytes(device) // max(per_row, 1))))
