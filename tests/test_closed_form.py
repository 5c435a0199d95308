"""IG in closed form (`neurflow.closed_form`): the step-by-step sum from one path point, and only
where the sub-network's graph allows it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurflow.attribution import IGRule, IGRun, integrated_gradients, layer_attributions
from neurflow.closed_form import closed_form_applies, path_relu
from neurflow.subnetwork import build_subnetworks, fold_batchnorm
from tests.test_attribution import Block

GEN = torch.Generator().manual_seed(3)


def _frozen(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for bn in [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.5, 0.5, generator=GEN)
            bn.running_var.uniform_(0.5, 2.0, generator=GEN)
            bn.bias.uniform_(-0.3, 0.3, generator=GEN)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class ConvLayer(nn.Module):
    """A VGG-style layer below a max pool: `pool -> conv -> BN -> ReLU`."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = nn.Conv2d(6, 5, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(5)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(self.pool(x))))


class Head(nn.Module):
    """A classifier head: no ReLU on the path, the gradient is the same at every path point."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ReluThenLinear(nn.Module):
    """A ReLU with linear layers after it (and a bias added by hand before it)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(6, 7, 1)
        self.conv2 = nn.Conv2d(7, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(nn.functional.relu(self.conv1(x) - 0.1)) * 2.0


class TwoReLUs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))


class PoolAfterBias(nn.Module):
    """A max pool of an affine value: its argmax may move along the path."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return torch.relu(self.pool(self.conv(x)))


class Squares(nn.Identity):
    """Not an identity at all, and claiming to be torch.nn's own (so that tracing keeps it as one
    call): the graph reader trusts the module type, the probe check does not."""

    def forward(self, x):
        return x * x


Squares.__module__ = nn.Identity.__module__


class Disguised(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 3, padding=1)
        self.square = Squares()

    def forward(self, x):
        return torch.relu(self.square(self.conv(x)))


MAPS = torch.randn(6, 6, 8, 8, generator=GEN).relu()
PAIRS = [(0, 1), (3, 1), (2, 0), (0, 0), (1, 2), (2, 2), (3, 4), (1, 5), (2, 5), (0, 3)]


def _sub(module: nn.Module) -> nn.Module:
    """The module as the pipeline runs it: traced as a sub-network, BatchNorm folded."""
    model = nn.Sequential()
    model.add_module("lower", nn.Identity())
    model.add_module("upper", _frozen(module))
    return fold_batchnorm(build_subnetworks(model, ["upper", "lower"], tuple(MAPS.shape[1:]))[0])


def _captum(module: nn.Module, steps: int) -> torch.Tensor:
    h = MAPS[[c for _, c in PAIRS]]
    return integrated_gradients(module, h, torch.tensor([u for u, _ in PAIRS]), steps=steps)


def _attr(sub: nn.Module, steps: int, closed_form: bool) -> torch.Tensor:
    return layer_attributions(sub, PAIRS, lambda ids: MAPS[ids], IGRule(steps, closed_form=closed_form), IGRun("cpu", 4096))


@pytest.mark.parametrize("module_fn", [ConvLayer, Head, ReluThenLinear])
@pytest.mark.parametrize("steps", [5, 24])
def test_closed_form_equals_captum(module_fn, steps):
    torch.manual_seed(steps)
    module = module_fn()
    sub = _sub(module)
    assert closed_form_applies(sub)
    want = _captum(module, steps)
    got = _attr(sub, steps, closed_form=True)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


def test_the_path_relu_is_found_and_a_head_has_none():
    assert path_relu(_sub(ConvLayer())) is not None
    assert path_relu(_sub(Head())) is None  # no ReLU: the gradient times the sum of the weights


@pytest.mark.parametrize("module_fn", [TwoReLUs, PoolAfterBias, Block])
def test_graphs_outside_the_closed_form_are_refused(module_fn):
    torch.manual_seed(0)
    assert not closed_form_applies(_sub(module_fn()))


def test_a_disagreeing_probe_falls_back_to_the_step_by_step_sum():
    torch.manual_seed(1)
    module = Disguised()
    sub = _sub(module)
    assert closed_form_applies(sub)  # the graph looks like conv -> identity -> ReLU
    with pytest.warns(UserWarning, match="closed form disagreed"):
        got = _attr(sub, 12, closed_form=True)
    assert torch.equal(got, _attr(sub, 12, closed_form=False))


def test_a_hook_based_sub_network_has_no_closed_form():
    assert not closed_form_applies(nn.ReLU())  # not a traced graph


def test_closed_form_on_the_demo_cnn_matches_every_layer(trained_model, class_images):
    """The trained demo CNN: every layer pair's IG at 24 steps, closed form against step by step."""
    from neurflow.hooks import capture

    model, layers = trained_model.module.eval(), ["logits", *trained_model.spec.layers]
    x = class_images(0).pixels[:8]
    subs = [fold_batchnorm(s) for s in build_subnetworks(model, layers, tuple(x.shape[1:]))]
    with torch.no_grad():
        outs = capture(model, x, layers[1:], reduce=False)
    for d, sub in enumerate(subs):
        assert closed_form_applies(sub), layers[d]
        lower = outs[layers[d + 1]]
        pairs = [(u, c) for u in (0, 2, 5) for c in range(8)]
        run = IGRun("cpu", 4096)
        step_by_step = layer_attributions(sub, pairs, lambda ids: lower[ids], IGRule(24), run)
        closed = layer_attributions(sub, pairs, lambda ids: lower[ids], IGRule(24, closed_form=True), run)
        err = (closed - step_by_step).abs().sum(1) / step_by_step.abs().sum(1).clamp_min(1e-30)
        assert float(err.max()) < 1e-5, layers[d]


def test_the_probe_check_measures_dead_rows_against_the_probe_and_catches_real_differences():
    from neurflow.attribution import _agree

    stepwise = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    assert _agree(stepwise + torch.tensor([[1e-7, 0, 0], [1e-9, 0, 0]]), stepwise)  # rounding; a dead row's noise
    assert not _agree(stepwise * torch.tensor([[1.01], [1.0]]), stepwise)  # 1 % off on a live row
    assert not _agree(stepwise + torch.tensor([[0, 0, 0], [0.1, 0, 0]]), stepwise)  # a dead row that is not
