"""Recording of the statements the program sends, for the Cypher lint (ingest/store/cypher_record.py):
one JSON line per statement and parameter set, naming the first caller outside the store layer."""

from __future__ import annotations

import json

from ingest.store import cypher_record


def _send(cypher, params=None):
    cypher_record.record(cypher, params)


def test_each_statement_is_recorded_once_per_parameter_set_with_its_caller(monkeypatch, tmp_path):
    path = tmp_path / "cypher.jsonl"
    monkeypatch.setenv(cypher_record.ENV, str(path))
    for _ in range(2):
        _send("MATCH (n:Recorded) RETURN n.uid AS uid", {"uid": 1, "model": "m"})
    _send("MATCH (n:Recorded) RETURN n.uid AS uid")
    cypher_record.record(42)  # not a statement: nothing recorded
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["query"], x["parameters"]) for x in lines] == [
        ("MATCH (n:Recorded) RETURN n.uid AS uid", ["model", "uid"]), ("MATCH (n:Recorded) RETURN n.uid AS uid", [])]
    assert all(x["where"].startswith("tests/test_cypher_record.py:") and x["where"].endswith(" _send") for x in lines)


def test_nothing_is_recorded_when_unset(monkeypatch, tmp_path):
    monkeypatch.delenv(cypher_record.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    _send("MATCH (n:Unrecorded) RETURN n")
    assert list(tmp_path.iterdir()) == []
