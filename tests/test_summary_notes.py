"""What a circuit's summary tells a user beyond its counts: images that had to be upscaled."""

from __future__ import annotations

import json

from PIL import Image

from cli.main import main as cli_main
from neurflow.models.fashion_cnn import FASHION_MEAN, FASHION_STD

TINY = ["--tau", "2", "--k", "8", "--ig-steps", "4", "--max-images", "4", "--device", "cpu", "--quiet", "--all-images"]


def _folder(tmp_path, fashion_train_images, side: int):
    folder = tmp_path / f"imgs{side}"
    (folder / "T-shirt_top").mkdir(parents=True)  # class 0, matched by name
    raw = fashion_train_images(0, limit=4)
    (mean,), (std,) = FASHION_MEAN, FASHION_STD
    for i in range(4):
        pixels = ((raw.pixels[i, 0] * std + mean) * 255).round().clamp(0, 255).byte().numpy()
        Image.fromarray(pixels, mode="L").resize((side, side)).save(folder / "T-shirt_top" / f"{i}.png")
    return folder


def _summary(capsys, folder) -> dict:
    assert cli_main(["circuit", "--model", "fashion-cnn", "--data", str(folder), "--class", "0", *TINY]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"): out.rindex("}") + 1])


def test_small_images_are_said_to_be_upscaled(trained_model, fashion_train_images, tmp_path, capsys):
    (note,) = _summary(capsys, _folder(tmp_path, fashion_train_images, 6))["notes"]
    assert "4 of 4 images" in note and "smaller than the smallest crop" in note, note
    assert "notes" not in _summary(capsys, _folder(tmp_path, fashion_train_images, 28))
