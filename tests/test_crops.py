"""`neurflow.images`: the crop boxes and crops of spec §1, and `ImageSet` itself (decoding image
files is tested in tests/test_images.py)."""

from __future__ import annotations

import pytest
import torch

from neurflow.images import ImageSet, NeurflowInputError, crop_boxes, cut_crops, pixel_hash


def test_crop_boxes_match_the_spec_at_224():
    boxes = crop_boxes(224, (1.0, 0.5, 0.25))
    assert len(boxes) == 1 + 9 + 49
    assert boxes[0][:4] == (0, 0, 224, 224)
    assert all(0 <= b[0] < b[2] <= 224 and b[2] - b[0] == b[3] - b[1] for b in boxes)


@pytest.mark.parametrize("size", [16, 17, 28, 224])
@pytest.mark.parametrize("g", [1.0, 0.5, 0.25, 0.1])
def test_crop_count_and_stride_follow_the_spec_rule(size, g):
    """Side s = round(g * S), stride max(min(floor(0.5 s), S - s), 1), boxes on a square grid from (0, 0)."""
    boxes = crop_boxes(size, (g,))
    s = max(1, round(g * size))
    stride = max(min(s // 2, size - s), 1)
    per_side = (size - s) // stride + 1
    assert len(boxes) == per_side**2
    starts = [i * stride for i in range(per_side)]
    assert sorted({b[0] for b in boxes}) == starts and sorted({b[1] for b in boxes}) == starts
    assert all(b[2] - b[0] == s and b[3] - b[1] == s and b[2] <= size and b[3] <= size and b[4] == g for b in boxes)
    assert len(set(boxes)) == len(boxes)


def test_tiny_images_have_ten_crops():
    """The unit tests' 16 px images at granularities (1, 0.5): one whole image, 3 x 3 crops of side 8 at stride 4."""
    boxes = crop_boxes(16, (1.0, 0.5))
    assert [b[:4] for b in boxes[1:4]] == [(0, 0, 8, 8), (4, 0, 12, 8), (8, 0, 16, 8)] and len(boxes) == 10


@pytest.mark.parametrize("g", [0.0, -0.5, 1.5])
def test_granularity_outside_zero_one_is_refused(g):
    with pytest.raises(NeurflowInputError, match="granularity"):
        crop_boxes(16, (1.0, g))


@pytest.mark.usefixtures("single_thread")
def test_crops_are_the_boxes_resized_bilinearly_image_major():
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    boxes = crop_boxes(16, (1.0, 0.5))
    crops = cut_crops(pixels, boxes)
    assert crops.shape == (2 * len(boxes), 3, 16, 16)
    assert torch.equal(crops[0], pixels[0]) and torch.equal(crops[len(boxes)], pixels[1])  # granularity 1: the image
    for i in range(2):
        for b, (x0, y0, x1, y1, _) in enumerate(boxes):
            want = torch.nn.functional.interpolate(pixels[i : i + 1, :, y0:y1, x0:x1], size=(16, 16), mode="bilinear",
                                                   align_corners=False)[0]
            assert torch.equal(crops[i * len(boxes) + b], want)


def test_image_set_hashes_pixels_and_subsets_keep_provenance():
    pixels = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    images = ImageSet(pixels, ["a", "b", "c"], [0, 1, 2], origin="here")
    assert images.sha256 == [pixel_hash(pixels[i]) for i in range(3)] and len(set(images.sha256)) == 3
    sub = images.subset([2, 0])
    assert sub.sources == ["c", "a"] and sub.labels == [2, 0] and sub.sha256 == [images.sha256[2], images.sha256[0]]
    assert sub.origin == "here" and torch.equal(sub.pixels, pixels[[2, 0]]) and len(sub) == 2 and sub.size == 8


@pytest.mark.parametrize(
    "pixels, sources, labels, message",
    [
        (torch.zeros(2, 8, 8), ["a", "b"], [0, 0], "(N, C, H, W)"),
        (torch.zeros(0, 1, 8, 8), [], [], "no images"),
        (torch.zeros(2, 1, 8, 8), ["a"], [0, 0], "same length"),
    ],
)
def test_malformed_image_sets_are_input_errors(pixels, sources, labels, message):
    with pytest.raises(NeurflowInputError, match=message.replace("(", "\\(").replace(")", "\\)")):
        ImageSet(pixels, sources, labels)
