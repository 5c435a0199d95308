"""Group labels written after ingestion (concept labelling, the app's label editor).

Apart from the circuit writer because labels change on their own: a label edit touches only the
Group nodes, never the circuit's status or the aggregates.
"""

from __future__ import annotations

from typing import Any

import neo4j

from ingest.session import Runner
from ingest.store import Store

Q_SET_LABELS = (
    "UNWIND $rows AS r MATCH (g:Group {uid: r.uid}) "
    "SET g.label = r.label, g.label_source = r.label_source, g.label_score = r.label_score RETURN count(g) AS n"
)


def set_group_labels(target: Store | neo4j.Driver | neo4j.Session, rows: list[dict[str, Any]], *, database: str | None = None) -> int:
    """Set labels of groups: rows of {uid, label, label_source, label_score}; returns groups updated."""
    with Runner(target, database) as runner:
        out = runner.write(Q_SET_LABELS, {"rows": rows})
        return out[0]["n"] if out else 0
