"""`neurflow.hooks`: reading layer outputs, stopping a forward early, masking channels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurflow.circuit import LOGITS
from neurflow.hooks import capture, execution_order, masked_channels, spatial_mean, valid_layer_names
from neurflow.images import NeurflowInputError
from tests.tiny_models import tiny_cnn, tiny_images

X = tiny_images(4).pixels

pytestmark = pytest.mark.usefixtures("single_thread")


def test_capture_returns_spatial_means_of_the_full_outputs():
    model = tiny_cnn()
    full = capture(model, X, ["block3", "block1"], reduce=False, stop_early=False)
    means = capture(model, X, ["block3", "block1"])
    assert full["block3"].shape == (4, 8, 8, 8) and means["block3"].shape == (4, 8)
    for name in ("block3", "block1"):
        assert torch.equal(means[name], full[name].mean(dim=(2, 3)))


def test_captured_outputs_are_the_modules_real_outputs():
    model = tiny_cnn()
    with torch.no_grad():
        b1 = model.block1(X)
        b2 = model.block2(b1)
    out = capture(model, X, ["block1", "block2"], reduce=False)
    assert torch.equal(out["block1"], b1) and torch.equal(out["block2"], b2)


def test_logits_is_the_model_output():
    model = tiny_cnn()
    with torch.no_grad():
        assert torch.equal(capture(model, X, [LOGITS])[LOGITS], model(X))


def test_stop_early_gives_the_same_values_and_skips_the_layers_above():
    model = tiny_cnn()
    ran = []
    handle = model.fc.register_forward_hook(lambda *_: ran.append("fc"))
    try:
        early = capture(model, X, ["block2"], stop_early=True)
        assert ran == []  # the forward stopped at block2
        late = capture(model, X, ["block2"], stop_early=False)
        assert ran == ["fc"]
    finally:
        handle.remove()
    assert torch.equal(early["block2"], late["block2"])


def test_capture_leaves_no_hooks_behind():
    model = tiny_cnn()
    capture(model, X, ["block2", "block4"])
    assert all(not m._forward_hooks for m in model.modules())


def test_spatial_mean_of_maps_sequences_and_vectors():
    t = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert torch.equal(spatial_mean(t), t.mean(dim=(2, 3)))
    assert torch.equal(spatial_mean(t.reshape(1, 2, 12)), t.mean(dim=(2, 3)))
    v = torch.randn(3, 5)
    assert spatial_mean(v) is v  # a vector output is used as is
    with pytest.raises(NeurflowInputError, match="not"):
        spatial_mean(torch.zeros(2))


def test_masking_zeroes_exactly_the_masked_channels():
    model = tiny_cnn()
    mask = torch.ones(8)
    mask[[1, 6]] = 0
    before = capture(model, X, ["block3"], reduce=False)["block3"]
    with masked_channels(model, {"block3": mask}):
        after = capture(model, X, ["block3"], reduce=False)["block3"]
    assert (after[:, [1, 6]] == 0).all()
    keep = [c for c in range(8) if c not in (1, 6)]
    assert torch.equal(after[:, keep], before[:, keep])


def test_masking_changes_the_layers_above_and_ends_with_the_context():
    model = tiny_cnn()
    with torch.no_grad():
        clean = model(X)
        with masked_channels(model, {"block3": torch.zeros(8)}):
            masked = model(X)
        again = model(X)
    assert not torch.equal(masked, clean)
    assert torch.equal(again, clean)
    assert all(not m._forward_hooks for m in model.modules())


def test_per_sample_masks_mask_each_sample_on_its_own():
    model = tiny_cnn()
    masks = torch.ones(4, 8)
    masks[0, 2] = 0
    masks[3, :] = 0
    with masked_channels(model, {"block4": masks}):
        out = capture(model, X, ["block4"], reduce=False)["block4"]
    plain = capture(model, X, ["block4"], reduce=False)["block4"]
    assert (out[0, 2] == 0).all() and torch.equal(out[0, [0, 1, 3]], plain[0, [0, 1, 3]])
    assert torch.equal(out[1:3], plain[1:3])
    assert (out[3] == 0).all()


def test_the_logits_cannot_be_masked():
    with pytest.raises(NeurflowInputError, match="logits"):
        with masked_channels(tiny_cnn(), {LOGITS: torch.ones(3)}):
            pass


def test_execution_order_is_the_forward_order():
    model = tiny_cnn()
    assert execution_order(model, X, ["block4", LOGITS, "block1", "block3"]) == ["block1", "block3", "block4"]


def test_a_module_that_runs_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.conv(self.conv(x)).mean(dim=(2, 3))

    with pytest.raises(NeurflowInputError, match="more than once"):
        execution_order(Twice(), X, ["conv"])


def test_unknown_and_unused_layers_are_input_errors():
    model = tiny_cnn()
    with pytest.raises(NeurflowInputError, match="unknown layer 'nosuch'"):
        capture(model, X, ["nosuch"])
    model.unused = nn.ReLU()
    with pytest.raises(NeurflowInputError, match="never ran"):
        capture(model, X, ["unused"])
    assert valid_layer_names(model)[0] == LOGITS and "block4" in valid_layer_names(model)
