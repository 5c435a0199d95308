"""Group labels written after ingestion (concept labelling, the app's label editor).

Apart from the circuit writer because labels change on their own: a label edit touches the Group
nodes and, in the same transaction, the copy of the circuit's labelled groups that the circuit
node keeps (``labels_*`` lists, `label_lists`): `label_search` reads those lists from one node
per class instead of every group of every circuit (40k groups at 1,000 classes).  It never
touches the circuit's status or the neuron aggregates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ingest.write import statements as st
from ingest.store.runner import Runner, Tx
from ingest.store.connection import Store

if TYPE_CHECKING:  # pragma: no cover - annotations only: the driver is the store layer's
    import neo4j

LABEL_KEYS = ("group", "text", "source", "score", "layer", "depth", "size")

def label_lists(group_rows: list[dict[str, Any]]) -> dict[str, list]:
    """Circuit-node properties for the labelled groups among the writer's group rows."""
    rows = sorted((r for r in group_rows if r.get("label") is not None), key=lambda r: (r["depth"], r["index"]))
    return {
        "labels_group": [r["uid"] for r in rows],
        "labels_text": [r["label"] for r in rows],
        "labels_source": [r.get("label_source") for r in rows],
        "labels_score": [r.get("label_score") for r in rows],
        "labels_layer": [r["layer"] for r in rows],
        "labels_depth": [r["depth"] for r in rows],
        "labels_size": [r["size"] for r in rows],
    }


def _set(tx: Tx, rows: list[dict[str, Any]]) -> int:
    out = tx.run(st.Q_SET_LABELS, {"rows": rows})
    if not out or not out[0]["n"]:
        return 0
    tx.run(st.Q_REFRESH_LABELS, {"circuits": out[0]["circuits"]})
    return out[0]["n"]


def set_group_labels(target: Store | neo4j.Driver | neo4j.Session, rows: list[dict[str, Any]], *, database: str | None = None) -> int:
    """Set labels of groups: rows of {uid, label, label_source, label_score}; returns groups updated."""
    with Runner(target, database) as runner:
        return runner.execute(lambda tx: _set(tx, rows))
