"""A circuit's identity covers everything that changes it: another layer list, split, data source
or folder content is another circuit, never "skipped (already complete)"; comparisons read one
parameter set.  Real trained model, real embedded store, the real CLI."""

from __future__ import annotations

import uuid

import pytest
from PIL import Image

from ingest.store.embedded import create_database
from ingest.store.connection import Store
from neurflow.circuit import Identity, Params
from cli.main import main as cli_main
from neurflow.models.fashion_cnn import FASHION_MEAN, FASHION_STD

TINY = ["--tau", "2", "--k", "8", "--ig-steps", "4", "--max-images", "6", "--device", "cpu", "--quiet"]


def test_identity_hash_changes_with_every_part():
    base = Identity(Params(), ("block4", "block3"), "fashion-mnist:train", "abc")
    variants = [
        Identity(Params(tau=7), base.layers, base.data_source, base.data_fingerprint),
        Identity(Params(), ("block4",), base.data_source, base.data_fingerprint),
        Identity(Params(), base.layers, "fashion-mnist:test", base.data_fingerprint),
        Identity(Params(), base.layers, base.data_source, "abd"),
        Identity(Params(), base.layers, base.data_source, base.data_fingerprint, precision="bf16-certified"),
        Identity(Params(), base.layers, base.data_source, base.data_fingerprint, method_version="0"),
        Identity(Params(seed=1), base.layers, base.data_source, base.data_fingerprint),
        Identity(Params(granularities=(1.0, 0.5)), base.layers, base.data_source, base.data_fingerprint),
        Identity(Params(predicted_only=False), base.layers, base.data_source, base.data_fingerprint),
        Identity(Params(max_images=10), base.layers, base.data_source, base.data_fingerprint),
    ]
    hashes = {v.hash for v in variants} | {base.hash}
    assert len(hashes) == len(variants) + 1
    # the parameter set leaves out the per-class image fingerprint, and only that
    assert variants[3].param_set == base.param_set
    assert len({v.param_set for v in variants if v is not variants[3]} | {base.param_set}) == len(variants)
    # the logits pseudo-layer is not part of the layer list
    assert Identity(Params(), ("logits", "block4", "block3"), "x", "y") == Identity(Params(), ("block4", "block3"), "x", "y")


def _run(*args: str) -> int:
    return cli_main(["ingest", "--model", "fashion-cnn", "--classes", "Coat", *TINY, *args])


def _circuits(cfg) -> list[dict]:
    with Store(cfg) as s:
        return s.run(
            "MATCH (:Class {index: 4})-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'}) "
            "RETURN c.uid AS uid, c.params_hash AS ps, c.layers AS layers, c.data_source AS data, "
            "c.data_fingerprint AS fp ORDER BY c.completed_at"
        )


@pytest.mark.slow
def test_other_layers_split_or_data_write_a_second_circuit(store_server, trained_model, fashion_train_images, tmp_path,
                                                           capsys, monkeypatch):
    name = "id_" + uuid.uuid4().hex[:8]
    create_database(store_server, name)
    cfg = store_server.with_database(name)
    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", name)
    monkeypatch.setenv("NEURFLOW_ARTIFACT_DIR", str(tmp_path / "art"))

    # an image folder holding real Fashion-MNIST coats (class 4: the sub-folder named "Coat")
    folder = tmp_path / "imgs"
    for name in ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat"):
        (folder / name).mkdir(parents=True)
    raw = fashion_train_images(4, limit=12)
    (mean,), (std,) = FASHION_MEAN, FASHION_STD  # undo the normalisation to write the original pixels
    for i in range(6):
        pixels = ((raw.pixels[i, 0] * std + mean) * 255).round().clamp(0, 255).byte().numpy()
        Image.fromarray(pixels, mode="L").save(folder / "Coat" / f"{i}.png")

    runs = [
        [],  # defaults: fashion-mnist, train split, the model's layers
        ["--layers", "block4,block3"],
        ["--split", "test"],
        ["--data", str(folder)],
    ]
    for i, args in enumerate(runs):
        assert _run(*args) == 0
        assert len(_circuits(cfg)) == i + 1, f"{args} did not write a circuit of its own"
        capsys.readouterr()
        assert _run(*args) == 0  # the same run again is the same circuit
        assert "skipped (already complete)" in capsys.readouterr().out
        assert len(_circuits(cfg)) == i + 1
    rows = _circuits(cfg)
    assert [r["data"] for r in rows] == ["fashion-mnist:train", "fashion-mnist:train", "fashion-mnist:test", f"folder:{folder.resolve()}"]
    assert rows[0]["layers"] == ["block4", "block3", "block2", "block1"] and rows[1]["layers"] == ["block4", "block3"]
    assert len({r["ps"] for r in rows}) == 4  # four parameter sets: comparisons never mix them

    # the same folder with other content: same parameter set, another circuit
    pixels = ((raw.pixels[6, 0] * std + mean) * 255).round().clamp(0, 255).byte().numpy()
    Image.fromarray(pixels, mode="L").save(folder / "Coat" / "6.png")
    assert _run("--data", str(folder)) == 0
    rows = _circuits(cfg)
    assert len(rows) == 5 and rows[4]["ps"] == rows[3]["ps"] and rows[4]["fp"] != rows[3]["fp"]
