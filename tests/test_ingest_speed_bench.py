"""`bench/ingest_speed.py` end to end at a tiny size: all three runs, core sets compared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ingest_speed_bench_runs_and_compares(trained_model):
    args = ["--class", "4", "--layers", "block4,block3", "--tau", "2", "--k", "4", "--ig-steps", "3",
            "--max-images", "4", "--limit", "20", "--device", "cpu"]
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "ingest_speed.py"), *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, env=dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "identical (members and ranks)" in out and "identical (members)" in out
    ratios = [line for line in out.splitlines() if line.startswith("speed ratio")]
    assert len(ratios) == 3 and all(float(r.split(":")[1].split("x")[0]) > 0 for r in ratios)
