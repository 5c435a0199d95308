"""The method on the real trained demo model: structure, determinism, round trip, bad input."""

import numpy as np
import pytest
import torch

from neurflow.circuit import Circuit, Params
from neurflow.cli import main as cli_main
from neurflow.images import ImageSet, NeurflowInputError, crop_boxes
from neurflow.method import build_circuit

FAST = Params(tau=6, k=20, ig_steps=16, max_images=24)


def test_crop_boxes_match_the_spec_at_224():
    boxes = crop_boxes(224, (1.0, 0.5, 0.25))
    assert len(boxes) == 1 + 9 + 49
    assert boxes[0][:4] == (0, 0, 224, 224)
    assert all(0 <= b[0] < b[2] <= 224 and b[2] - b[0] == b[3] - b[1] for b in boxes)


@pytest.mark.parametrize("class_index", range(10))
def test_every_class_circuit_has_the_right_structure(class_circuits, class_index):
    c = class_circuits[class_index]
    tau = c.params.tau
    depths = c.depths
    assert c.critical(0) == [class_index]
    for d in depths[:-1]:
        below = set(c.critical(d + 1))
        union = set()
        for u in c.critical(d):
            core = c.core_of(d, u)
            assert 1 <= len(core) <= tau
            assert [r.rank for r in core] == list(range(len(core)))
            assert all(0 <= r.lower_channel < c.layers[d + 1].channels for r in core)
            imps = [r.importance for r in core]
            assert imps == sorted(imps, reverse=True)
            union |= {r.lower_channel for r in core}
            for concept in c.concepts_of(d, u):
                w = [e.weight for e in c.edges if (e.depth, e.channel, e.concept) == (d, u, concept.index)]
                assert len(w) == len(core)
                # spec §6 divides by (sum |w| + 1e-7): exactly 1 up to that epsilon (see test_edge_weight_rule)
                assert 0.98 < sum(abs(x) for x in w) <= 1 + 1e-9
                assert len(concept.vector) == c.layers[d + 1].channels
        # every critical neuron below the top is a core neuron of some neuron above, and only those
        assert union == below
    # concepts partition each neuron's top samples
    for d in depths[:-1]:
        for u in c.critical(d):
            members = [m for m in c.concept_members if (m.depth, m.channel) == (d, u)]
            assert len(members) == c.params.k
            assert sum(x.size for x in c.concepts_of(d, u)) == c.params.k
    # every concept is in exactly one group of its layer
    placed = [(m.depth, m.channel, m.concept) for m in c.group_members]
    assert sorted(placed) == sorted((x.depth, x.channel, x.index) for x in c.concepts)


def test_edge_weight_rule():
    """w(u,j -> v) = mean over the concept's samples of A_u(x)_v, divided by (sum_v |.| + 1e-7)."""
    from neurflow.concepts import neuron_concepts

    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 0.1, (6, 4)), rng.normal(5, 0.1, (6, 4))])
    attributions = rng.normal(0, 1, (12, 4))
    core = np.array([2, 0])
    nc = neuron_concepts(z, np.arange(12.0), attributions, core, max_concepts=5, num_representatives=3)
    assert sorted(np.bincount(nc.labels)) == [6, 6] and nc.labels[0] == 0
    for j in range(2):
        raw = attributions[nc.labels == j][:, core].mean(axis=0)
        np.testing.assert_allclose(nc.weights[j], raw / (np.abs(raw).sum() + 1e-7))
        assert len(nc.representatives[j]) == 3 and all(nc.labels[p] == j for p in nc.representatives[j])


def test_group_edges_follow_the_sum_rule(class_circuits):
    c = class_circuits[3]
    d = 1
    uppers, lowers = c.groups(d), c.groups(d + 1)
    g, members = next(iter(uppers.items()))
    for h, lower_members in lowers.items():
        expected = 0.0
        for (u, j) in members:
            for e in c.edges:
                if (e.depth, e.channel, e.concept) == (d, u, j):
                    expected += e.weight * sum(1 for (v, _) in lower_members if v == e.lower_channel)
        got = [x.weight for x in c.group_edges if (x.depth, x.upper_group, x.lower_group) == (d, g, h)]
        assert (got[0] if got else 0.0) == pytest.approx(expected, abs=1e-9)


def test_deterministic_and_round_trips(trained_model, class_images, class_circuits, tmp_path):
    again = build_circuit(trained_model.module, list(trained_model.spec.layers), class_images(2), 2, class_circuits[2].params,
                          model_uid=trained_model.uid, class_name=trained_model.class_names[2], progress=False)
    assert again == class_circuits[2]
    path = again.save(tmp_path / "c2")
    assert sorted(p.name for p in path.iterdir()) == sorted(["meta.json"] + [f"{t}.parquet" for t in Circuit.TABLES])
    loaded = Circuit.load(path)
    assert loaded == again and loaded.uid == again.uid
    assert loaded.params.hash() != Params(tau=7).hash()


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


def test_wrong_channel_count_and_nan(trained_model):
    rgb = ImageSet(torch.randn(3, 3, 28, 28), ["a", "b", "c"], [0, 0, 0])
    with pytest.raises(NeurflowInputError, match="3 channel"):
        build_circuit(trained_model.module, list(trained_model.spec.layers), rgb, 0, FAST, progress=False)
    nan = ImageSet(torch.full((3, 1, 28, 28), float("nan")), ["a", "b", "c"], [0, 0, 0])
    with pytest.raises(NeurflowInputError, match="NaN"):
        build_circuit(trained_model.module, list(trained_model.spec.layers), nan, 0,
                      Params(tau=2, k=5, ig_steps=4, predicted_only=False), progress=False)


def test_pruning_keeps_a_prefix_of_the_ranked_core(trained_model, class_images):
    """Spec §3 pruning (epsilon >= 0): each core set is a prefix of the unpruned ranking."""
    layers = list(trained_model.spec.layers)[:2]
    common = dict(tau=4, k=8, ig_steps=4, max_images=6)
    full = build_circuit(trained_model.module, layers, class_images(1), 1, Params(**common), progress=False)
    pruned = build_circuit(trained_model.module, layers, class_images(1), 1, Params(epsilon=0.1, **common), progress=False)
    assert pruned.critical(0) == full.critical(0)
    for u in pruned.critical(0):
        kept = [r.lower_channel for r in pruned.core_of(0, u)]
        ranked = [r.lower_channel for r in full.core_of(0, u)]
        assert 1 <= len(kept) <= len(ranked) and kept == ranked[: len(kept)]
