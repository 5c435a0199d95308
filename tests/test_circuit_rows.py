"""ingest.write.circuit_rows on plain values: the rows each writer statement receives, checked against the
Circuit they come from (no store, no model)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from ingest.write import circuit_rows as cr
from tests.fixtures_store import LAYERS, TEST_MODEL, make_circuit


@pytest.fixture(scope="module")
def circuit():
    return make_circuit(2)


@pytest.fixture(scope="module")
def u(circuit):
    return cr.uids_of(circuit)


def test_uids_name_model_layer_and_circuit(circuit, u):
    assert u["neuron"](1, 5) == f"{TEST_MODEL}/layer3/5"
    assert u["concept"](2, 7, 1) == f"{circuit.uid}/layer2/7/1"
    assert u["group"](3, 0) == f"{circuit.uid}/layer1/g0"
    with pytest.raises(ValueError, match="no layer at depth 9"):
        u["neuron"](9, 0)


def test_head_rows(circuit, u):
    model = cr.model_row(circuit, u, None)
    assert model["uid"] == model["name"] == TEST_MODEL
    assert model["num_classes"] == LAYERS[0][1]  # the logit layer's width when the loader says nothing
    assert cr.model_row(circuit, u, {"name": "net", "num_classes": 10})["num_classes"] == 10
    assert cr.class_row(circuit) == {"uid": f"{TEST_MODEL}/2", "model": TEST_MODEL, "index": 2, "name": circuit.class_name}
    row = cr.circuit_row(circuit)
    assert (row["uid"], row["status"], row["tau"], row["layers"]) == (
        circuit.uid, "running", circuit.params.tau, list(circuit.identity.layers),
    )  # fmt: skip


def test_layer_rows_in_depth_order(u):
    assert [(r["name"], r["depth"], r["channels"]) for r in cr.layer_rows(u)] == [
        (name, depth, channels) for depth, (name, channels) in enumerate(LAYERS)
    ]


def test_neuron_rows_cover_every_end_once(circuit, u):
    rows = cr.neuron_rows(circuit, u)
    uids = [r["uid"] for r in rows]
    assert len(uids) == len(set(uids)) and [(r["depth"], r["channel"]) for r in rows] == sorted((r["depth"], r["channel"]) for r in rows)
    ends = {r["u"] for r in cr.feeds_rows(circuit, u)} | {r["v"] for r in cr.feeds_rows(circuit, u)}
    ends |= {r["v"] for r in cr.drives_rows(circuit, u)} | {r["neuron"] for r in cr.concept_rows(circuit, u)}
    ends |= {r["uid"] for r in cr.include_rows(circuit, u)}
    assert ends == set(uids)  # every neuron a relationship row touches exists, and no other


def test_include_rows_sum_the_feeds_of_each_critical_neuron(circuit, u):
    rows = {r["uid"]: r for r in cr.include_rows(circuit, u)}
    assert len(rows) == len(circuit.neurons)
    feeds = cr.feeds_rows(circuit, u)
    assert len(feeds) == len(circuit.core)
    for uid, row in rows.items():
        mine = [f for f in feeds if f["v"] == uid]
        assert row["feeds_up"] == len(mine)
        assert row["importance"] == pytest.approx(sum(f["importance"] for f in mine))
    assert sum(r["feeds_up"] for r in rows.values()) == len(circuit.core)  # every core edge starts at a critical neuron


def test_concept_and_drives_rows(circuit, u):
    concepts = cr.concept_rows(circuit, u)
    assert [(r["depth"], r["channel"], r["index"], r["size"]) for r in concepts] == [
        (c.depth, c.channel, c.index, c.size) for c in circuit.concepts
    ]
    drives = cr.drives_rows(circuit, u)
    assert len(drives) == len(circuit.edges) and {r["k"] for r in drives} <= {r["uid"] for r in concepts}


def test_group_rows_count_members_and_keep_labels(circuit, u):
    first = circuit.group_members[0]
    labels = {(first.depth, first.group): {"label": "stripes", "source": "llm", "score": 0.75}}
    rows = cr.group_rows(circuit, u, labels)
    sizes = Counter(r["g"] for r in cr.in_group_rows(circuit, u))
    assert {r["uid"]: r["size"] for r in rows if r["size"]} == dict(sizes)
    assert sum(r["size"] for r in rows) == len(circuit.group_members)
    labelled = [r for r in rows if r["label"] is not None]
    assert [(r["uid"], r["label"], r["label_source"], r["label_score"]) for r in labelled] == [
        (u["group"](first.depth, first.group), "stripes", "llm", 0.75)
    ]
    ends = {r["lower"] for r in cr.group_feeds_rows(circuit, u)} | {r["upper"] for r in cr.group_feeds_rows(circuit, u)}
    assert ends <= {r["uid"] for r in rows}  # a group only an edge refers to exists too


def test_crop_and_exemplified_rows(circuit, u):
    reps = [m for m in circuit.concept_members if m.rep_rank >= 0]
    first = circuit.crops[0].crop_id
    crops = cr.crop_rows(circuit, {first: "thumb.png"})
    exemplified = cr.exemplified_rows(circuit, u)
    assert len(exemplified) == len(reps) and {r["crop"] for r in exemplified} == {r["uid"] for r in crops}
    assert len({r["uid"] for r in crops}) == len(crops)
    assert [r["thumbnail"] for r in crops].count("thumb.png") == (first in {m.crop_id for m in reps})


def test_a_representative_outside_the_crop_table_is_refused(circuit):
    member = next(m for m in circuit.concept_members if m.rep_rank >= 0)
    broken = dataclasses.replace(circuit, concept_members=[dataclasses.replace(member, crop_id=10**6)])
    with pytest.raises(ValueError, match="representative crop 1000000 is not in the crop table"):
        cr.crop_rows(broken)


def test_circuit_rows_collects_every_step(circuit):
    rows = cr.circuit_rows(circuit)
    assert set(rows) == {"feed_keys", "model", "cls", "circuit", "layers", "neurons", "includes", "feeds", "concepts",
                         "drives", "groups", "in_group", "group_feeds", "crops", "exemplified"}
    assert rows["feed_keys"] == cr.feed_keys(circuit) and len(rows["feed_keys"]) == len(circuit.core)
