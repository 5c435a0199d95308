"""Checks before side effects (README "Errors and exit codes"): what needs only the model and the
arguments is refused before the embedded store starts or any image pass runs; and the one rule
for images whose channel count is not the model's (converted, and the circuit says so)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main as cli_main
from ingest.store.embedded import free_port
from neurflow.datasets import load_images, read_fashion_mnist
from neurflow.models import get_spec
from neurflow.models.fashion_cnn import FashionCNN

ROOT = Path(__file__).resolve().parents[1]
STORE_KEYS = ("NEURFLOW_STORE_URI", "NEURFLOW_STORE_USER", "NEURFLOW_STORE_PASSWORD", "NEURFLOW_STORE_DATABASE",
              "NEURFLOW_STORE_READONLY_USER", "NEURFLOW_STORE_READONLY_PASSWORD", "NEURFLOW_STORE_DIR",
              "NEURFLOW_STORE_BOLT_PORT", "NEURFLOW_STORE_HTTP_PORT")  # fmt: skip
TINY = ["--tau", "2", "--k", "8", "--ig-steps", "4", "--max-images", "4", "--device", "cpu", "--quiet", "--all-images"]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.parametrize("command, says", [
    (["ingest", "--model", "fashion-resnet", "--classes", "0", "--tau", "1000"],
     "tau=1000 is larger than layer 'block4''s 128 channels"),
    (["ingest", "--model", "fashion-resnet", "--classes", "Trouser", "--layers", "block4,nosuch"], "unknown layer(s) ['nosuch']"),
    (["demo", "--no-app", "--tau", "1000"], "tau=1000 is larger than layer"),
])
def test_a_bad_argument_starts_no_store(tmp_path, command, says):
    """`neurflow ingest --tau 1000` used to start the embedded server (and leave it running)
    before refusing tau: now no process, no store folder."""
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if k not in STORE_KEYS}
    env.update(NEURFLOW_STORE_DIR=str(store), NEURFLOW_STORE_BOLT_PORT=str(free_port()),
               NEURFLOW_STORE_HTTP_PORT=str(free_port()))
    try:
        out = subprocess.run([sys.executable, "-m", "cli", *command, "--device", "cpu"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        started = _processes_mentioning(str(store))
    finally:
        for pid in _processes_mentioning(str(store)):  # a regression must not leave a server behind
            os.kill(pid, signal.SIGKILL)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and out.stderr.startswith("error: "), out.stderr
    assert says in out.stderr
    assert started == [] and not store.exists()


# ----------------------------------------------------------------------- channel counts
def _fashion_folder(root: Path, colour: bool, n: int = 4) -> Path:
    images, labels = read_fashion_mnist("train")
    (root / "T-shirt_top").mkdir(parents=True)
    for j, i in enumerate(np.flatnonzero(labels == 0)[:n]):
        g = images[i]
        picture = Image.fromarray(np.stack([g, g // 2, g], -1), "RGB") if colour and j % 2 == 0 else Image.fromarray(g, "L")
        picture.save(root / "T-shirt_top" / f"{j}.png")
    return root


def test_colour_images_for_a_gray_model_are_converted_and_the_circuit_says_so(tmp_path, capsys):
    folder = _fashion_folder(tmp_path / "mixed", colour=True)  # images 0 and 2 in colour, 1 and 3 gray
    images = load_images(str(folder), get_spec("fashion-resnet"), class_index=0)
    assert images.source_channels == [3, 1, 3, 1] and images.pixels.shape[1] == 1
    assert images.channel_note() == "2 of 4 images were in colour and were reduced to luma (ITU-R 601) for the model's 1-channel input"
    assert images.subset([1, 3]).channel_note() is None
    assert cli_main(["circuit", "--model", "fashion-resnet", "--data", str(folder), "--class", "T-shirt/top", *TINY]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert "2 of 4 images were in colour and were reduced to luma (ITU-R 601) for the model's 1-channel input" in summary["notes"]


def test_gray_images_for_a_colour_model_are_replicated_and_the_circuit_says_so(tmp_path):
    import neurflow

    spec = replace(get_spec("fashion-cnn"), in_channels=3, mean=(0.3,) * 3, std=(0.3,) * 3)
    folder = _fashion_folder(tmp_path / "gray", colour=False, n=3)
    images = load_images(str(folder), spec, class_index=0)
    assert images.source_channels == [1, 1, 1] and images.pixels.shape[1] == 3
    assert torch.equal(images.pixels[:, 0], images.pixels[:, 2])  # R = G = B
    torch.manual_seed(0)
    model = FashionCNN(in_channels=3, channels=(4, 4, 8, 8)).eval()
    circuit = neurflow.build_circuit(model, images, 0, layers=["block4", "block3"], tau=2, k=3, ig_steps=2,
                                     predicted_only=False, granularities=(1.0,), progress=False, device="cpu")
    assert "3 of 3 images were grayscale and were replicated into R, G and B for the model's 3-channel input" in circuit.notes
    assert circuit.summary()["notes"] == circuit.notes
    assert load_images("fashion-mnist", spec, class_index=0, limit=2).channel_note().startswith("2 of 2 images were grayscale")
    assert load_images("fashion-mnist", get_spec("fashion-resnet"), class_index=0, limit=2).channel_note() is None


def test_circuit_refuses_tau_before_reading_every_image(tmp_path, capsys):
    """`neurflow circuit` checks the arguments on the class's first image: a broken file further
    down the folder is not reached (nor would a thousand large photos be decoded first)."""
    folder = _fashion_folder(tmp_path / "imgs", colour=False, n=1)
    (folder / "T-shirt_top" / "z_broken.png").write_bytes(b"not a picture")
    argv = ["circuit", "--model", "fashion-resnet", "--data", str(folder), "--class", "0", "--device", "cpu", "--quiet"]
    assert cli_main([*argv, "--tau", "1000"]) == 2
    assert "tau=1000 is larger than layer 'block4''s 128 channels; pass --tau 128 or less" in capsys.readouterr().err
    assert cli_main([*argv, "--tau", "2"]) == 2  # the arguments pass: now every image is read, and the broken one named
    assert "z_broken.png: it is a text file, not an image file" in capsys.readouterr().err
