"""A store written before the writer kept its aggregates (complete circuits, no NeuronStat /
LayerStat / CircuitFeeds, no aggregate properties on the circuits and the Model node) is brought
in step the first time a writer opens it; a reader that cannot rebuild says which command fixes
it instead of answering nothing; `neurflow store rebuild-aggregates [--check]`.  And concurrent
completions of one parameter set lose no aggregate update (`ingest.write.aggregate_statements.Q_LOCK`).  All on a
real embedded ArcadeDB."""

from __future__ import annotations

import threading

import pytest

from cli.main import main
from ingest.write.aggregate_maintenance import differences, missing, stored
from ingest.queries.library import run_query
from ingest.store.runner import Runner
from ingest.store.connect import open_store
from ingest.write.writer import write_circuit
from tests.fixtures_store import LAYERS, make_circuit, model_info

# what a store written before the aggregates looks like: the writer set none of this
STRIP = (
    "MATCH (s:NeuronStat) DETACH DELETE s",
    "MATCH (s:LayerStat) DETACH DELETE s",
    "MATCH (x:CircuitFeeds) DETACH DELETE x",
    "MATCH (c:Circuit) REMOVE c.critical_layers, c.critical_offsets, c.critical_channels, c.labels_group, "
    "c.labels_text, c.labels_source, c.labels_score, c.labels_layer, c.labels_depth, c.labels_size, c.class_name",
    "MATCH (:Circuit)-[i:INCLUDES]->() REMOVE i.importance, i.feeds_up",
    "MATCH (m:Model) REMOVE m.ps_hashes, m.ps_circuits, m.ps_last",
)


