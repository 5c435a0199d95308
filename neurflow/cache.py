"""Where expensive artefacts (trained weights, downloaded data) are kept between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$NEURFLOW_CACHE`, or `~/.cache/neurflow`; created on first use."""
    root = os.environ.get("NEURFLOW_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "neurflow"
    path.mkdir(parents=True, exist_ok=True)
    return path
