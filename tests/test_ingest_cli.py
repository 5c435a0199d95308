"""`neurflow ingest` end to end: real trained model, real embedded store, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from itertools import combinations
from pathlib import Path

import pytest

from ingest.store.embedded import create_database
from cli.ingest_commands import parse_classes
from ingest.read.similarity import similarity_matrix
from ingest.queries.library import run_query
from ingest.store.connection import Store
from cli.main import main as cli_main
from neurflow.images import NeurflowInputError


ROOT = Path(__file__).resolve().parents[1]
# The rerun, kill and bad-input tests need real but quick circuits.
SMALL_ARGS = ["--tau", "3", "--k", "10", "--ig-steps", "8", "--max-images", "8", "--device", "cpu", "--quiet"]


def _counts(cfg) -> dict[str, int]:
    with Store(cfg) as s:
        return s.counts()


def test_parse_classes():
    assert parse_classes("all", 4) == [0, 1, 2, 3]
    assert parse_classes("3, 0,1-2", 10) == [0, 1, 2, 3]
    with pytest.raises(NeurflowInputError, match="out of range: the model has classes 0..9"):
        parse_classes("0,10", 10)
    with pytest.raises(NeurflowInputError, match="not a class index"):
        parse_classes("cat", 10)


def test_transient_store_errors():
    """What the per-class write (and the Ray executor) retries, and what it must not."""
    from neo4j import exceptions as nx

    from ingest.store.errors import StoreAuthError, StoreQueryError, StoreUnavailable
    from ingest.jobs.pipeline import is_transient_store_error

    assert is_transient_store_error(StoreQueryError("the store refused the query: Duplicated key [m] found on index 'Model[uid]'"))
    assert is_transient_store_error(StoreQueryError("the store refused the query: ConcurrentModificationException on #3:1"))
    assert is_transient_store_error(StoreUnavailable("cannot reach the store at bolt://x:7687"))
    assert is_transient_store_error(nx.ServiceUnavailable("gone"))
    assert not is_transient_store_error(StoreQueryError("the store refused the query: Invalid input 'MATC'"))
    assert not is_transient_store_error(StoreAuthError("refused the login"))
    assert not is_transient_store_error(NeurflowInputError("class index 12 out of range"))
    assert not is_transient_store_error(RuntimeError("Duplicated key"))  # only store errors


def test_all_classes_ingested_complete(ingested):
    cfg, circuits = ingested
    with Store(cfg) as s:
        rows = s.run("MATCH (c:Circuit) RETURN c.uid AS uid, c.status AS status, c.class_index AS cls")
    assert sorted(r["cls"] for r in rows) == list(range(10))
    assert {r["status"] for r in rows} == {"complete"}
    assert {r["uid"] for r in rows} == {c.uid for c in circuits.values()}


def test_library_queries_match_the_circuits(ingested):
    cfg, circuits = ingested
    model = circuits[0].model
    with Store(cfg) as s:
        for a, b in [(0, 6), (1, 3), (7, 9)]:
            rows = {r["layer"]: r for r in run_query(s, "shared_neurons", model=model, class_a=a, class_b=b)}
            for d in circuits[a].depths:
                name = circuits[a].layers[d].name
                sa, sb = set(circuits[a].critical(d)), set(circuits[b].critical(d))
                assert sorted(rows[name]["shared_channels"]) == sorted(sa & sb)
                assert rows[name]["jaccard"] == pytest.approx(len(sa & sb) / len(sa | sb) if sa | sb else 0.0)
        layer = circuits[0].layers[2].name
        matrix = run_query(s, "similarity_matrix", model=model, layer=layer, limit=None)  # every row of the matrix
        got = {(r["class_a"], b): j for r in matrix for b, j in zip(r["classes_b"], r["jaccard"], strict=True)}
        client = similarity_matrix(s, model=model, layer=layer)  # the same from one channel list per class
        assert client.classes == list(range(10))
        for a, b in combinations(range(10), 2):
            sa, sb = set(circuits[a].critical(2)), set(circuits[b].critical(2))
            assert got[(a, b)] == pytest.approx(len(sa & sb) / len(sa | sb))
            assert client.jaccard[a, b] == pytest.approx(len(sa & sb) / len(sa | sb))
        hubs = run_query(s, "hub_neurons", model=model, limit=5)
        expected = {}
        for c in circuits.values():
            for n in c.neurons:
                if n.depth > 0:
                    key = (c.layers[n.depth].name, n.channel)
                    expected[key] = expected.get(key, 0) + 1
        top = max(expected.values())
        assert hubs[0]["classes"] == top
        layer_name, channel = hubs[0]["layer"], hubs[0]["channel"]
        assert expected[(layer_name, channel)] == top
        reverse = run_query(s, "reverse_lookup", model=model, layer=layer_name, channel=channel)
        assert len({r["class_index"] for r in reverse}) == top


def test_thumbnails_written_for_representative_crops(ingested, ingested_artifacts):
    cfg, _ = ingested
    with Store(cfg) as s:
        rows = s.run("MATCH (:Concept)-[:EXEMPLIFIED_BY]->(k:Crop) RETURN DISTINCT k.thumbnail AS t")
    assert rows and all(r["t"] for r in rows)
    for r in rows[:50]:
        path = ingested_artifacts / r["t"]
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fresh_db(store_server) -> dict[str, str]:
    name = "ing_" + uuid.uuid4().hex[:8]
    create_database(store_server, name)
    return {"NEURFLOW_STORE_DATABASE": name}


def _ingest(env: dict[str, str], *extra: str, classes: str = "4") -> int:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return cli_main(["ingest", "--model", "fashion-cnn", "--classes", classes, *SMALL_ARGS, *extra])
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_rerun_is_idempotent_and_new_params_sit_beside(store_server, trained_model, tmp_path, capsys):
    env = {**_fresh_db(store_server), "NEURFLOW_ARTIFACT_DIR": str(tmp_path)}
    cfg = store_server.with_database(env["NEURFLOW_STORE_DATABASE"])
    assert _ingest(env) == 0
    first = _counts(cfg)
    assert _ingest(env) == 0
    assert "skipped" in capsys.readouterr().out
    assert _counts(cfg) == first
    assert _ingest(env, "--force") == 0
    assert _counts(cfg) == first
    assert _ingest(env, "--seed", "1") == 0
    with Store(cfg) as s:
        rows = s.run("MATCH (:Class {index: 4})-[:HAS_CIRCUIT]->(c:Circuit) RETURN c.status AS st")
    assert [r["st"] for r in rows] == ["complete", "complete"]


def test_sigkill_mid_write_then_resume_leaves_no_duplicates(store_server, trained_model, tmp_path):
    """Kill a real ingestion process while it writes; the rerun cleans and finishes the circuit."""
    env = {**_fresh_db(store_server), "NEURFLOW_ARTIFACT_DIR": str(tmp_path)}
    cfg = store_server.with_database(env["NEURFLOW_STORE_DATABASE"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "ingest", "--model", "fashion-cnn", "--classes", "5", *SMALL_ARGS,
         "--write-batch", "25"],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    seen_running = False
    deadline = time.time() + 240
    with Store(cfg) as s:
        while time.time() < deadline and proc.poll() is None:
            rows = s.run("MATCH (c:Circuit) RETURN c.status AS st")
            n_feeds = s.run("MATCH ()-[f:FEEDS]->() RETURN count(f) AS n")[0]["n"]
            if rows and rows[0]["st"] == "running" and n_feeds > 0:
                seen_running = True
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    proc.wait(timeout=60)
    assert seen_running, proc.stderr.read().decode()[-2000:]
    with Store(cfg) as s:
        assert s.run("MATCH (c:Circuit {status: 'complete'}) RETURN count(c) AS n")[0]["n"] == 0
    assert _ingest(env, classes="5") == 0
    resumed = _counts(cfg)
    clean = {**_fresh_db(store_server), "NEURFLOW_ARTIFACT_DIR": str(tmp_path)}
    assert _ingest(clean, classes="5") == 0
    assert resumed == _counts(store_server.with_database(clean["NEURFLOW_STORE_DATABASE"]))
    with Store(cfg) as s:
        assert s.run("MATCH (c:Circuit) RETURN c.status AS st")[0]["st"] == "complete"


@pytest.mark.parametrize(
    "case",
    ["store_down", "wrong_password", "unknown_database", "unknown_model", "bad_weights", "empty_folder", "class_range"],
)
def test_bad_input_one_line_and_store_unchanged(case, ingested, tmp_path, capsys):
    cfg, _ = ingested
    before = _counts(cfg)
    env = {"NEURFLOW_STORE_DATABASE": cfg.database}
    args = ["--classes", "0"]
    if case == "store_down":
        env = {"NEURFLOW_STORE_URI": "bolt://127.0.0.1:9", "NEURFLOW_STORE_USER": "x", "NEURFLOW_STORE_PASSWORD": "y"}
    elif case == "wrong_password":
        env = {"NEURFLOW_STORE_URI": cfg.uri, "NEURFLOW_STORE_USER": cfg.user, "NEURFLOW_STORE_PASSWORD": "wrong",
               "NEURFLOW_STORE_DATABASE": cfg.database}
    elif case == "unknown_database":
        env = {"NEURFLOW_STORE_URI": cfg.uri, "NEURFLOW_STORE_USER": cfg.user, "NEURFLOW_STORE_PASSWORD": cfg.password,
               "NEURFLOW_STORE_DATABASE": "no_such_db"}
    elif case == "unknown_model":
        args = ["--model", "resnet9000", "--classes", "0"]
    elif case == "bad_weights":
        bad = tmp_path / "w.pt"
        bad.write_bytes(b"not a state dict")
        args = ["--model", "resnet50", "--weights", str(bad), "--classes", "0", "--data", str(tmp_path)]
    elif case == "empty_folder":
        (tmp_path / "imgs" / "T-shirt_top").mkdir(parents=True)  # class 0's sub-folder, empty
        args = ["--data", str(tmp_path / "imgs"), "--classes", "0"]
    elif case == "class_range":
        args = ["--classes", "0,12"]
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = cli_main(["ingest", *SMALL_ARGS, *(["--model", "fashion-cnn"] if "--model" not in args else []), *args])
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    err = capsys.readouterr().err.strip().splitlines()
    store_failure = case in ("store_down", "wrong_password", "unknown_database")  # runtime failures: exit 1
    assert code == (1 if store_failure else 2)
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert _counts(cfg) == before
