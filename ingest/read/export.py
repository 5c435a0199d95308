"""Export the store's complete circuits: Parquet (a folder of tables), GraphML or JSON.

What is exported: Model, Layer, Neuron and Class nodes, every ``complete`` Circuit and what
hangs off it (Concept, Group, the Crop and Image nodes of its representative crops), and the
relationships between exported nodes (FEEDS of running/failed circuits are left out).

- ``json``: one file ``{"format": "neurflow-store", "version": 1, "nodes": [...], "relationships": [...]}``;
  a node is ``{"uid", "label", "properties"}``, a relationship ``{"type", "start", "end", "properties"}``.
- ``parquet``: a folder with ``nodes_<Label>.parquet`` (one column per property) and
  ``rels_<TYPE>.parquet`` (``start``, ``end`` uids and the properties).
- ``graphml``: one file; node ids are uids, ``labels`` and ``type`` attributes carry the label
  and relationship type, list properties are JSON text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from ingest.queries import export as q
from ingest.store.connection import Store
from ingest.store.schema import LABELS, RELATIONSHIPS
from neurflow.errors import NeurflowInputError, NeurflowRuntimeError

FORMATS = ("parquet", "graphml", "json")


def collect_graph(store: Store, *, model: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(nodes, relationships) of the complete circuits (of one model, if given)."""
    p = {"model": model}
    nodes: dict[str, dict[str, Any]] = {}

    def add(rows: list[dict[str, Any]], label: str) -> None:
        for r in rows:
            props = r["p"]
            nodes.setdefault(props["uid"], {"uid": props["uid"], "label": label, "properties": props})

    for label in q.MODEL_LABELS:
        add(store.run(q.model_nodes(label), p), label)
    circuits = store.run(q.Q_COMPLETE_CIRCUITS, p)
    add(circuits, "Circuit")
    complete = {r["p"]["uid"] for r in circuits}
    for label, rel in q.CIRCUIT_CHILDREN:
        add(store.run(q.circuit_children(label, rel), p), label)
    for label in q.CROP_LABELS:
        add(store.run(q.crop_nodes(label), p), label)
    rels: list[dict[str, Any]] = []
    for rel in RELATIONSHIPS:
        for r in store.run(q.relationships(rel)):
            if r["s"] not in nodes or r["e"] not in nodes:
                continue
            circuit = r["p"].get("circuit")
            if circuit is not None and circuit not in complete:
                continue
            rels.append({"type": rel, "start": r["s"], "end": r["e"], "properties": r["p"]})
    order = {label: i for i, label in enumerate(LABELS)}
    node_list = sorted(nodes.values(), key=lambda n: (order.get(n["label"], 99), n["uid"]))
    return node_list, rels


def export_store(store: Store, fmt: str, out: str | Path, *, model: str | None = None) -> dict[str, int]:
    """Write the export; returns counts {'nodes': n, 'relationships': m}."""
    out = check_out(fmt, out)  # before reading the store
    nodes, rels = collect_graph(store, model=model)
    try:
        if fmt == "json":
            out.parent.mkdir(parents=True, exist_ok=True)
            payload = {"format": "neurflow-store", "version": 1, "nodes": nodes, "relationships": rels}
            out.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
        elif fmt == "parquet":
            _write_parquet(nodes, rels, out)
        else:
            _write_graphml(nodes, rels, out)
    except OSError as exc:
        raise NeurflowRuntimeError(
            f"cannot write the export to {out}: {exc.strerror or exc} ({exc.filename or out}); pass --out a writable path"
        ) from None
    return {"nodes": len(nodes), "relationships": len(rels)}


