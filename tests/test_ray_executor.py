"""Distributed ingestion (`neurflow ingest --executor ray`) on a real local Ray cluster (2 CPUs),
the real trained demo model and the embedded store.

- A worker is really killed: the first attempt of one class writes part of its circuit and then
  SIGKILLs its own worker process (fault injection, `NEURFLOW_RAY_KILL_CLASSES`); Ray retries the
  class, the retry cleans the partial circuit, every class ends `complete` exactly once, with
  exactly the nodes and relationships of its circuit, and the command exits 0.  In the same run
  another class's first attempt meets a transient store error (`NEURFLOW_RAY_STORE_ERROR_CLASSES`)
  and is retried through `retry_exceptions`.
- A user-input error found inside a task (an unreadable image) is not retried and fails the
  command with one `error:` line.
- Bad input (class list, model) fails in the driver before Ray starts: no task runs, the store
  is unchanged.  Without Ray installed, `--executor ray` is one `error:` line.
- Concurrent writers (what parallel tasks are) race on the shared Model/Layer/Neuron nodes; the
  per-class write is retried on those conflicts and every circuit lands whole.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from ingest.store.embedded import create_database
from ingest.store.connection import Store
from cli.main import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed: pip install 'neurflow-store[ray]' (ray==2.60.0)"
)
# Real circuits, as small as the method allows to stay meaningful (test_ingest_cli's kill test uses these too).
SMALL_ARGS = ["--tau", "3", "--k", "10", "--ig-steps", "8", "--max-images", "8", "--device", "cpu", "--quiet"]
_RAY_ENV = ("RAY_ADDRESS", "NEURFLOW_RAY_FAULT_DIR", "NEURFLOW_RAY_KILL_CLASSES", "NEURFLOW_RAY_STORE_ERROR_CLASSES")


def _fresh_db(store_server) -> str:
    name = "ray_" + uuid.uuid4().hex[:8]
    create_database(store_server, name)
    return name


def _counts(cfg) -> dict[str, int]:
    with Store(cfg) as s:
        return s.counts()


def _run_cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`neurflow ingest --executor ray ...` as its own process (the Ray driver), local Ray of 2 CPUs."""
    full = {k: v for k, v in os.environ.items() if k not in _RAY_ENV}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "cli", "ingest", "--executor", "ray", "--ray-cpus", "2",
         "--model", "fashion-cnn", *SMALL_ARGS, *args],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _attempts(folder: Path, c: int) -> list[str]:
    path = folder / f"class-{c}.attempts"
    return path.read_text().splitlines() if path.exists() else []


