"""Concept labelling (spec §10) against a local chat-completions server (http.server in a thread).

The server checks every request strictly (model, messages, content parts of type text /
image_url with data:image/png;base64 URLs that decode to PNGs) and answers from fixtures: the
label request with a label naming the group's first crop, the check with exactly the images of
that group.  Failure modes are switched on per test.  Each test writes synthetic circuits into a
fresh database of its own, so labels never reach the shared demo store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ingest.jobs.labelling import (
    ChatClient,
    Labeller,
    LLMConfig,
    label_groups,
    read_label_groups,
    set_manual_label,
)
from ingest.queries.library import run_query
from ingest.store.connection import Store
from ingest.write.writer import write_circuit
from cli.main import main as cli_main
from tests.fixtures_store import TEST_MODEL, make_circuit, model_info

LLM = "test-vision-model"
ALLOWED_BODY = {"model", "messages", "temperature", "max_tokens", "response_format"}


def _thumb(crop_id: int):
    from PIL import Image

    return Image.new("L", (14, 14), random.Random(crop_id).randint(0, 255))


def _check_schema(body) -> list[str]:
    """Strict chat-completions request check; returns the problems."""
    bad = []
    if not isinstance(body, dict):
        return ["body is not an object"]
    if set(body) - ALLOWED_BODY:
        bad.append(f"unknown keys {set(body) - ALLOWED_BODY}")
    if body.get("model") != LLM:
        bad.append(f"model {body.get('model')!r}")
    if body.get("response_format") not in (None, {"type": "json_object"}):
        bad.append("response_format")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return bad + ["messages"]
    for m in msgs:
        if not isinstance(m, dict) or set(m) != {"role", "content"} or m["role"] not in ("system", "user", "assistant"):
            bad.append(f"message {str(m)[:80]}")
            continue
        if isinstance(m["content"], str):
            continue
        if not isinstance(m["content"], list):
            bad.append("content")
            continue
        for part in m["content"]:
            if part.get("type") == "text":
                if set(part) != {"type", "text"} or not isinstance(part["text"], str):
                    bad.append("text part")
            elif part.get("type") == "image_url":
                url = part.get("image_url", {}).get("url", "") if set(part) == {"type", "image_url"} else ""
                if not url.startswith("data:image/png;base64,"):
                    bad.append("image url")
                    continue
                try:
                    raw = base64.b64decode(url.split(",", 1)[1], validate=True)
                except ValueError:
                    bad.append("base64")
                    continue
                if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
                    bad.append("not a PNG")
            else:
                bad.append(f"part type {part.get('type')!r}")
    return bad


def _images_after(parts, marker: str) -> list[str]:
    out, on = [], False
    for p in parts:
        if p["type"] == "text":
            if on:
                break
            on = p["text"] == marker
        elif on:
            out.append(p["image_url"]["url"])
    return out


class FakeLLM:
    """The server's state: what it saw, and how it misbehaves."""

    def __init__(self):
        self.requests: list[dict] = []
        self.schema_errors: list[str] = []
        self.own: dict[str, set[str]] = {}  # label -> the group's crop URLs
        self.fail_first = 0  # answer 429 to the first n requests
        self.fail_status = 429
        self.mode = "ok"  # ok | malformed | truncated | not_json | slow
        self.slow_for: str | None = None  # only requests whose first image has this hash misbehave
        self.delay = 0.0
        self.lock = threading.Lock()

    def answer(self, body: dict) -> tuple[int, dict, bytes]:
        with self.lock:
            self.requests.append(body)
            n = len(self.requests)
        problems = _check_schema(body)
        if problems:
            self.schema_errors += problems
            return 400, {}, json.dumps({"error": {"message": "; ".join(problems)}}).encode()
        if n <= self.fail_first:
            return self.fail_status, {"Retry-After": "0"}, b'{"error": {"message": "slow down"}}'
        parts = body["messages"][-1]["content"]
        texts = [p["text"] for p in parts if p["type"] == "text"]
        images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        key = hashlib.sha256(images[0].encode()).hexdigest()[:10]
        targeted = self.slow_for is None or self.slow_for == key
        if targeted and self.mode == "slow":
            time.sleep(self.delay)
        if targeted and self.mode == "malformed":
            return 200, {}, b'{"choices": [{"message": {"role": "assistant"'
        if any("common_features" in t for t in texts):
            own = _images_after(parts, "Group 1:")
            label = f"Feature {hashlib.sha256(''.join(own).encode()).hexdigest()[:10]} seen in {len(own)} crops."
            self.own[label] = set(own)
            content = json.dumps({"common_features": {"group 1": "stripes"}, "feature_evolution": "no match", "label": label})
        else:
            label = texts[0].split('"')[1]
            mine = self.own.get(label, set())
            content = json.dumps({"matching": [i for i, u in enumerate(images, start=1) if u in mine]})
        finish = "stop"
        if targeted and self.mode == "truncated":
            content, finish = content[: len(content) // 2], "length"
        if targeted and self.mode == "not_json":
            content = content[: len(content) // 2]
        doc = {"id": "x", "object": "chat.completion", "model": LLM,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]}
        return 200, {}, json.dumps(doc).encode()


@pytest.fixture
def llm():
    state = FakeLLM()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            if self.path != "/v1/chat/completions" or self.headers.get("Content-Type") != "application/json":
                state.schema_errors.append(f"path {self.path} / {self.headers.get('Content-Type')}")
                self.send_response(404)
                self.end_headers()
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            except ValueError:
                body = None
            status, headers, payload = state.answer(body)
            try:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()
    assert not state.schema_errors, state.schema_errors


@pytest.fixture
def labelled_store(store_config, tmp_path):
    """(Store, artifact folder) with two synthetic circuits and their crop thumbnails."""
    artifacts = tmp_path / "artifacts"
    with Store(store_config) as store:
        for c in (0, 1):
            write_circuit(store, make_circuit(c), artifacts, thumbnails=_thumb, model_info=model_info())
        yield store, artifacts


def _client(llm, tmp_path, **kw) -> ChatClient:
    cfg = LLMConfig(llm.base_url, LLM, api_key="k", timeout=kw.pop("timeout", 5.0), backoff=0.01,
                    max_retries=kw.pop("max_retries", 3), **kw)
    return ChatClient(cfg, cache=tmp_path / "llm-cache")


def _labels(store) -> dict[str, dict]:
    rows = store.run("MATCH (g:Group) RETURN g.uid AS uid, g.label AS label, g.label_source AS source, g.label_score AS score")
    return {r["uid"]: r for r in rows}


def test_labels_every_group_and_scores_the_check(llm, labelled_store, tmp_path):
    store, artifacts = labelled_store
    groups = read_label_groups(store, TEST_MODEL, [0, 1])
    assert groups and all(g.thumbnails for g in groups)
    report = label_groups(store, Labeller(_client(llm, tmp_path), artifacts), TEST_MODEL, [0, 1], concurrency=3)
    assert not report.failed and report.written == len(groups) == len(report.labelled)
    labels = _labels(store)
    for g in groups:
        row = labels[g.uid]
        assert row["label"].startswith("Feature ") and row["source"] == f"llm:{LLM}"
        assert row["score"] == 1.0  # the fake model picks exactly the group's crops
    # every label request carried the group's crops and its (up to 2) lower groups' crops
    label_reqs = [r for r in llm.requests if "common_features" in json.dumps(r)]
    assert len(label_reqs) == len(groups)
    with_lower = [r for r in label_reqs if "Group 2:" in json.dumps(r)]
    assert with_lower and all("Group 4:" not in json.dumps(r) for r in label_reqs)
    # the check mixed the group's crops with as many other crops
    check = next(r for r in llm.requests if "matching" in json.dumps(r))
    n_images = sum(p["type"] == "image_url" for p in check["messages"][-1]["content"])
    assert n_images % 2 == 0 and n_images >= 2
    # unchanged groups are not asked again: everything comes from the disk cache
    before = len(llm.requests)
    again = label_groups(store, Labeller(_client(llm, tmp_path), artifacts), TEST_MODEL, [0, 1])
    assert len(llm.requests) == before and again.stats["cached"] == 2 * len(groups)
    assert {r.uid: r.label for r in again.labelled} == {u: labels[u]["label"] for u in labels}
    # the library's label search finds them
    hits = run_query(store, "label_search", text="feature", model=TEST_MODEL)
    assert len(hits) == len(groups)


def test_429_then_success_with_backoff(llm, labelled_store, tmp_path):
    store, artifacts = labelled_store
    llm.fail_first = 3
    client = _client(llm, tmp_path, max_retries=4)
    report = label_groups(store, Labeller(client, artifacts), TEST_MODEL, [0], concurrency=1)
    assert not report.failed and report.labelled
    assert report.stats["retries"] == 3


def test_5xx_until_the_retries_run_out_leaves_groups_unlabelled(llm, labelled_store, tmp_path):
    store, artifacts = labelled_store
    llm.fail_first, llm.fail_status = 10**6, 503
    report = label_groups(store, Labeller(_client(llm, tmp_path, max_retries=2), artifacts), TEST_MODEL, [0], concurrency=2)
    assert not report.labelled and report.failed
    assert all("HTTP 503" in r.error and "3 tries" in r.error for r in report.failed)
    assert all(v["label"] is None for v in _labels(store).values())


def test_timeouts(llm, labelled_store, tmp_path):
    store, artifacts = labelled_store
    llm.mode, llm.delay = "slow", 1.5
    report = label_groups(store, Labeller(_client(llm, tmp_path, timeout=0.3, max_retries=1), artifacts), TEST_MODEL, [0],
                          concurrency=4)  # fmt: skip
    assert not report.labelled and report.failed
    assert all("timeout" in r.error for r in report.failed)
    assert all(v["label"] is None for v in _labels(store).values())


@pytest.mark.parametrize("mode, reason", [("malformed", "malformed"), ("truncated", "truncated"), ("not_json", "not valid JSON")])
def test_bad_answers_leave_no_half_label(llm, labelled_store, tmp_path, mode, reason):
    store, artifacts = labelled_store
    groups = read_label_groups(store, TEST_MODEL, [0])
    victim = groups[1]
    url = "data:image/png;base64," + base64.b64encode((artifacts / victim.thumbnails[0]).read_bytes()).decode()
    llm.mode, llm.slow_for = mode, hashlib.sha256(url.encode()).hexdigest()[:10]
    report = label_groups(store, Labeller(_client(llm, tmp_path), artifacts), TEST_MODEL, [0], concurrency=2)
    failed = {r.uid: r.error for r in report.failed}
    assert victim.uid in failed and reason in failed[victim.uid]
    labels = _labels(store)
    assert labels[victim.uid]["label"] is None and labels[victim.uid]["source"] is None
    assert {r.uid for r in report.labelled} == {g.uid for g in groups} - set(failed)
    # a bad answer is not cached: once the server behaves, the group is labelled
    llm.mode = "ok"
    report = label_groups(store, Labeller(_client(llm, tmp_path), artifacts), TEST_MODEL, [0])
    assert not report.failed and _labels(store)[victim.uid]["label"]


def test_manual_labels_are_kept_and_searchable(llm, labelled_store, tmp_path):
    store, artifacts = labelled_store
    groups = read_label_groups(store, TEST_MODEL, [1])
    target = groups[0].uid
    assert set_manual_label(store, target, "  striped   collar ") == 1
    report = label_groups(store, Labeller(_client(llm, tmp_path), artifacts), TEST_MODEL, [1])
    assert [r.uid for r in report.skipped] == [target]
    row = _labels(store)[target]
    assert row["label"] == "striped collar" and row["source"] == "manual" and row["score"] is None
    hits = run_query(store, "label_search", text="STRIPED")
    assert [h["group"] for h in hits] == [target]
    set_manual_label(store, target, "")
    assert _labels(store)[target]["label"] is None


def test_cli_without_an_endpoint_changes_nothing(labelled_store, monkeypatch, capsys):
    store, _ = labelled_store
    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", store.cfg.database)
    for k in ("NEURFLOW_LLM_BASE_URL", "NEURFLOW_LLM_MODEL", "NEURFLOW_LLM_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    before = _labels(store)
    assert cli_main(["label", "--model", TEST_MODEL, "--classes", "all"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no LLM endpoint configured") and "\n" not in err
    assert _labels(store) == before


def test_cli_labels_through_the_endpoint(llm, labelled_store, monkeypatch, tmp_path, capsys):
    store, artifacts = labelled_store
    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", store.cfg.database)
    monkeypatch.setenv("NEURFLOW_ARTIFACT_DIR", str(artifacts))
    monkeypatch.setenv("NEURFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NEURFLOW_LLM_BASE_URL", llm.base_url)
    monkeypatch.setenv("NEURFLOW_LLM_MODEL", LLM)
    assert cli_main(["label", "--model", TEST_MODEL, "--classes", "0", "--concurrency", "2"]) == 0
    out = capsys.readouterr().out
    n = len(read_label_groups(store, TEST_MODEL, [0]))
    assert f"{n} groups labelled ({n} written), 0 failed" in out
    assert cli_main(["label", "--model", "nosuchmodel"]) == 2
    assert "no model 'nosuchmodel'" in capsys.readouterr().err


def test_labels_page_searches_and_saves_a_manual_label(labelled_store, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from app import data
    from tests.test_app_pages import MAIN

    store, artifacts = labelled_store
    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", store.cfg.database)
    monkeypatch.setenv("NEURFLOW_ARTIFACT_DIR", str(artifacts))
    monkeypatch.setenv("NEURFLOW_APP_LABEL_EDITS", "1")  # as `neurflow app --allow-label-edits` sets it
    data.forget_version()
    groups = read_label_groups(store, TEST_MODEL, [0])
    set_manual_label(store, groups[0].uid, "Round dark blob")
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params.update({"page": "labels", "q": "blob", "class": "1"})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert table["group"].tolist() == [groups[0].uid] and table["label_source"].tolist() == ["manual"]
    # edit the label of the chosen group of class 1
    picked = at.selectbox(key="w:group").value
    uid = next(g.uid for g in read_label_groups(store, TEST_MODEL, [1]) if g.uid.endswith("/" + picked))
    box = next(t for t in at.text_input if t.key and t.key.startswith("label_text_"))
    box.set_value("Bright stripes on a sleeve")
    next(b for b in at.button if "Save label" in b.label).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    row = _labels(store)[uid]
    assert row["label"] == "Bright stripes on a sleeve" and row["source"] == "manual"
    data.forget_version()
