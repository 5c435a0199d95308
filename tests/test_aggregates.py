"""The aggregates the writer keeps (ingest/write/aggregates.py) always equal what the raw relationships
say, on a real embedded ArcadeDB: after ingest, forced rewrite, a crash and its resumption, and
delete; and they change in the same transaction as the circuit's status."""

from __future__ import annotations

import dataclasses

import pytest

from ingest.write.aggregate_maintenance import differences, rebuild, recompute, stored
from ingest.write.aggregates import TOP_N, critical_lists, layer_rows, stat_rows, top_rows
from ingest.store.runner import Runner
from ingest.write.writer import WriteOptions, circuit_status, delete_circuit, set_group_labels, write_circuit
from tests.fixtures_store import make_circuit, model_info


def params(tau: int):
    from neurflow.circuit import Params

    return Params(tau=tau, k=4, ig_steps=8, granularities=(1.0, 0.5), num_representatives=2)


def consistent(store) -> dict:
    with Runner(store) as r:
        assert differences(r) == []
        return stored(r)


def same(a: dict, b: dict) -> bool:
    """Equal aggregates; summed importances up to float rounding (an add then a retract of x
    leaves x + y - y)."""
    if set(a) != set(b):
        return False
    for u in a:
        x, y = dict(a[u]), dict(b[u])
        if x.pop("importance") != pytest.approx(y.pop("importance"), rel=1e-9, abs=1e-12) or x != y:
            return False
    return True


def test_aggregates_follow_ingest_rewrite_crash_and_delete(store):
    p2 = params(2)
    circuits = [make_circuit(i) for i in range(4)] + [make_circuit(1, params=p2), make_circuit(3, params=p2)]
    labels = {(1, 0): {"label": "stripes", "label_source": "manual", "label_score": 1.0}}
    for c in circuits:
        write_circuit(store, c, model_info=model_info(), group_labels=labels)
    after_ingest = consistent(store)
    # a label edit keeps the circuit's copy of its labelled groups in step
    set_group_labels(store, [{"uid": f"{circuits[0].uid}/layer3/g1", "label": "dots", "label_source": "manual", "label_score": 0.5},
                             {"uid": f"{circuits[1].uid}/layer3/g0", "label": None, "label_source": None, "label_score": None}])
    consistent(store)
    # a class count is the number of classes whose circuit includes the neuron, per parameter set
    ps = circuits[0].identity.param_set
    want: dict[tuple[str, str], set[int]] = {}
    for c in circuits:
        for n in c.neurons:
            want.setdefault((f"{c.model}/{c.layer_name(n.depth)}/{n.channel}", c.identity.param_set), set()).add(c.class_index)
    assert {(s["neuron"], s["params_hash"]): set(s["class_indices"]) for s in after_ingest.values()} == want
    assert any(s["classes"] >= 3 and s["params_hash"] == ps for s in after_ingest.values())  # the fixture shares neurons

    # forced rewrite with other content (another tau: other neurons, importances): the old circuit
    # leaves the aggregates and the new one enters them
    changed = make_circuit(2, params=dataclasses.replace(circuits[2].params, tau=2))
    changed.params = circuits[2].params  # same uid, other core sets
    assert changed.uid == circuits[2].uid
    assert write_circuit(store, changed, force=True).action == "rewritten"
    assert not same(consistent(store), after_ingest)

    # crash midway through a forced rewrite, then the resumption
    write_circuit(store, circuits[2], force=True, options=WriteOptions(batch_size=5, stop_after="feeds:first"))
    assert circuit_status(store, circuits[2].uid) == "running"
    mid = consistent(store)
    assert not any(2 in s["class_indices"] and s["params_hash"] == ps for s in mid.values())  # not counted while running
    assert write_circuit(store, circuits[2]).action == "rewritten"
    assert same(consistent(store), after_ingest)

    # a crash of a first write leaves nothing counted; its resumption counts it once
    fresh = make_circuit(0, params=params(4))
    write_circuit(store, fresh, options=WriteOptions(stop_after="concepts"))
    consistent(store)
    write_circuit(store, fresh)
    consistent(store)

    # delete: the circuit leaves the aggregates, a stat no circuit counts any more goes
    for c in [fresh, circuits[4], circuits[0]]:
        delete_circuit(store, c.uid)
        left = consistent(store)
    assert all(s["classes"] > 0 and s["circuits"] > 0 for s in left.values())
    for c in circuits[1:4] + circuits[5:]:
        delete_circuit(store, c.uid)
    assert consistent(store) == {}


