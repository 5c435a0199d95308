"""The circuit writer against a real embedded ArcadeDB: schema, counts, idempotency, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from ingest.store.errors import StoreQueryError
from ingest.queries.library import run_query
from ingest.store.schema import LABELS, ensure_schema
from ingest.write.writer import WriteOptions, circuit_status, delete_circuit, set_group_labels, write_circuit
from tests.fixtures_store import expected_counts, make_circuit, model_info

ROOT = Path(__file__).resolve().parent.parent


def counts(store) -> dict[str, int]:
    return {k: v for k, v in store.counts().items() if v}


def nonzero(d: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in d.items() if v}


def test_schema_constraints_idempotent(store):
    ensure_schema(store, again=True)  # a second time is a no-op
    rows = store.run("SHOW CONSTRAINTS")
    labels = {lab for r in rows if r["type"] == "UNIQUENESS" and r["properties"] == ["uid"] for lab in r["labelsOrTypes"]}
    assert labels == set(LABELS)
    assert len(rows) == len(LABELS)


def test_uid_uniqueness_is_enforced(store):
    store.run("CREATE (:Neuron {uid: 'x'})")
    with pytest.raises(StoreQueryError):
        store.run("CREATE (:Neuron {uid: 'x'})")


def test_write_counts_and_properties(store, tmp_path):
    c = make_circuit(1)
    pictures = []

    def thumb(crop_id: int) -> Image.Image:
        pictures.append(crop_id)
        return Image.new("RGB", (200, 150), (crop_id * 20 % 255, 10, 10))

    st = write_circuit(store, c, tmp_path, model_info=model_info(), thumbnails=thumb)
    assert st.action == "written" and st.relationships > 0 and st.thumbnails == len(set(pictures)) > 0
    assert counts(store) == nonzero(expected_counts([c]))

    circ = store.run("MATCH (c:Circuit {uid: $u}) RETURN properties(c) AS p", u=c.uid)[0]["p"]
    assert circ["status"] == "complete" and circ["params_hash"] == c.identity.param_set
    assert (circ["layers"], circ["data_source"], circ["data_fingerprint"], circ["precision"], circ["method_version"]) == (
        [r.name for r in c.layers[1:]], c.data_source, c.data_fingerprint, c.precision, c.method_version)
    assert json.loads(circ["params"]) == c.identity.param_set_dict()
    assert circ["tau"] == c.params.tau and circ["granularities"] == list(c.params.granularities)
    assert circ["num_neurons"] == len(c.neurons) and circ["num_feeds"] == len(c.core)
    m = store.run("MATCH (m:Model) RETURN properties(m) AS p")[0]["p"]
    assert {k: m[k] for k in model_info()} == model_info() and m["uid"] == c.model and m["created_at"]
    layers = store.run("MATCH (:Model)-[:HAS_LAYER]->(l:Layer) RETURN l.name AS name, l.depth AS depth, l.channels AS ch ORDER BY depth")
    assert [(r["name"], r["depth"], r["ch"]) for r in layers] == [(rec.name, rec.depth, rec.channels) for rec in c.layers]
    # FEEDS carry circuit, class, importance, rank exactly as the core records
    feeds = store.run(
        "MATCH (v:Neuron)-[f:FEEDS]->(u:Neuron) RETURN v.depth AS vd, v.channel AS v, u.depth AS ud, u.channel AS u, "
        "f.circuit AS circuit, f.class_index AS ci, f.importance AS imp, f.rank AS rank"
    )
    assert {(r["ud"], r["u"], r["v"], r["rank"], r["imp"]) for r in feeds} == {
        (r.depth, r.channel, r.lower_channel, r.rank, r.importance) for r in c.core
    }
    assert all(r["vd"] == r["ud"] + 1 and r["circuit"] == c.uid and r["ci"] == 1 for r in feeds)
    drives = store.run("MATCH (v:Neuron)-[d:DRIVES]->(k:Concept) RETURN v.channel AS v, k.depth AS d, k.channel AS u, k.index AS j, d.weight AS w")
    assert {(r["d"], r["u"], r["j"], r["v"], r["w"]) for r in drives} == {(e.depth, e.channel, e.concept, e.lower_channel, e.weight) for e in c.edges}
    # representative crops: EXEMPLIFIED_BY {rank, activation}, thumbnails as small PNGs
    reps = store.run(
        "MATCH (k:Concept)-[e:EXEMPLIFIED_BY]->(cr:Crop)-[:CROP_OF]->(im:Image) "
        "RETURN k.channel AS ch, k.depth AS d, k.index AS j, e.rank AS rank, e.activation AS act, cr.thumbnail AS thumb, im.source AS src"
    )
    assert {(r["d"], r["ch"], r["j"], r["rank"], r["act"]) for r in reps} == {
        (m.depth, m.channel, m.concept, m.rep_rank, m.activation) for m in c.concept_members if m.rep_rank >= 0
    }
    ch = c.critical(1)[0]
    (first, *_) = run_query(store, "neuron_concepts", model=c.model, class_index=1, layer="layer3", channel=ch)
    assert first["thumbnails"] == [x["thumbnail"] for x in first["exemplars"]] and first["thumbnails"]
    for r in reps:
        png = tmp_path / r["thumb"]
        assert png.is_file() and not Path(r["thumb"]).is_absolute()
        with Image.open(png) as im:
            assert im.format == "PNG" and max(im.size) <= 128


def test_rerun_is_idempotent_and_force_rewrites(store):
    c = make_circuit(2)
    write_circuit(store, c, model_info=model_info())
    before = counts(store)
    again = write_circuit(store, c, model_info=model_info())
    assert again.skipped and counts(store) == before
    group = store.run("MATCH (g:Group {circuit: $u}) RETURN g.uid AS uid ORDER BY uid LIMIT 1", u=c.uid)[0]["uid"]
    assert set_group_labels(store, [{"uid": group, "label": "stripes", "label_source": "manual", "label_score": 0.9}]) == 1
    forced = write_circuit(store, c, force=True, model_info=model_info())
    assert forced.action == "rewritten" and forced.cleaned["feeds"] == len(c.core)
    assert counts(store) == before
    assert circuit_status(store, c.uid) == "complete"
    kept = store.run("MATCH (g:Group {uid: $g}) RETURN g.label AS label, g.label_source AS src", g=group)[0]
    assert kept == {"label": "stripes", "src": "manual"}  # a forced rewrite keeps the labels


def test_new_parameters_make_a_new_circuit_beside_the_old(store):
    from neurflow.circuit import Params

    a = make_circuit(0)
    b = make_circuit(0, params=Params(tau=2, k=4, ig_steps=8, granularities=(1.0,), num_representatives=1))
    assert a.uid != b.uid
    write_circuit(store, a)
    write_circuit(store, b)
    assert counts(store) == nonzero(expected_counts([a, b]))
    rows = store.run("MATCH (:Class {index: 0})-[:HAS_CIRCUIT]->(c:Circuit) RETURN c.uid AS uid ORDER BY uid")
    assert {r["uid"] for r in rows} == {a.uid, b.uid}


def test_neurons_are_shared_across_classes(store):
    cs = [make_circuit(i) for i in range(3)]
    for c in cs:
        write_circuit(store, c)
    got = counts(store)
    assert got == nonzero(expected_counts(cs))
    shared = set(cs[0].critical(2)) & set(cs[1].critical(2))
    assert shared  # the builder makes classes overlap
    for ch in shared:
        rows = store.run(
            "MATCH (c:Circuit)-[:INCLUDES]->(n:Neuron {uid: $n}) RETURN count(c) AS k, count(DISTINCT n) AS nodes",
            n=f"testnet/layer2/{ch}",
        )
        assert rows[0]["nodes"] == 1 and rows[0]["k"] >= 2


def test_partial_running_circuit_is_ignored_then_cleaned_on_rerun(store):
    done, crashed = make_circuit(0), make_circuit(1)
    write_circuit(store, done)
    write_circuit(store, crashed, options=WriteOptions(stop_after="drives"))  # as if the process died after the DRIVES batches
    assert circuit_status(store, crashed.uid) == "running"
    # readers never see it
    rows = run_query(store, "overview")
    assert [r["circuit"] for r in rows] == [done.uid]
    assert run_query(store, "class_circuit", model="testnet", class_index=1) == []
    assert {r["circuit"] for r in run_query(store, "overview", include_incomplete=True)} == {done.uid, crashed.uid}
    # rerun: cleaned and rewritten, no duplicates, the other circuit untouched
    st = write_circuit(store, crashed)
    assert st.action == "rewritten" and st.cleaned["concepts"] == len(crashed.concepts)
    assert circuit_status(store, crashed.uid) == "complete"
    assert counts(store) == nonzero(expected_counts([done, crashed]))


@pytest.mark.parametrize("stop", ["head", "neurons", "feeds:first", "concepts", "groups", "crops"])
def test_crash_at_any_step_leaves_no_duplicates(store, stop):
    c = make_circuit(3)
    write_circuit(store, c, options=WriteOptions(batch_size=7, stop_after=stop))
    assert circuit_status(store, c.uid) == "running"
    write_circuit(store, c, options=WriteOptions(batch_size=7))
    assert counts(store) == nonzero(expected_counts([c]))


def test_failed_write_is_marked_failed_and_rewritten(store, monkeypatch):
    import ingest.write.statements as statements

    c = make_circuit(1)
    monkeypatch.setattr(statements, "Q_GROUPS", "UNWIND $rows AS r MERGE (g:Group {uid: r.uid}) RETURN nosuchfunction(r)")
    with pytest.raises(StoreQueryError):
        write_circuit(store, c)
    assert circuit_status(store, c.uid) == "failed"
    monkeypatch.undo()
    assert write_circuit(store, c).action == "rewritten"
    assert counts(store) == nonzero(expected_counts([c]))


def test_delete_circuit_keeps_shared_nodes(store):
    a, b = make_circuit(0), make_circuit(1)
    write_circuit(store, a)
    write_circuit(store, b)
    out = delete_circuit(store, b.uid)
    assert out["circuits"] == 1
    got = counts(store)
    want = nonzero(expected_counts([a]))
    # Neuron nodes are the model's structure and stay; everything else is exactly circuit a's
    assert got.pop("Neuron") >= want.pop("Neuron") and got.pop("HAS_NEURON") >= want.pop("HAS_NEURON")
    got.pop("Class"), want.pop("Class"), got.pop("HAS_CLASS"), want.pop("HAS_CLASS")
    assert got == want


_KILL_CHILD = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, os.environ["ROOT"])
    import ingest.store.runner as session
    import ingest.write.writer as writer
    from ingest.store.config import StoreConfig
    from ingest.store.connection import Store
    from tests.fixtures_store import make_circuit

    slow = session.Runner.execute
    def execute(self, work, params=None, *, write=True):
        out = slow(self, work, params, write=write)
        time.sleep(0.05)  # many small transactions, so the kill lands in the middle
        return out
    session.Runner.execute = execute
    cfg = StoreConfig(uri=os.environ["URI"], user="root", password=os.environ["PW"], database=os.environ["DB"])
    print("writing", flush=True)
    writer.write_circuit(Store(cfg), make_circuit(2), options=writer.WriteOptions(batch_size=3))
    print("finished", flush=True)
    """
)


