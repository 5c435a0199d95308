"""Aggregates the writer keeps so that cross-class queries read a few nodes, not every circuit.

`hub_neurons` used to count, per neuron, the chosen circuits that include it: every INCLUDES
edge of every circuit (330k at 1,000 classes, about 1 s).  The writer now keeps, per (neuron,
parameter set), a `NeuronStat` node:

- ``uid`` = ``<neuron uid>@<params hash>``; ``model``, ``params_hash``, ``neuron``, ``layer``,
  ``depth``, ``channel``;
- ``classes``: the number of distinct classes with a complete circuit in that parameter set that
  includes the neuron; ``circuits``: the number of such circuits (more than ``classes`` only when
  a class has complete circuits over two data sets in one parameter set);
- ``class_indices``: their class indices, sorted, one entry per circuit;
- ``importance``: the neuron's importance summed over those circuits, where its importance in one
  circuit is the sum of ``I_u(v)`` over its FEEDS in that circuit (``INCLUDES.importance``): the
  second ranking key of `hub_neurons`, which separates hubs when every class shares them.

and per (model, parameter set, layer) a `LayerStat` node with the same counts as lists indexed
by channel (``classes``, ``circuits``, ``importance``; uid ``<model>/<layer>@<params hash>``):
ArcadeDB reads a node in tens of microseconds but a list element in well under one, so
`hub_neurons` ranks a few lists in memory instead of scanning thousands of NeuronStat nodes
(each LayerStat also keeps its `TOP_N` channels in rank order, ``top``).  And per model, on the
Model node, the number of complete circuits and the latest completion of each parameter set
(``ps_hashes``, ``ps_circuits``, ``ps_last``): how the queries pick the default parameter set;
and per complete circuit a `CircuitFeeds` node (uid = the circuit's) with its FEEDS as sorted
integer keys, which `circuit_diff` compares in memory.

Only ``complete`` circuits count, so the aggregates change exactly when a circuit's status
changes to or from ``complete``, and in the same transaction: the aggregate update runs with the
statement that marks a circuit complete (`complete_circuit`), `retract_circuit` with the one that takes a complete
circuit back to ``running`` (a forced rewrite, a delete).  A write that crashes midway never
reached ``complete`` and so never counted; its resumption cleans and writes it like a new one.

Every circuit also keeps its labelled groups (``labels_*``, `ingest.write.group_labels`) and its
critical channels per layer on its own node (``critical_layers``,
``critical_offsets``, ``critical_channels``: layer ``i`` holds ``critical_channels[offsets[i] ..
offsets[i + 1]]``), set with ``complete``: `class_channels` reads one node per class instead of
the INCLUDES of every circuit.

Their check, rebuild and upgrade (`recompute`, `differences`, `rebuild`, `ensure`) are
`ingest.write.aggregate_maintenance`; the statements of both are `ingest.write.aggregate_statements`.

Every transaction that changes the aggregates first takes the model's write lock (`Q_LOCK`):
without it, two completions of one parameter set on Neo4j would lose one's update (see its
comment in `ingest.write.aggregate_statements`).
"""

from __future__ import annotations

from typing import Any

from ingest.store import uids
from ingest.store.runner import Tx
from ingest.write.aggregate_statements import (
    Q_ADD,
    Q_CIRCUIT,
    Q_COMPLETE,
    Q_FEEDS_KEYS,
    Q_FEEDS_KEYS_DROP,
    Q_INCLUDED,
    Q_LAYER_ADD,
    Q_LAYER_RETRACT,
    Q_LAYER_TOP,
    Q_LOCK,
    Q_LOCK_OF,
    Q_RETRACT,
    Q_SETS_ADD,
    Q_SETS_RECOUNT,
    Q_TO_RUNNING,
)


# Each LayerStat also keeps its TOP_N channels in rank order (class count, then importance, then
# channel), computed here from the lists `Q_LAYER_ADD` / `Q_LAYER_RETRACT` return: `hub_neurons` ranks at
# most TOP_N per layer (ArcadeDB sorts the ~10k rows of every layer's channels in ~0.2 s).
TOP_N = 200


