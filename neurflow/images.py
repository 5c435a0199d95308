"""Images handed to the method, and the multi-granularity crops cut from them (spec §1).

Images travel as one preprocessed tensor (already normalised the way the model expects)
plus where each one came from.  Cropping normalised pixels and resizing bilinearly gives the
same result as normalising the resized crop, because per-channel normalisation is affine and
bilinear interpolation is linear, so the crops can be cut after preprocessing.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from neurflow.errors import NeurflowInputError, one_line

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
    source_channels: list[int] = field(default_factory=list)
    """Each image's channel count as stored (1 gray, 3 colour) before it was converted to the
    model's (`decode_picture`'s rule); empty when unknown.  Kept so a circuit can say that its
    images were converted (`channel_note`) rather than convert them silently."""

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
        if self.source_channels and len(self.source_channels) != n:
            raise NeurflowInputError(f"{len(self.source_channels)} channel counts for {n} images: give one per image")
        self.source_channels = [int(c) for c in self.source_channels]

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
            [self.source_channels[i] for i in index] if self.source_channels else [],
        )

    def channel_note(self) -> str | None:
        """One line for a circuit's notes when some images were converted to the model's channel
        count (gray replicated into RGB, colour reduced to its luma), else `None`.

        The conversion is the documented rule (`decode_picture`), but a reader of the circuit must
        know that its concepts were found on pictures the model never saw in that form."""
        c = int(self.pixels.shape[1])
        converted = [k for k in self.source_channels if k != c]
        if not converted:
            return None
        were = "was" if len(converted) == 1 else "were"
        how = (f"grayscale and {were} replicated into R, G and B for the model's 3-channel input" if c == 3
               else f"in colour and {were} reduced to luma (ITU-R 601) for the model's 1-channel input")
        return f"{len(converted)} of {len(self)} images {were} {how}"

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


def _unit(arr: np.ndarray, full_scale: float) -> np.ndarray:
    """`arr / full_scale` as float32, divided in place (no second full-size copy)."""
    out = arr.astype(np.float32)
    out /= np.float32(full_scale)
    return out


def _alpha_free(values: np.ndarray, alpha: np.ndarray | None, background: float) -> np.ndarray:
    if alpha is None:
        return values
    if values.ndim == 3:
        alpha = alpha[:, :, None]
    return values * alpha + np.float32(background) * (np.float32(1.0) - alpha)


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

    Ingestion (`neurflow.datasets`) and the debug page / `neurflow debug` (`ingest.jobs.image_debugging`)
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
      The rule (README, "Images"): a file whose channel count is not the model's is converted
      this way, one fixed convention with no choice to guess, and a circuit built from converted
      images says so in its notes and summary (`ImageSet.channel_note`); what has no such
      conversion is refused: a model taking other than 1 or 3 channels, and an in-memory tensor
      with the wrong count (`neurflow.datasets.preprocess_tensor`: its channels' meaning is unknown).

    `what` names the image in error messages."""
    return decode_picture_channels(picture, channels, background=background, what=what)[0]


