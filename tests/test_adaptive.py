"""Adaptive, certified IG step counts: the exact path's core sets and ranks, stored values within 1 %."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from neurflow.adaptive import FIRST_RUNG, TOLERANCE, accept, adaptive_attributions, ladder
from neurflow.attribution import IGRule, IGRun, layer_attributions
from neurflow.circuit import Params
from neurflow.method import Budget, RunOptions, build_circuit
from neurflow.subnetwork import build_subnetworks
from tests.fixtures_circuits import TEST_PARAMS
from tests.fixtures_tiny import build
from tests.tiny_models import CNN_LAYERS, RESNET_LAYERS, TINY_PARAMS, tiny_cnn, tiny_images, tiny_resnet

TAU = 3
QUIET = RunOptions(progress=False)


def _core(circuit):
    return sorted((r.depth, r.channel, r.lower_channel, r.rank) for r in circuit.core)


def _values(circuit):
    return {(r.depth, r.channel, r.lower_channel): r.importance for r in circuit.core}


def _tops(circuit):
    return sorted((r.depth, r.channel, r.rank, r.crop_id) for r in circuit.top_samples)


def _assert_within_tolerance(adaptive, exact):
    assert _core(adaptive) == _core(exact)
    assert _tops(adaptive) == _tops(exact)  # the activation pass with BatchNorm folded picks the same crops
    want = _values(exact)
    for key, value in _values(adaptive).items():
        assert value == pytest.approx(want[key], rel=TOLERANCE, abs=1e-12)
    weights = {(e.depth, e.channel, e.concept, e.lower_channel): e.weight for e in exact.edges}
    assert len(adaptive.edges) == len(weights)
    for e in adaptive.edges:  # normalised weights (|w| sums to 1 per concept): absolute = relative to the total
        assert abs(e.weight - weights[(e.depth, e.channel, e.concept, e.lower_channel)]) <= TOLERANCE


def test_ladder_starts_with_the_kronrod_pair_and_ends_at_the_requested_steps():
    assert FIRST_RUNG == 3
    assert ladder(16) == [7, 16]  # (3, 7) Gauss-Kronrod, then the requested steps
    assert ladder(50) == [7, 12, 24, 50]  # 48 would cost more than half of 50 for a neuron that may go on
    assert ladder(24) == [7, 12, 24] and ladder(23) == [7, 23] and ladder(8) == [7, 8]
    assert ladder(7) == [7] and ladder(4) == [4] and ladder(1) == [1]  # the pair would cost as much: exact
    assert ladder(16, first=4) == [9, 16]


def _converging(neurons=12, k=5, channels=10, seed=0):
    """`steps -> attributions` that converge to `exact` like a quadrature (error ~ 1/steps^2);
    odd neurons have a near tie at the tau boundary (channels 2 and 3, 0.1 % apart)."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([[5.0, 4.0, 3.0, 2.0], rng.uniform(0, 1.0, channels - 4)])
    exact = base * rng.uniform(0.95, 1.05, size=(neurons, k, channels))
    exact[1::2, :, 3] = exact[1::2, :, 2] * 0.999
    bias = rng.uniform(-1, 1, size=exact.shape)

    def at(steps: int) -> np.ndarray:
        return exact * (1 + 0.02 * bias / steps**2) if steps < 16 else exact

    return exact, at


def _rules(at, calls):
    """`attribute` of adaptive_attributions from `steps -> attributions`: the Kronrod rung gives
    the 9-point values with the 4-point ones (as one pass over 9 points does)."""

    def attribute(idx, steps, kronrod):
        calls.append((list(idx), steps, kronrod))
        return (at(2 * steps + 1)[idx], at(steps)[idx]) if kronrod else at(steps)[idx]

    return attribute


