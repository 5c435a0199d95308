"""Conformance: schema setup, a write, every library query and the read-only path on any Bolt store.

Runs on the embedded ArcadeDB always, and on Neo4j 5 when ``NEO4J_URI`` is set (with
``NEO4J_USER`` / ``NEO4J_PASSWORD`` and optionally ``NEO4J_DATABASE``).  On Neo4j the test
writes under a model name of its own and deletes exactly that afterwards, but point it at a
throwaway server anyway.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from ingest.store.config import StoreConfig
from ingest.store.errors import ReadOnlyViolation
from ingest.write.aggregate_maintenance import differences
from ingest.read.export import export_store
from ingest.queries.library import QUERIES, run_query
from ingest.store.readonly import execute_rolled_back, run_readonly
from ingest.store.schema import LABELS, ensure_schema
from ingest.store.connection import Store
from ingest.store.runner import Runner
from ingest.write.writer import delete_circuit, write_circuit
from tests.fixtures_store import make_circuit, model_info

NEO4J_REASON = "NEO4J_URI is not set: set NEO4J_URI (+ NEO4J_USER, NEO4J_PASSWORD, NEO4J_DATABASE) to run the conformance suite on Neo4j 5"


@pytest.fixture(params=["arcadedb", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def target(request):
    if request.param == "arcadedb":
        return request.getfixturevalue("store")
    if not os.environ.get("NEO4J_URI"):
        pytest.skip(NEO4J_REASON)
    cfg = StoreConfig(
        uri=os.environ["NEO4J_URI"],
        user=os.environ.get("NEO4J_USER", "neo4j"),
        password=os.environ.get("NEO4J_PASSWORD"),
        database=os.environ.get("NEO4J_DATABASE") or None,
    )
    store = Store(cfg)
    request.addfinalizer(store.close)
    return store


def _model_counts(store: Store, model: str) -> dict[str, int]:
    rows = store.run(
        "MATCH (n) WHERE n.model = $m OR n.uid = $m OR n.circuit STARTS WITH $p "
        "RETURN labels(n) AS labels, count(*) AS n",
        m=model,
        p=model + "/",
    )
    out: dict[str, int] = {}
    for r in rows:
        for lab in r["labels"]:
            out[lab] = out.get(lab, 0) + r["n"]
    for rel in ("FEEDS", "DRIVES", "GROUP_FEEDS"):
        out[rel] = store.run(f"MATCH ()-[r:{rel}]->() WHERE r.circuit STARTS WITH $p RETURN count(r) AS n", p=model + "/")[0]["n"]
    return out


def test_conformance(target, tmp_path):
    from neurflow.circuit import Params

    store: Store = target
    model = "conf-" + uuid.uuid4().hex[:8]
    info = {**model_info(), "name": model}
    circuits = [make_circuit(i, model=model) for i in range(3)]
    newer = make_circuit(1, model=model, params=Params(tau=2, k=4, ig_steps=8, granularities=(1.0,), num_representatives=1))
    try:
        # schema: idempotent, a uniqueness constraint on uid for every label
        ensure_schema(store, again=True)
        ensure_schema(store, again=True)
        constraints = store.run("SHOW CONSTRAINTS")
        covered = {lab for r in constraints if r["properties"] == ["uid"] for lab in r["labelsOrTypes"]}
        assert set(LABELS) <= covered
        # write, rewrite: idempotent
        for c in circuits + [newer]:
            assert write_circuit(store, c, model_info=info).action == "written"
        before = _model_counts(store, model)
        assert before["FEEDS"] == sum(len(c.core) for c in circuits + [newer])
        assert before["Circuit"] == 4 and before["Class"] == 3
        assert all(write_circuit(store, c, model_info=info).skipped for c in circuits)
        assert write_circuit(store, newer, force=True, model_info=info).action == "rewritten"
        assert _model_counts(store, model) == before
        with Runner(store) as runner:  # the writer's aggregates agree with the raw relationships
            assert differences(runner, model) == []
        # every library query runs and returns its columns
        a, b = circuits[0], circuits[1]  # comparisons read the default parameter set, not class 1's newer circuit
        args = {
            "models": {},
            "overview": {"model": model},
            "shared_neurons": {"model": model, "class_a": 0, "class_b": 1},
            "class_channels": {"model": model, "layer": "layer2"},
            "similarity_matrix": {"model": model, "layer": "layer2", "limit": None},
            "hub_neurons": {"model": model},
            "class_circuit": {"model": model, "class_index": 0},
            "circuit_diff": {"model": model, "class_a": 0, "class_b": 1},
            "strongest_paths": {"model": model, "class_index": 0, "depth": 2, "limit": 3},
            "reverse_lookup": {"model": model, "layer": "layer2", "channel": a.critical(2)[0]},
            "label_search": {"model": model, "text": "x"},
            "neuron_concepts": {"model": model, "class_index": 0, "layer": "layer3", "channel": a.critical(1)[0]},
        }
        results = {}
        for q in QUERIES:
            rows = run_query(store, q.name, **args[q.name])
            if rows:
                assert list(rows[0]) == list(q.returns), q.name
            results[q.name] = rows
        assert all(results[n] for n in args if n != "label_search")
        assert len(results["overview"]) == 4
        for r in results["shared_neurons"]:
            sa, sb = set(a.critical(r["depth"])), set(b.critical(r["depth"]))
            assert r["shared_channels"] == sorted(sa & sb)
            assert r["jaccard"] == pytest.approx(len(sa & sb) / len(sa | sb))
        assert [len(r["jaccard"]) for r in results["similarity_matrix"]] == [3, 3, 3]  # a row per class, 3 values each
        assert [len(x) for x in results["class_channels"][0]["channels"]] == [len(c.critical(2)) for c in circuits[:3]]
        diff = {(r["kind"], r["side"]): set(r["items"]) for r in results["circuit_diff"]}
        assert diff[("feeds", "both")] | diff[("feeds", "only_a")] == {
            f"{model}/{a.layer_name(x.depth + 1)}/{x.lower_channel}->{model}/{a.layer_name(x.depth)}/{x.channel}" for x in a.core
        }
        best = max(
            x.importance * y.importance for x in a.core_of(0, 0) for y in a.core_of(1, x.lower_channel)
        )
        assert results["strongest_paths"][0]["score"] == pytest.approx(best)
        # read-only path: refused before sending; whatever gets through is rolled back or refused
        with pytest.raises(ReadOnlyViolation):
            run_readonly("MATCH (m:Model {uid: $m}) DETACH DELETE m", {"m": model}, store=store)
        cols, rows = run_readonly("MATCH (m:Model {uid: $m}) RETURN m.name AS name", {"m": model}, store=store)
        assert (cols, rows) == (["name"], [[model]])
        try:
            execute_rolled_back(store, "MATCH (m:Model {uid: $m}) SET m.name = 'changed'", {"m": model})
        except ReadOnlyViolation:
            pass  # Neo4j enforces READ access mode; ArcadeDB runs it and the rollback discards it
        assert store.run("MATCH (m:Model {uid: $m}) RETURN m.name AS name", m=model) == [{"name": model}]
        # export
        export = export_store(store, "json", tmp_path / "export.json", model=model)
        payload = json.loads((tmp_path / "export.json").read_text())
        assert payload["format"] == "neurflow-store" and len(payload["nodes"]) == export["nodes"] > 0
        assert {n["uid"] for n in payload["nodes"] if n["label"] == "Circuit"} == {c.uid for c in circuits + [newer]}
    finally:
        for c in circuits + [newer]:
            delete_circuit(store, c.uid)
        store.run("MATCH (n) WHERE n.model = $m OR n.uid = $m DETACH DELETE n", m=model)
        left = _model_counts(store, model)
        assert not any(left.values()), left