def _table_rows(stdout: str) -> dict[int, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


@needs_ray
@pytest.mark.slow
def test_killed_worker_is_retried_and_every_class_is_complete_once(store_server, trained_model, tmp_path):
    from neurflow.circuit import Circuit

    db = _fresh_db(store_server)
    cfg = store_server.with_database(db)
    faults, saved = tmp_path / "faults", tmp_path / "circuits"
    classes, killed, store_error = [1, 2, 4], 2, 4
    env = {
        "NEURFLOW_STORE_DATABASE": db, "NEURFLOW_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "NEURFLOW_RAY_FAULT_DIR": str(faults), "NEURFLOW_RAY_KILL_CLASSES": str(killed),
        "NEURFLOW_RAY_STORE_ERROR_CLASSES": str(store_error),
    }  # fmt: skip
    t0 = time.perf_counter()
    proc = _run_cli(env, "--classes", ",".join(map(str, classes)), "--save-circuits", str(saved))
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"ray ingestion of {len(classes)} classes with one killed worker: {seconds:.1f} s")

    # the killed class ran twice, in two different worker processes; the class whose first attempt
    # met a (transient) store error ran twice (retry_exceptions); the other one once
    assert (faults / f"class-{killed}.killed").exists() and (faults / f"class-{store_error}.store-error").exists()
    runs = _attempts(faults, killed)
    assert len(runs) == 2 and runs[0].split()[1] != runs[1].split()[1], runs
    assert len(_attempts(faults, store_error)) == 2
    assert all(len(_attempts(faults, c)) == 1 for c in classes if c not in (killed, store_error))

    # the summary table: the retry found the partial circuit and rewrote it (another class may have
    # been rewritten too, when its write lost a race with a concurrent task and was written again)
    rows = _table_rows(proc.stdout)
    assert sorted(rows) == classes
    assert rows[killed][2] == "rewritten" and all(rows[c][2] in ("written", "rewritten") for c in classes)

    circuits = {c: Circuit.load(saved / f"class-{c}") for c in classes}
    with Store(cfg) as s:
        stored = s.run("MATCH (c:Circuit) RETURN c.uid AS uid, c.class_index AS cls, c.status AS status")
        assert sorted(r["cls"] for r in stored) == classes  # exactly one circuit per class
        assert {r["status"] for r in stored} == {"complete"}
        assert {r["uid"] for r in stored} == {c.uid for c in circuits.values()}
        for c, circuit in circuits.items():
            one = lambda cypher: s.run(cypher, uid=circuit.uid)[0]["n"]  # noqa: E731
            head = s.run("MATCH (c:Circuit {uid: $uid}) RETURN c.num_neurons AS neurons, c.num_feeds AS feeds", uid=circuit.uid)[0]
            feeds = s.run("MATCH (v)-[f:FEEDS]->(u) WHERE f.circuit = $uid RETURN v.uid AS v, u.uid AS u", uid=circuit.uid)
            assert len(feeds) == len({(r["v"], r["u"]) for r in feeds}) == head["feeds"] == len(circuit.core), c
            assert one("MATCH (:Circuit {uid: $uid})-[i:INCLUDES]->() RETURN count(i) AS n") == head["neurons"] == len(circuit.neurons)
            assert one("MATCH ()-[d:DRIVES]->() WHERE d.circuit = $uid RETURN count(d) AS n") == len(circuit.edges), c
            assert one("MATCH (:Circuit {uid: $uid})-[:HAS_CONCEPT]->(k) RETURN count(k) AS n") == len(circuit.concepts), c
            assert one("MATCH (:Circuit {uid: $uid})-[:HAS_GROUP]->(g) RETURN count(g) AS n") == len(
                {(m.depth, m.group) for m in circuit.group_members}
            ), c
        # nothing of the killed attempt is left over, and no shared node was created twice
        counts = s.counts()
        assert counts["Concept"] == sum(len(k.concepts) for k in circuits.values())
        assert counts["FEEDS"] == sum(len(k.core) for k in circuits.values())
        assert counts["Group"] == sum(len({(m.depth, m.group) for m in k.group_members}) for k in circuits.values())
        for label in ("Model", "Class", "Layer", "Neuron", "Image", "Crop"):
            row = s.run(f"MATCH (n:{label}) RETURN count(n) AS n, count(DISTINCT n.uid) AS d")[0]
            assert row["n"] == row["d"], label

    # a rerun skips every class in the driver: no task runs, nothing changes
    before = _counts(cfg)
    again = _run_cli({**env, "NEURFLOW_RAY_FAULT_DIR": str(tmp_path / "faults2")}, "--classes", ",".join(map(str, classes)))
    assert again.returncode == 0, again.stderr[-2000:]
    assert all(r[2] == "skipped" for r in _table_rows(again.stdout).values())
    assert not (tmp_path / "faults2").exists()
    assert _counts(cfg) == before


