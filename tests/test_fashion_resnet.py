"""fashion-resnet (issue 13): the wider residual Fashion-MNIST model whose circuits are selective.
Its weights ship in neurflow/data and are checked by sha256 when loaded."""

from __future__ import annotations

import shutil

import pytest
import torch

from neurflow.images import NeurflowInputError
from neurflow.models import fashion_resnet
from neurflow.models.fashion_resnet import FashionResNet
from neurflow.models.registry import load_model
from neurflow.models.sources import state_hash
from neurflow.train import _as_tensors, evaluate


def test_structure_and_fx_trace():
    model = FashionResNet().eval()
    x = torch.randn(3, 1, 28, 28)
    traced = torch.fx.symbolic_trace(model)
    assert torch.allclose(traced(x), model(x)) and model(x).shape == (3, 10)
    loaded = load_model("fashion-resnet", random_init=True)
    assert loaded.layer_channels() == {"block4": 128, "block3": 128, "block2": 128, "block1": 128}
    assert loaded.class_names[0] == "T-shirt/top"


def test_shipped_weights_load_checked_and_reach_90_percent():
    loaded = load_model("fashion-resnet", train_if_missing=False)
    assert loaded.uid == "fashion-resnet" and loaded.weights_sha256 == state_hash(loaded.module)  # checked: the file's sha
    x, y = _as_tensors("test")
    assert evaluate(loaded.module, x[:2000], y[:2000]) >= 0.90  # 0.9288 on all 10,000


def test_changed_or_missing_weights_are_refused(tmp_path, monkeypatch):
    copy = tmp_path / "fashion-resnet.pt"
    shutil.copy(fashion_resnet.WEIGHTS_FILE, copy)
    with open(copy, "ab") as fh:
        fh.write(b"\0")
    monkeypatch.setattr(fashion_resnet, "WEIGHTS_FILE", copy)
    with pytest.raises(NeurflowInputError, match="sha256.*not the shipped.*bench/train_fashion_resnet.py"):
        load_model("fashion-resnet")
    monkeypatch.setattr(fashion_resnet, "WEIGHTS_FILE", tmp_path / "gone.pt")
    with pytest.raises(NeurflowInputError, match="not found"):
        load_model("fashion-resnet")
