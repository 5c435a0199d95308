"""The library's front door (`neurflow.load_model / load_images / build_circuit`): the README's
notebook example and `examples/quickstart.py` run as written; defaults are the CLI's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import neurflow
from neurflow.circuit import Params
from neurflow.errors import NeurflowInputError
from neurflow.models.fashion_cnn import FashionCNN

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_lazy_and_names_are_public():
    code = "import sys, neurflow; assert 'torch' not in sys.modules; print(sorted(neurflow.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    for name in ("load_model", "load_images", "build_circuit", "Circuit", "Params"):
        assert name in out
    assert callable(neurflow.build_circuit) and callable(neurflow.load_model) and callable(neurflow.load_images)


def test_every_public_function_has_an_examples_section():
    for name in ("load_model", "load_images", "build_circuit"):
        doc = getattr(neurflow, name).__doc__
        assert "Parameters\n" in doc and "Returns\n" in doc and "Examples\n" in doc and ">>> import neurflow" in doc, name


def test_library_defaults_are_the_command_lines():
    from cli.main import build_parser

    args = build_parser().parse_args(["circuit", "--class", "0"])
    d = Params()
    assert (args.tau, args.k, args.ig_steps, args.max_images, args.seed) == (d.tau, d.k, d.ig_steps, d.max_images, d.seed)
    assert not args.all_images == d.predicted_only


def test_readme_notebook_example_runs_in_a_fresh_cache_in_under_a_minute(tmp_path):
    """The README's four lines, as a newcomer runs them: a new process, an empty `NEURFLOW_CACHE`.
    They used to load `fashion-cnn`, which trains first (silently; 15 minutes on 2 busy cores)."""
    import time

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) == 4
    check = "\nprint(circuit.class_index, circuit.class_name, circuit.critical(0), circuit.params.tau, len(circuit.core_of(0, 4)))"
    cache = tmp_path / "fresh-cache"
    env = {**os.environ, "NEURFLOW_CACHE": str(cache)}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code + check], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    seconds = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["4", "Coat", "[4]", "6", "6"], out.stdout
    assert "training" not in out.stderr and not (cache / "fashion-cnn.pt").exists()
    assert seconds < 60, f"the README's Python example took {seconds:.0f} s"


@pytest.mark.slow
def test_quickstart_example_runs(tmp_path):
    env = {**os.environ, "NEURFLOW_CACHE": os.environ["NEURFLOW_CACHE"]}
    out = subprocess.run([sys.executable, "examples/quickstart.py", "Sneaker", "--out", str(tmp_path / "c")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "circuit of class 7 (Sneaker)" in out.stdout
    assert neurflow.Circuit.load(tmp_path / "c").critical(0) == [7]


def test_plain_module_and_tensor():
    torch.manual_seed(0)
    model = FashionCNN(channels=(4, 4, 8, 8)).eval()
    pixels = torch.rand(5, 1, 16, 16)
    c = neurflow.build_circuit(model, pixels, 1, layers=["block4", "block3"], tau=2, k=4, ig_steps=2,
                               predicted_only=False, granularities=(1.0,), progress=False, device="cpu")
    assert c.critical(0) == [1] and [r.name for r in c.layers] == ["logits", "block4", "block3"]
    with pytest.raises(NeurflowInputError, match="needs layers"):
        neurflow.build_circuit(model, pixels, 1)
    with pytest.raises(NeurflowInputError, match="model from neurflow.load_model"):
        neurflow.build_circuit(model, "fashion-mnist", 1, layers=["block4"])


def test_unknown_class_name_is_one_clear_error(trained_model):
    with pytest.raises(NeurflowInputError, match=r"unknown class name 'Snaeker': close matches: Sneaker \(7\)"):
        neurflow.load_images("fashion-mnist", trained_model, class_index="Snaeker")
