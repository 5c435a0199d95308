"""`neurflow.method.build_circuit` on tiny seeded models: the method's invariants, with no store,
no trained weights and no CLI.  The tests on the real trained model are in tests/test_method.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from neurflow.attribution import integrated_gradients
from neurflow.circuit import LOGITS, Params
from neurflow.hooks import capture
from neurflow.images import ImageSet, NeurflowInputError
from neurflow.method import Budget, resolve_layers
from neurflow.subnetwork import build_subnetworks
from tests.fixtures_tiny import CLASS, build
from tests.tiny_models import CNN_CHANNELS, CROPS_PER_IMAGE, TINY_PARAMS, tiny_cnn, tiny_images

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(params=["cnn", "resnet"])
def run(request, tiny, tiny_resnet_run):
    return tiny if request.param == "cnn" else tiny_resnet_run


# ------------------------------------------------------------------------------- structure
def test_critical_sets_are_unions_of_core_sets(run):
    c = run.circuit
    assert [x.name for x in c.layers] == [LOGITS, *run.layers]
    assert c.critical(0) == [CLASS]
    for d in c.depths[:-1]:
        union = {r.lower_channel for u in c.critical(d) for r in c.core_of(d, u)}
        assert union == set(c.critical(d + 1))  # every critical neuron below is a core neuron above, and only those
    assert {(r.depth, r.channel) for r in c.core} == {(n.depth, n.channel) for n in c.neurons if n.depth < c.depths[-1]}


def test_core_sets_have_tau_members_sorted_by_importance(run):
    c, tau = run.circuit, run.params.tau
    for d in c.depths[:-1]:
        for u in c.critical(d):
            core = c.core_of(d, u)
            assert len(core) == tau  # no pruning: exactly tau
            assert [r.rank for r in core] == list(range(tau))
            channels = [r.lower_channel for r in core]
            assert len(set(channels)) == tau and all(0 <= v < c.layers[d + 1].channels for v in channels)
            imps = [r.importance for r in core]
            assert imps == sorted(imps, reverse=True) and min(imps) >= 0
            for a, b in zip(core, core[1:]):  # ties are broken by channel order
                assert a.importance > b.importance or a.lower_channel < b.lower_channel


def test_top_samples_are_the_k_crops_that_activate_a_neuron_most(run):
    c, k = run.circuit, run.params.k
    for d in c.depths:
        means = run.means(c.layers[d].name).numpy()  # every crop; depth 0: the logits
        for u in c.critical(d):
            top = sorted((t for t in c.top_samples if (t.depth, t.channel) == (d, u)), key=lambda t: t.rank)
            assert [t.rank for t in top] == list(range(k))
            want = np.argsort(-means[:, u], kind="stable")[:k]
            assert [t.crop_id for t in top] == want.tolist()
            np.testing.assert_allclose([t.activation for t in top], means[want, u], rtol=1e-5, atol=1e-6)


def test_importance_and_edge_weights_are_captums_ig_on_the_top_samples(tiny):
    """Known answer: for every critical neuron of the top two layers, redo spec §3 and §6 with
    captum's IG through `g_l` on the neuron's top samples and compare."""
    c, params = tiny.circuit, tiny.params
    subs = build_subnetworks(tiny.model, [LOGITS, *tiny.layers], (1, 16, 16))
    for d in (0, 1):
        lower = tiny.layers[d]  # layer d + 1 of the circuit (logits is depth 0)
        for u in c.critical(d):
            crops = [t.crop_id for t in sorted(c.top_samples, key=lambda t: t.rank) if (t.depth, t.channel) == (d, u)]
            with torch.no_grad():
                h = capture(tiny.model, tiny.crops[crops], [lower], reduce=False)[lower]
            a = integrated_gradients(subs[d], h, torch.full((len(crops),), u), steps=params.ig_steps).numpy()
            importance = np.abs(a).mean(axis=0)
            core = c.core_of(d, u)
            want = np.argsort(-importance, kind="stable")[: params.tau]
            assert [r.lower_channel for r in core] == want.tolist()
            np.testing.assert_allclose([r.importance for r in core], importance[want], rtol=1e-4, atol=1e-9)
            position = {cid: i for i, cid in enumerate(crops)}
            for concept in c.concepts_of(d, u):
                rows = [position[m.crop_id] for m in c.concept_members if (m.depth, m.channel, m.concept) == (d, u, concept.index)]
                raw = a[rows][:, want].mean(axis=0)
                got = [e.weight for e in c.edges if (e.depth, e.channel, e.concept) == (d, u, concept.index)]
                np.testing.assert_allclose(got, raw / (np.abs(raw).sum() + 1e-7), rtol=1e-3, atol=1e-6)


def test_concepts_partition_the_top_samples_and_are_member_means(run):
    c = run.circuit
    for d in c.depths[:-1]:
        lower = run.means(c.layers[d + 1].name).numpy()
        for u in c.critical(d):
            top = {t.crop_id: t.activation for t in c.top_samples if (t.depth, t.channel) == (d, u)}
            members = [m for m in c.concept_members if (m.depth, m.channel) == (d, u)]
            assert sorted(m.crop_id for m in members) == sorted(top)  # each top sample in exactly one concept
            concepts = c.concepts_of(d, u)
            assert [x.index for x in concepts] == list(range(len(concepts)))
            assert 1 <= len(concepts) <= min(run.params.k - 1, run.params.max_concepts)
            assert sum(x.size for x in concepts) == run.params.k
            for x in concepts:
                mine = [m for m in members if m.concept == x.index]
                assert len(mine) == x.size and len(x.vector) == c.layers[d + 1].channels
                np.testing.assert_allclose(x.vector, lower[[m.crop_id for m in mine]].mean(axis=0), rtol=1e-5, atol=1e-6)
                assert x.mean_activation == pytest.approx(np.mean([top[m.crop_id] for m in mine]), rel=1e-5, abs=1e-7)
                assert all(m.activation == top[m.crop_id] for m in mine)
                reps = sorted(m.rep_rank for m in mine if m.rep_rank >= 0)
                assert reps == list(range(min(run.params.num_representatives, x.size)))


def test_edge_weights_are_normalised_per_concept(run):
    c = run.circuit
    for x in c.concepts:
        edges = [e for e in c.edges if (e.depth, e.channel, e.concept) == (x.depth, x.channel, x.index)]
        assert [e.lower_channel for e in edges] == [r.lower_channel for r in c.core_of(x.depth, x.channel)]
        total = sum(abs(e.weight) for e in edges)
        # spec §6 divides by (sum |w| + 1e-7): 1 up to that epsilon (the exact rule: tests/test_concepts.py)
        assert 0.98 < total <= 1 + 1e-9


def test_every_concept_is_in_exactly_one_group_of_its_layer(run):
    c = run.circuit
    placed = [(m.depth, m.channel, m.concept) for m in c.group_members]
    assert sorted(placed) == sorted((x.depth, x.channel, x.index) for x in c.concepts)
    for d in {x.depth for x in c.concepts}:
        assert sorted(c.groups(d)) == list(range(len(c.groups(d))))


def test_crops_table_holds_every_crop_used_with_its_box(run):
    c, boxes = run.circuit, run.boxes
    assert len(boxes) == CROPS_PER_IMAGE
    used = {t.crop_id for t in c.top_samples} | {m.crop_id for m in c.concept_members}
    assert sorted(x.crop_id for x in c.crops) == sorted(used)
    for x in c.crops:
        assert x.image_id == x.crop_id // len(boxes)
        assert (x.x0, x.y0, x.x1, x.y1, x.granularity) == boxes[x.crop_id % len(boxes)]
    assert [i.image_id for i in c.images] == list(range(len(run.images)))
    assert [i.sha256 for i in c.images] == run.images.sha256


# ----------------------------------------------------------------------- reproducibility
def test_the_same_inputs_and_seed_give_the_same_circuit(tiny):
    again = build(tiny_cnn(), tiny.layers, tiny_images())  # a fresh model from the same seed
    assert again == tiny.circuit
    assert [r.importance for r in again.core] == [r.importance for r in tiny.circuit.core]  # bit for bit


def test_batch_sizes_and_exact_speed_ups_do_not_change_the_circuit(tiny):
    budget = Budget(crop_batch=7, ig_internal_batch=9, channels_last=True, fold_batchnorm=False)
    other = build(tiny.model, tiny.layers, tiny.images, budget=budget)
    key = lambda r: (r.depth, r.channel, r.rank)  # noqa: E731
    assert [(r.depth, r.channel, r.lower_channel, r.rank) for r in other.core] == [
        (r.depth, r.channel, r.lower_channel, r.rank) for r in tiny.circuit.core
    ]
    for a, b in zip(sorted(other.core, key=key), sorted(tiny.circuit.core, key=key)):
        assert a.importance == pytest.approx(b.importance, rel=1e-4, abs=1e-9)
    # the same top samples; activations equal up to float rounding (channels-last sums in another order)
    assert [(t.depth, t.channel, t.rank, t.crop_id) for t in other.top_samples] == [
        (t.depth, t.channel, t.rank, t.crop_id) for t in tiny.circuit.top_samples
    ]
    np.testing.assert_allclose([t.activation for t in other.top_samples],
                               [t.activation for t in tiny.circuit.top_samples], rtol=1e-5, atol=1e-7)


def test_the_model_is_left_as_it_was():
    model = tiny_cnn().train()
    for p in model.parameters():
        p.requires_grad_(True)
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    build(model, ["block4"], tiny_images(4))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------------------- layer lists
def test_a_layer_list_topped_by_the_output_layer_is_the_same_circuit_with_a_note(tiny):
    layers = tiny.layers[:2]
    with_fc = build(tiny.model, ["fc", *layers], tiny.images)
    without = build(tiny.model, layers, tiny.images)
    assert with_fc == without and with_fc.uid == without.uid
    assert [x.name for x in with_fc.layers] == [LOGITS, *layers]
    assert any("'fc'" in n and "logits" in n for n in with_fc.notes)
    assert not any("'fc'" in n for n in without.notes)
    full, notes = resolve_layers(tiny.model, ["fc", *layers], tiny.images.pixels[:1])
    assert full == [LOGITS, *layers] and len(notes) == 1
    assert resolve_layers(tiny.model, layers, tiny.images.pixels[:1]) == ([LOGITS, *layers], [])
    # written after an explicit logits entry it is the logits too
    assert build(tiny.model, [LOGITS, "fc", *layers], tiny.images) == without


def test_selection_stops_predicting_once_max_images_are_kept():
    model, images = tiny_cnn(), tiny_images(2000)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape[0]))
    c = build(model, ["block4"], images, 1, dataclasses.replace(TINY_PARAMS, predicted_only=True, max_images=2))
    assert len(c.images) == 2
    assert sum(seen) < 1000, sum(seen)  # predicted batch by batch until two were kept, not all 2000


def test_a_core_member_with_importance_zero_is_noted():
    """block4's conv no longer reads block3 channel 5: no block4 neuron depends on it, so with tau
    = all of block3's channels it enters every core set of block4 with importance 0."""
    model = tiny_cnn()
    with torch.no_grad():
        model.block4[0].weight[:, 5] = 0
    tau = CNN_CHANNELS[2]
    c = build(model, ["block4", "block3"], tiny_images(), params=dataclasses.replace(TINY_PARAMS, tau=tau))
    assert c.zero_importance_core() > 0
    for u in c.critical(1):
        last = c.core_of(1, u)[-1]
        assert len(c.core_of(1, u)) == tau and any(r.lower_channel == 5 and r.importance == 0 for r in c.core_of(1, u))
        assert last.importance == 0
    assert any("importance 0" in n for n in c.notes)
    assert "notes" in c.summary()


