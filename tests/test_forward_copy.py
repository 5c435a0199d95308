"""The activation pass's copy of the model (`neurflow.forward_copy`): BatchNorm folded and
activations in place only where every value a layer read sees stays the same."""

import pytest
import torch
import torchvision
from torch import nn

from neurflow.circuit import LOGITS
from neurflow.forward_copy import forward_copy
from neurflow.hooks import capture
from neurflow.method import Budget, _forward_model
from neurflow.models.sources import no_inplace
from tests.tiny_models import RESNET_LAYERS, tiny_cnn, tiny_images, tiny_resnet


def test_forward_copy_keeps_layer_names_and_outputs():
    """The activation pass's folded copy: no BatchNorm left where a conv feeds it alone, every
    analysed layer still readable by name with the same values up to rounding, the model untouched."""
    model = tiny_resnet(0).eval()
    folded = forward_copy(model, RESNET_LAYERS)
    assert folded is not None and folded is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = tiny_images().pixels
    names = [LOGITS, *RESNET_LAYERS]
    with torch.no_grad():
        want = capture(model, x, names, stop_early=False, reduce=False)  # full maps, held as the pass holds them
        got = capture(folded, x, names, stop_early=False, reduce=False)
    for name in names:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)
    # nothing to fold, and the ReLU may not overwrite the conv output that is read
    assert forward_copy(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), ["0"]) is None
    # only the module tree and the folded convs are new: a weight the folding leaves alone is shared
    assert folded.fc.weight is model.fc.weight


def test_the_default_path_runs_the_folded_copy_and_exact_ig_the_model():
    """`Budget.forward_copy` follows adaptive IG unless set: `--exact-ig` is today's path."""
    model, layers = tiny_resnet(0).eval(), [LOGITS, *RESNET_LAYERS]
    assert _forward_model(model, Budget(adaptive_ig=False), layers) is model
    assert _forward_model(model, Budget(adaptive_ig=True, forward_copy=False), layers) is model
    folded = _forward_model(model, Budget(adaptive_ig=True), layers)
    assert folded is not model and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert _forward_model(model, Budget(adaptive_ig=False, forward_copy=True), layers) is not model


def test_a_convolution_read_as_a_layer_keeps_its_batchnorm():
    """An analysed layer that is a convolution (or holds it but not its BatchNorm) reads the
    convolution's own output: folding there would hand it the BatchNorm's."""
    model, x = tiny_cnn(0).eval(), tiny_images().pixels
    layers = ["block4.0", "block3"]  # a conv (its BatchNorm is block4.1) and a whole block
    folded = forward_copy(model, layers)
    assert isinstance(folded.block4[1], nn.BatchNorm2d)  # left as it is
    assert not isinstance(folded.block3[1], nn.BatchNorm2d)  # the block holds both: folded
    with torch.no_grad():
        want, got = capture(model, x, layers, stop_early=False), capture(folded, x, layers, stop_early=False)
    for name in layers:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)


def _torchvision_resnet18() -> nn.Module:
    """torchvision's ResNet18 as the model loader hands it over: every op out of place (one ReLU
    module per block, called twice; `out += identity` in the block's own code)."""
    torch.manual_seed(0)
    model = no_inplace(torchvision.models.resnet18(num_classes=3)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_forward_copy_runs_relus_in_place_where_nothing_read_is_overwritten():
    model = _torchvision_resnet18()
    fast = forward_copy(model, ["layer4", "layer3"])
    in_place = [name for name, m in fast.named_modules() if getattr(m, "inplace", False)]
    assert "relu" in in_place and "layer1.0.relu" in in_place  # the stem's; a block's, both its calls
    assert not any(getattr(m, "inplace", False) for m in model.modules())  # the model itself is untouched
    # layer4.0's block-final ReLU overwrites the sum of its own block: its input (layer3's output) is not touched
    assert "layer4.0.relu" in in_place


class ReusedAfterReLU(nn.Module):
    """A tensor used again after a ReLU of (what may be) the same memory: `contiguous()` returns
    its input when it is contiguous already, so an in-place ReLU would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        t = self.conv(x)
        return self.fc((self.relu(t.contiguous()) + t).mean(dim=(2, 3)))


@pytest.mark.parametrize("model_fn", [_torchvision_resnet18, lambda: tiny_cnn(0).eval(), lambda: tiny_resnet(0).eval(),
                                      lambda: ReusedAfterReLU().eval()])
def test_every_module_read_as_a_layer_keeps_its_values_in_the_forward_copy(model_fn):
    """Each module name of the model, read alone and with the one after it, gives the same output
    in the copy as in the model, and so do the logits: folding and in-place activations leave every
    read value alone."""
    model = model_fn()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(4, 3 if isinstance(model, torchvision.models.ResNet) else 1, 32, 32, generator=torch.Generator().manual_seed(0))
    names = [name for name, _ in model.named_modules() if name]
    with torch.no_grad():
        want = capture(model, x, [LOGITS, *names], stop_early=False, reduce=False)
    for i, name in enumerate(names):
        read = [LOGITS, *names[i : i + 2]]
        fast = forward_copy(model, read[1:])
        if fast is None:
            continue
        with torch.no_grad():
            got = capture(fast, x, read, stop_early=False, reduce=False)  # the maps as held: an overwrite shows
        for layer in read:
            torch.testing.assert_close(got[layer], want[layer], rtol=1e-4, atol=1e-4, msg=lambda m: f"{layer}: {m}")
