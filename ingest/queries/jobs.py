"""Statements of the store's jobs and tools (not the library queries of `ingest.queries.library`,
not the writer's `ingest.write.statements`, not the evaluations' or the export's): the read-only
account's probe, the store's counts, the CLI's reads, the groups labelling and image debugging read.

Kept here so that every statement the program sends lives in a query module (the architecture
test checks that no other module holds Cypher) and the Cypher lint sees each one by name.
"""

from __future__ import annotations

from ingest.queries.fragments import latest_complete, latest_complete_per_class

Q_ANY_LABEL = "CALL db.labels() YIELD label RETURN label LIMIT 1"
"""One label of the database: the read-only probe creates a record of an existing label."""


def create_probe(label: str) -> str:
    """The probe's create on `label` (run in a transaction that is always rolled back): ArcadeDB
    checks a create at once, while updates and deletes are only checked at commit."""
    quoted = label.replace("`", "``")
    return f"CREATE (p:`{quoted}` {{uid: $uid}}) RETURN 1 AS ok"


Q_PING = "RETURN 1 AS ok"
"""The check that a new driver reaches the database (`ingest.store.connection.open_driver`)."""

Q_COUNT_LABELS = "MATCH (n) RETURN labels(n) AS labels, count(*) AS n"
Q_COUNT_TYPES = "MATCH ()-[r]->() RETURN type(r) AS t, count(*) AS n"


# --------------------------------------------------------------------------- the CLI's reads
Q_MODEL_CLASS_COUNT = (
    "MATCH (m:Model {uid: $model}) OPTIONAL MATCH (m)-[:HAS_CLASS]->(cl:Class) "
    "RETURN m.num_classes AS n, max(cl.index) AS top"
)
"""The number of classes of a model (`neurflow label`): kept on the Model node, else the highest class index + 1."""

Q_MODELS = "MATCH (m:Model) RETURN m.uid AS uid ORDER BY uid"
"""Every model of the store, by uid."""

Q_COMPLETE_CIRCUITS = (
    "MATCH (c:Circuit {status: 'complete'}) WHERE $model IS NULL OR c.model = $model "
    "RETURN count(c) AS n"
)
"""How many complete circuits the store (or model $model) has."""


# --------------------------------------------------------------------------- ingestion's skip check
Q_CLASSES_WITH_COMPLETE = (
    "MATCH (c:Circuit {model: $model, status: 'complete'}) WHERE c.class_index IN $classes "
    "RETURN DISTINCT c.class_index AS c"
)
"""The classes of $classes that have a complete circuit at all: only their images are read for the
skip check's fingerprint."""


def classes_with_complete(store, model: str, classes: list[int]) -> set[int]:
    """The classes of `classes` that have some complete circuit of `model` (`Q_CLASSES_WITH_COMPLETE`)."""
    return {r["c"] for r in store.run(Q_CLASSES_WITH_COMPLETE, {"model": model, "classes": list(classes)})}


# --------------------------------------------------------------------------- groups of the chosen circuits
Q_LABEL_GROUPS = latest_complete_per_class("cl.index IN $classes AND ") + """MATCH (c)-[:HAS_GROUP]->(g:Group)
OPTIONAL MATCH (g)<-[:IN_GROUP]-(k:Concept)-[e:EXEMPLIFIED_BY]->(cr:Crop)
WITH cl, c, g, e, cr ORDER BY e.rank, e.activation DESC, cr.uid
WITH cl, c, g, collect(cr.thumbnail) AS thumbnails
OPTIONAL MATCH (lo:Group)-[f:GROUP_FEEDS]->(g)
WITH cl, c, g, thumbnails, lo, f ORDER BY f.weight DESC, lo.uid
WITH cl, c, g, thumbnails, collect(lo.uid) AS lower
RETURN cl.index AS class_index, cl.name AS class_name, c.uid AS circuit, g.uid AS uid, g.layer AS layer,
       g.depth AS depth, g.label AS label, g.label_source AS label_source, thumbnails, lower
ORDER BY class_index, depth, uid
"""
"""Every group of the chosen circuits of classes $classes (`ingest.jobs.labelling.job.read_label_groups`), one
row per group: its thumbnails (all, by crop rank) and its lower groups (strongest GROUP_FEEDS first)."""

Q_DEBUG_GROUPS = latest_complete("(:Class {model: $model, index: $class_index})") + """MATCH (c)-[:HAS_GROUP]->(g:Group)<-[:IN_GROUP]-(k:Concept)
OPTIONAL MATCH (k)-[e:EXEMPLIFIED_BY]->(cr:Crop)
WITH c, g, k, e, cr ORDER BY e.rank, cr.uid
WITH c, g, k, collect(cr.thumbnail) AS thumbnails
RETURN c.uid AS circuit, c.params AS params, g.uid AS group, g.layer AS layer, g.depth AS depth, g.index AS index, g.label AS label,
       k.channel AS channel, k.index AS concept, k.mean_activation AS mean_activation, thumbnails
ORDER BY depth, index, channel, concept
"""
"""The groups of one class's chosen circuit (`ingest.jobs.image_debugging.read_circuit_groups`), one row per
member concept with its thumbnails: what an image is debugged against.  Not `Q_LABEL_GROUPS`: rows
per concept, not per group, and the circuit's parameters."""