def test_a_circuit_without_zero_importance_core_has_no_such_note(tiny):
    assert tiny.circuit.zero_importance_core() == 0
    assert not any("importance 0" in n for n in tiny.circuit.notes)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "layers, class_index, changes, message",
    [
        (["block4", "nosuch"], CLASS, {}, "unknown layer(s) ['nosuch']"),
        (["block2", "block4"], CLASS, {}, "ordered top to bottom"),
        (["block4", "block4"], CLASS, {}, "duplicates"),
        (["block3", "block3.0"], CLASS, {}, "lies inside"),
        (["block4", "block3"], 3, {}, "out of range"),
        (["block4", "block3", "block2"], CLASS, {"tau": CNN_CHANNELS[1] + 1}, "larger than layer 'block2'"),
        (["block4"], CLASS, {"k": 8 * CROPS_PER_IMAGE + 1}, "larger than the 80 crops"),
        ([], CLASS, {}, "at least one layer"),
    ],
)
def test_bad_input_is_refused_before_any_activation_is_read(tiny, layers, class_index, changes, message):
    phases = []
    params = dataclasses.replace(TINY_PARAMS, **changes)
    with pytest.raises(NeurflowInputError) as err:
        build(tiny.model, layers, tiny.images, class_index, params, on_phase=lambda *a: phases.append(a))
    assert message in str(err.value)
    assert phases == []