def test_sigkill_mid_write_then_rerun(store):
    cfg = store.config
    c = make_circuit(2)
    env = {**os.environ, "ROOT": str(ROOT), "URI": cfg.uri, "PW": cfg.password, "DB": cfg.database}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = store.run("MATCH ()-[f:FEEDS]->() WHERE f.circuit = $u RETURN count(f) AS n", u=c.uid)[0]["n"]
            if n > 0:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "finished" not in proc.stdout.read()
    assert circuit_status(store, c.uid) == "running"
    partial = counts(store)
    assert 0 < partial.get("FEEDS", 0) < len(c.core) + 1
    assert run_query(store, "overview") == []
    st = write_circuit(store, c)
    assert st.action == "rewritten"
    assert counts(store) == nonzero(expected_counts([c]))
    assert circuit_status(store, c.uid) == "complete"


def test_write_through_a_bare_driver_and_session(store):
    c = make_circuit(0)
    st = write_circuit(store.driver, c, options=WriteOptions(database=store.database))
    assert st.action == "written"
    with store.session() as session:
        assert write_circuit(session, c).skipped
    assert counts(store) == nonzero(expected_counts([c]))


def test_thumbnails_need_an_artifact_folder(store):
    with pytest.raises(ValueError, match="artifact_dir"):
        write_circuit(store, make_circuit(0), None, thumbnails=lambda i: Image.new("RGB", (4, 4)))


