"""bench/store_scale.py at a tiny size: its synthetic circuits go through the real writer into the
embedded store with the right counts, and every library query runs on them."""

from __future__ import annotations

import pytest

from bench.store_scale import Generator, ParamMaker, Shape, main, time_queries
from ingest.queries.library import QUERIES, get_query, run_query
from ingest.write.aggregate_maintenance import differences
from ingest.store.runner import Runner
from ingest.write.writer import write_circuit
from tests.fixtures_store import expected_counts

SHAPE = Shape(classes=3, layers=4, tau=4, saturate=8, seed=1)


def test_generated_circuits_are_deterministic_and_shaped():
    a, b = Generator(SHAPE), Generator(SHAPE)
    assert a.circuit(1) == b.circuit(1)
    c = a.circuit(2)
    assert [rec.name for rec in c.layers] == ["logits", "layer4.2", "layer4.1", "layer4.0"]
    assert c.critical(0) == [2]
    # critical neurons grow from tau and saturate; every non-lowest critical neuron has tau core neurons
    sizes = [len(c.critical(d)) for d in c.depths]
    assert sizes[1] == SHAPE.tau and all(s <= SHAPE.saturate for s in sizes[1:])
    for d in c.depths[:-1]:
        for ch in c.critical(d):
            assert len(c.core_of(d, ch)) == SHAPE.tau
            assert 1 <= len(c.concepts_of(d, ch)) <= 3
    assert set(c.critical(3)) == {r.lower_channel for r in c.core if r.depth == 2}
    assert {len(c.groups(d)) for d in c.depths[1:-1]} <= set(range(2, 7)) and len(c.groups(0)) == 1


def test_tiny_store_counts_and_every_query(store):
    gen = Generator(SHAPE)
    circuits = [gen.circuit(i) for i in range(SHAPE.classes)]
    for c in circuits:
        st = write_circuit(store, c, model_info=gen.model_info(), group_labels=gen.group_labels(c))
        assert st.action == "written"
    got = {k: v for k, v in store.counts().items() if v}
    assert got == {k: v for k, v in expected_counts(circuits).items() if v}
    with Runner(store) as runner:  # the writer's aggregates agree with the raw relationships
        assert differences(runner) == []

    critical = {c.class_index: {d: c.critical(d) for d in c.depths} for c in circuits}
    maker = ParamMaker(gen, list(range(SHAPE.classes)), critical)
    for q in QUERIES:
        for _ in range(3):
            rows = run_query(store, q.name, **maker(q))
            if rows:
                assert list(rows[0]) == list(get_query(q.name).returns)
    # the queries that always have an answer on this store do answer
    for name in ("models", "overview", "shared_neurons", "class_circuit", "circuit_diff", "strongest_paths", "neuron_concepts"):
        assert run_query(store, name, **maker(get_query(name))), name
    results = time_queries(store, maker, repeats=2)
    assert [r["query"] for r in results] == [q.name for q in QUERIES]
    assert all(r["runs"] == 2 and r["p95"] >= r["p50"] > 0 for r in results)


@pytest.mark.timeout(120)
def test_bench_script_end_to_end(capsys, tmp_path):
    assert main(["--classes", "3", "--layers", "4", "--tau", "4", "--saturate", "8", "--repeats", "2",
                 "--store-dir", str(tmp_path / "store")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "RESULT write:" in out and "RESULT queries:" in out
    for q in QUERIES:
        assert f"| {q.name} |" in out
