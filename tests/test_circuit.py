"""`neurflow.circuit`: the Circuit's Parquet round trip, identity (uid) and summary, on a tiny circuit."""

from __future__ import annotations

import dataclasses
import json

import pytest

from neurflow.circuit import (
    LOGITS,
    METHOD_VERSION,
    Circuit,
    CoreRec,
    Identity,
    LayerRec,
    Params,
    circuit_uid,
    data_fingerprint,
)
from tests.fixtures_tiny import CLASS, build
from tests.tiny_models import tiny_images

pytestmark = pytest.mark.usefixtures("single_thread")


def test_parquet_round_trip_gives_an_equal_circuit(tiny, tmp_path):
    c = tiny.circuit
    path = c.save(tmp_path / "c")
    assert sorted(p.name for p in path.iterdir()) == sorted(["meta.json"] + [f"{t}.parquet" for t in Circuit.TABLES])
    loaded = Circuit.load(path)
    assert loaded == c and loaded.uid == c.uid
    for table in Circuit.TABLES:  # row by row, types included (vectors come back as tuples)
        assert getattr(loaded, table) == getattr(c, table), table
    assert loaded.meta() == c.meta()
    assert all(isinstance(x.vector, tuple) for x in loaded.concepts)


def test_round_trip_keeps_notes_and_empty_tables(tmp_path):
    empty = Circuit(model="m", class_index=2, class_name="two", params=Params(tau=4), image_size=16,
                    notes=["a note", "another"], data_source="tiny:0", data_fingerprint="f" * 16)
    loaded = Circuit.load(empty.save(tmp_path / "empty"))
    assert loaded == empty and loaded.notes == ["a note", "another"] and loaded.params == Params(tau=4)
    assert all(getattr(loaded, t) == [] for t in Circuit.TABLES)


def test_loading_a_folder_that_is_not_a_circuit_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        Circuit.load(tmp_path)


def test_equality_ignores_timing_but_not_results(tiny):
    c = tiny.circuit
    later = dataclasses.replace(c, seconds=c.seconds + 5, started_at="x", finished_at="y")
    assert later == c
    changed = dataclasses.replace(c, core=[dataclasses.replace(c.core[0], importance=c.core[0].importance + 1)] + c.core[1:])
    assert changed != c


def test_uid_is_known_before_the_build(tiny):
    c = tiny.circuit
    default = "fp32+adaptive-ig-tol0.01"  # adaptive IG is the default; `--exact-ig` builds "fp32"
    identity = Identity(tiny.params, tuple(tiny.layers), tiny.images.origin, data_fingerprint(tiny.images.sha256), default)
    assert c.uid == circuit_uid("tiny", CLASS, identity) == f"tiny/{CLASS}/{identity.hash}"
    assert c.identity == identity and c.method_version == METHOD_VERSION and c.precision == default
    assert c.data_fingerprint == data_fingerprint(tiny.images.sha256)


def test_uid_changes_with_layers_data_and_params(tiny):
    c = tiny.circuit
    variants = [
        dataclasses.replace(c, layers=c.layers[:-1]),
        dataclasses.replace(c, data_fingerprint=data_fingerprint(tiny_images(seed=1).sha256)),
        dataclasses.replace(c, data_source="tiny:other"),
        dataclasses.replace(c, params=dataclasses.replace(c.params, tau=2)),
        dataclasses.replace(c, params=dataclasses.replace(c.params, seed=1)),
        dataclasses.replace(c, precision="bf16-certified"),
        dataclasses.replace(c, method_version="0"),
        dataclasses.replace(c, class_index=c.class_index + 1),
        dataclasses.replace(c, model="other"),
    ]
    uids = [v.uid for v in variants]
    assert len(set(uids)) == len(uids) and c.uid not in uids


def test_uid_does_not_change_with_what_is_not_the_result(tiny):
    c = tiny.circuit
    for v in [dataclasses.replace(c, seconds=99.0), dataclasses.replace(c, notes=["x"]),
              dataclasses.replace(c, class_name="renamed"), dataclasses.replace(c, neurflow_version="9")]:
        assert v.uid == c.uid
    # the logits pseudo-layer is implicit: with or without it in the layer list, one identity
    no_logits = dataclasses.replace(c, layers=[x for x in c.layers if x.name != LOGITS])
    assert no_logits.uid == c.uid


def test_uid_is_stable_and_changes_with_the_images_of_a_real_build(tiny):
    layers = tiny.layers[:1]
    first = build(tiny.model, layers, tiny_images(seed=1))
    again = build(tiny.model, layers, tiny_images(seed=1))
    other = build(tiny.model, layers, tiny_images(seed=2))
    assert first.uid == again.uid
    assert other.uid != first.uid and other.identity.param_set == first.identity.param_set


def test_params_round_trip_and_hash():
    p = Params(tau=3, k=6, granularities=(1.0, 0.5), num_groups=4)
    text = json.dumps(p.to_dict())
    back = Params.from_dict(json.loads(text))
    assert back == p and back.hash() == p.hash() and isinstance(back.granularities, tuple)
    assert Params.from_dict({**p.to_dict(), "a_future_knob": 1}) == p  # unknown keys are ignored
    assert len(p.hash()) == 12 and p.hash() != Params(tau=4, k=6, granularities=(1.0, 0.5), num_groups=4).hash()


def test_summary_counts_the_tables(tiny):
    c = tiny.circuit
    s = c.summary()
    assert s["circuit"] == c.uid and s["parameter_set"] == c.identity.param_set
    assert s["images"] == len(tiny.images) == len(c.images)
    assert s["crops"] == len(c.crops)
    assert s["critical_neurons"] == {x.name: len(c.critical(x.depth)) for x in c.layers}
    assert s["critical_neurons"][LOGITS] == 1
    assert s["feeds_edges"] == len(c.core) and s["concepts"] == len(c.concepts)
    assert s["groups"] == {c.layers[d].name: len(c.groups(d)) for d in c.depths if c.groups(d)}
    assert s["group_edges"] == len(c.group_edges)
    assert ("notes" in s) == bool(c.notes)
    assert dataclasses.replace(c, notes=["n"]).summary()["notes"] == ["n"]


def test_accessors_sort_and_count():
    c = Circuit(model="m", class_index=0, class_name="0", params=Params(), image_size=8,
                layers=[LayerRec(0, LOGITS, 2), LayerRec(1, "a", 4)])
    c.core = [CoreRec(0, 0, 3, 1, 0.0), CoreRec(0, 0, 1, 0, 2.0), CoreRec(0, 1, 2, 0, 0.0)]
    assert [r.lower_channel for r in c.core_of(0, 0)] == [1, 3]  # by rank
    assert c.zero_importance_core() == 2
    assert c.depths == [0, 1] and c.layer_name(1) == "a"
