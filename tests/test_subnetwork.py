"""g_l must reproduce the full model exactly: real lower activations in, real upper activations out."""

import time
import warnings

import pytest
import torch
import torchvision
from torch import nn

from neurflow.circuit import LOGITS, Params
from neurflow.hooks import capture
from neurflow.images import ImageSet
from neurflow.method import RunOptions, build_circuit
from neurflow.models.fashion_cnn import FashionCNN
from neurflow.subnetwork import HookSubnetwork, NotACut, build_subnetworks, fold_batchnorm
from tests.tiny_models import CNN_LAYERS, RESNET_LAYERS, settle, tiny_cnn, tiny_images, tiny_resnet


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


def test_fashion_cnn_layers():
    """The demo architecture at full size; the weights do not matter, so none are trained
    (seeded, with BatchNorm statistics away from the identity)."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    _check_exact(settle(FashionCNN(), 0), [LOGITS, "block4", "block3", "block2", "block1"], x)


@pytest.mark.usefixtures("single_thread")
def test_g_l_reproduces_the_upper_activation_from_the_real_lower_one_in_tiny_models():
    x = tiny_images(4).pixels
    subs = _check_exact(tiny_cnn(), [LOGITS, *CNN_LAYERS], x)
    assert not any(name.startswith("block1") for name, _ in subs[1].named_modules())  # block4 <- block3 skips block1
    _check_exact(tiny_resnet(), [LOGITS, *RESNET_LAYERS], x)  # residual blocks: the skip stays inside the block


@pytest.mark.usefixtures("single_thread")
def test_folded_batchnorm_gives_the_same_output():
    x = tiny_images(4).pixels
    for model, layers in ((tiny_cnn(), [LOGITS, *CNN_LAYERS]), (tiny_resnet(), [LOGITS, *RESNET_LAYERS])):
        real = capture(model, x, layers, reduce=False, stop_early=False)
        with_batchnorm = 0
        for d, sub in enumerate(build_subnetworks(model, layers, (1, 16, 16))):
            with_batchnorm += any(isinstance(m, nn.BatchNorm2d) for m in sub.modules())
            folded = fold_batchnorm(sub)
            assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
            with torch.no_grad():
                torch.testing.assert_close(folded(real[layers[d + 1]]), real[layers[d]], rtol=1e-5, atol=1e-5)
        assert with_batchnorm == len(layers) - 2  # every g_l below the logits' had BatchNorm to fold
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model keeps its own


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


class _ReadsShapes(nn.Module):
    """EfficientNet-style forward: `bs = inputs.size(0)` on top, `view(bs, -1)` at the end, plus
    other reads of metadata (shape, numel, dtype, device) of tensors below the analysed layers."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)
        self.top = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, inputs):
        bs = inputs.size(0)
        height, width = inputs.shape[2], inputs.shape[3]
        h = self.a(inputs)
        per_image = h.numel() // h.shape[0]  # a size that grows with the batch, of a tensor below the cut
        h = self.c(torch.relu(self.b(torch.relu(h))))
        h = torch.relu(self.bn(self.top(h)))
        pooled = h.reshape(bs, 8, -1).mean(-1) * (per_image / (height * width))
        return self.head(pooled) + pooled.new_zeros((bs, 4), dtype=inputs.dtype, device=inputs.device)


def test_shape_reads_are_no_bypass():
    """Reading the input's batch size (or any metadata of a tensor below the lower layer) is no
    connection around it: g_l is cut, rebuilds those values from its own input, and stays exact
    for batch sizes other than the ones the shapes were worked out with."""
    torch.manual_seed(0)
    model = _ReadsShapes().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    layers = [LOGITS, "c", "b", "a"]
    for batch in (1, 5):
        subs = _check_exact(model, layers, torch.randn(batch, 3, 12, 10))
    assert all(isinstance(s, torch.fx.GraphModule) for s in subs)
    assert "_from_lower" in subs[0].code  # the reads of `inputs` and `h` were replaced
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # BatchNorm folding re-traces g_l, reads included
        folded = fold_batchnorm(subs[0])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 3, 12, 10)
    with torch.no_grad():
        real = capture(model, x, layers, reduce=False, stop_early=False)
        torch.testing.assert_close(folded(real["c"]), real[LOGITS], atol=1e-5, rtol=1e-5)


class _ValueDependentShape(nn.Module):
    """The logits read the size of a `nonzero()` of the input: a shape that depends on its values."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        positives = torch.nonzero(x > 0).size(0)
        return self.head(torch.relu(self.a(x)).mean((2, 3))) * positives


def test_shape_that_depends_on_values_is_refused():
    with pytest.raises(NotACut, match="shape"):
        build_subnetworks(_ValueDependentShape().eval(), [LOGITS, "a"], (3, 8, 8))


def test_bypass_is_refused_before_any_activation_pass():
    """A layer list that is no chain of cuts fails before the model sees more than one image:
    no image selection, no activation pass (the failure used to come after both)."""
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    batches: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    images = ImageSet(torch.rand(8, 3, 64, 64), [f"img{i}" for i in range(8)], [0] * 8, [f"{i:064x}" for i in range(8)], [(64, 64)] * 8)
    started = time.perf_counter()
    with pytest.raises(NotACut, match=r"bypasses it at 'add_\d+' in module 'layer4.0'"):
        build_circuit(model, ["layer4.1", "layer4.0.conv2"], images, 0, Params(tau=2, k=4, predicted_only=True),
                      run=RunOptions(progress=False))
    assert batches and max(batches) == 1, batches
    assert time.perf_counter() - started < 30  # generous: a few one-image passes on shared cores
