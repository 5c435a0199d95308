"""Crop thumbnails (ingest/write/thumbnails.py): the representative crops of a circuit as small PNGs
under content-addressed paths, written once."""

from __future__ import annotations

from types import SimpleNamespace as NS

from PIL import Image

from ingest.write.thumbnails import THUMBNAIL_MAX, thumbnail_path, write_thumbnails

SHA = "ab" + "0" * 62


def _circuit():
    crops = [NS(crop_id=1, image_id=7, x0=0, y0=0, x1=300, y1=150), NS(crop_id=2, image_id=7, x0=5, y0=6, x1=9, y1=10),
             NS(crop_id=3, image_id=7, x0=1, y0=1, x1=2, y1=2)]  # fmt: skip
    members = [NS(crop_id=1, rep_rank=0), NS(crop_id=1, rep_rank=1), NS(crop_id=2, rep_rank=-1),
               NS(crop_id=3, rep_rank=0), NS(crop_id=9, rep_rank=0)]  # fmt: skip
    return NS(crops=crops, images=[NS(image_id=7, sha256=SHA)], concept_members=members)


def test_thumbnail_path_is_content_addressed():
    assert thumbnail_path(SHA, NS(x0=1, y0=2, x1=3, y1=4)) == f"crops/ab/{SHA}_1_2_3_4.png"


def test_representative_crops_are_written_small_and_once(tmp_path):
    asked: list[int] = []

    def thumbs(crop_id):
        asked.append(crop_id)
        return None if crop_id == 3 else Image.new("RGB", (300, 150), (crop_id, 0, 0))

    paths, written = write_thumbnails(_circuit(), tmp_path, thumbs)
    assert paths == {1: f"crops/ab/{SHA}_0_0_300_150.png"} and written == 1 and asked == [1, 3]
    with Image.open(tmp_path / paths[1]) as img:
        assert img.format == "PNG" and max(img.size) == THUMBNAIL_MAX and img.size == (128, 64)
    assert not list(tmp_path.rglob("*.tmp.png"))
    again, written = write_thumbnails(_circuit(), tmp_path, thumbs)  # an existing file is kept
    assert again == paths and written == 0 and asked == [1, 3, 3]