def rounded(rows: list[dict]) -> list[dict]:
    """Rows with their summed importances up to float rounding (summed in another order)."""
    return [{k: round(v, 9) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def write_old_store(store, classes=range(4)) -> tuple[list, list]:
    """Circuits written by the current writer, then stripped of their aggregates; returns the
    circuits and hub_neurons as it answered before the stripping."""
    circuits = [make_circuit(i) for i in classes]
    for c in circuits:
        write_circuit(store, c, model_info=model_info())
    hubs = run_query(store, "hub_neurons", model=circuits[0].model, limit=50)
    assert hubs
    for statement in STRIP:
        store.write(statement)
    with Runner(store) as r:
        assert missing(r) == {circuits[0].model: len(circuits)}
        assert differences(r)
    assert run_query(store, "hub_neurons", model=circuits[0].model, limit=50) == []  # what users saw
    return circuits, hubs


def test_writer_open_rebuilds_an_old_store(store, store_config, capsys):
    circuits, hubs = write_old_store(store)
    capsys.readouterr()
    with open_store(store_config) as writer:  # what `neurflow ingest` / `demo` do first
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "rebuilding the aggregates of 4 complete circuits" in err
        with Runner(writer) as r:
            assert differences(r) == [] and missing(r) == {}
        assert rounded(run_query(writer, "hub_neurons", model=circuits[0].model, limit=50)) == rounded(hubs)
    with open_store(store_config) as writer:  # in step now: one query, nothing said
        assert capsys.readouterr().err == ""


def test_neurflow_app_brings_an_old_store_up_to_date_before_starting(store, store_config, capsys):
    """`neurflow app` reads with a read-only account, which cannot rebuild: it opens the store once
    as the writer first (cli.app_commands._bring_up_to_date)."""
    from cli.app_commands import _bring_up_to_date

    circuits, hubs = write_old_store(store)
    capsys.readouterr()
    _bring_up_to_date(store_config)
    assert "rebuilding the aggregates of 4 complete circuits" in capsys.readouterr().err
    with Runner(store) as r:
        assert missing(r) == {}
    assert rounded(run_query(store, "hub_neurons", model=circuits[0].model, limit=50)) == rounded(hubs)


def test_in_step_store_is_not_rebuilt(store, store_config, capsys):
    write_circuit(store, make_circuit(0), model_info=model_info())
    with Runner(store) as r:
        before = stored(r)
        assert missing(r) == {}
    capsys.readouterr()
    with open_store(store_config) as writer, Runner(writer) as r:
        assert stored(r) == before
    assert capsys.readouterr().err == ""


def test_cli_check_rebuild_and_query_on_an_old_store(store, store_config, capsys, monkeypatch):
    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", store_config.database)
    circuits, hubs = write_old_store(store, classes=range(3))
    capsys.readouterr()
    # the read-only console cannot rebuild: one line naming the command, not an empty table
    assert main(["query", "--lib", "hub_neurons", "-p", f"model={circuits[0].model}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "neurflow store rebuild-aggregates" in err[0], err
    assert main(["store", "rebuild-aggregates", "--check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ from the raw relationships" in err[0], err
    assert main(["store", "rebuild-aggregates"]) == 0
    assert "rebuilt the aggregates of 3 complete circuits" in capsys.readouterr().out
    assert main(["store", "rebuild-aggregates", "--check"]) == 0
    assert "consistent" in capsys.readouterr().out
    assert main(["query", "--lib", "hub_neurons", "-p", f"model={circuits[0].model}", "--format", "json"]) == 0
    assert '"neuron"' in capsys.readouterr().out
    assert main(["store", "rebuild-aggregates", "--bogus"]) == 2
    capsys.readouterr()
    assert main(["store", "rebuild-aggregates", "--model", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --model 'nope' is not in the store (models: {circuits[0].model})"]


def test_cli_rebuild_on_an_unreachable_store_is_one_line(capsys, monkeypatch):
    from ingest.store.embedded import free_port

    monkeypatch.setenv("NEURFLOW_STORE_URI", f"bolt://127.0.0.1:{free_port()}")
    assert main(["store", "rebuild-aggregates", "--check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


@pytest.mark.parametrize("threads", [4])
def test_concurrent_completions_of_one_parameter_set(store, threads):
    """Several writers complete circuits of one parameter set at once (the Ray executor's classes):
    each completion reads and rewrites the same NeuronStat / LayerStat / Model lists.  Every
    update must survive: the aggregates equal what the raw relationships say."""
    classes = list(range(1, 1 + 2 * threads))
    layers = [("logits", 1 + len(classes))] + LAYERS[1:]  # a logits channel per class
    info = {**model_info(), "num_classes": 1 + len(classes)}
    write_circuit(store, make_circuit(0, layers=layers), model_info=info)  # the shared nodes exist
    circuits = {c: make_circuit(c, layers=layers) for c in classes}
    start, errors = threading.Barrier(threads), []

    def work(mine: list[int]) -> None:
        try:
            start.wait()
            for c in mine:
                write_circuit(store, circuits[c], model_info=info)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(classes[i::threads],)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    with Runner(store) as r:
        assert differences(r) == []
        ps = stored(r)
    shared = max(len(s["class_indices"]) for s in ps.values())
    assert shared >= threads  # the fixture's circuits share neurons: the updates did collide


def test_every_aggregate_change_takes_the_model_lock_first(store, monkeypatch):
    """On Neo4j the lock is what prevents lost updates (ArcadeDB's optimistic commits hide its
    absence from the test above): every transaction that touches an aggregate, completing or
    retracting, runs the Model lock as its first statement."""
    import ingest.write.aggregates as agg
    from ingest.store.runner import Tx

    aggregate = {agg.Q_ADD, agg.Q_RETRACT, agg.Q_LAYER_ADD, agg.Q_LAYER_RETRACT, agg.Q_LAYER_TOP, agg.Q_SETS_ADD,
                 agg.Q_SETS_RECOUNT, agg.Q_FEEDS_KEYS, agg.Q_FEEDS_KEYS_DROP, agg.Q_COMPLETE}
    runs: dict[int, list[str]] = {}
    real = Tx.run

    alive: list[Tx] = []  # one Tx per transaction; kept so that no id is reused

    def spy(self, cypher, params=None):
        if id(self) not in runs:
            alive.append(self)
        runs.setdefault(id(self), []).append(cypher)
        return real(self, cypher, params)

    monkeypatch.setattr(Tx, "run", spy)
    c = make_circuit(0)
    write_circuit(store, c, model_info=model_info())
    write_circuit(store, c, model_info=model_info(), force=True)  # retract, then complete again
    touched = [stmts for stmts in runs.values() if aggregate & set(stmts)]
    assert len(touched) >= 3  # complete, retract, complete
    assert all(stmts[0] in (agg.Q_LOCK, agg.Q_LOCK_OF) for stmts in touched), [s[0][:60] for s in touched]
    assert any(agg.Q_RETRACT in stmts for stmts in touched)
    with Runner(store) as r:
        assert differences(r) == []