def decode_picture_channels(picture: "Image.Image", channels: int, *, background: float | None = None,
                            what: str = "image") -> tuple[torch.Tensor, int]:
    """`decode_picture`, and the channel count the picture held before it was converted to
    `channels` (1 gray, 3 colour): what `ImageSet.channel_note` reports."""
    if channels not in (1, 3):
        raise NeurflowInputError(f"cannot decode {what} for a {channels}-channel model: image files give 1 (gray) or 3 (colour) channels")
    if background is None:
        background = 0.0 if channels == 1 else 1.0
    mode = picture.mode
    alpha: np.ndarray | None = None
    if mode == "1":
        values = np.asarray(picture, dtype=bool).astype(np.float32)
    elif mode == "L":
        values = _unit(np.asarray(picture, dtype=np.uint8), 255.0)
    elif mode in _UINT16_MODES:
        values = _unit(np.asarray(picture), 65535.0)
    elif mode == "I":
        values = _scale_int32(np.asarray(picture))
    elif mode == "F":
        values = _scale_float(np.asarray(picture), what)
    elif mode in ("LA", "La"):
        arr = _unit(np.asarray(picture.convert("LA") if mode == "La" else picture, dtype=np.uint8), 255.0)
        values, alpha = arr[:, :, 0], arr[:, :, 1]
    elif mode == "RGB":
        values = _unit(np.asarray(picture, dtype=np.uint8), 255.0)
    elif mode in ("RGBA", "RGBa", "P", "PA"):
        arr = _unit(np.asarray(picture if mode == "RGBA" else picture.convert("RGBA"), dtype=np.uint8), 255.0)
        values, alpha = arr[:, :, :3], arr[:, :, 3]
    elif mode in _CONVERT_TO_RGB:
        values = _unit(np.asarray(picture.convert("RGB"), dtype=np.uint8), 255.0)
    else:
        raise NeurflowInputError(f"{what} has PIL mode {mode!r}, which neurflow cannot decode: save it as an 8-bit RGB or grayscale PNG")
    # float32 from here on, in place where it can be: a float64 copy and whole-array temporaries
    # took a 50-megapixel RGB photo for a gray model to 2.9 GB (measured); now about 1 GB
    values = _alpha_free(np.asarray(values, dtype=np.float32), alpha, float(background))
    if values.ndim == 2:
        values = values[:, :, None]
    held = int(values.shape[2])
    if held == 3 and channels == 1:
        gray = values[:, :, 0] * np.float32(LUMA[0])
        gray += values[:, :, 1] * np.float32(LUMA[1])
        gray += values[:, :, 2] * np.float32(LUMA[2])
        values = gray[:, :, None]
    out = torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))
    if held == 1 and channels == 3:
        out = out.expand(3, -1, -1).contiguous()
    return out.clamp_(0.0, 1.0), held


MAX_MEGAPIXELS = 50.0
"""The pixel budget of one image file, in megapixels (width x height / 1e6), checked from the file's
header before any pixel is decoded.  Decoding costs memory in proportion to the pixels (the
8-bit picture, then float32 values): measured, a 50-megapixel RGB photo takes a process up by
1.2-1.3 GB for a moment and a gray one by 0.3 GB, while a 140 KB PNG of one colour can declare
144 megapixels (+1.8 GB before this check) or more: a budget checked after decoding would come
too late.  50 MP is above common camera photos and below PIL's own decompression-bomb limits
(89 MP warns, 179 MP refuses, both without saying the size); `$NEURFLOW_MAX_MEGAPIXELS`
overrides it (a process that needs larger images, on a machine with the memory)."""

MAX_MEGAPIXELS_ENV = "NEURFLOW_MAX_MEGAPIXELS"

# First bytes of files that are images PIL reads, and of files people mistake for images: what
# a refusal says the file is.
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"P1", "PBM"), (b"P2", "PGM"), (b"P3", "PPM"), (b"P4", "PBM"),
    (b"P5", "PGM"), (b"P6", "PPM"),
)
_OTHER_MAGIC = (
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "a gzip archive"), (b"\x7fELF", "a program (ELF)"), (b"\x80\x02", "a Python pickle"),
    (b"\x80\x04", "a Python pickle"), (b"\x80\x05", "a Python pickle"),
)


def max_megapixels() -> float:
    """The pixel budget in force (`MAX_MEGAPIXELS`, or `$NEURFLOW_MAX_MEGAPIXELS` when set)."""
    raw = os.environ.get(MAX_MEGAPIXELS_ENV, "").strip()
    if not raw:
        return MAX_MEGAPIXELS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise NeurflowInputError(f"{MAX_MEGAPIXELS_ENV}={raw!r} is not a positive number of megapixels, such as {MAX_MEGAPIXELS:g}")
    return value


def _file_kind(head: bytes) -> str:
    """What a file that PIL cannot open is, from its first bytes, for the refusal."""
    if not head:
        return "an empty file"
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return f"a {name} file"
    riff = head[:4] == b"RIFF" and head[8:12]
    if riff == b"WEBP":
        return "a WebP file"
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        return f"an ISO media file of brand {brand!r} (HEIC/AVIF photos, MP4 video)"
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return name
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    lower = text[:256].lower()
    if lower.startswith(b"<svg") or (lower.startswith(b"<?xml") and b"<svg" in lower):
        return "an SVG drawing (vector graphics, not pixels)"
    if lower.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    binary = "a binary file of no image format PIL reads"
    if any(b < 32 and b not in b"\t\n\r\f" for b in head):
        return binary
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            return binary
    return "a text file"


