"""Images for the method: Fashion-MNIST by name, or a folder of image files.

`load_images(data, spec, class_index)` turns either into an `ImageSet` preprocessed the way the
model in `spec` expects (size, channels, mean/std).

* Fashion-MNIST is read from the Debian package `dataset-fashion-mnist`
  (`/usr/share/datasets/fashion-mnist/*-ubyte.gz`, idx format parsed with numpy); when those
  files are missing torchvision downloads the data set into `cache_dir()/torchvision`.
  Sources are `fashion-mnist:<split>:<index>`, sha256 is the hash of the raw 28x28 uint8 pixels.
* A folder is read in torchvision `ImageFolder` layout: one subfolder per class, files in
  sorted path order.  Sub-folders are matched to the *model's* classes by class name or ImageNet
  synset id (`folder_class_map`, `neurflow.classes.match_folders`), never by their sorted
  position: a folder may hold any subset of the classes, and a sub-folder that matches no class
  is an error listing close matches.  Only a model without class names takes them from the
  folder, and then the folder must have one sub-folder per class (the numbering torchvision's
  `ImageFolder` gave the model in training).  Labels are model class indices; sources are
  file paths, sha256 the file bytes' hash.  Files are decoded by `neurflow.images.decode_picture`
  (every PIL mode, 16-bit and float included, to [0, 1] with the model's channel count), the
  same function the debug page and `neurflow debug` use (`preprocess_picture`).

Every `ImageSet` records its images' sizes before resizing (`ImageSet.original_sizes`) so a
circuit can say when images were upscaled (`ImageSet.upscale_note`).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from neurflow.cache import cache_dir
from neurflow.classes import ClassNames, folder_hint, match_folders, select_classes
from neurflow.errors import class_label, option
from neurflow.images import ImageSet, NeurflowInputError, file_hash, pixel_hash, read_picture_channels

if TYPE_CHECKING:  # pragma: no cover
    from neurflow.models.registry import ModelSpec

FASHION_MNIST = "fashion-mnist"
DATASETS = (FASHION_MNIST,)
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's `dataset-fashion-mnist` puts the files (override with `$NEURFLOW_FASHION_MNIST_DIR`)."""

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

