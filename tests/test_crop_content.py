"""`Params.min_crop_std` (issue 13, item 2): crops that are (nearly) uniform background can be left out
of the concept data.  Off by default (the paper's rule, identical circuits and identities); on, no
uniform crop is ever a top sample, concept member or representative, and the circuit says how many
crops it left out.  Tiny seeded models, no trained weights."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from neurflow.circuit import Params
from neurflow.images import ImageSet, NeurflowInputError, cut_crops
from tests.fixtures_tiny import build
from tests.tiny_models import CNN_LAYERS, TINY_PARAMS, tiny_cnn, tiny_images

pytestmark = pytest.mark.usefixtures("single_thread")


def _with_flat_corner(value: float = 4.0) -> ImageSet:
    """Tiny images whose bottom-right 8 x 8 quarter is one bright constant: that granularity-0.5 box is uniform."""
    images = tiny_images()
    pixels = images.pixels.clone()
    pixels[:, :, 8:, 8:] = value
    return ImageSet(pixels, images.sources, images.labels, origin="tiny-flat")


def _crop_std(images: ImageSet, circuit, crop_ids) -> list[float]:
    boxes = {c.crop_id: (c.image_id, (c.x0, c.y0, c.x1, c.y1, c.granularity)) for c in circuit.crops}
    return [float(cut_crops(images.pixels[boxes[i][0] : boxes[i][0] + 1], [boxes[i][1]]).std()) for i in crop_ids]


def test_default_is_off_and_keeps_every_earlier_identity():
    assert Params().min_crop_std == 0.0
    assert "min_crop_std" not in Params().to_dict()  # so Params().hash() is what it was before the field
    on = Params(min_crop_std=0.1)
    assert on.to_dict()["min_crop_std"] == 0.1 and on.hash() != Params().hash()
    assert Params.from_dict(on.to_dict()) == on and Params.from_dict(Params().to_dict()) == Params()


def test_a_threshold_no_crop_falls_below_builds_the_same_circuit(tiny):
    # random images have no uniform crop: the content mask runs and drops nothing
    circuit = build(tiny.model, CNN_LAYERS, tiny.images, params=replace(TINY_PARAMS, min_crop_std=1e-6))
    assert circuit.notes[-1].startswith("0 of 80 crops left out")
    for name in circuit.TABLES:
        assert getattr(circuit, name) == getattr(tiny.circuit, name), name


def test_uniform_crops_are_left_out_of_the_concept_data():
    model, images = tiny_cnn(), _with_flat_corner()
    off = build(model, CNN_LAYERS, images)
    on = build(model, CNN_LAYERS, images, params=replace(TINY_PARAMS, min_crop_std=0.05))
    flat_off = [s < 1e-6 for s in _crop_std(images, off, [t.crop_id for t in off.top_samples])]
    assert any(flat_off)  # the paper's rule picks the bright uniform crop as a top sample somewhere
    assert min(_crop_std(images, on, [t.crop_id for t in on.top_samples])) >= 0.05
    assert min(_crop_std(images, on, [m.crop_id for m in on.concept_members])) >= 0.05
    assert f"{len(images)} of {len(images) * 10} crops left out" in on.notes[-1]
    assert on.params.min_crop_std == 0.05 and on.uid != off.uid  # recorded on the circuit, part of its identity


def test_k_larger_than_the_crops_with_content_is_bad_input():
    images = tiny_images(n=2)
    images = ImageSet(torch.zeros_like(images.pixels), images.sources, images.labels, origin="tiny-blank")
    images.pixels[:, :, :4, :4] = 1.0  # only crops that reach the top-left corner have content
    with pytest.raises(NeurflowInputError, match="crops with content"):
        build(tiny_cnn(), CNN_LAYERS, images, params=replace(TINY_PARAMS, k=6, min_crop_std=0.05))