def test_export_formats(store, tmp_path, monkeypatch, capsys):
    import xml.etree.ElementTree as ET

    import pyarrow.parquet as pq

    from cli.main import main

    done = [make_circuit(0), make_circuit(1)]
    for c in done:
        write_circuit(store, c, model_info=model_info())
    write_circuit(store, make_circuit(2), options=WriteOptions(stop_after="head"))  # running: not exported
    want = nonzero(expected_counts(done))
    want["Class"] = want["HAS_CLASS"] = 3  # classes are model structure; class 2 has no complete circuit yet
    del want["NeuronStat"], want["LayerStat"], want["CircuitFeeds"]  # the writer's aggregates: derived data, not exported

    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", store.database)
    assert main(["export", "--format", "json", "--out", str(tmp_path / "g.json")]) == 0
    assert "exported" in capsys.readouterr().out
    payload = json.loads((tmp_path / "g.json").read_text())
    got: dict[str, int] = {}
    for n in payload["nodes"]:
        got[n["label"]] = got.get(n["label"], 0) + 1
    for r in payload["relationships"]:
        got[r["type"]] = got.get(r["type"], 0) + 1
    assert got == want
    uids = {n["uid"] for n in payload["nodes"]}
    assert all(r["start"] in uids and r["end"] in uids for r in payload["relationships"])

    assert main(["export", "--format", "parquet", "--out", str(tmp_path / "pq")]) == 0
    assert pq.read_table(tmp_path / "pq" / "nodes_Circuit.parquet").num_rows == 2
    feeds = pq.read_table(tmp_path / "pq" / "rels_FEEDS.parquet").to_pylist()
    assert len(feeds) == want["FEEDS"] and {"start", "end", "circuit", "importance", "rank"} <= set(feeds[0])

    assert main(["export", "--format", "graphml", "--out", str(tmp_path / "g.graphml")]) == 0
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    graph = ET.parse(tmp_path / "g.graphml").getroot().find("g:graph", ns)
    assert len(graph.findall("g:node", ns)) == len(payload["nodes"])
    assert len(graph.findall("g:edge", ns)) == len(payload["relationships"])

    assert main(["export", "--format", "json", "--out", str(tmp_path / "x.json"), "--model", "no-such-model"]) == 0
    assert json.loads((tmp_path / "x.json").read_text())["nodes"] == []


