"""Removing what a circuit wrote: before a rewrite (a crashed, failed or forced earlier write) and
on delete.

Shared nodes stay (Neuron; Crop and Image nodes another circuit still uses); what belongs to the
circuit goes in batches of `batch` per transaction, so a circuit of any size is removed without
one huge transaction.  A complete circuit first leaves the aggregates, in the transaction that
takes it back to ``running`` (`ingest.write.aggregates.retract_circuit`): readers never see a
half-removed circuit counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ingest.write import statements as st
from ingest.write.aggregates import retract_circuit
from ingest.store.runner import Runner
from ingest.store.connection import Store

if TYPE_CHECKING:  # pragma: no cover - annotations only: the driver is the store layer's
    import neo4j

DELETE_BATCH = 10000


def _delete_loop(runner: Runner, cypher: str, params: dict[str, Any], batch: int) -> int:
    total = 0
    while True:
        n = runner.write(cypher, {**params, "batch": batch})[0]["n"]
        total += n
        if n < batch:
            return total


def clean(runner: Runner, uid: str, model: str, class_index: int, batch: int = DELETE_BATCH) -> dict[str, int]:
    """Delete what a (not complete) circuit wrote, keeping shared nodes.

    DRIVES, OF, IN_GROUP, HAS_CONCEPT, EXEMPLIFIED_BY, HAS_GROUP and GROUP_FEEDS go with the
    (DETACH-deleted) Concept and Group nodes; FEEDS, between shared neurons, by its `circuit`.
    The circuit's Evaluation nodes go too: they describe the circuit being replaced."""
    p = {"circuit": uid, "model": model, "class_index": class_index}
    crops = [r["uid"] for r in runner.read(st.Q_CLEAN_CROPS_OF, p)]
    out = {
        "concepts": _delete_loop(runner, st.Q_CLEAN_CONCEPTS, p, batch),
        "groups": _delete_loop(runner, st.Q_CLEAN_GROUPS, p, batch),
        "feeds": _delete_loop(runner, st.Q_CLEAN_FEEDS, p, batch),
        "includes": _delete_loop(runner, st.Q_CLEAN_INCLUDES, p, batch),
        "evaluations": _delete_loop(runner, st.Q_CLEAN_EVALUATIONS, p, batch),
    }
    if crops:
        rows = runner.write(st.Q_CLEAN_UNUSED_CROPS, {"crops": crops})
        out["crops"] = rows[0]["n"] if rows else 0
        images = rows[0]["images"] if rows else []
        if images:
            out["images"] = runner.write(st.Q_CLEAN_UNUSED_IMAGES, {"images": images})[0]["n"]
    return out


def delete_circuit(target: Store | neo4j.Driver | neo4j.Session, uid: str, *, database: str | None = None) -> dict[str, int]:
    """Remove a circuit entirely (its node too).  Shared Model/Layer/Neuron/Class nodes stay."""
    with Runner(target, database) as runner:
        rows = runner.read(st.Q_CIRCUIT_CLASS, {"uid": uid})
        if not rows:
            return {}
        runner.execute(lambda tx: retract_circuit(tx, uid))
        out = clean(runner, uid, rows[0]["model"], rows[0]["class_index"])
        runner.write(st.Q_DELETE_CIRCUIT, {"uid": uid})
        out["circuits"] = 1
        return out
