"""Data sets: the Fashion-MNIST reader, ImageFolder loading and preprocessing, input errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from neurflow.datasets import (
    FASHION_MNIST_CLASSES,
    class_names,
    images_from_tensor,
    load_images,
    read_fashion_mnist,
    read_idx,
)
from neurflow.images import NeurflowInputError, file_hash, pixel_hash
from neurflow.models import get_spec

FASHION = get_spec("fashion-cnn")
RESNET = get_spec("resnet50")


def _denorm(pixels: torch.Tensor, spec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return pixels * std + mean


# ----------------------------------------------------------------------- Fashion-MNIST
def test_fashion_mnist_reader_shapes_and_labels():
    x, y = read_fashion_mnist("train")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and np.bincount(y).tolist() == [6000] * 10
    xt, yt = read_fashion_mnist("test")
    assert xt.shape == (10000, 28, 28) and np.bincount(yt).tolist() == [1000] * 10
    assert 0.27 < x.mean() / 255 < 0.30  # Fashion-MNIST's known pixel mean, 0.286
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # first training labels of the official files


def test_read_idx_roundtrip_and_bad_files(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 4) + data.tobytes())
    assert np.array_equal(read_idx(path), data)
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(NeurflowInputError, match="not an idx file"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(NeurflowInputError, match="truncated"):
        read_idx(short)


def test_fashion_mnist_missing_names_the_fix(tmp_path):
    with pytest.raises(NeurflowInputError) as err:
        read_fashion_mnist("train", root=tmp_path, download=False)
    assert "apt-get install dataset-fashion-mnist" in str(err.value) and "\n" not in str(err.value)


def test_load_fashion_class_images():
    images = load_images("fashion-mnist", FASHION, class_index=3, limit=20)
    raw, labels = read_fashion_mnist("train")
    expected_index = np.flatnonzero(labels == 3)[:20]
    assert images.pixels.shape == (20, 1, 28, 28) and images.pixels.dtype == torch.float32
    assert images.labels == [3] * 20
    assert images.sources == [f"fashion-mnist:train:{i}" for i in expected_index]
    back = _denorm(images.pixels, FASHION)
    assert torch.allclose(back[:, 0], torch.from_numpy(raw[expected_index]).float() / 255, atol=1e-5)
    assert images.sha256[0] == pixel_hash(torch.from_numpy(raw[expected_index[0]].copy()))
    assert len(set(images.sha256)) == 20
    again = load_images("fashion-mnist", FASHION, class_index=3, limit=20)
    assert torch.equal(again.pixels, images.pixels) and again.sources == images.sources


def test_load_fashion_test_split_all_classes():
    images = load_images("fashion-mnist", FASHION, split="test", limit=50)
    _, labels = read_fashion_mnist("test")
    assert images.labels == labels[:50].tolist()
    assert images.sources[0] == "fashion-mnist:test:0"


def test_fashion_for_an_rgb_model_is_resized_and_replicated():
    images = load_images("fashion-mnist", RESNET, class_index=0, limit=2)
    assert images.pixels.shape == (2, 3, 224, 224)
    back = _denorm(images.pixels, RESNET)
    assert torch.allclose(back[:, 0], back[:, 1], atol=1e-5) and torch.allclose(back[:, 1], back[:, 2], atol=1e-5)


def test_fashion_errors():
    with pytest.raises(NeurflowInputError, match=r"valid 0\.\.9"):
        load_images("fashion-mnist", FASHION, class_index=10)
    with pytest.raises(NeurflowInputError, match=r"valid 0\.\.9"):
        load_images("fashion-mnist", FASHION, class_index=-1)
    with pytest.raises(NeurflowInputError) as err:
        load_images("mnist", FASHION, class_index=0)
    assert "fashion-mnist" in str(err.value) and "'mnist'" in str(err.value)
    with pytest.raises(NeurflowInputError, match="unknown split"):
        load_images("fashion-mnist", FASHION, class_index=0, split="validation")


def test_class_names():
    assert class_names("fashion-mnist", FASHION) == FASHION_MNIST_CLASSES
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top" and FASHION_MNIST_CLASSES[9] == "Ankle boot"
    with pytest.raises(NeurflowInputError, match="unknown data set"):
        class_names("imagenet", RESNET)


# ------------------------------------------------------------------------------ folders
def _png(path, size, color, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """Fashion-MNIST classes 0 ("T-shirt/top": a slash cannot be in a folder name) and 1 ("Trouser")."""
    root = tmp_path / "imgs"
    _png(root / "trouser" / "b.png", (40, 30), (200, 10, 10))
    _png(root / "trouser" / "a.png", (28, 28), 77, mode="L")
    _png(root / "T-shirt_top" / "z.png", (64, 64), (0, 0, 255))
    (root / "T-shirt_top" / "notes.txt").write_text("not an image, ignored")
    return root


def test_folder_layout_labels_sources_hashes(folder):
    images = load_images(str(folder), FASHION)
    assert class_names(str(folder), FASHION) == ["T-shirt_top", "trouser"]
    assert images.sources == [str(folder / "T-shirt_top" / "z.png"), str(folder / "trouser" / "a.png"),
                              str(folder / "trouser" / "b.png")]
    assert images.labels == [0, 1, 1]
    assert images.sha256 == [file_hash(s) for s in images.sources]
    assert images.pixels.shape == (3, 1, 28, 28)
    back = _denorm(images.pixels, FASHION)
    # RGB -> gray with PIL's ITU-R 601 luma weights, in float (PIL's convert('L') rounds to 29 and 67)
    blue = 0.114 * 255
    red = 0.299 * 200 + 0.587 * 10 + 0.114 * 10
    assert torch.allclose(back[0], torch.full((1, 28, 28), blue / 255), atol=1e-4)
    assert torch.allclose(back[1], torch.full((1, 28, 28), 77 / 255), atol=1e-4)
    assert torch.allclose(back[2], torch.full((1, 28, 28), red / 255), atol=1e-4)
    only_dog = load_images(str(folder), FASHION, class_index=1, limit=1)
    assert only_dog.sources == [str(folder / "trouser" / "a.png")] and only_dog.labels == [1]


def test_grayscale_file_for_rgb_model(tmp_path):
    folder = tmp_path / "imagenet"
    _png(folder / "n01443537" / "b.png", (40, 30), (200, 10, 10))  # goldfish (class 1) by synset id
    _png(folder / "n01443537" / "a.png", (28, 28), 77, mode="L")
    images = load_images(str(folder), RESNET, class_index=1)
    assert images.pixels.shape == (2, 3, 224, 224)
    gray = _denorm(images.pixels[:1], RESNET)[0]  # a.png, 77 everywhere
    assert torch.allclose(gray, torch.full_like(gray, 77 / 255), atol=1e-4)


def test_resize_shorter_side_and_center_crop(tmp_path):
    # 56 wide x 28 high; column c has value 4 * c: the centre crop keeps columns 14..41
    arr = np.tile((np.arange(56) * 4).astype(np.uint8), (28, 1))
    path = tmp_path / "f" / "Coat" / "wide.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(arr, mode="L").save(path)
    images = load_images(str(tmp_path / "f"), FASHION)
    back = _denorm(images.pixels, FASHION)[0, 0]
    assert back.shape == (28, 28)
    assert torch.allclose(back[0], torch.from_numpy(arr[0, 14:42]).float() / 255, atol=1e-4)


def test_folder_errors(tmp_path, folder):
    with pytest.raises(NeurflowInputError, match="does not exist"):
        load_images(str(tmp_path / "missing"), FASHION)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NeurflowInputError, match="no class subfolders"):
        load_images(str(tmp_path / "empty"), FASHION)
    (tmp_path / "noimg" / "Bag").mkdir(parents=True)
    (tmp_path / "noimg" / "Bag" / "readme.md").write_text("x")
    with pytest.raises(NeurflowInputError, match="no images"):
        load_images(str(tmp_path / "noimg"), FASHION)
    with pytest.raises(NeurflowInputError, match=r"valid 0\.\.9"):
        load_images(str(folder), FASHION, class_index=10)
    with pytest.raises(NeurflowInputError, match=r"no sub-folder of .* holds class Pullover \(2\): add a sub-folder named 'Pullover'"):
        load_images(str(folder), FASHION, class_index=2)
    broken = folder / "trouser" / "c_broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(NeurflowInputError) as err:
        load_images(str(folder), FASHION, class_index=1)
    assert str(broken) in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------- in memory
def test_in_memory_tensor_channels_must_match():
    gray = torch.rand(2, 1, 32, 32)
    with pytest.raises(NeurflowInputError, match="1 channels but resnet50 expects 3"):
        images_from_tensor(gray, RESNET, labels=[0, 0])
    images = images_from_tensor(gray, FASHION, labels=[4, 5])
    assert images.pixels.shape == (2, 1, 28, 28) and images.labels == [4, 5]
    assert images.sources == ["tensor:0", "tensor:1"] and images.sha256[0] == pixel_hash(gray[0])


def test_fashion_train_images_fixture(fashion_train_images):
    images = fashion_train_images(2, limit=5)
    assert images.labels == [2] * 5 and images.pixels.shape == (5, 1, 28, 28)
    assert fashion_train_images(2, limit=5) is images  # memoised
