"""The trained demo model: accuracy, the cached weights file, locking and atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurflow import train
from neurflow.images import NeurflowInputError
from neurflow.models import load_model
from neurflow.models.sources import state_hash

ROOT = Path(__file__).resolve().parents[1]


def test_trained_model_reaches_90_percent(trained_model):
    accuracy = train.test_accuracy(trained_model.module)  # float32, all 10,000 test images
    assert accuracy >= 0.90, accuracy
    assert trained_model.uid == "fashion-cnn"
    # the weights' hash (a model is its weights), not the file's
    assert trained_model.weights_sha256 == state_hash(trained_model.module)


def test_sidecar_describes_the_weights(trained_model):
    info = json.loads(train.sidecar_path().read_text())
    assert info["test_accuracy"] >= 0.90
    assert {"seed", "epochs", "seconds"} <= set(info)
    state = torch.load(train.weights_path(), weights_only=True)
    assert set(state) == set(trained_model.module.state_dict())


def test_cached_weights_are_not_retrained(trained_model):
    path = train.weights_path()
    before = path.stat().st_mtime_ns
    assert train.ensure_trained(verbose=False) == path
    assert path.stat().st_mtime_ns == before


def test_cli_prints_accuracy(trained_model):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "cli", "train", "--quiet"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "test accuracy 0.9" in out.stdout and str(train.weights_path()) in out.stdout


def test_missing_weights_without_training_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURFLOW_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(NeurflowInputError, match=r"neurflow train"):
        load_model("fashion-cnn", train_if_missing=False)


def test_training_is_deterministic():
    quick = train.Recipe(epochs=1, batch_size=64)
    a, info_a = train.train(quick, limit=512, verbose=False)
    b, info_b = train.train(quick, limit=512, verbose=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert info_a["test_accuracy"] == info_b["test_accuracy"] and info_a["limit"] == 512
    c, _ = train.train(train.Recipe(seed=1, epochs=1, batch_size=64), limit=512, verbose=False)
    assert not torch.equal(c.state_dict()["fc.weight"], sa["fc.weight"])


def test_training_says_it_is_training_with_an_estimate(capsys):
    """`fashion-cnn` trains on first use: the user is told, with the time left (a bar on a terminal)."""
    train.train(train.Recipe(epochs=2, batch_size=64), limit=1536, verbose=True)  # 24 steps per epoch
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    estimate = [line for line in lines if line.startswith("fashion-cnn: training, about ")]
    assert len(estimate) == 1 and "left (estimated from the first 20 of 48 steps)" in estimate[0], err
    assert [line.split(":")[0] for line in lines if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in err and "\x1b[" not in err  # no bar drawn into a captured stream


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "w.pt"

    def explode(fh):
        fh.write(b"half a file")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train._atomic_write(target, explode)
    assert list(tmp_path.iterdir()) == []
    train._atomic_write(target, lambda fh: fh.write(b"whole"))
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["w.pt"]


def test_training_lock_is_exclusive_across_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURFLOW_CACHE", str(tmp_path))
    probe = (
        "import fcntl, sys\n"
        f"fh = open({str(tmp_path / train.LOCK_NAME)!r}, 'a+')\n"
        "try:\n    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n"
    )
    with train._lock():
        held = subprocess.run([sys.executable, "-c", probe], timeout=60)
    free = subprocess.run([sys.executable, "-c", probe], timeout=60)
    assert (held.returncode, free.returncode) == (3, 0)
