"""Train `fashion-cnn` (the test suite's model) on Fashion-MNIST with the project's own code.

    neurflow train            # train if `cache_dir()/fashion-cnn.pt` is missing
    neurflow train --force    # retrain

Deterministic: fixed seed for the initial weights and for the data order (one seeded
permutation per epoch), no data-loader workers.  On CPU it trains with bf16 autocast and
channels-last tensors (fast on CPUs with AMX / AVX512-BF16); accuracy is always measured in
float32, the precision the method runs in.

The weights are a plain state dict at `cache_dir()/fashion-cnn.pt` with a JSON sidecar
`fashion-cnn.json` (accuracy, seed, epochs, seconds, ...).  Both are written to temporary files
and renamed into place (sidecar first), so the weights file exists only when complete; an
`fcntl` lock on `fashion-cnn.lock` keeps two processes from training at the same time.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from neurflow.cache import cache_dir
from neurflow.datasets import read_fashion_mnist
from neurflow.models.fashion_cnn import FASHION_MEAN, FASHION_STD, FashionCNN
from neurflow.progress import tqdm

WEIGHTS_NAME = "fashion-cnn.pt"
SIDECAR_NAME = "fashion-cnn.json"
LOCK_NAME = "fashion-cnn.lock"

SEED = 0
EPOCHS = 5
BATCH_SIZE = 256
MAX_LR = 1e-2
WEIGHT_DECAY = 5e-4
LABEL_SMOOTHING = 0.0


def weights_path() -> Path:
    return cache_dir() / WEIGHTS_NAME


def sidecar_path() -> Path:
    return cache_dir() / SIDECAR_NAME


def read_sidecar() -> dict[str, Any] | None:
    try:
        return json.loads(sidecar_path().read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------- data
def _as_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float images (N, 1, 28, 28) and int64 labels of a split."""
    images, labels = read_fashion_mnist(split)
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    x = (x - FASHION_MEAN[0]) / FASHION_STD[0]
    return x, torch.from_numpy(labels.astype(np.int64))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in float32 (eval mode; runs on a channels-last copy, `model` is untouched)."""
    device = next(model.parameters()).device
    fast = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    correct = 0
    for i in range(0, len(y), batch_size):
        xb = x[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        correct += int((fast(xb).argmax(1).cpu() == y[i : i + batch_size]).sum())
    return correct / len(y)


def test_accuracy(model: torch.nn.Module) -> float:
    """Accuracy of a fashion-cnn on the 10,000 Fashion-MNIST test images."""
    x, y = _as_tensors("test")
    return evaluate(model, x, y)


# ------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class Recipe:
    """What the trained weights depend on (recorded in the sidecar): the defaults are the recipe
    the cached fashion-cnn is trained with."""

    seed: int = SEED
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    max_lr: float = MAX_LR
    flip: bool = False  # horizontal flip augmentation
    label_smoothing: float = LABEL_SMOOTHING


def train(
    recipe: Recipe = Recipe(),
    *,
    bf16: bool | None = None,
    threads: int | None = None,
    limit: int | None = None,
    verbose: bool = True,
    make_model: Callable[[], torch.nn.Module] | None = None,
    name: str = "fashion-cnn",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a fresh `FashionCNN` (or `make_model()`, recorded as `name`) on the Fashion-MNIST training split.

    `limit` keeps only the first `limit` training and test images (for quick checks).
    Returns the model (eval mode, contiguous float32 weights) and a summary dict."""
    seed, epochs, batch_size, max_lr = recipe.seed, recipe.epochs, recipe.batch_size, recipe.max_lr
    flip, label_smoothing = recipe.flip, recipe.label_smoothing
    start = time.perf_counter()
    old_threads = torch.get_num_threads()
    if threads is None:
        threads = min(old_threads, max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
    torch.set_num_threads(threads)
    if bf16 is None:
        bf16 = _bf16_fast()
    try:
        x_train, y_train = _as_tensors("train")
        x_test, y_test = _as_tensors("test")
        if limit is not None:
            x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
        torch.manual_seed(seed)
        model = (make_model or FashionCNN)().to(memory_format=torch.channels_last)
        steps_per_epoch = (len(y_train) + batch_size - 1) // batch_size
        opt = torch.optim.AdamW(model.parameters(), lr=max_lr, weight_decay=WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
            pct_start=max(0.25, 2.0 / (epochs * steps_per_epoch)),  # at least 2 warm-up steps on tiny runs
        )
        order = torch.Generator().manual_seed(seed)
        model.train()
        progress = _Progress(name, epochs * steps_per_epoch, verbose)
        for epoch in range(epochs):
            t0 = time.perf_counter()
            perm = torch.randperm(len(y_train), generator=order)
            flips = torch.rand(len(y_train), generator=order) < 0.5
            total, count = 0.0, 0
            for i in range(0, len(perm), batch_size):
                idx = perm[i : i + batch_size]
                xb = x_train[idx]
                flip_b = flips[i : i + batch_size]
                if flip:  # horizontal flip augmentation
                    xb = torch.where(flip_b.view(-1, 1, 1, 1), xb.flip(-1), xb)
                xb = xb.contiguous(memory_format=torch.channels_last)
                yb = y_train[idx]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(model(xb), yb, label_smoothing=label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                progress.step()
            progress.say(f"epoch {epoch + 1}/{epochs}: loss {total / count:.4f} ({time.perf_counter() - t0:.1f}s)")
        progress.close()
        model = model.to(memory_format=torch.contiguous_format).eval()
        accuracy = evaluate(model, x_test, y_test)
    finally:
        torch.set_num_threads(old_threads)
    info = {
        "model": name,
        "test_accuracy": round(accuracy, 4),
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "max_lr": max_lr,
        "flip": flip,
        "label_smoothing": label_smoothing,
        "bf16": bool(bf16),
        "threads": threads,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    if limit is not None:
        info["limit"] = limit
    return model, info


class _Progress:
    """What training tells a user: a bar over the optimiser steps (on a terminal or in a notebook,
    `neurflow.progress`) and, on every stream, one line with the time left estimated from the
    first `ESTIMATE_AFTER` steps, so nobody waits minutes on a model they did not know was training."""

    ESTIMATE_AFTER = 20

    def __init__(self, name: str, total: int, verbose: bool) -> None:
        self.name, self.total, self.verbose, self.done = name, total, verbose, 0
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, desc=f"training {name}", unit="step", disable=not verbose, file=sys.stderr)

    def say(self, line: str) -> None:
        if self.verbose:
            self.bar.write(line, file=sys.stderr)
            sys.stderr.flush()

    def step(self) -> None:
        self.done += 1
        self.bar.update(1)
        if self.done == min(self.ESTIMATE_AFTER, self.total):
            left = (time.perf_counter() - self.started) / self.done * (self.total - self.done)
            self.say(f"{self.name}: training, about {_duration(left)} left (estimated from the first {self.done} "
                     f"of {self.total} steps)")

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _bf16_fast() -> bool:
    """bf16 autocast helps on CPUs with native bf16 (AMX / AVX512-BF16); elsewhere it is slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


# --------------------------------------------------------------------------- cached file
@contextlib.contextmanager
def _lock() -> Iterator[None]:
    with open(cache_dir() / LOCK_NAME, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_trained(force: bool = False, verbose: bool = True) -> Path:
    """Path of the trained weights, training them first when missing (or when `force`)."""
    path = weights_path()
    if path.is_file() and not force:
        return path
    with _lock():
        if path.is_file() and not force:  # another process trained while we waited
            return path
        if verbose:
            print(f"training fashion-cnn (the test suite's model; its weights are not cached) on Fashion-MNIST, "
                  f"{EPOCHS} epochs -> {path}; the demo model fashion-resnet ships trained", file=sys.stderr, flush=True)
        model, info = train(verbose=verbose)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        _atomic_write(sidecar_path(), lambda fh: fh.write(json.dumps(info, indent=2, sort_keys=True).encode()))
        _atomic_write(path, lambda fh: torch.save(state, fh))
    return path