def test_rewrite_and_delete_drop_the_circuits_evaluations(store, tmp_path):
    """Evaluations describe one written circuit: a forced rewrite or a delete removes them."""
    c = make_circuit(2)
    write_circuit(store, c, tmp_path, model_info=model_info())
    link = ("MATCH (c:Circuit {uid: $uid}) CREATE (c)-[:HAS_EVALUATION]->"
            "(:Evaluation {uid: $uid + '/e', kind: 'fidelity', value: 0.5})")
    count = "MATCH (e:Evaluation) RETURN count(e) AS n"
    store.write(link, {"uid": c.uid})
    assert store.run(count)[0]["n"] == 1
    st = write_circuit(store, c, tmp_path, model_info=model_info(), force=True)
    assert st.cleaned["evaluations"] == 1 and store.run(count)[0]["n"] == 0
    store.write(link, {"uid": c.uid})
    assert delete_circuit(store, c.uid)["evaluations"] == 1
    assert store.run(count)[0]["n"] == 0


def test_the_same_image_file_twice_is_one_image_and_its_crops_one_crop_each(store):
    from dataclasses import replace

    c = make_circuit(1)
    first = c.images[0]
    # image 1 is a copy of image 0 (same bytes, so the same sha256): their crops coincide
    c.images[1] = replace(c.images[1], sha256=first.sha256)
    st = write_circuit(store, c)
    assert st.action == "written"
    crops = {cr.crop_id: cr for cr in c.crops}
    sha = {im.image_id: im.sha256 for im in c.images}
    reps = {m.crop_id for m in c.concept_members if m.rep_rank >= 0}
    want = {(sha[crops[i].image_id], crops[i].x0, crops[i].y0, crops[i].x1, crops[i].y1) for i in reps}
    assert store.run("MATCH (cr:Crop) RETURN count(cr) AS n")[0]["n"] == len(want)
    assert store.run("MATCH (im:Image) RETURN count(im) AS n")[0]["n"] == len({s for s, *_ in want})
