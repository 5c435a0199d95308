"""The store export (ingest/read/export.py, statements in ingest/queries/export.py) on plain values:
the output checks, the statements, and a GraphML file from hand-made rows (the export of a real
store: tests/test_conformance.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from ingest.queries import export as q
from ingest.read import export
from ingest.store.schema import RELATIONSHIPS
from neurflow.errors import NeurflowInputError


def test_check_out_refuses_a_format_and_path_mix_up(tmp_path):
    with pytest.raises(NeurflowInputError, match="unknown export format 'xml'; use one of parquet, graphml, json"):
        export.check_out("xml", tmp_path / "x")
    (tmp_path / "f").write_text("")
    with pytest.raises(NeurflowInputError, match="is a file; parquet exports to a folder"):
        export.check_out("parquet", tmp_path / "f")
    with pytest.raises(NeurflowInputError, match="is a folder; json exports to one file"):
        export.check_out("json", tmp_path)
    assert export.check_out("graphml", tmp_path / "g.graphml") == tmp_path / "g.graphml"


def test_one_statement_per_label_and_relationship_type():
    assert q.model_nodes("Model") == "MATCH (n:Model) WHERE $model IS NULL OR n.uid = $model RETURN properties(n) AS p"
    assert "n.model = $model" in q.model_nodes("Neuron")
    assert q.circuit_children("Group", "HAS_GROUP").startswith("MATCH (c:Circuit {status: 'complete'})-[:HAS_GROUP]->(n:Group) ")
    assert "-[:CROP_OF]->(n:Image) RETURN DISTINCT properties(n) AS p" in q.crop_nodes("Image")
    statements = q.statements()
    assert len(statements) == len(set(statements)) == 4 + 1 + 2 + 2 + len(RELATIONSHIPS)
    assert all(f"[r:{rel}]" in q.relationships(rel) for rel in RELATIONSHIPS)


def test_graphml_keeps_hostile_text_as_text(tmp_path):
    nodes = [{"uid": 'a<&"b', "label": "Class", "properties": {"uid": 'a<&"b', "name": "<b>x</b>", "index": 3, "ok": True}},
             {"uid": "m", "label": "Model", "properties": {"uid": "m", "classes": ["a", "b"]}}]  # fmt: skip
    rels = [{"type": "HAS_CLASS", "start": "m", "end": 'a<&"b', "properties": {"w": 0.5}}]
    path = tmp_path / "g.graphml"
    export._write_graphml(nodes, rels, path)
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    root = ET.parse(path).getroot()
    keys = {k.get("id"): k.get("attr.type") for k in root.findall("g:key", ns)}
    assert keys["n_index"] == "long" and keys["n_ok"] == "boolean" and keys["e_w"] == "double"
    first = root.find("g:graph/g:node", ns)
    data = {d.get("key"): d.text for d in first.findall("g:data", ns)}
    assert first.get("id") == 'a<&"b' and data["n_name"] == "<b>x</b>" and data["n_ok"] == "true"
    model = root.findall("g:graph/g:node", ns)[1]
    assert json.loads({d.get("key"): d.text for d in model.findall("g:data", ns)}["n_classes"]) == ["a", "b"]
    edge = root.find("g:graph/g:edge", ns)
    assert (edge.get("source"), edge.get("target")) == ("m", 'a<&"b')
