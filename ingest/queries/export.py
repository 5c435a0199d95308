"""The statements of the store export (`ingest.read.export`): one per exported label or
relationship type, built from the label or type (a label cannot be a parameter), and
`statements()`, every one of them, so that the Cypher lint checks them all.
"""

from __future__ import annotations

from ingest.store.schema import RELATIONSHIPS

MODEL_LABELS = ("Model", "Layer", "Neuron", "Class")
"""Exported whole (of one model, if given): the model's own nodes."""

CIRCUIT_CHILDREN = (("Concept", "HAS_CONCEPT"), ("Group", "HAS_GROUP"))
"""(label, relationship from the circuit): exported for complete circuits only."""

_CROP_PATTERNS = {
    "Crop": "(c)-[:HAS_CONCEPT]->(:Concept)-[:EXEMPLIFIED_BY]->(n:Crop)",
    "Image": "(c)-[:HAS_CONCEPT]->(:Concept)-[:EXEMPLIFIED_BY]->(:Crop)-[:CROP_OF]->(n:Image)",
}
CROP_LABELS = tuple(_CROP_PATTERNS)
"""The representative crops of complete circuits' concepts and their images."""

Q_COMPLETE_CIRCUITS = "MATCH (c:Circuit {status: 'complete'}) WHERE $model IS NULL OR c.model = $model RETURN properties(c) AS p"


def model_nodes(label: str) -> str:
    """The nodes of `label` (one of `MODEL_LABELS`) of model `$model` (every model when null)."""
    prop = "uid" if label == "Model" else "model"
    return f"MATCH (n:{label}) WHERE $model IS NULL OR n.{prop} = $model RETURN properties(n) AS p"


def circuit_children(label: str, rel: str) -> str:
    """The `label` nodes that complete circuits reach through `rel` (one of `CIRCUIT_CHILDREN`)."""
    return (f"MATCH (c:Circuit {{status: 'complete'}})-[:{rel}]->(n:{label}) "
            "WHERE $model IS NULL OR c.model = $model RETURN properties(n) AS p")  # fmt: skip


def crop_nodes(label: str) -> str:
    """The `label` nodes (one of `CROP_LABELS`) of complete circuits' concepts, each once."""
    return (f"MATCH (c:Circuit {{status: 'complete'}}) WHERE $model IS NULL OR c.model = $model "
            f"MATCH {_CROP_PATTERNS[label]} RETURN DISTINCT properties(n) AS p")  # fmt: skip


def relationships(rel: str) -> str:
    """Every relationship of type `rel` with its end uids (the export keeps those between exported nodes)."""
    return f"MATCH (a)-[r:{rel}]->(b) RETURN a.uid AS s, b.uid AS e, properties(r) AS p"


def statements() -> list[str]:
    """Every statement the export sends."""
    return ([model_nodes(label) for label in MODEL_LABELS] + [Q_COMPLETE_CIRCUITS]
            + [circuit_children(label, rel) for label, rel in CIRCUIT_CHILDREN]
            + [crop_nodes(label) for label in CROP_LABELS] + [relationships(rel) for rel in RELATIONSHIPS])  # fmt: skip
