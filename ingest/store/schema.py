"""Uniqueness constraints on `uid` of every label, plus lookup indexes the writer relies on.

The same Neo4j-5 DDL runs on ArcadeDB (its Cypher creates the type, a unique index on
`uid` and reports it in SHOW CONSTRAINTS).  Everything is `IF NOT EXISTS`, so
`ensure_schema` is idempotent and cheap; it must run before the first write because a
uniqueness constraint is what keeps concurrent MERGEs from creating duplicates.
"""

from __future__ import annotations

from ingest.store.connection import Store
from ingest.write.aggregate_maintenance import ensure

LABELS = ("Model", "Layer", "Neuron", "Class", "Circuit", "Concept", "Group", "Image", "Crop", "NeuronStat", "LayerStat", "CircuitFeeds")
"""Every node label of the schema; each has a unique `uid` (NeuronStat, LayerStat, CircuitFeeds: the writer's
aggregates, ingest/write/aggregates.py)."""

RELATIONSHIPS = (
    "HAS_LAYER", "HAS_NEURON", "HAS_CLASS", "HAS_CIRCUIT", "INCLUDES", "FEEDS", "HAS_CONCEPT", "OF",
    "DRIVES", "IN_GROUP", "HAS_GROUP", "GROUP_FEEDS", "EXEMPLIFIED_BY", "CROP_OF",
)  # fmt: skip

# (label, property): secondary indexes used to find a circuit's nodes when cleaning it up.
INDEXES = (
    ("Concept", "circuit"), ("Group", "circuit"), ("Circuit", "status"), ("Neuron", "model"), ("NeuronStat", "params_hash"),
    ("LayerStat", "params_hash"), ("Circuit", "params_hash"),
)  # fmt: skip

# (relationship type, property): FEEDS of one class (circuit_diff, strongest_paths) and of one
# circuit (cleaning) without walking the FEEDS of shared neurons, which every class adds to.
REL_INDEXES = (("FEEDS", "class_index"),)


def constraint_statements() -> list[str]:
    out = [
        f"CREATE CONSTRAINT {label.lower()}_uid IF NOT EXISTS FOR (n:{label}) REQUIRE n.uid IS UNIQUE" for label in LABELS
    ]
    out += [
        f"CREATE INDEX {label.lower()}_{prop} IF NOT EXISTS FOR (n:{label}) ON (n.{prop})" for label, prop in INDEXES
    ]
    out += [
        f"CREATE INDEX {rel.lower()}_{prop} IF NOT EXISTS FOR ()-[r:{rel}]-() ON (r.{prop})" for rel, prop in REL_INDEXES
    ]
    return out


def ensure_schema(store: Store, *, again: bool = False, aggregates: bool = True) -> None:
    """Create the constraints and indexes (idempotent); once per `Store` object unless `again`.

    Then, unless `aggregates` is False, rebuild the writer's aggregates if complete circuits lack
    them (`ingest.write.aggregate_maintenance.ensure`: a store written before they existed; one cheap query when
    they are there): this is the writer's first use of the store (`ingest.store.connect.open_store` for a writer,
    `write_circuit`), so after an upgrade the first `neurflow ingest` / `demo` brings an old store
    in step instead of every cross-class query answering nothing."""
    if getattr(store, "_schema_ready", False) and not again:
        return
    for statement in constraint_statements():
        store.run(statement)
    if aggregates:

        ensure(store)
    store._schema_ready = True
