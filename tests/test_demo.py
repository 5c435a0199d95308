"""`neurflow demo` end to end (the user's first command): the shipped demo model, all ten classes
into a fresh database, evaluated, selective; a second run does no work.

Lighter than the real demo (20 images and 8 IG steps per class instead of 60 and 16) to stay
within the suite's budget; the selectivity the demo promises (docs/demo-model.md, README "The
demo store") comes from tau 3 on the wide `fashion-resnet`, not from the image count.
"""

from __future__ import annotations

import json
import uuid

import pytest

from bench.demo_store import GOAL_FRACTION, report
from cli.main import main as cli_main
from ingest.store.connection import Store

ARGS = ["demo", "--no-app", "--quiet", "--device", "cpu", "--max-images", "20", "--ig-steps", "8"]


@pytest.fixture(scope="module")
def demo_store(store_server, tmp_path_factory):
    """The config of a fresh database filled by `neurflow demo --no-app`, and that run's output."""
    from ingest.store.embedded import create_database

    database = "demo_" + uuid.uuid4().hex[:8]
    create_database(store_server, database)
    env = {"NEURFLOW_STORE_DATABASE": database, "NEURFLOW_ARTIFACT_DIR": str(tmp_path_factory.mktemp("demo-art"))}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        yield store_server.with_database(database), mp
    finally:
        mp.undo()


@pytest.mark.slow
def test_demo_builds_evaluates_is_selective_and_reruns_for_free(demo_store, capsys):
    cfg, _ = demo_store
    assert cli_main([a for a in ARGS if a != "--quiet"]) == 0  # progress on: stderr is no terminal here
    out, err = capsys.readouterr()
    assert "demo: evaluating 10 circuits" in out
    assert "class 9 (Ankle boot): written" in err and not any(e in err for e in ("\r", "\x1b["))  # plain lines
    assert "class 9 (Ankle boot): " in out.split("demo: evaluating")[1]  # one line per evaluated class
    tail = out.strip().splitlines()  # the closing lines: where the store is, what to run next
    at = next(i for i, line in enumerate(tail) if line.startswith("store: "))
    assert tail[at] == f"store: embedded ArcadeDB, data folder {cfg.data_dir}, {cfg.uri}, database {cfg.database}"
    assert tail[at + 1] == "next:" and "neurflow app" in tail[at + 2] and any("neurflow query" in x for x in tail[at:])

    with Store(cfg) as store:
        circuits = store.run(
            "MATCH (cl:Class {model: 'fashion-resnet'})-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'}) "
            "OPTIONAL MATCH (c)-[:HAS_EVALUATION]->(e:Evaluation) "
            "RETURN cl.index AS class_index, c.params AS params, collect(DISTINCT e.kind) AS kinds ORDER BY class_index"
        )
        numbers = report(store, "fashion-resnet", "block2")
    assert [r["class_index"] for r in circuits] == list(range(10))
    for r in circuits:  # the demo's crop options are recorded on every circuit, and every page has content
        params = json.loads(r["params"])
        assert params["tau"] == 3 and params["granularities"] == [1.0, 0.5] and params["min_crop_std"] == 0.2
        assert sorted(r["kinds"]) == ["edge_weight", "fidelity", "optimality"]

    # selective circuits: at most a third of every analysed layer, classes that differ
    assert set(numbers["critical"]) == {"block1", "block2", "block3", "block4"}
    assert all(d["max"] <= GOAL_FRACTION for d in numbers["critical"].values()), numbers["critical"]
    assert numbers["jaccard"]["max"] - numbers["jaccard"]["min"] >= 0.1, numbers["jaccard"]
    assert min(h["classes"] for h in numbers["hubs"]) < 10, numbers["hubs"]
    assert numbers["evaluated_classes"] == 10 and set(numbers["fidelity"]) == set(numbers["critical"])

    # a second run finds everything complete and evaluated
    assert cli_main(ARGS) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (already complete)") == 10
    assert "demo: evaluating 0 circuits" in out and "10 already evaluated" in out
