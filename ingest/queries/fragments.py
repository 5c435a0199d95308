"""Cypher fragments shared by the query modules (`ingest.queries.library`, `ingest.queries.app_reads`,
`ingest.queries.jobs`): "the chosen circuit of a class" is written here once.

The chosen circuit of a class is its latest (highest ``completed_at``) complete circuit in the
parameter set asked for.  Plain strings, no imports: every query module can use them.
"""

from __future__ import annotations

LATEST = "reduce(b = cs[0], x IN cs | CASE WHEN x.completed_at > b.completed_at THEN x ELSE b END)"
"""The latest (highest ``completed_at``) of the circuits collected as `cs`: "the chosen circuit" of
a class is its latest complete one.  Found by reduce, not by sorting every circuit (ArcadeDB sorts
slowly: 15-55 ms for 1,000 circuits)."""


def latest_complete(cls_pattern: str, circuit: str = "c", *, where: str | None = None, carry: str = "") -> str:
    """Cypher lines binding `circuit` to the latest complete circuit of the ONE class `cls_pattern`
    matches, among those passing `where` (by default: in parameter set $params, any when null),
    keeping `carry` ("a, b, ").  No row when the class has none.  One class has a handful of
    circuits, so sorting them costs nothing; `latest_complete_per_class` is the form for many."""
    where = where or f"$params IS NULL OR {circuit}.params_hash = $params"
    return (
        f"MATCH {cls_pattern}-[:HAS_CIRCUIT]->({circuit}:Circuit {{status: 'complete'}})\n"
        f"WHERE {where}\n"
        f"WITH {carry}{circuit} ORDER BY {circuit}.completed_at DESC LIMIT 1\n"
    )


def latest_complete_per_class(where: str = "") -> str:
    """Cypher lines binding, for each class `cl` of $model (passing `where`, a condition followed by
    AND), `c` to its latest complete circuit in parameter set $params (any when null).  Classes
    without one have no row."""
    return (
        "MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})\n"
        f"WHERE {where}($params IS NULL OR c.params_hash = $params)\n"
        "WITH cl, collect(c) AS cs\n"
        f"WITH cl, {LATEST} AS c\n"
    )