@needs_ray
@pytest.mark.slow
def test_user_error_in_a_task_is_not_retried(store_server, trained_model, tmp_path):
    """The driver reads one image per class; a broken second image is found by the task: one try, one line."""
    from PIL import Image

    data = tmp_path / "imgs"
    for cls in ("T-shirt_top", "Trouser"):  # classes 0 and 1, matched by name
        (data / cls).mkdir(parents=True)
        Image.fromarray(np.full((28, 28), 128, dtype=np.uint8), mode="L").save(data / cls / "0.png")
    (data / "Trouser" / "1.png").write_bytes(b"not a png at all")
    db = _fresh_db(store_server)
    env = {"NEURFLOW_STORE_DATABASE": db, "NEURFLOW_ARTIFACT_DIR": str(tmp_path / "artifacts"),
           "NEURFLOW_RAY_FAULT_DIR": str(tmp_path / "faults")}  # fmt: skip
    proc = _run_cli(env, "--classes", "1", "--data", str(data), "--all-images")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "class 1" in errors[0] and "cannot read image" in errors[0] and "1.png" in errors[0], proc.stderr
    assert len(_attempts(tmp_path / "faults", 1)) == 1  # not retried
    with Store(store_server.with_database(db)) as s:
        assert s.run("MATCH (c:Circuit) RETURN count(c) AS n")[0]["n"] == 0


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _cli_in_process(env: dict[str, str], *args: str) -> int:
    old = {k: os.environ.get(k) for k in (*env, *_RAY_ENV)}
    for k in _RAY_ENV:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        return cli_main(["ingest", "--executor", "ray", "--ray-cpus", "2", *SMALL_ARGS, *args])
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@needs_ray
@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "fashion-cnn", "--classes", "1,12"], "class index 12 out of range"),
        (["--model", "fashion-cnn", "--classes", "cat"], "unknown class 'cat': close matches: Coat (4)"),
        (["--model", "resnet9000", "--classes", "0"], "unknown model"),
        (["--model", "fashion-cnn", "--classes", "0", "--layers", "block1,block4"], "ordered top to bottom"),
        (["--model", "fashion-cnn", "--classes", "0", "--ray-task-gpus", "1.5"], "--ray-task-gpus"),
        (["--model", "fashion-cnn", "--classes", "0", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
        pytest.param(
            ["--model", "fashion-cnn", "--classes", "0", "--device", "cuda"], "the Ray cluster has no GPUs",
            marks=pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: the local Ray cluster has one"),
        ),  # checked against the started cluster, before any task
    ],
)
def test_bad_input_fails_in_the_driver_before_any_task(args, message, store_server, trained_model, tmp_path, capsys):
    import ray

    db = _fresh_db(store_server)
    cfg = store_server.with_database(db)
    with Store(cfg) as s:
        s.run("CREATE (:Model {uid: 'already-here'})")
    before = _counts(cfg)
    faults = tmp_path / "faults"
    code = _cli_in_process({"NEURFLOW_STORE_DATABASE": db, "NEURFLOW_RAY_FAULT_DIR": str(faults)}, *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not ray.is_initialized()  # never started (or shut down again); no task ran
    assert not faults.exists()
    assert _counts(cfg) == before


def test_without_ray_the_executor_is_one_error_line(store_server, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = _cli_in_process({}, "--model", "fashion-cnn", "--classes", "0")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["error: --executor ray needs Ray, which is not installed: pip install 'neurflow-store[ray]' (ray==2.60.0)"]


def test_concurrent_writers_retry_conflicts(store, tmp_path):
    """Six writers at once on one model: ArcadeDB refuses the MERGEs that lose a race (duplicated
    key); `write_with_retries` writes those circuits again and every circuit lands whole."""
    from ingest.jobs.pipeline import write_with_retries
    from ingest.write.writer import WriteOptions
    from tests.fixtures_store import expected_counts, make_circuit, model_info

    circuits = [make_circuit(i, layers=[("logits", 8), ("layer3", 8), ("layer2", 8), ("layer1", 6)]) for i in range(6)]
    barrier = threading.Barrier(len(circuits))
    errors: list[BaseException] = []
    actions: dict[int, str] = {}

    def write(circuit) -> None:
        try:
            with Store(store.config) as s:
                barrier.wait()
                stats = write_with_retries(s, circuit, tmp_path, model_info=model_info(), options=WriteOptions(batch_size=5))
                actions[circuit.class_index] = stats.action
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in circuits]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    assert sorted(actions) == list(range(6))
    got = store.counts()
    expected = expected_counts(circuits)
    assert {k: got.get(k, 0) for k in expected} == expected
    assert {r["st"] for r in store.run("MATCH (c:Circuit) RETURN c.status AS st")} == {"complete"}


def test_task_model_and_store_errors_without_a_cluster(trained_model, tmp_path):
    """`run_class` called directly: the payload rebuilds the driver's model exactly, and an
    unreachable store becomes `TransientStoreError`, the exception type Ray retries."""
    import torch

    from ingest.store.config import StoreConfig
    from ingest.jobs.pipeline import IngestRequest
    from ingest.jobs.ray_executor import ClassJob, ModelPayload, TransientStoreError, run_class
    from neurflow.circuit import Params
    from neurflow.method import Budget

    payload = ModelPayload.from_loaded(trained_model)
    rebuilt = payload.load("cpu")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt.module(x), trained_model.module(x))
    assert (rebuilt.uid, rebuilt.weights_sha256, rebuilt.class_names) == (
        trained_model.uid, trained_model.weights_sha256, trained_model.class_names,
    )  # fmt: skip

    request = IngestRequest(None, "fashion-mnist", [1], Params(tau=3, k=10, ig_steps=8, max_images=8),
                            list(trained_model.spec.layers), Budget())
    job = ClassJob(request=request, artifacts=str(tmp_path))
    threads = torch.get_num_threads()
    try:
        with pytest.raises(TransientStoreError, match="cannot reach the store"):
            run_class(payload, StoreConfig(uri="bolt://127.0.0.1:9", user="x", password="y"), job, 1)
    finally:
        torch.set_num_threads(threads)