def check_out(fmt: str, out: str | Path) -> Path:
    """The output path of `fmt`, or a one-line `NeurflowInputError` (unknown format, file/folder mix-up)."""
    if fmt not in FORMATS:
        raise NeurflowInputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "parquet" and out.exists() and not out.is_dir():
        raise NeurflowInputError(f"--out {out} is a file; parquet exports to a folder: pass a folder path")
    if fmt != "parquet" and out.is_dir():
        raise NeurflowInputError(f"--out {out} is a folder; {fmt} exports to one file: pass a file path")
    return out


def _write_parquet(nodes: list[dict[str, Any]], rels: list[dict[str, Any]], folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for n in nodes:
        by_label.setdefault(n["label"], []).append(n["properties"])
    for label, rows in by_label.items():
        pq.write_table(_table(rows, pa), folder / f"nodes_{label}.parquet")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in rels:
        by_type.setdefault(r["type"], []).append({"start": r["start"], "end": r["end"], **r["properties"]})
    for rel, rows in by_type.items():
        pq.write_table(_table(rows, pa), folder / f"rels_{rel}.parquet")


def _table(rows: list[dict[str, Any]], pa: Any) -> Any:
    keys: list[str] = []
    for row in rows:
        for k in row:
            if k not in keys:
                keys.append(k)
    columns = {k: [row.get(k) for row in rows] for k in keys}
    try:
        return pa.table(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in a column: fall back to JSON text
        fixed = {}
        for k, values in columns.items():
            try:
                fixed[k] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                fixed[k] = pa.array([None if v is None else json.dumps(v) for v in values])
        return pa.table(fixed)


def _graphml_type(values: list[Any]) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool} and kinds:
        return "boolean"
    if kinds <= {int} and kinds:
        return "long"
    if kinds <= {int, float} and kinds:
        return "double"
    return "string"


def _graphml_value(v: Any, kind: str) -> str:
    if kind == "boolean":
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _write_graphml(nodes: list[dict[str, Any]], rels: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    node_keys: dict[str, list[Any]] = {}
    for n in nodes:
        for k, v in n["properties"].items():
            node_keys.setdefault(k, []).append(v)
    edge_keys: dict[str, list[Any]] = {}
    for r in rels:
        for k, v in r["properties"].items():
            edge_keys.setdefault(k, []).append(v)
    ntypes = {k: _graphml_type(v) for k, v in node_keys.items()}
    etypes = {k: _graphml_type(v) for k, v in edge_keys.items()}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        fh.write('<graphml xmlns="http://graphml.graphdrawing.org/xmlns">\n')
        fh.write('  <key id="labels" for="node" attr.name="labels" attr.type="string"/>\n')
        fh.write('  <key id="type" for="edge" attr.name="type" attr.type="string"/>\n')
        for k, t in ntypes.items():
            fh.write(f"  <key id={quoteattr('n_' + k)} for=\"node\" attr.name={quoteattr(k)} attr.type=\"{t}\"/>\n")
        for k, t in etypes.items():
            fh.write(f"  <key id={quoteattr('e_' + k)} for=\"edge\" attr.name={quoteattr(k)} attr.type=\"{t}\"/>\n")
        fh.write('  <graph id="neurflow" edgedefault="directed">\n')
        def element(tag: str, attrs: str, kind: str, prefix: str, props: dict, types: dict) -> None:
            fh.write(f"    <{tag} {attrs}>{kind}")
            for k, v in props.items():
                if v is not None:
                    fh.write(f"<data key={quoteattr(prefix + k)}>{escape(_graphml_value(v, types[k]))}</data>")
            fh.write(f"</{tag}>\n")

        for n in nodes:
            element("node", f"id={quoteattr(n['uid'])}", f'<data key="labels">:{escape(n["label"])}</data>',
                    "n_", n["properties"], ntypes)
        for i, r in enumerate(rels):
            element("edge", f"id=\"e{i}\" source={quoteattr(r['start'])} target={quoteattr(r['end'])}",
                    f'<data key="type">{escape(r["type"])}</data>', "e_", r["properties"], etypes)
        fh.write("  </graph>\n</graphml>\n")
