"""Images handed to the method, and the multi-granularity crops cut from them (spec §1).

Images travel as one preprocessed tensor (already normalised the way the model expects)
plus where each one came from.  Cropping normalised pixels and resizing bilinearly gives the
same result as normalising the resized crop, because per-channel normalisation is affine and
bilinear interpolation is linear, so the crops can be cut after preprocessing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from neurflow.errors import NeurflowInputError


@dataclass
class ImageSet:
    """A batch of preprocessed images `(N, C, S, S)` with their provenance."""

    pixels: torch.Tensor
    sources: list[str]
    labels: list[int]
    sha256: list[str] = field(default_factory=list)

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
        )


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