def top_rows(changed_layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`Q_LAYER_TOP` rows: each changed LayerStat's `TOP_N` channels in rank order."""
    rows = []
    for r in changed_layers:
        cls, imp = r["classes"], r["importance"]
        ranked = sorted((ch for ch in range(len(cls)) if cls[ch] > 0), key=lambda ch: (-cls[ch], -imp[ch], ch))
        rows.append({"uid": r["uid"], "top": ranked[:TOP_N]})
    return rows


def layer_rows(model: str, params_hash: str, changed: list[dict[str, Any]], sizes: dict[str, int] | None = None) -> list[dict]:
    """`Q_LAYER_ADD` / `Q_LAYER_RETRACT` rows from the new values of the changed neurons."""
    by_layer: dict[str, dict[str, Any]] = {}
    for r in changed:  # one pass per list: new values by channel (as text: map keys), the rest kept
        row = by_layer.setdefault(r["layer"], {
            "uid": uids.layer_stat_uid(model, r["layer"], params_hash), "layer": r["layer"], "depth": r["depth"],
            "classes": {}, "circuits": {}, "importance": {}, "top": 0,
        })  # fmt: skip
        key = str(r["channel"])
        row["classes"][key] = max(r["classes"], 0)
        row["circuits"][key] = max(r["circuits"], 0)
        row["importance"][key] = r["importance"] if r["circuits"] > 0 else 0.0
        row["top"] = max(row["top"], r["channel"] + 1)
    for row in by_layer.values():
        row["size"] = max((sizes or {}).get(row["layer"], 0), row.pop("top"))
    return list(by_layer.values())


def stat_rows(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """`Q_ADD` rows of a circuit, from its writer rows (`ingest.write.circuit_rows.circuit_rows`)."""
    ph = rows["circuit"]["params_hash"]
    by_uid = {r["uid"]: r for r in rows["neurons"]}
    return [
        {
            "uid": uids.neuron_stat_uid(r["uid"], ph),
            "neuron": r["uid"],
            "layer": by_uid[r["uid"]]["layer"],
            "depth": r["depth"],
            "channel": by_uid[r["uid"]]["channel"],
            "importance": r["importance"],
        }
        for r in rows["includes"]
    ]


def complete_circuit(tx: Tx, rows: dict[str, Any], props: dict[str, Any]) -> None:
    """Mark the circuit complete and count it into the aggregates: one transaction (see module doc),
    which first takes the model's lock (`Q_LOCK`)."""
    c = rows["circuit"]
    tx.run(Q_LOCK, {"model": c["model"]})
    tx.run(Q_COMPLETE, {"circuit": c["uid"], "props": props})
    tx.run(Q_FEEDS_KEYS, {"circuit": c["uid"], "model": c["model"], "keys": rows["feed_keys"]})
    stats = stat_rows(rows)
    if stats:
        p = {"model": c["model"], "params_hash": c["params_hash"]}
        out = tx.run(Q_ADD, {"rows": stats, **p, "class_index": c["class_index"]})
        if len(out) != len(stats):
            raise RuntimeError(f"completing {c['uid']}: {len(out)} of {len(stats)} neuron aggregates updated")
        sizes = {r["name"]: r["channels"] for r in rows["layers"]}
        layers = tx.run(Q_LAYER_ADD, {"rows": layer_rows(c["model"], c["params_hash"], out, sizes), **p})
        tx.run(Q_LAYER_TOP, {"rows": top_rows(layers)})
    tx.run(Q_SETS_ADD, {"model": c["model"], "params_hash": c["params_hash"], "completed_at": props["completed_at"]})


def retract_circuit(tx: Tx, uid: str) -> str | None:
    """Take circuit `uid` out of the aggregates if it is complete and mark it ``running``, in the
    caller's transaction (which first takes the model's lock, `Q_LOCK_OF`); returns the status it
    had (None: no such circuit)."""
    tx.run(Q_LOCK_OF, {"circuit": uid})
    found = tx.run(Q_CIRCUIT, {"circuit": uid})
    if not found:
        return None
    status = found[0]["status"]
    if status == "complete":
        inc = tx.run(Q_INCLUDED, {"circuit": uid})
        if inc:
            ph, model = found[0]["params_hash"], found[0]["model"]
            out = tx.run(Q_RETRACT, {
                "uids": [uids.neuron_stat_uid(r["neuron"], ph) for r in inc],
                "importance": [r["importance"] for r in inc],
                "class_index": found[0]["class_index"],
            })  # fmt: skip
            if out:
                layers = tx.run(Q_LAYER_RETRACT, {"rows": layer_rows(model, ph, out)})
                tx.run(Q_LAYER_TOP, {"rows": top_rows(layers)})
        tx.run(Q_SETS_RECOUNT, {"model": found[0]["model"], "params_hash": found[0]["params_hash"], "circuit": uid})
        tx.run(Q_FEEDS_KEYS_DROP, {"circuit": uid})
    tx.run(Q_TO_RUNNING, {"circuit": uid})
    return status


def critical_lists(layers: list[tuple[str, list[int]]]) -> dict[str, list]:
    """Circuit-node properties for (layer name, sorted critical channels) in depth order."""
    names, offsets, chans = [], [0], []
    for name, cs in layers:
        names.append(name)
        chans.extend(cs)
        offsets.append(len(chans))
    return {"layers": names, "offsets": offsets, "channels": chans}
