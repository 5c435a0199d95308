"""Image debugging (spec §9) on the real demo model and its ingested circuits."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ingest.jobs.image_debugging import debug_image, load_query_image, read_groups
from ingest.store.connection import Store
from neurflow.circuit import LOGITS
from cli.main import main as cli_main
from neurflow.debugging import (
    EPS,
    ablate_group,
    crop_activations,
    query_crops,
    score_groups,
)
from neurflow.hooks import capture, masked_channels
from ingest.jobs.image_debugging import groups_from_circuit


@pytest.fixture(scope="module")
def misclassified(trained_model):
    """(index, true class, predicted class) of the first misclassified Fashion-MNIST test image."""
    from neurflow.datasets import load_images

    images = load_images("fashion-mnist", trained_model.spec, split="test", limit=500)
    with torch.no_grad():
        pred = trained_model.module(images.pixels).argmax(1)
    wrong = torch.nonzero(pred != torch.tensor(images.labels)).flatten().tolist()
    assert wrong, "the demo model classifies the first 500 test images perfectly?"
    i = wrong[0]
    return i, images.labels[i], int(pred[i])


@pytest.fixture
def demo_env(ingested, monkeypatch):
    cfg, circuits = ingested
    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", cfg.database)
    return cfg, circuits


def test_query_crops_at_three_granularities(trained_model):
    image = torch.zeros(1, 28, 28)
    crops, boxes = query_crops(image)
    sides = sorted({b[2] - b[0] for b in boxes})
    assert sides == [7, 14, 28] and crops.shape == (len(boxes), 1, 28, 28)


def test_store_groups_match_the_circuit(demo_env):
    cfg, circuits = demo_env
    c = circuits[3]
    with Store(cfg) as store:
        uid, groups = read_groups(store, "fashion-cnn", 3)
    assert uid == c.uid
    expected = {g.uid: g for g in groups_from_circuit(c)}
    assert {g.uid for g in groups} == set(expected)
    for g in groups:
        e = expected[g.uid]
        assert g.layer == e.layer and g.channels == e.channels
        assert [r for _, r in g.members] == pytest.approx([r for _, r in e.members])
    assert any(g.thumbnails for g in groups)


def test_group_score_follows_the_formula(trained_model, demo_env, misclassified):
    _, circuits = demo_env
    i, _, predicted = misclassified
    image, _, _ = load_query_image(f"fashion-mnist:test:{i}", trained_model.spec)
    groups = groups_from_circuit(circuits[predicted])
    scores = score_groups(trained_model.module, image, groups)
    assert [s.score for s in scores] == sorted((s.score for s in scores), reverse=True)
    crops, _ = query_crops(image)
    acts = crop_activations(trained_model.module, crops, {g.layer for g in groups})
    for s in scores[:3] + scores[-2:]:
        g = s.group
        per_crop = []
        for x in range(crops.shape[0]):
            terms = [math.log(max(acts[g.layer][x, ch].item(), 0.0) / (abs(ref) + EPS) + EPS) for ch, ref in g.members]
            per_crop.append(sum(terms) / len(terms))
        assert s.score == pytest.approx(math.exp(max(per_crop)), rel=1e-6)
        assert s.evidence == sorted(s.evidence, key=lambda k: -s.crop_scores[k])
        assert all(math.exp(per_crop[k]) >= 0.8 for k in s.evidence)
        assert sum(math.exp(v) >= 0.8 for v in per_crop) == len(s.evidence)


def test_cli_ablation_matches_a_masked_forward_pass(trained_model, demo_env, misclassified, capsys):
    """The misclassified example: the logit change `neurflow debug --ablate` reports is the one a
    direct forward pass with the group's channels masked gives."""
    cfg, _ = demo_env
    i, true, predicted = misclassified
    ref = f"fashion-mnist:test:{i}"
    assert cli_main(["debug", ref, "--model", "fashion-cnn", "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["predicted"] == predicted and report["true_class"] == true
    roles = {c["role"]: c for c in report["circuits"]}
    assert set(roles) == {"predicted", "true"} and roles["true"]["class_index"] == true
    top = next(g for g in roles["predicted"]["groups"] if g["layer"] != LOGITS)

    assert cli_main(["debug", ref, "--model", "fashion-cnn", "--device", "cpu", "--json", "--ablate", top["group"]]) == 0
    ablation = json.loads(capsys.readouterr().out)["ablation"]

    image, _, _ = load_query_image(ref, trained_model.spec)
    x = image.unsqueeze(0)
    with Store(cfg) as store:
        _, groups = read_groups(store, "fashion-cnn", predicted)
    group = next(g for g in groups if g.uid == top["group"])
    n = capture(trained_model.module, x, [group.layer])[group.layer].shape[1]
    mask = torch.ones(n)
    mask[group.channels] = 0
    with torch.no_grad():
        before = trained_model.module(x)[0]
        with masked_channels(trained_model.module, {group.layer: mask}):
            after = trained_model.module(x)[0]
    assert ablation["channels"] == group.channels
    assert ablation["before"] == pytest.approx(before.tolist(), abs=1e-5)
    assert ablation["delta"] == pytest.approx((after - before).tolist(), abs=1e-5)
    assert max(abs(d) for d in ablation["delta"]) > 0

    # the same numbers through the library call the app uses
    with Store(cfg) as store:
        rep = debug_image(store, trained_model, image, true_class=true, ablate=group.uid)
    assert rep.ablation.delta == pytest.approx(ablation["delta"], abs=1e-6)
    assert ablate_group(trained_model.module, image, group).after == pytest.approx(after.tolist(), abs=1e-5)

    # the readable output names the prediction and the change
    assert cli_main(["debug", ref, "--model", "fashion-cnn", "--device", "cpu", "--ablate", group.uid]) == 0
    text = capsys.readouterr().out
    assert "(misclassified)" in text and f"ablation of {group.uid}" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["debug", "fashion-mnist:test:999999"], "index out of range"),
        (["debug", "fashion-mnist:val:1"], "fashion-mnist:test:<index>"),
        (["debug", "/no/such/image.png"], "not found"),
        (["debug", "fashion-mnist:test:0", "--ablate", "fashion-cnn/0/abc/block2/g99"], "no group"),
        (["debug", "fashion-mnist:test:0", "--class", "12"], "out of range"),
    ],
)
def test_cli_errors_are_one_line(demo_env, capsys, argv, message):
    assert cli_main([*argv, "--model", "fashion-cnn", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_debug_page_ranks_groups_and_ablates(trained_model, demo_env, misclassified):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from app import data
    from tests.test_app_pages import MAIN

    cfg, _ = demo_env
    data.forget_version()
    i, true, predicted = misclassified
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.query_params.update({"page": "debug", "src": "dataset", "img": str(i)})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    body = "\n".join(m.value for m in at.markdown) + "\n".join(s.value for s in at.subheader)
    assert "misclassified" in body and "Predicted class" in body and "True class" in body
    tables = [d.value for d in at.dataframe]
    assert len(tables) == 2 and all("score" in t.columns for t in tables)
    assert tables[0]["score"].tolist() == sorted(tables[0]["score"].tolist(), reverse=True)
    buttons = [b for b in at.button if b.key and b.key.startswith("ablate_predicted_")]
    assert buttons
    uid = buttons[0].key[len("ablate_predicted_"):]
    buttons[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    change = next(d.value for d in at.dataframe if "change" in d.value.columns)
    image, _, _ = load_query_image(f"fashion-mnist:test:{i}", trained_model.spec)
    with Store(cfg) as store:
        _, groups = read_groups(store, "fashion-cnn", predicted)
    expected = ablate_group(trained_model.module, image, next(g for g in groups if g.uid == uid))
    assert max(abs(c) for c in change["change"]) == pytest.approx(max(abs(d) for d in expected.delta), abs=1e-5)
    data.forget_version()


def test_blank_crops_are_no_evidence(trained_model, demo_env, misclassified):
    """With a circuit's `min_crop_std`, crops without content score 0 (they keep their index, so
    boxes stay aligned); every other crop keeps its score."""
    from neurflow.images import has_content

    _, circuits = demo_env
    i, _, predicted = misclassified
    image, _, _ = load_query_image(f"fashion-mnist:test:{i}", trained_model.spec)
    groups = groups_from_circuit(circuits[predicted])
    crops, _ = query_crops(image)
    keep = has_content(crops, 0.2)
    assert 0 < int(keep.sum()) < len(keep)  # a Fashion-MNIST image has blank corners
    plain = {s.group.uid: s for s in score_groups(trained_model.module, image, groups)}
    for s in score_groups(trained_model.module, image, groups, min_crop_std=0.2):
        p = plain[s.group.uid]
        assert all(s.crop_scores[k] == 0.0 for k in range(len(keep)) if not keep[k])
        assert [s.crop_scores[k] for k in range(len(keep)) if keep[k]] == pytest.approx(
            [p.crop_scores[k] for k in range(len(keep)) if keep[k]])
        assert all(keep[k] for k in s.evidence)


def test_debug_uses_the_crops_of_the_circuit(trained_model, store_server, misclassified, tmp_path, monkeypatch, capsys):
    """A circuit built on crops at 1 and 1/2 without blank ones is debugged on such crops: the JSON
    report's boxes are those sizes and no evidence crop is blank."""
    import uuid

    from ingest.store.embedded import create_database
    from neurflow.images import has_content
    from tests.fixtures_circuits import TEST_ARGS

    database = "crops_" + uuid.uuid4().hex[:8]
    create_database(store_server, database)
    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", database)
    monkeypatch.setenv("NEURFLOW_ARTIFACT_DIR", str(tmp_path))
    i, _, predicted = misclassified
    assert cli_main(["ingest", "--model", "fashion-cnn", "--classes", str(predicted), *TEST_ARGS,
                     "--granularities", "1,0.5", "--min-crop-std", "0.2"]) == 0
    capsys.readouterr()
    ref = f"fashion-mnist:test:{i}"
    assert cli_main(["debug", ref, "--model", "fashion-cnn", "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    mine = next(c for c in report["circuits"] if c["class_index"] == predicted)
    assert {b[2] - b[0] for b in mine["boxes"]} == {14, 28}
    image, _, _ = load_query_image(ref, trained_model.spec)
    keep = has_content(query_crops(image, (1.0, 0.5))[0], 0.2)
    assert [b[:4] for b in mine["boxes"]] == [list(b[:4]) for b in query_crops(image, (1.0, 0.5))[1]]
    assert mine["groups"] and all(keep[k] for g in mine["groups"] for k in g["evidence"])