def test_near_ties_escalate_and_end_exact():
    exact, at = _converging()
    calls = []
    attribute = _rules(at, calls)

    out, report = adaptive_attributions(attribute, len(exact), TAU, 16)
    assert report.neurons == len(exact) and sum(report.accepted.values()) == len(exact)
    assert report.accepted.get(16, 0) >= len(exact) // 2  # the near ties go up to the requested steps
    assert np.array_equal(out[1::2], exact[1::2])  # ... and store exactly the full-step values
    assert report.escalated >= len(exact) // 2
    assert calls[0] == ([0, 1], 3, True) and calls[1] == ([1], 16, False)  # the probe; neuron 0 stops at 7 ...
    assert report.accepted[7] >= 1
    assert (list(range(2, len(exact))), 3, True) in calls  # ... so the others climb the ladder too
    assert report.direct == 0
    imp, want = np.abs(out).mean(axis=1), np.abs(exact).mean(axis=1)
    for a, b in zip(imp, want):
        assert np.array_equal(np.argsort(-a, kind="stable")[:TAU], np.argsort(-b, kind="stable")[:TAU])
    assert np.all(np.abs(imp - want) <= TOLERANCE * want)


def test_a_probe_that_needs_every_step_sends_the_layer_to_the_full_steps():
    """When no probe neuron stops below ig_steps (the demo model's layers), the others run at
    ig_steps at once: they pay 16 points, not 7 + 16, and store exactly the full-step values."""
    exact, _ = _converging()

    def slow(steps):  # 13 % off at 3 steps, 5.7 % at 7: nothing is certified early
        return exact * (1 + 0.4 / steps if steps < 16 else 1.0)

    calls = []
    attribute = _rules(slow, calls)
    out, report = adaptive_attributions(attribute, len(exact), TAU, 16)
    rest = list(range(2, len(exact)))
    assert calls == [([0, 1], 3, True), ([0, 1], 16, False), (rest, 16, False)]
    assert report.direct == len(rest) and report.accepted == {16: len(exact)}
    assert np.array_equal(out, exact)
    assert not report.converging  # build_circuit then runs the layers below at 16 directly:
    calls.clear()
    out, below = adaptive_attributions(attribute, len(exact), TAU, 16, direct=True)
    assert calls == [(list(range(len(exact))), 16, False)] and below.direct == len(exact) and np.array_equal(out, exact)
    every, _ = adaptive_attributions(_rules(slow, []), len(exact), TAU, 16, probe=0)
    assert np.array_equal(every, exact)  # probe=0: every neuron climbs, same values


def test_settled_means_every_neuron_stopped_below_the_full_steps():
    """`build_circuit` skips the next layer's probe after a settled layer of more than PROBE neurons."""
    exact, at = _converging()
    _, report = adaptive_attributions(_rules(lambda steps: exact, []), len(exact), TAU, 16)
    assert report.settled and report.accepted == {7: len(exact)}
    _, report = adaptive_attributions(_rules(at, []), len(exact), TAU, 16)
    assert report.converging and not report.settled  # the near ties went to 16


