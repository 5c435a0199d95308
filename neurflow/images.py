"""Images handed to the method, and the multi-granularity crops cut from them (spec §1).

Images travel as one preprocessed tensor (already normalised the way the model expects)
plus where each one came from.  Cropping normalised pixels and resizing bilinearly gives the
same result as normalising the resized crop, because per-channel normalisation is affine and
bilinear interpolation is linear, so the crops can be cut after preprocessing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from neurflow.errors import NeurflowInputError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from PIL import Image

DEFAULT_GRANULARITIES = (1.0, 0.5, 0.25)
"""Crop granularities of spec §1 (the default of `Params.granularities`)."""


@dataclass
class ImageSet:
    """A batch of preprocessed images `(N, C, S, S)` with their provenance.

    `original_sizes` holds each image's `(width, height)` before it was resized to the model's
    input (empty when unknown, e.g. an `ImageSet` built by hand).  It is kept because resizing
    hides how many real pixels an image had: a 20x20 icon and a 500x400 photo both arrive as
    S x S, and only the original size can tell a reader of the circuit that some images (and
    so their crops) were enlarged beyond the detail they contain (`upscale_note`)."""

    pixels: torch.Tensor
    sources: list[str]
    labels: list[int]
    sha256: list[str] = field(default_factory=list)
    original_sizes: list[tuple[int, int]] = field(default_factory=list)
    origin: str = "tensor"
    """Where the images came from (`fashion-mnist:train`, `folder:/abs/path`): part of a circuit's identity."""

    def __post_init__(self) -> None:
        if self.pixels.ndim != 4:
            raise NeurflowInputError(f"images must be a (N, C, H, W) tensor, got shape {tuple(self.pixels.shape)}")
        n = self.pixels.shape[0]
        if n == 0:
            raise NeurflowInputError("no images: the class has no usable images")
        if len(self.sources) != n or len(self.labels) != n:
            raise NeurflowInputError("images, sources and labels must have the same length")
        if not self.sha256:
            self.sha256 = [pixel_hash(self.pixels[i]) for i in range(n)]
        if self.original_sizes and len(self.original_sizes) != n:
            raise NeurflowInputError(f"{len(self.original_sizes)} original sizes for {n} images: give one (width, height) per image")
        self.original_sizes = [(int(w), int(h)) for w, h in self.original_sizes]

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def size(self) -> int:
        return int(self.pixels.shape[-1])

    def subset(self, index: list[int] | torch.Tensor) -> "ImageSet":
        index = [int(i) for i in index]
        return ImageSet(
            self.pixels[index],
            [self.sources[i] for i in index],
            [self.labels[i] for i in index],
            [self.sha256[i] for i in index],
            [self.original_sizes[i] for i in index] if self.original_sizes else [],
            self.origin,
        )

    def upscaled(self) -> list[int]:
        """Indices of the images whose shorter side was below the model input `S` and so were enlarged.

        Preprocessing resizes the shorter side to `S` (`neurflow.datasets`), so that side alone
        decides whether pixels were invented by interpolation.  Empty when sizes are unknown."""
        return [i for i, (w, h) in enumerate(self.original_sizes) if min(w, h) < self.size]

    def upscale_note(self, granularities: tuple[float, ...] = DEFAULT_GRANULARITIES) -> str | None:
        """One line for a circuit summary when some images were upscaled, else `None`.

        Says how many of the images were smaller than the model input (with the smallest size and
        the largest enlargement), and how many are even smaller than the smallest crop
        (`round(min(g) * S)` pixels): those images have fewer pixels across than one crop of the
        finest granularity, so every crop of theirs is interpolation of a few source pixels and
        their concepts describe blur rather than detail.  A reader must be told, because nothing
        in the crops themselves shows it."""
        up = self.upscaled()
        if not up:
            return None
        s = self.size
        shortest = min(up, key=lambda i: (min(self.original_sizes[i]), self.original_sizes[i]))
        w, h = self.original_sizes[shortest]
        factor = s / min(w, h)
        were = "was" if len(up) == 1 else "were"
        note = (f"{len(up)} of {len(self)} images {were} smaller than the model's {s}x{s} input and {were} upscaled "
                f"(smallest {w}x{h}, enlarged {factor:.3g}x)")  # fmt: skip
        g = min((float(x) for x in granularities), default=1.0)
        if g < 1:  # at granularity 1 the smallest crop is the input itself: nothing more to say
            crop = max(1, int(round(g * s)))
            tiny = [i for i in up if min(self.original_sizes[i]) < crop]
            if tiny:
                are = "is" if len(tiny) == 1 else "are"
                note += (f"; {len(tiny)} of them {are} smaller than the smallest crop ({crop} px at granularity {g:g}), "
                         "so their crops show interpolated blur, not detail")  # fmt: skip
        return note