SPLITS = {"train": "train", "test": "t10k", "t10k": "t10k"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_FIX = "install it with `apt-get install dataset-fashion-mnist`"


# --------------------------------------------------------------------------- Fashion-MNIST
def _split_name(split: str) -> str:
    if split not in SPLITS:
        raise NeurflowInputError(f"unknown split {split!r}: use 'train' or 'test'")
    return "test" if SPLITS[split] == "t10k" else "train"


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one (optionally gzipped) idx file of unsigned bytes into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise NeurflowInputError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise NeurflowInputError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _debian_dir() -> Path:
    return Path(os.environ.get("NEURFLOW_FASHION_MNIST_DIR", FASHION_MNIST_DIR))


@lru_cache(maxsize=4)
def _read_fashion_mnist(split: str, root: str | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    prefix = SPLITS[split]
    folder = Path(root) if root is not None else _debian_dir()
    images_file = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels_file = folder / f"{prefix}-labels-idx1-ubyte.gz"
    if images_file.is_file() and labels_file.is_file():
        images, labels = read_idx(images_file), read_idx(labels_file)
    else:
        if not download:
            raise NeurflowInputError(f"Fashion-MNIST files not found in {folder}: {_FIX}")
        try:
            from torchvision.datasets import FashionMNIST

            ds = FashionMNIST(str(cache_dir() / "torchvision"), train=(prefix == "train"), download=True)
            images, labels = ds.data.numpy(), ds.targets.numpy().astype(np.uint8)
        except Exception as exc:  # no network, disk full, corrupt download...
            reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise NeurflowInputError(
                f"Fashion-MNIST not found in {folder} and the download failed ({reason}): {_FIX}"
            ) from exc
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise NeurflowInputError(f"Fashion-MNIST files in {folder} have unexpected shapes {images.shape}, {labels.shape}")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def read_fashion_mnist(split: str = "train", *, root: str | Path | None = None, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `(images uint8 (N, 28, 28), labels uint8 (N,))` of split 'train' or 'test'.

    Reads the Debian files (or those in `root`); otherwise downloads with torchvision when
    `download`.  Raises `NeurflowInputError` naming the fix when neither works.  Arrays are
    cached in memory and read-only."""
    return _read_fashion_mnist(_split_name(split), None if root is None else str(root), download)


# ----------------------------------------------------------------------- preprocessing
def _resize_crop(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side of a (N, C, H, W) float batch to `size`, then center-crop."""
    h, w = pixels.shape[-2:]
    if (h, w) != (size, size):
        if min(h, w) != size:
            scale = size / min(h, w)
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
            pixels = F.interpolate(pixels, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
            h, w = nh, nw
        top, left = (h - size) // 2, (w - size) // 2
        pixels = pixels[..., top : top + size, left : left + size]
    return pixels


def _normalise(pixels: torch.Tensor, spec: "ModelSpec") -> torch.Tensor:
    mean = torch.tensor(spec.mean, dtype=pixels.dtype).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=pixels.dtype).view(1, -1, 1, 1)
    return ((pixels - mean) / std).contiguous()


def preprocess_tensor(pixels: torch.Tensor, spec: "ModelSpec") -> torch.Tensor:
    """Preprocess an in-memory batch `(N, C, H, W)` (or one `(C, H, W)` image) of values in [0, 1].

    The channel count must already be the model's: an in-memory tensor is never converted
    (a 1-channel batch for a 3-channel model is an error, not a silent repeat)."""
    if not isinstance(pixels, torch.Tensor):
        raise NeurflowInputError(f"images must be a torch tensor, got {type(pixels).__name__}")
    if pixels.ndim == 3:
        pixels = pixels.unsqueeze(0)
    if pixels.ndim != 4:
        raise NeurflowInputError(f"images must be a (N, C, H, W) tensor, got shape {tuple(pixels.shape)}")
    if pixels.shape[1] != spec.in_channels:
        raise NeurflowInputError(
            f"images have {pixels.shape[1]} channels but {spec.name} expects {spec.in_channels}"
        )
    pixels = pixels.float() / 255.0 if not pixels.is_floating_point() else pixels.float()
    return _normalise(_resize_crop(pixels, spec.input_size), spec)


def images_from_tensor(
    pixels: torch.Tensor, spec: "ModelSpec", labels: list[int], sources: list[str] | None = None
) -> ImageSet:
    """An `ImageSet` from an in-memory batch of [0, 1] images (uint8 is divided by 255).

    sha256 is the hash of the raw pixels handed in."""
    raw = pixels.unsqueeze(0) if isinstance(pixels, torch.Tensor) and pixels.ndim == 3 else pixels
    out = preprocess_tensor(raw, spec)
    n = out.shape[0]
    sources = sources if sources is not None else [f"tensor:{i}" for i in range(n)]
    h, w = raw.shape[-2:]
    return ImageSet(out, list(sources), [int(x) for x in labels], [pixel_hash(raw[i]) for i in range(n)], [(w, h)] * n)


def _check_class(class_index: int | None, n: int, what: str) -> None:
    if class_index is not None and not (0 <= int(class_index) < n):
        raise NeurflowInputError(f"class index {class_index} is out of range for {what}: valid 0..{n - 1}")


def _fashion_images(spec: "ModelSpec", class_index: int | None, split: str, limit: int | None) -> ImageSet:
    split = _split_name(split)
    _check_class(class_index, len(FASHION_MNIST_CLASSES), FASHION_MNIST)
    images, labels = read_fashion_mnist(split)
    index = np.arange(len(labels)) if class_index is None else np.flatnonzero(labels == int(class_index))
    if limit is not None:
        index = index[: max(int(limit), 0)]
    if len(index) == 0:
        name = FASHION_MNIST_CLASSES[int(class_index)] if class_index is not None else None
        raise NeurflowInputError(f"no Fashion-MNIST {split} images selected "
                                 f"(class {class_label(class_index, name) if class_index is not None else 'all'}, limit {limit})")
    raw = torch.from_numpy(images[index].copy())  # (n, 28, 28) uint8
    pixels = raw.unsqueeze(1).float() / 255.0
    if spec.in_channels != 1:  # a grayscale data set for an RGB model: replicate, as PIL's L -> RGB does
        pixels = pixels.expand(-1, spec.in_channels, -1, -1)
    pixels = _normalise(_resize_crop(pixels, spec.input_size), spec)
    return ImageSet(
        pixels,
        [f"{FASHION_MNIST}:{split}:{int(i)}" for i in index],
        [int(labels[i]) for i in index],
        [pixel_hash(raw[j]) for j in range(len(index))],
        [(28, 28)] * len(index),
        source_channels=[1] * len(index),  # gray: replicated above for an RGB model (channel_note says so)
    )


# --------------------------------------------------------------------------------- folders
def folder_classes(folder: str | Path) -> list[str]:
    """Class names of an ImageFolder-layout folder: its subfolders, sorted."""
    root = Path(folder)
    if not root.exists():
        raise NeurflowInputError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NeurflowInputError(f"{root} is not a folder (expected {root}/<class>/<image>)")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise NeurflowInputError(f"image folder {root} has no class subfolders (expected {root}/<class>/<image>)")
    return classes


def _folder_files(root: Path, cls: str) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root / cls, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                files.append(Path(dirpath) / name)
    return sorted(files)


def _read_image(source: Path | bytes, spec: "ModelSpec", what: str | None = None) -> tuple[torch.Tensor, tuple[int, int], int]:
    """`(resized (C, S, S) [0, 1] tensor, original (width, height), channels the file held)` of one
    image file or upload."""
    pixels, held = read_picture_channels(source, spec.in_channels, what=what)
    size = (int(pixels.shape[-1]), int(pixels.shape[-2]))
    return _resize_crop(pixels.unsqueeze(0), spec.input_size)[0], size, held


def preprocess_picture(source: str | Path | bytes, spec: "ModelSpec", what: str | None = None) -> torch.Tensor:
    """One image file (path) or upload (bytes) preprocessed for `spec`: a normalised `(C, S, S)` tensor.

    The debug page's upload and `neurflow debug FILE` go through here, and so through the same
    decoding and resizing as ingestion: a query image is seen exactly as circuit images were."""
    pixels, _, _ = _read_image(source if isinstance(source, (bytes, bytearray)) else Path(source), spec, what)
    return _normalise(pixels.unsqueeze(0), spec)[0]


def _class_lookup(spec: "ModelSpec") -> ClassNames | None:
    """The model's class names (and ids) as a look-up; None when the model has no names."""
    names = tuple(getattr(spec, "class_names", ()) or ())
    return ClassNames(names, tuple(getattr(spec, "class_ids", ()) or ())) if names else None


def folder_class_map(folder: str | Path, spec: "ModelSpec") -> dict[int, str]:
    """Model class index -> the sub-folder of `folder` that holds its images (classes without one
    are absent).

    Sub-folders are matched by class name or synset id (`neurflow.classes.match_folders`): an
    unmatched one is an error listing close matches.  A model without class names has only the
    ImageFolder numbering to go by, which is the sorted sub-folders of the *complete* data set it
    was trained on: a folder with another number of sub-folders is an error naming
    ``--class-names`` (position in a subset says nothing about the class)."""
    root = Path(folder)
    folders = folder_classes(root)
    lookup = _class_lookup(spec)
    if lookup is None:
        if len(folders) != spec.num_classes:
            raise NeurflowInputError(
                f"{spec.name} has no class names and {root} has {len(folders)} class sub-folders for its "
                f"{spec.num_classes} classes: pass {option('class_names', 'FILE', placeholder=True)} (one name per line, "
                "in class-index order) "
                f"so sub-folders are matched by name"
            )
        return dict(enumerate(folders))
    return {c: f for f, c in sorted(match_folders(folders, lookup, str(root)).items(), key=lambda kv: kv[1])}


def _folder_images(folder: str, spec: "ModelSpec", class_index: int | None, limit: int | None) -> ImageSet:
    root = Path(folder)
    if class_index is not None:
        _check_class(class_index, spec.num_classes, f"{spec.name} ({spec.num_classes} classes)")
    by_class = folder_class_map(root, spec)
    if class_index is not None and int(class_index) not in by_class:
        lookup = _class_lookup(spec)
        what, hint = (lookup.label(int(class_index)), folder_hint(lookup, int(class_index))) if lookup else (str(class_index), "")
        raise NeurflowInputError(f"no sub-folder of {root} holds class {what}{hint}")
    wanted = sorted(by_class) if class_index is None else [int(class_index)]
    files: list[tuple[Path, int]] = []
    for c in wanted:
        files.extend((f, c) for f in _folder_files(root, by_class[c]))
    if limit is not None:
        files = files[: max(int(limit), 0)]
    if not files:
        where = root if class_index is None else root / by_class[int(class_index)]
        raise NeurflowInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {where}")
    read = [_read_image(f, spec) for f, _ in files]
    return ImageSet(
        _normalise(torch.stack([pixels for pixels, _, _ in read]), spec),
        [str(f) for f, _ in files],
        [c for _, c in files],
        [file_hash(str(f)) for f, _ in files],
        [size for _, size, _ in read],
        source_channels=[held for _, _, held in read],
    )


# ------------------------------------------------------------------------------ public API
def _is_folder_arg(data: str) -> bool:
    return os.sep in data or "/" in data or data.startswith(".") or Path(data).exists()


def load_images(
    data: str,
    spec: "ModelSpec",
    class_index: int | None = None,
    split: str = "train",
    limit: int | None = None,
) -> ImageSet:
    """The images of one class (or all classes) of `data`, preprocessed for `spec`.

    `data` is a data set name (`fashion-mnist`) or an ImageFolder-layout folder.  `class_index`
    and the returned labels are the *model's* class indices: a folder's sub-folders are matched
    to them by name or synset id (`folder_class_map`), so the model's class 238 is the
    sub-folder ``n02085620`` or ``Chihuahua`` whatever else the folder holds.  `split`
    ('train' / 'test') only applies to data sets.  `limit` keeps the first `limit` images of
    the deterministic order (index order for data sets, sorted paths for folders)."""
    data = str(data)
    if data in DATASETS:
        images = _fashion_images(spec, class_index, split, limit)
        images.origin = f"{data}:{_split_name(split)}"
        return images
    if _is_folder_arg(data):
        images = _folder_images(data, spec, class_index, limit)
        images.origin = f"folder:{Path(data).resolve()}"
        return images
    raise NeurflowInputError(f"unknown data set {data!r}: use one of {', '.join(DATASETS)} or an image folder path")


def class_names(data: str, spec: "ModelSpec") -> list[str]:
    """Class names of `data`: Fashion-MNIST's ten names, or a folder's sorted subfolder names."""
    data = str(data)
    if data == FASHION_MNIST:
        return list(FASHION_MNIST_CLASSES)
    if _is_folder_arg(data):
        return folder_classes(data)
    raise NeurflowInputError(f"unknown data set {data!r}: use one of {', '.join(DATASETS)} or an image folder path")


def data_classes(data: str, spec: "ModelSpec") -> list[int]:
    """The model classes `data` holds images of: every class of a data set (its labels are the
    model's indices), the matched sub-folders of an image folder (`folder_class_map`).  What
    ``--classes all`` means, and what a requested class is checked against before any work."""
    data = str(data)
    if data in DATASETS:
        return list(range(min(len(FASHION_MNIST_CLASSES), spec.num_classes)))
    if _is_folder_arg(data):
        return sorted(folder_class_map(data, spec))
    raise NeurflowInputError(f"unknown data set {data!r}: use one of {', '.join(DATASETS)} or an image folder path")


def adopt_data_names(loaded, data: str) -> None:
    """Give a model without class names those of `data` (in place), when they are its classes.

    Fashion-MNIST's ten names for a 10-class model; an image folder's sub-folder names when it
    has one per class (the ImageFolder numbering the model was trained with).  Otherwise the
    model keeps its 'class <i>' placeholders, and a folder is refused by `folder_class_map`."""
    spec = loaded.spec
    if getattr(spec, "class_names", ()):
        return
    data = str(data)
    names: list[str] | None = None
    if data == FASHION_MNIST and spec.num_classes == len(FASHION_MNIST_CLASSES):
        names = list(FASHION_MNIST_CLASSES)
    elif data not in DATASETS and _is_folder_arg(data) and Path(data).is_dir():
        folders = folder_classes(data)
        names = folders if len(folders) == spec.num_classes else None
    if names:
        loaded.spec = replace(spec, class_names=tuple(names), class_ids=())
        loaded.class_names = list(names)


def classes_of_run(loaded, data: str, text: str, *, option: str = "--classes", single: bool = False) -> list[int]:
    """The classes a command is asked for (`text` of ``--classes`` / ``--class``), checked against
    the model and the data before anything is built or written.

    A model without class names first takes its data set's (`adopt_data_names`,
    in place); ``all`` is every class the data holds images of (`data_classes`:
    the matched sub-folders of an image folder); `single` allows exactly one class."""
    adopt_data_names(loaded, data)
    lookup = ClassNames(loaded.class_names, getattr(loaded.spec, "class_ids", ()))
    where = str(data)
    chosen = select_classes(text, lookup, available=data_classes(data, loaded.spec), where=where, option=option)
    if single and len(chosen) != 1:
        raise NeurflowInputError(f"{option} takes one class, {text!r} is {len(chosen)}: use `neurflow ingest --classes` for several")
    return chosen