def test_accept_rejects_a_close_rank_inside_the_core_set():
    a = np.array([[3.0, 2.9, 1.0, 0.1]])
    assert accept(a, a, 2)  # no change between rungs: safe
    assert not accept(a, a * np.array([1.0, 1.02, 1.0, 1.0]), 2)  # ranks 0 and 1 within 4x the change
    assert not accept(a, a * 1.02, 2)  # every gap is wide, but the values moved by 2 %


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("model_fn,layers", [(tiny_cnn, CNN_LAYERS), (tiny_resnet, RESNET_LAYERS)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adaptive_equals_exact_on_tiny_models(model_fn, layers, seed):
    model, images = model_fn(seed), tiny_images()
    params = dataclasses.replace(TINY_PARAMS, ig_steps=16)
    exact = build(model, layers, images, params=params, budget=Budget(adaptive_ig=False))
    adaptive = build(model, layers, images, params=params, budget=Budget(adaptive_ig=True))
    _assert_within_tolerance(adaptive, exact)
    assert adaptive.precision == f"fp32+adaptive-ig-tol{TOLERANCE:g}" and adaptive.ig_tolerance == TOLERANCE
    assert exact.precision == "fp32" and exact.ig_tolerance == 0.0 and adaptive.uid != exact.uid


@pytest.mark.usefixtures("single_thread")
def test_a_convolution_as_an_analysed_layer_gives_the_exact_circuit():
    """A layer list that reads a convolution before its BatchNorm (`block4.0`): the default path's
    folded forward passes must leave that pair alone, or its means and top samples would change."""
    model, images = tiny_cnn(1), tiny_images()
    params = dataclasses.replace(TINY_PARAMS, ig_steps=16)
    layers = ["block4.0", "block3", "block2"]
    exact = build(model, layers, images, params=params, budget=Budget(adaptive_ig=False))
    adaptive = build(model, layers, images, params=params, budget=Budget(adaptive_ig=True))
    _assert_within_tolerance(adaptive, exact)


@pytest.mark.usefixtures("single_thread")
def test_the_last_rung_is_the_exact_computation_bit_for_bit():
    """A subset of a layer's pairs, run with the layer's targets (as the ladder runs escalated
    neurons), gives the same bits as the whole layer's call."""
    model, images = tiny_cnn(0), tiny_images()
    x = images.pixels
    subs = build_subnetworks(model, ["logits", *CNN_LAYERS], tuple(x.shape[1:]))
    from neurflow.hooks import capture

    with torch.no_grad():
        lower = capture(model, x, [CNN_LAYERS[1]], reduce=False)[CNN_LAYERS[1]]
    targets = [0, 2, 3]
    pairs = [(u, c) for u in targets for c in range(6)]
    rule, run = IGRule(16), IGRun("cpu", 4096)
    whole = layer_attributions(subs[1], pairs, lambda ids: lower[ids], rule, run, targets=targets)
    part = layer_attributions(subs[1], pairs[6:12], lambda ids: lower[ids], rule, run, targets=targets)
    assert torch.equal(whole[6:12], part)


def test_adaptive_equals_exact_on_the_demo_model(trained_model, class_images, caplog):
    """The real demo CNN at the test settings: the same core sets and ranks, values within 1 %.
    Every one of its layer pairs is one conv layer (or the head), so every layer runs IG's closed form."""
    layers = list(trained_model.spec.layers)
    exact = build_circuit(trained_model.module, layers, class_images(3), 3, TEST_PARAMS, run=QUIET,
                          budget=Budget(adaptive_ig=False))
    with caplog.at_level("INFO", logger="neurflow.ig_strategy"):
        adaptive = build_circuit(trained_model.module, layers, class_images(3), 3, TEST_PARAMS, run=QUIET,
                                 budget=Budget(adaptive_ig=True))
    _assert_within_tolerance(adaptive, exact)
    assert caplog.text.count("in closed form") == len(layers)  # the logits and every layer but the lowest


def test_adaptive_equals_exact_on_the_fashion_resnet_demo_settings(caplog):
    """The demo's model (fashion-resnet) at the demo's settings (tau 3, k 20, 16 steps, crops at 1
    and 0.5, min_crop_std 0.2), fewer images and its top two blocks only to stay fast: same core
    sets and ranks, values within 1 %.  block4 does not converge below 16 steps, so this also runs
    the probe's fall-back to the full step count."""
    from neurflow.datasets import load_images
    from neurflow.models.registry import get_spec, load_model

    loaded = load_model("fashion-resnet", device="cpu")
    images = load_images("fashion-mnist", get_spec("fashion-resnet"), 0, limit=30)
    params = Params(tau=3, k=20, ig_steps=16, max_images=12, granularities=(1.0, 0.5), min_crop_std=0.2)
    layers = ["block4", "block3"]
    exact = build_circuit(loaded.module, layers, images, 0, params, run=QUIET, budget=Budget(adaptive_ig=False))
    with caplog.at_level("INFO", logger="neurflow.ig_strategy"):
        adaptive = build_circuit(loaded.module, layers, images, 0, params, run=QUIET, budget=Budget(adaptive_ig=True))
    _assert_within_tolerance(adaptive, exact)
    assert "run at 16 directly after the probe" in caplog.text  # block4's probe failed
