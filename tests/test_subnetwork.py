"""g_l must reproduce the full model exactly: real lower activations in, real upper activations out."""

import pytest
import torch
import torchvision
from torch import nn

from neurflow.circuit import LOGITS
from neurflow.hooks import capture
from neurflow.subnetwork import HookSubnetwork, NotACut, build_subnetworks


def _check_exact(model, layers, x, atol=1e-5):
    model.eval()
    subs = build_subnetworks(model, layers, tuple(x.shape[1:]))
    with torch.no_grad():
        real = capture(model, x, layers, reduce=False, stop_early=False)
        for d, sub in enumerate(subs):
            upper = sub(real[layers[d + 1]])
            assert upper.shape == real[layers[d]].shape
            torch.testing.assert_close(upper, real[layers[d]], atol=atol, rtol=1e-5)
    return subs


def test_resnet50_block_outputs_with_skip_connections():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    x = torch.randn(2, 3, 96, 96)
    subs = _check_exact(model, [LOGITS, "layer4.2", "layer4.1", "layer4.0", "layer3.5", "layer3.4", "layer2"], x, atol=1e-4)
    # the traced sub-network skips everything below its input: far fewer modules than the model
    assert sum(1 for _ in subs[1].modules()) < sum(1 for _ in model.modules()) / 4


def test_fashion_cnn_layers(trained_model):
    x = torch.randn(4, 1, 28, 28)
    _check_exact(trained_model.module, [LOGITS, *trained_model.spec.layers], x)


class _Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so the hook fallback is used."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if h.sum() > -1e9:  # data-dependent branch
            h = h + torch.relu(self.b(h))  # functional skip connection
        return self.head(h.mean((2, 3)))


def test_hook_fallback_for_untraceable_model():
    torch.manual_seed(0)
    model = _Untraceable()
    with pytest.warns(UserWarning, match="could not trace"):
        subs = _check_exact(model, [LOGITS, "a"], torch.randn(3, 3, 16, 16))
    assert isinstance(subs[0], HookSubnetwork)


def test_skip_connection_crossing_the_cut_is_refused():
    model = torchvision.models.resnet18(weights=None).eval()
    with pytest.raises(NotACut, match="bypasses"):
        build_subnetworks(model, [LOGITS, "layer4.1", "layer4.0.conv2"], (3, 64, 64))