def test_wrong_channel_count_and_nan_are_input_errors(tiny):
    rgb = tiny_images(3, channels=3)
    with pytest.raises(NeurflowInputError, match="3 channel"):
        build(tiny.model, tiny.layers, rgb)
    nan = ImageSet(torch.full((3, 1, 16, 16), float("nan")), ["a", "b", "c"], [0, 0, 0])
    with pytest.raises(NeurflowInputError, match="NaN"):
        build(tiny.model, tiny.layers, nan, params=dataclasses.replace(TINY_PARAMS, tau=2, k=5))


# ------------------------------------------------------------------------ image selection
def test_predicted_only_keeps_exactly_the_images_predicted_as_the_class():
    model, images = tiny_cnn(2), tiny_images(seed=2)
    with torch.no_grad():
        predicted = model(images.pixels).argmax(1).tolist()
    assert 0 < predicted.count(2) < len(images)  # a mixed set
    c = build(model, ["block4"], images, 2, dataclasses.replace(TINY_PARAMS, predicted_only=True))
    assert [i.source for i in c.images] == [images.sources[i] for i, p in enumerate(predicted) if p == 2]
    assert c.data_fingerprint == build(model, ["block4"], images, 2).data_fingerprint  # of the images handed in
    capped = build(model, ["block4"], images, 2, dataclasses.replace(TINY_PARAMS, max_images=1))
    assert [i.source for i in capped.images] == images.sources[:1]
    with pytest.raises(NeurflowInputError, match="predicts class 0 for none"):
        build(model, ["block4"], images, 0, dataclasses.replace(TINY_PARAMS, predicted_only=True))


# --------------------------------------------------------------------------------- pruning
def test_pruning_keeps_a_prefix_of_the_ranked_core(tiny):
    """Spec §3 pruning (epsilon >= 0): each core set is a prefix of the unpruned ranking."""
    layers = tiny.layers[:2]
    common = dataclasses.replace(TINY_PARAMS, tau=4)
    full = build(tiny.model, layers, tiny.images, params=common)
    pruned = build(tiny.model, layers, tiny.images, params=dataclasses.replace(common, epsilon=0.1))
    assert pruned.critical(0) == full.critical(0)
    shorter = 0
    for d in (0, 1):
        for u in pruned.critical(d):
            kept = [r.lower_channel for r in pruned.core_of(d, u)]
            ranked = [r.lower_channel for r in full.core_of(d, u)]
            if d == 0 or u in full.critical(d):
                assert 1 <= len(kept) <= len(ranked) and kept == ranked[: len(kept)]
                shorter += len(kept) < len(ranked)
    assert shorter > 0  # pruning did cut some core sets here
