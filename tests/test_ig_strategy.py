"""The IG strategy is chosen once from the `Budget` (`neurflow.ig_strategy`), names the circuit's
precision, and computes a layer's attributions neuron by neuron in `upper`'s order."""

import numpy as np
import pytest
import torch
from torch import nn

from neurflow.adaptive import TOLERANCE
from neurflow.attribution import IGRule, IGRun, layer_attributions
from neurflow.ig_strategy import Adaptive, CertifiedLowPrecision, Exact, LayerIG
from neurflow.method import Budget

K, TAU, STEPS = 4, 2, 8


def _layer() -> LayerIG:
    torch.manual_seed(0)
    sub = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU()).eval()
    for p in sub.parameters():
        p.requires_grad_(False)
    maps = torch.randn(10, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    upper = [3, 0, 4]
    pairs = [(u, c) for i, u in enumerate(upper) for c in range(i, i + K)]
    return LayerIG("layer", sub, upper, pairs, K, TAU, STEPS, lambda ids: maps[ids], IGRun("cpu", 64))


@pytest.mark.parametrize("budget, kind, precision", [
    (Budget(), Adaptive, f"fp32+adaptive-ig-tol{TOLERANCE:g}"),
    (Budget(adaptive_ig=False), Exact, "fp32"),
    (Budget(autocast_dtype=torch.bfloat16), CertifiedLowPrecision, "bf16-certified"),  # adaptive IG does not apply
    (Budget(tf32=True, adaptive_ig=False), CertifiedLowPrecision, "tf32-certified"),
    (Budget(autocast_dtype=torch.bfloat16, tf32=True), CertifiedLowPrecision, "bf16-certified+tf32-certified"),
])
def test_the_budget_chooses_the_strategy_and_its_name_is_the_precision(budget, kind, precision):
    strategy = budget.ig_strategy()
    assert isinstance(strategy, kind)
    assert strategy.precision == budget.precision == precision


def test_each_circuit_gets_a_fresh_adaptive_state():
    a, b = Budget().ig_strategy(), Budget().ig_strategy()
    a.state["direct"] = True
    assert b.state == {}


def test_a_layer_attributes_any_neurons_in_upper_order():
    layer = _layer()
    whole = layer.attribute(None, IGRule(STEPS))
    assert whole.shape == (3, K, 4)
    torch.testing.assert_close(torch.from_numpy(layer.attribute([2, 0], IGRule(STEPS))), torch.from_numpy(whole[[2, 0]]))
    flat = layer_attributions(layer.sub, layer.pairs, layer.lower_maps, IGRule(STEPS), layer.run, targets=layer.upper)
    assert np.array_equal(whole, flat.numpy().reshape(3, K, 4))
    gauss_on_kronrod = layer.attribute([1], IGRule(3, kronrod=True))[1]  # the pair: (Kronrod's, Gauss's)
    torch.testing.assert_close(torch.from_numpy(gauss_on_kronrod), torch.from_numpy(layer.attribute([1], IGRule(3))),
                               rtol=1e-5, atol=1e-7)


def _core_sets(a: np.ndarray) -> list[list[int]]:
    return [list(np.argsort(-np.abs(row).mean(axis=0), kind="stable")[:TAU]) for row in a]


def test_every_strategy_keeps_the_exact_core_sets():
    exact = Exact().attributions(_layer())
    for strategy in (Adaptive(), CertifiedLowPrecision(torch.bfloat16, False)):
        assert _core_sets(strategy.attributions(_layer())) == _core_sets(exact), type(strategy).__name__