def test_a_failed_completion_counts_nothing(store, monkeypatch):
    """The status flip and the aggregate update are one transaction: when the update fails, the
    circuit is not complete either."""
    import ingest.write.aggregates as aggregates

    c = make_circuit(1)
    monkeypatch.setattr(aggregates, "Q_ADD", "UNWIND $rows AS r RETURN nosuchfunction(r) AS n")
    with pytest.raises(Exception):
        write_circuit(store, c, model_info=model_info())
    assert circuit_status(store, c.uid) == "failed"
    assert consistent(store) == {}
    monkeypatch.undo()
    assert write_circuit(store, c).action == "rewritten"
    assert len(consistent(store)) == len(c.neurons)


def test_rebuild_restores_lost_aggregates(store):
    a, b = make_circuit(0), make_circuit(1)
    for c in (a, b):
        write_circuit(store, c)
    store.run("MATCH (s:NeuronStat) DETACH DELETE s")
    store.run("MATCH (c:Circuit) REMOVE c.critical_channels, c.labels_text")
    with Runner(store) as r:
        assert differences(r)
        assert rebuild(r) == len(recompute(r))
    consistent(store)


# --------------------------------------------------------------------------- the rows, on plain values
def test_stat_rows_one_per_included_neuron_of_the_parameter_set():
    rows = {"circuit": {"params_hash": "ph"},
            "neurons": [{"uid": "m/l1/3", "layer": "l1", "channel": 3}, {"uid": "m/l2/0", "layer": "l2", "channel": 0}],
            "includes": [{"uid": "m/l2/0", "depth": 2, "importance": 0.5}, {"uid": "m/l1/3", "depth": 1, "importance": 0.25}]}  # fmt: skip
    assert stat_rows(rows) == [
        {"uid": "m/l2/0@ph", "neuron": "m/l2/0", "layer": "l2", "depth": 2, "channel": 0, "importance": 0.5},
        {"uid": "m/l1/3@ph", "neuron": "m/l1/3", "layer": "l1", "depth": 1, "channel": 3, "importance": 0.25},
    ]


def test_layer_rows_carry_the_new_values_by_channel_and_the_list_size():
    changed = [{"layer": "l1", "depth": 1, "channel": 4, "classes": 2, "circuits": 2, "importance": 1.5},
               {"layer": "l1", "depth": 1, "channel": 0, "classes": 0, "circuits": -1, "importance": 0.1},
               {"layer": "l2", "depth": 2, "channel": 9, "classes": 1, "circuits": 1, "importance": 0.3}]  # fmt: skip
    got = {r["layer"]: r for r in layer_rows("m", "ph", changed, {"l1": 8})}
    assert got["l1"] == {"uid": "m/l1@ph", "layer": "l1", "depth": 1, "classes": {"4": 2, "0": 0},
                         "circuits": {"4": 2, "0": 0}, "importance": {"4": 1.5, "0": 0.0}, "size": 8}  # fmt: skip
    assert got["l2"]["size"] == 10  # no known size: as long as the highest channel needs


def test_top_rows_rank_by_classes_then_importance_then_channel():
    got = top_rows([{"uid": "u", "classes": [1, 3, 0, 3, 1], "importance": [0.5, 0.1, 9.0, 0.2, 0.5]}])
    assert got == [{"uid": "u", "top": [3, 1, 0, 4]}]  # channel 2 counts no class
    assert len(top_rows([{"uid": "v", "classes": [1] * (TOP_N + 5), "importance": [0.0] * (TOP_N + 5)}])[0]["top"]) == TOP_N


def test_critical_lists_flatten_layers_with_offsets():
    assert critical_lists([("l1", [0, 2]), ("l2", []), ("l3", [5])]) == {
        "layers": ["l1", "l2", "l3"], "offsets": [0, 2, 2, 3], "channels": [0, 2, 5]}
