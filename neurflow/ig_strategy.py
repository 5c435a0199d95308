"""How a circuit's IG is computed, chosen once from its `Budget` (`choose`):

* `Exact` (``--exact-ig``): every neuron at `ig_steps`, fp32.
* `Adaptive` (the default): fp32 on a ladder of step counts, each neuron stopping where its core
  set, ranks and stored values are certified (`neurflow.adaptive`); where a layer's sub-network
  has IG's closed form (`neurflow.closed_form`, a property of the layer, not of the budget), the
  `ig_steps` sum from one path point per crop instead of the ladder.
* `CertifiedLowPrecision` (``--bf16`` / ``--tf32``): IG in bf16 or TF32, the close calls redone in
  fp32 (`neurflow.precision`): the core sets are kept, not every stored importance bit for bit.

Each strategy names its `precision`, which enters the circuit's identity (`Identity.precision`):
the one place that says which speed-up is recorded how.  `method._analyse_layer` hands a
strategy one `LayerIG` (a layer's sub-network, pairs and run settings) per layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from neurflow.adaptive import PROBE, TOLERANCE, adaptive_attributions
from neurflow.attribution import IGRule, IGRun, layer_attributions
from neurflow.closed_form import closed_form_applies
from neurflow.precision import certify

log = logging.getLogger(__name__)


@contextmanager
def tf32(allow: bool):
    """TF32 convolutions and matmuls on CUDA on or off (PyTorch turns them on for cuDNN by
    default, which rounds like bf16); the circuit is built with them off unless asked."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@dataclass
class LayerIG:
    """One layer's IG work: the `(upper neuron, crop)` pairs, `k` per neuron in `upper`'s order,
    and how to run them.  `attribute` computes any neurons' attributions, `(neurons, k, C)`."""

    name: str
    sub: nn.Module
    upper: list[int]
    pairs: list[tuple[int, int]]
    k: int
    tau: int
    steps: int  # Params.ig_steps
    lower_maps: Callable[[list[int]], torch.Tensor]
    run: IGRun  # the fp32 run; low precision swaps in its autocast dtype
    on_rows: Callable[[int], None] | None = None  # progress, rows done

    def attribute(self, neurons: list[int] | None, rule: IGRule, low: "CertifiedLowPrecision | None" = None,
                  report: Callable[[int], None] | None = None):
        """Attributions of `neurons` (indices into `upper`; None: all) under `rule`; in `low`'s
        precision when given, else fp32 (TF32 off)."""
        which = self.pairs if neurons is None else [p for i in neurons for p in self.pairs[i * self.k:(i + 1) * self.k]]
        run = self.run if low is None else IGRun(self.run.device, self.run.max_rows, low.autocast_dtype,
                                                 self.run.channels_last)
        with tf32(low is not None and low.tf32):
            a = layer_attributions(self.sub, which, self.lower_maps, rule, run, targets=self.upper,
                                   on_rows=report).numpy()
        shape = (len(which) // self.k, self.k, a.shape[-1])
        return (a[0].reshape(shape), a[1].reshape(shape)) if rule.kronrod else a.reshape(shape)


class Exact:
    """Every neuron at `ig_steps` in fp32 (``--exact-ig``)."""

    precision = "fp32"

    def attributions(self, layer: LayerIG) -> np.ndarray:
        return layer.attribute(None, IGRule(layer.steps), report=layer.on_rows)


@dataclass
class Adaptive:
    """fp32 IG on a ladder of step counts (`neurflow.adaptive`), or in closed form where the
    layer's sub-network has one.  `state` carries the verdict down the layers of one circuit:
    after a failed probe the layers below run at ig_steps directly; after a layer whose every
    neuron settled early, the next climbs without a probe."""

    state: dict = field(default_factory=dict)
    precision = f"fp32+adaptive-ig-tol{TOLERANCE:g}"

    def attributions(self, layer: LayerIG) -> np.ndarray:
        first = [True]

        def at_steps(idx: list[int], steps: int, kronrod: bool):
            report, first[0] = (layer.on_rows if first[0] else None), False
            return layer.attribute(idx, IGRule(steps, kronrod=kronrod), report=report)

        # the layer above had more neurons than a probe and every one settled below ig_steps: no
        # probe here, every neuron climbs at once (one pass over each top crop serves all its
        # targets instead of two); the class logit alone is no evidence
        probe = 0 if self.state.get("settled") else PROBE
        closed = None
        if closed_form_applies(layer.sub):  # one path point per crop gives the ig_steps sum (neurflow.closed_form)
            def closed(idx: list[int]):
                return layer.attribute(idx, IGRule(layer.steps, closed_form=True), report=layer.on_rows)
        attributions, escalation = adaptive_attributions(at_steps, len(layer.upper), layer.tau, layer.steps,
                                                         direct=self.state.get("direct", False), probe=probe,
                                                         closed=closed)
        if not escalation.closed_form:  # a closed-form layer says nothing about how the next one converges
            self.state["direct"] = self.state.get("direct", False) or not escalation.converging  # a failed probe: exact below
            self.state["settled"] = escalation.settled and len(layer.upper) > PROBE
        log.info("%s: adaptive IG, %d neurons accepted: %s", layer.name, escalation.neurons, escalation)
        return attributions


@dataclass
class CertifiedLowPrecision:
    """IG in bf16 (`autocast_dtype`) and/or TF32 convolutions, then the neurons whose core-set
    boundary is a close call redone in fp32 (`neurflow.precision.certify`)."""

    autocast_dtype: torch.dtype | None
    tf32: bool

    @property
    def precision(self) -> str:
        parts = []
        if self.autocast_dtype is not None:
            parts.append({torch.bfloat16: "bf16"}.get(self.autocast_dtype, str(self.autocast_dtype)) + "-certified")
        if self.tf32:
            parts.append("tf32-certified")
        return "+".join(parts)

    def attributions(self, layer: LayerIG) -> np.ndarray:
        rule = IGRule(layer.steps)
        low = layer.attribute(None, rule, low=self, report=layer.on_rows)
        attributions, report = certify(low, layer.tau, lambda idx: layer.attribute(idx, rule))
        log.info(
            "%s: low-precision IG, %d of %d neurons redone in fp32 (margin %.3f, largest error %.4f)",
            layer.name, report.refined, report.neurons, report.margin, report.max_error,
        )
        return attributions


IGStrategy = Exact | Adaptive | CertifiedLowPrecision


def choose(autocast_dtype: torch.dtype | None, use_tf32: bool, adaptive_ig: bool) -> IGStrategy:
    """The strategy of a budget (`Budget.ig_strategy`): low precision when asked (it keeps its
    own certification, so adaptive IG does not apply), else adaptive or exact."""
    if autocast_dtype is not None or use_tf32:
        return CertifiedLowPrecision(autocast_dtype, use_tf32)
    return Adaptive() if adaptive_ig else Exact()