def pixel_hash(pixels: torch.Tensor) -> str:
    """sha256 of an image's pixel bytes: the identity of an image that has no file."""
    return hashlib.sha256(pixels.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def file_hash(path: str) -> str:
    """sha256 of a file's bytes: the graph schema's `Image.uid`."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def crop_boxes(size: int, granularities: tuple[float, ...]) -> list[tuple[int, int, int, int, float]]:
    """All crop boxes `(x0, y0, x1, y1, granularity)` of a square image of side `size`.

    Crop side `s = round(g * size)`, stride `max(min(floor(0.5 * s), size - s), 1)`:
    at size 224 and granularities (1, 0.5, 0.25) that is 1 + 9 + 49 = 59 boxes.
    """
    boxes = []
    for g in granularities:
        if not 0 < g <= 1:
            raise NeurflowInputError(f"granularity {g} must be in (0, 1]")
        s = max(1, int(round(g * size)))
        stride = max(min(s // 2, size - s), 1)
        starts = list(range(0, size - s + 1, stride))
        for y in starts:
            for x in starts:
                boxes.append((x, y, x + s, y + s, float(g)))
    return boxes


def cut_crops(pixels: torch.Tensor, boxes: list[tuple[int, int, int, int, float]]) -> torch.Tensor:
    """Every box of every image, resized back to the image side: `(N * len(boxes), C, S, S)`.

    Rows are image-major: crop `i * len(boxes) + b` is box `b` of image `i`."""
    n, c, h, w = pixels.shape
    out = []
    for x0, y0, x1, y1, _ in boxes:
        patch = pixels[:, :, y0:y1, x0:x1]
        if patch.shape[-1] != w or patch.shape[-2] != h:
            patch = F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False)
        out.append(patch)
    return torch.stack(out, dim=1).reshape(n * len(boxes), c, h, w)


def has_content(crops: torch.Tensor, min_std: float) -> torch.Tensor:
    """Which crops carry content (`Params.min_crop_std`): pixel std over every channel and pixel of
    the model-ready crop at least `min_std`.  One rule for the concept data, the evaluations' crop
    set and the debug page's crops, so what is left out is the same everywhere."""
    return crops.flatten(1).float().std(dim=1) >= min_std


def crop_picture(pixels: torch.Tensor, box: tuple[int, int, int, int], mean, std, min_side: int = 64):
    """A crop of one preprocessed image `(C, S, S)` as a PIL image for people to look at.

    Undoes the normalisation; small crops are enlarged (nearest) to `min_side` so that a
    28-pixel Fashion-MNIST crop is still visible in a grid."""
    from PIL import Image

    x0, y0, x1, y1 = box
    c = pixels.shape[0]
    patch = pixels[:, y0:y1, x0:x1].detach().float().cpu()
    patch = patch * torch.tensor(std).reshape(c, 1, 1) + torch.tensor(mean).reshape(c, 1, 1)
    array = (patch.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if c == 1 else array, mode="L" if c == 1 else "RGB")
    if max(picture.size) < min_side:
        scale = -(-min_side // max(picture.size))
        picture = picture.resize((picture.size[0] * scale, picture.size[1] * scale), Image.NEAREST)
    return picture


# ------------------------------------------------------------------------------- decoding
LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma weights: what PIL's `convert('L')` uses, so 8-bit RGB files give the gray
levels they always gave (here in float, without PIL's rounding to whole 8-bit steps)."""

_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_CONVERT_TO_RGB = ("RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _alpha_free(values: np.ndarray, alpha: np.ndarray | None, background: float) -> np.ndarray:
    if alpha is None:
        return values
    if values.ndim == 3:
        alpha = alpha[:, :, None]
    return values * alpha + background * (1.0 - alpha)


def _scale_int32(arr: np.ndarray) -> np.ndarray:
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi <= 65535:
        return arr.astype(np.float32) / 65535.0
    return _own_range(arr.astype(np.float64))


def _scale_float(arr: np.ndarray, what: str) -> np.ndarray:
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        raise NeurflowInputError(f"{what} has no finite pixel values (all NaN or infinite): re-export it with real pixel values")
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if not (0.0 <= lo and hi <= 1.0):
        arr = _own_range(arr, lo, hi)
    return np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)


def _own_range(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant image is clipped into [0, 1] instead (nothing to stretch)."""
    if lo is None or hi is None:
        lo, hi = float(arr.min()), float(arr.max())
    if hi > lo:
        return (arr - lo) / (hi - lo)
    return np.clip(arr, 0.0, 1.0)


def decode_picture(picture: "Image.Image", channels: int, *, background: float | None = None,
                   what: str = "image") -> torch.Tensor:
    """A PIL image as a `(channels, H, W)` float32 tensor in [0, 1]: the one decoder of every image file.

    Ingestion (`neurflow.datasets`) and the debug page / `neurflow debug` (`ingest.image_debugging`)
    both call this, so an image can never be seen one way when its circuit is built and another
    way when it is debugged.  It exists because PIL's `convert('L')` / `convert('RGB')` clip
    16-bit and 32-bit values at 255: a 16-bit grayscale PNG became an all-white image.

    Rules, per PIL mode (the modes image files decode to):

    * `1`, `L`, `P`, `RGB`, ...: 8-bit (or 1-bit) values divided by their full scale (255, 1).
    * `I;16`, `I;16B`, `I;16L`, `I;16N`: divided by 65535, the real 16-bit full scale.
    * `I` (32-bit signed): Pillow decodes 16-bit PGM/PPM (any maxval, rescaled by Pillow to
      0..65535) and many 16-bit TIFFs to `I`, so values within 0..65535 are divided by 65535.
      Values outside that range are genuinely 32-bit data (depth maps, scientific counts) with
      no conventional white level; dividing by 2**31 - 1 would make every real image black, so
      such an image is min-max scaled over its own range.
    * `F` (32-bit float): kept as is when every finite value is already in [0, 1] (the usual
      convention for float images); otherwise min-max scaled over its finite values, for the
      same reason as `I`.  NaN becomes 0, +inf 1, -inf 0; an image with no finite value is an error.
    * `P` / `PA` (palette): expanded through the palette to RGBA (the palette's transparency
      becomes alpha).  `CMYK`, `YCbCr`, `LAB`, `HSV`, `RGBX`: converted to RGB by PIL.
    * Alpha (`LA`, `La`, `PA`, `RGBA`, `RGBa`, transparent palettes) is composited onto a plain
      background: black for 1-channel models, white for 3-channel ones.  The background must be
      what the model saw around objects when it was trained: the 1-channel demo model learned
      Fashion-MNIST, bright garments on black, while RGB ImageNet models mostly saw photos and
      product shots on white.  Pass `background` (0..1) to override.
    * Channels: a colour image for a 1-channel model becomes its ITU-R 601 luma (`LUMA`, PIL's
      own weights); a grayscale image for a 3-channel model is replicated into R, G and B.
      Other channel counts are an error: files only hold gray or colour.

    `what` names the image in error messages."""
    if channels not in (1, 3):
        raise NeurflowInputError(f"cannot decode {what} for a {channels}-channel model: image files give 1 (gray) or 3 (colour) channels")
    if background is None:
        background = 0.0 if channels == 1 else 1.0
    mode = picture.mode
    alpha: np.ndarray | None = None
    if mode == "1":
        values = np.asarray(picture, dtype=bool).astype(np.float32)
    elif mode == "L":
        values = np.asarray(picture, dtype=np.uint8).astype(np.float32) / 255.0
    elif mode in _UINT16_MODES:
        values = np.asarray(picture).astype(np.float32) / 65535.0
    elif mode == "I":
        values = _scale_int32(np.asarray(picture))
    elif mode == "F":
        values = _scale_float(np.asarray(picture), what)
    elif mode in ("LA", "La"):
        arr = np.asarray(picture.convert("LA") if mode == "La" else picture, dtype=np.uint8).astype(np.float32) / 255.0
        values, alpha = arr[:, :, 0], arr[:, :, 1]
    elif mode == "RGB":
        values = np.asarray(picture, dtype=np.uint8).astype(np.float32) / 255.0
    elif mode in ("RGBA", "RGBa", "P", "PA"):
        arr = np.asarray(picture if mode == "RGBA" else picture.convert("RGBA"), dtype=np.uint8).astype(np.float32) / 255.0
        values, alpha = arr[:, :, :3], arr[:, :, 3]
    elif mode in _CONVERT_TO_RGB:
        values = np.asarray(picture.convert("RGB"), dtype=np.uint8).astype(np.float32) / 255.0
    else:
        raise NeurflowInputError(f"{what} has PIL mode {mode!r}, which neurflow cannot decode: save it as an 8-bit RGB or grayscale PNG")
    values = _alpha_free(np.asarray(values, dtype=np.float64), alpha, float(background))
    if values.ndim == 2:
        values = values[:, :, None]
    if values.shape[2] == 3 and channels == 1:
        values = (values * np.asarray(LUMA)).sum(axis=2, keepdims=True)
    elif values.shape[2] == 1 and channels == 3:
        values = np.repeat(values, 3, axis=2)
    out = torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32))
    return out.clamp_(0.0, 1.0)


def read_picture(source: "str | Path | bytes", channels: int, *, what: str | None = None) -> torch.Tensor:
    """Open an image file (a path, or the bytes of an upload) and `decode_picture` its first frame.

    Every failure to read is one `NeurflowInputError` naming the file, so a broken file in a
    folder of thousands says which one to remove."""
    import io

    from PIL import Image, UnidentifiedImageError

    what = what or (f"image {source}" if not isinstance(source, (bytes, bytearray)) else "the uploaded image")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as picture:
            picture.load()
            return decode_picture(picture, channels, what=what)
    except NeurflowInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise NeurflowInputError(
            f"cannot read {what}: {type(exc).__name__} (not an image PIL can open; convert it to PNG or remove it)"
        ) from exc
