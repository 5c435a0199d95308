"""Crop thumbnails: the small PNG files the app shows for a concept's exemplar crops.

Written before the graph rows (the Crop node keeps the path relative to the artifact folder), to
a temporary name first and renamed, so a crash never leaves a half-written PNG under its final
name; an existing file is kept (crops are shared by every parameter set of a class).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from neurflow.circuit import Circuit

THUMBNAIL_MAX = 128  # pixels, longest side of a stored crop thumbnail


def thumbnail_path(image_sha256: str, crop: Any) -> str:
    """Path of a crop's PNG, relative to the artifact folder."""
    return f"crops/{image_sha256[:2]}/{image_sha256}_{crop.x0}_{crop.y0}_{crop.x1}_{crop.y1}.png"


def write_thumbnails(
    circuit: "Circuit", artifact_dir: Path, thumbnails: Callable[[int], "PILImage"]
) -> tuple[dict[int, str], int]:
    crops = {c.crop_id: c for c in circuit.crops}
    images = {im.image_id: im for im in circuit.images}
    out: dict[int, str] = {}
    written = 0
    for m in circuit.concept_members:
        if m.rep_rank < 0 or m.crop_id in out or m.crop_id not in crops:
            continue
        cr = crops[m.crop_id]
        rel = thumbnail_path(images[cr.image_id].sha256, cr)
        path = artifact_dir / rel
        if not path.is_file():
            img = thumbnails(m.crop_id)
            if img is None:
                continue
            img = img.copy()
            img.thumbnail((THUMBNAIL_MAX, THUMBNAIL_MAX))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.png")
            img.save(tmp, format="PNG", optimize=True)
            tmp.replace(path)
            written += 1
        out[m.crop_id] = rel
    return out, written
