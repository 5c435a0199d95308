"""The method on the real trained demo model, and the CLI's answers to bad input.

The method's invariants (critical sets, core sets, concepts, edge weights, groups, determinism,
round trip, layer lists, bad input to `build_circuit`, pruning) are checked on tiny seeded models
in tests/test_method_unit.py and the per-module unit tests (test_concepts, test_groups,
test_circuit, test_crops...): they need neither the store nor trained weights.  What stays here
is about the trained model (masking its core neurons hurts, `neurflow ingest` builds what
`build_circuit` builds) or the command line.
"""

import numpy as np
import pytest
import torch

from cli.main import main as cli_main
from neurflow.method import RunOptions, build_circuit


def test_ingested_circuit_equals_a_direct_build(trained_model, class_circuits):
    """`neurflow ingest` builds what `build_circuit` builds from the same images and parameters:
    the CLI adds nothing and drops nothing (determinism itself: test_method_unit.py)."""
    from neurflow.datasets import load_images

    images = load_images("fashion-mnist", trained_model.spec, class_index=2, split="train")  # all of them, as ingest reads
    again = build_circuit(trained_model.module, list(trained_model.spec.layers), images, 2, class_circuits[2].params,
                          run=RunOptions(model_uid=trained_model.uid, class_name=trained_model.class_names[2], progress=False))
    assert again == class_circuits[2]  # the same identity (data fingerprint included) and the same tables


def test_masking_core_neurons_hurts_more_than_random(trained_model, class_circuits, test_images):
    """First sign of faithfulness: zero a class's critical neurons at a layer vs as many random ones.

    Only layers where the critical set is at most half the channels are compared: when it covers
    nearly a whole layer (the lower layers of this small CNN), random sets of the same size are
    nearly the same set and the comparison says nothing."""
    from neurflow.hooks import masked_channels

    model = trained_model.module
    gen = torch.Generator().manual_seed(0)
    drops_core, drops_random = [], []
    for cls, c in class_circuits.items():
        x = test_images(cls)
        with torch.no_grad():
            base = (model(x).argmax(1) == cls).float().mean().item()
        for d in c.depths[1:]:
            name, channels = c.layers[d].name, c.layers[d].channels
            crit = c.critical(d)
            if len(crit) > channels // 2:
                continue
            mask = torch.ones(channels)
            mask[crit] = 0
            with torch.no_grad(), masked_channels(model, {name: mask}):
                acc_core = (model(x).argmax(1) == cls).float().mean().item()
            accs = []
            for _ in range(5):
                mask = torch.ones(channels)
                mask[torch.randperm(channels, generator=gen)[: len(crit)]] = 0
                with torch.no_grad(), masked_channels(model, {name: mask}):
                    accs.append((model(x).argmax(1) == cls).float().mean().item())
            drops_core.append(base - acc_core)
            drops_random.append(base - float(np.mean(accs)))
    assert len(drops_core) >= 10  # block4 of every class at least
    assert np.mean(drops_core) > 2 * np.mean(drops_random) + 0.05, (np.mean(drops_core), np.mean(drops_random))


def _run(capsys, argv):
    code = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--layers", "block4,nosuch"], "unknown layer(s) ['nosuch']; valid layers: logits"),
        (["--layers", "block2,block4"], "ordered top to bottom"),
        (["--class", "10"], "out of range"),
        (["--tau", "1000"], "larger than layer"),
        (["--k", "100000"], "larger than the"),
        (["--tau", "0"], "at least 1"),
        (["--data", "/nonexistent/folder"], "/nonexistent/folder"),
    ],
)
def test_bad_input_is_one_clear_line(trained_model, capsys, argv, message):
    base = ["circuit", "--model", "fashion-cnn", "--class", "1", "--max-images", "4", "--quiet", "--device", "cpu"]
    if "--class" in argv:
        base = base[:3] + base[5:]
    code, err = _run(capsys, base + argv)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_empty_and_bad_image_folders(trained_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = _run(capsys, ["circuit", "--class", "0", "--data", str(tmp_path / "empty"), "--quiet", "--device", "cpu"])
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