def _header_size(fp, filename: str) -> tuple[int, int] | None:
    """`(width, height)` from the header of an image PIL refused to open as a decompression bomb.

    PIL checks its own limit inside `Image.open` and gives no size with the refusal; its format
    plugins read the header alone, so they are asked directly (the loop `Image.open` runs),
    without changing PIL's process-wide limit under the threads of a running app.  None when no
    plugin reads it."""
    from PIL import Image

    Image.init()
    fp.seek(0)
    prefix = fp.read(16)
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        try:
            result = not accept or accept(prefix)
            if not result or isinstance(result, str):
                continue
            fp.seek(0)
            picture = factory(fp, filename)
        except Exception:  # noqa: BLE001 - a plugin that does not read this file
            continue
        return picture.size
    return None


def _too_many_pixels(what: str, size: tuple[int, int] | None, pixels: int, budget: float) -> NeurflowInputError:
    dims = f"{size[0]} x {size[1]} = " if size else ""
    return NeurflowInputError(
        f"{what} has too many pixels ({dims}{pixels / 1e6:.1f} MP, over the budget of {budget:g} MP): scale it "
        f"down (or set {MAX_MEGAPIXELS_ENV} higher on a machine with the memory)"
    )


def read_picture(source: "str | Path | bytes", channels: int, *, what: str | None = None) -> torch.Tensor:
    """Open an image file (a path, or the bytes of an upload) and `decode_picture` its first frame.

    The file's pixel count is read from its header and checked against the budget
    (`max_megapixels`) before any pixel is decoded.  Every failure to read is one
    `NeurflowInputError` naming the file and what is wrong with it (too many pixels, truncated or
    damaged, not an image: saying what the file is instead), so a broken file in a folder of
    thousands says which one to remove and why."""
    return read_picture_channels(source, channels, what=what)[0]


def read_picture_channels(source: "str | Path | bytes", channels: int, *,
                          what: str | None = None) -> tuple[torch.Tensor, int]:
    """`read_picture`, and the channel count the file held (1 gray, 3 colour) before it was
    converted to the model's `channels` (`ImageSet.source_channels`)."""
    from PIL import Image, UnidentifiedImageError

    what = what or (f"image {source}" if not isinstance(source, (bytes, bytearray)) else "the uploaded image")
    budget = max_megapixels()
    try:
        opened = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as exc:
        raise NeurflowInputError(f"cannot read {what}: {exc.strerror or one_line(exc)}") from None
    with opened as fp:
        head = fp.read(64)
        fp.seek(0)
        try:
            # PIL's warning (above 89 MP) is our refusal below.  (catch_warnings swaps the process's
            # filter list; in the app's threads the worst a race does is keep or drop this one filter.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                picture = Image.open(fp)
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = _header_size(fp, str(source) if not isinstance(source, (bytes, bytearray)) else "")
            pixels = size[0] * size[1] if size else int(found.group(1)) if found else 0
            raise _too_many_pixels(what, size, pixels, budget) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
            kind = _file_kind(head)
            if any(kind == f"a {name} file" for _, name in _IMAGE_MAGIC) or kind == "a WebP file":
                raise NeurflowInputError(f"cannot read {what}: it starts as {kind} but its header is cut short or "
                                         "damaged (truncated or corrupt file)") from None
            raise NeurflowInputError(f"cannot read {what}: it is {kind}, not an image file "
                                     "(PNG, JPEG, TIFF, BMP, WebP, PGM/PPM)") from None
        with picture:
            width, height = picture.size
            if width * height > budget * 1e6:
                raise _too_many_pixels(what, (width, height), width * height, budget)
            try:
                picture.load()
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                detail = one_line(exc) or type(exc).__name__
                cut = "truncat" in detail.lower() or isinstance(exc, EOFError)
                raise NeurflowInputError(
                    f"cannot read {what}: {picture.format or 'image'} file of {width} x {height} pixels "
                    + ("whose pixel data ends early (truncated file)" if cut
                       else f"whose pixel data is damaged ({detail})")
                ) from None
            return decode_picture_channels(picture, channels, what=what)
