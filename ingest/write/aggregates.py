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
changes to or from ``complete``, and in the same transaction: `add_circuit` runs with the
statement that marks a circuit complete, `retract_circuit` with the one that takes a complete
circuit back to ``running`` (a forced rewrite, a delete).  A write that crashes midway never
reached ``complete`` and so never counted; its resumption cleans and writes it like a new one.

Every circuit also keeps its labelled groups (``labels_*``, `ingest.write.group_labels`) and its
critical channels per layer on its own node (``critical_layers``,
``critical_offsets``, ``critical_channels``: layer ``i`` holds ``critical_channels[offsets[i] ..
offsets[i + 1]]``), set with ``complete``: `class_channels` reads one node per class instead of
the INCLUDES of every circuit.

`recompute` rebuilds both from the raw relationships (the test suite compares them with what
the writer kept); `rebuild` replaces the stored ones by it.  A store written before the
aggregates existed gets them when a writer first opens it (`ensure`, from
`ingest.store.schema.ensure_schema`); a reader that cannot rebuild names the command that does
(`missing_message`: ``neurflow store rebuild-aggregates``; also ``python -m ingest.write.aggregates``).

Every transaction that changes the aggregates first takes the model's write lock (`Q_LOCK`):
without it, two completions of one parameter set on Neo4j would lose one's update (see there).
"""

from __future__ import annotations

import math
import sys
from typing import Any, Iterable, Iterator

from ingest.store.runner import Runner, Tx
from ingest.write.statements import Q_REFRESH_LABELS

STAT_LABEL = "NeuronStat"


def stat_uid(neuron_uid: str, params_hash: str) -> str:
    return f"{neuron_uid}@{params_hash}"


Q_ADD = """
UNWIND $rows AS r
MERGE (s:NeuronStat {uid: r.uid})
  ON CREATE SET s.model = $model, s.params_hash = $params_hash, s.neuron = r.neuron, s.layer = r.layer,
                s.depth = r.depth, s.channel = r.channel, s.classes = 0, s.circuits = 0, s.importance = 0.0,
                s.class_indices = []
WITH s, r, s.class_indices AS old
SET s.classes = s.classes + CASE WHEN $class_index IN old THEN 0 ELSE 1 END,
    s.circuits = s.circuits + 1,
    s.importance = s.importance + r.importance,
    s.class_indices = [x IN old WHERE x <= $class_index] + [$class_index] + [x IN old WHERE x > $class_index]
RETURN s.layer AS layer, s.depth AS depth, s.channel AS channel, s.classes AS classes, s.circuits AS circuits,
       s.importance AS importance
"""

# one occurrence of the class leaves the sorted list; a stat no circuit counts any more goes
Q_RETRACT = """
UNWIND range(0, size($uids) - 1) AS j
MATCH (s:NeuronStat {uid: $uids[j]})
WITH s, $importance[j] AS imp, s.class_indices AS old
WITH s, imp, old, [i IN range(0, size(old) - 1) WHERE old[i] = $class_index] AS at
WITH s, imp, [i IN range(0, size(old) - 1) WHERE size(at) = 0 OR i <> at[0] | old[i]] AS rest
SET s.circuits = s.circuits - 1,
    s.importance = s.importance - imp,
    s.class_indices = rest,
    s.classes = s.classes - CASE WHEN $class_index IN rest THEN 0 ELSE 1 END
WITH collect([s, s.layer, s.depth, s.channel, s.classes, s.circuits, s.importance]) AS touched
FOREACH (s IN [t IN touched WHERE t[5] <= 0 | t[0]] | DELETE s)
WITH touched
UNWIND touched AS t
RETURN t[1] AS layer, t[2] AS depth, t[3] AS channel, t[4] AS classes, t[5] AS circuits, t[6] AS importance
"""

# The per-(model, parameter set, layer) view of the same counts, dense by channel: `hub_neurons`
# unwinds a few such lists in memory instead of scanning thousands of NeuronStat nodes (ArcadeDB
# reads a node in tens of microseconds, a list element in well under one).  Rows carry the new
# values of the neurons a circuit changed (`Q_ADD` / `Q_RETRACT` return them).
_LAYER_SET = """
WITH s, r, s.classes AS c0, s.circuits AS k0, s.importance AS w0
SET s.classes = [i IN range(0, size(c0) - 1) | coalesce(r.classes[toString(i)], c0[i])],
    s.circuits = [i IN range(0, size(k0) - 1) | coalesce(r.circuits[toString(i)], k0[i])],
    s.importance = [i IN range(0, size(w0) - 1) | coalesce(r.importance[toString(i)], w0[i])]
"""
Q_LAYER_ADD = """
UNWIND $rows AS r
MERGE (s:LayerStat {uid: r.uid})
  ON CREATE SET s.model = $model, s.params_hash = $params_hash, s.layer = r.layer, s.depth = r.depth,
                s.classes = [i IN range(1, r.size) | 0], s.circuits = [i IN range(1, r.size) | 0],
                s.importance = [i IN range(1, r.size) | 0.0]
""" + _LAYER_SET + """RETURN s.uid AS uid, s.classes AS classes, s.importance AS importance
"""
Q_LAYER_RETRACT = """
UNWIND $rows AS r
MATCH (s:LayerStat {uid: r.uid})
""" + _LAYER_SET + """WITH collect([s, s.uid, s.classes, s.importance, all(k IN s.circuits WHERE k <= 0)]) AS touched
FOREACH (s IN [t IN touched WHERE t[4] | t[0]] | DELETE s)
WITH touched
UNWIND [t IN touched WHERE NOT t[4]] AS t
RETURN t[1] AS uid, t[2] AS classes, t[3] AS importance
"""

# Each LayerStat also keeps its TOP_N channels in rank order (class count, then importance, then
# channel), computed here from the lists the statements above return: `hub_neurons` ranks at
# most TOP_N per layer (ArcadeDB sorts the ~10k rows of every layer's channels in ~0.2 s).
TOP_N = 200
Q_LAYER_TOP = """
UNWIND $rows AS r
MATCH (s:LayerStat {uid: r.uid})
SET s.top = r.top
RETURN count(*) AS n
"""


def _top(changed_layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in changed_layers:
        cls, imp = r["classes"], r["importance"]
        ranked = sorted((ch for ch in range(len(cls)) if cls[ch] > 0), key=lambda ch: (-cls[ch], -imp[ch], ch))
        rows.append({"uid": r["uid"], "top": ranked[:TOP_N]})
    return rows


# Per model, the complete circuits of each parameter set (`param_set()` of ingest/queries/library.py picks
# the default set from them instead of scanning every circuit): lists on the Model node,
# `ps_hashes`, `ps_circuits`, `ps_last` (latest completed_at: a maximum, since concurrent
# completions commit in any order of their timestamps).  A retract recounts its set.
Q_SETS_ADD = """
MATCH (m:Model {uid: $model})
WITH m, coalesce(m.ps_hashes, []) AS hs, coalesce(m.ps_circuits, []) AS ns, coalesce(m.ps_last, []) AS ls
WITH m, hs, ns, ls, [i IN range(0, size(hs) - 1) WHERE hs[i] = $params_hash] AS at
SET m.ps_hashes = CASE WHEN size(at) = 0 THEN hs + [$params_hash] ELSE hs END,
    m.ps_circuits = CASE WHEN size(at) = 0 THEN ns + [1]
                         ELSE [i IN range(0, size(ns) - 1) | ns[i] + CASE WHEN i = at[0] THEN 1 ELSE 0 END] END,
    m.ps_last = CASE WHEN size(at) = 0 THEN ls + [$completed_at]
                     ELSE [i IN range(0, size(ls) - 1) |
                           CASE WHEN i = at[0] AND (ls[i] IS NULL OR ls[i] < $completed_at) THEN $completed_at ELSE ls[i] END] END
RETURN count(m) AS n
"""
Q_SETS_RECOUNT = """
MATCH (m:Model {uid: $model})
OPTIONAL MATCH (c:Circuit {params_hash: $params_hash})
WHERE c.status = 'complete' AND c.model = $model AND c.uid <> $circuit
WITH m, count(c) AS n, max(c.completed_at) AS last
WITH m, n, last, coalesce(m.ps_hashes, []) AS hs, coalesce(m.ps_circuits, []) AS ns, coalesce(m.ps_last, []) AS ls
WITH m, n, last, hs, ns, ls, [i IN range(0, size(hs) - 1) WHERE hs[i] <> $params_hash] AS keep
SET m.ps_hashes = [i IN keep | hs[i]] + CASE WHEN n > 0 THEN [$params_hash] ELSE [] END,
    m.ps_circuits = [i IN keep | ns[i]] + CASE WHEN n > 0 THEN [n] ELSE [] END,
    m.ps_last = [i IN keep | ls[i]] + CASE WHEN n > 0 THEN [last] ELSE [] END
RETURN n
"""


def layer_uid(model: str, layer: str, params_hash: str) -> str:
    return f"{model}/{layer}@{params_hash}"


def _layer_rows(model: str, params_hash: str, changed: list[dict[str, Any]], sizes: dict[str, int] | None = None) -> list[dict]:
    """`Q_LAYER_ADD` / `Q_LAYER_RETRACT` rows from the new values of the changed neurons."""
    by_layer: dict[str, dict[str, Any]] = {}
    for r in changed:  # one pass per list: new values by channel (as text: map keys), the rest kept
        row = by_layer.setdefault(r["layer"], {
            "uid": layer_uid(model, r["layer"], params_hash), "layer": r["layer"], "depth": r["depth"],
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


Q_CIRCUIT = """
MATCH (c:Circuit {uid: $circuit})
RETURN c.status AS status, c.params_hash AS params_hash, c.class_index AS class_index, c.model AS model
"""

Q_INCLUDED = """
MATCH (:Circuit {uid: $circuit})-[i:INCLUDES]->(n:Neuron)
RETURN n.uid AS neuron, coalesce(i.importance, 0.0) AS importance
"""

Q_TO_RUNNING = "MATCH (c:Circuit {uid: $circuit}) SET c.status = 'running' RETURN c.uid AS uid"

Q_COMPLETE = """
MATCH (c:Circuit {uid: $circuit})
SET c += $props, c.status = 'complete'
RETURN c.status AS status
"""


def stat_rows(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """`Q_ADD` rows of a circuit, from its writer rows (`ingest.write.circuit_rows.circuit_rows`)."""
    ph = rows["circuit"]["params_hash"]
    by_uid = {r["uid"]: r for r in rows["neurons"]}
    return [
        {
            "uid": stat_uid(r["uid"], ph),
            "neuron": r["uid"],
            "layer": by_uid[r["uid"]]["layer"],
            "depth": r["depth"],
            "channel": by_uid[r["uid"]]["channel"],
            "importance": r["importance"],
        }
        for r in rows["includes"]
    ]


# A complete circuit's FEEDS as sorted integer keys depth * 2^32 + upper * 2^16 + lower
# (`ingest.write.circuit_rows.feed_keys`), one node per circuit (uid = the circuit's): `circuit_diff`
# unwinds two of them and groups the keys in memory (7 ms at 1,000 classes).
Q_FEEDS_KEYS = """
MERGE (x:CircuitFeeds {uid: $circuit})
SET x.model = $model, x.keys = $keys
RETURN count(x) AS n
"""


Q_FEEDS_KEYS_DROP = "MATCH (x:CircuitFeeds {uid: $circuit}) DELETE x RETURN count(*) AS n"
Q_FEEDS_RAW = """
MATCH (v)-[f:FEEDS]->(u)
WHERE f.class_index = $class_index AND f.circuit = $circuit
RETURN u.depth AS depth, u.channel AS u, v.channel AS v
"""


# The first statement of every transaction that changes the aggregates: a write on the Model node
# before anything is read.  The aggregate statements read a node's lists and then SET them; on
# Neo4j (read committed) two transactions completing circuits of one parameter set would both read
# the old list and the second commit would lose the first one's update.  Neo4j takes a node's
# write lock before reading only when the SET expression itself reads the property (as here), and
# holds it to the commit, so every aggregate change of one model runs after the previous one
# committed (they are short), always Model first, so no two of them wait on each other (no
# deadlock).  ArcadeDB is optimistic instead: the second commit fails with a concurrent
# modification, which `Runner.execute` retries (`ingest.store.runner.is_transient_store_error`).
Q_LOCK = "MATCH (m:Model {uid: $model}) SET m.agg_lock = coalesce(m.agg_lock, 0) + 1 RETURN count(m) AS n"
Q_LOCK_OF = """
MATCH (c:Circuit {uid: $circuit})
MATCH (m:Model {uid: c.model})
SET m.agg_lock = coalesce(m.agg_lock, 0) + 1
RETURN count(m) AS n
"""


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
        layers = tx.run(Q_LAYER_ADD, {"rows": _layer_rows(c["model"], c["params_hash"], out, sizes), **p})
        tx.run(Q_LAYER_TOP, {"rows": _top(layers)})
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
                "uids": [stat_uid(r["neuron"], ph) for r in inc],
                "importance": [r["importance"] for r in inc],
                "class_index": found[0]["class_index"],
            })  # fmt: skip
            if out:
                layers = tx.run(Q_LAYER_RETRACT, {"rows": _layer_rows(model, ph, out)})
                tx.run(Q_LAYER_TOP, {"rows": _top(layers)})
        tx.run(Q_SETS_RECOUNT, {"model": found[0]["model"], "params_hash": found[0]["params_hash"], "circuit": uid})
        tx.run(Q_FEEDS_KEYS_DROP, {"circuit": uid})
    tx.run(Q_TO_RUNNING, {"circuit": uid})
    return status


# --------------------------------------------------------------------------- checking, rebuilding
# The raw relationships are read one complete circuit at a time: a statement over every circuit
# (every INCLUDES, and the FEEDS of neurons every class shares) runs past ArcadeDB's 60 s command
# timeout at 1,000 classes.  A circuit's FEEDS come through the `FEEDS.class_index` index.
Q_COMPLETE_CIRCUITS = """
MATCH (c:Circuit {status: 'complete'})
WHERE $model IS NULL OR c.model = $model
RETURN c.uid AS uid, c.model AS model, c.params_hash AS params_hash, c.class_index AS class_index
ORDER BY uid
"""
Q_CIRCUIT_INCLUDES = """
MATCH (:Circuit {uid: $circuit})-[:INCLUDES]->(n:Neuron)
RETURN n.uid AS neuron, n.layer AS layer, n.depth AS depth, n.channel AS channel
"""
Q_CIRCUIT_FEEDS = """
MATCH (v)-[f:FEEDS]->(u)
WHERE f.class_index = $class_index AND f.circuit = $circuit
RETURN v.uid AS lower, u.depth AS depth, u.channel AS u, v.channel AS v, coalesce(f.importance, 0.0) AS importance
"""


def raw_circuits(runner: Runner, model: str | None = None) -> Iterator[dict[str, Any]]:
    """Per complete circuit, what its raw relationships say: its neurons (with their importance,
    the sum of ``I_u(v)`` over their FEEDS in the circuit, and the number of those FEEDS) and its
    FEEDS keys (`ingest.write.circuit_rows.feed_keys`)."""
    from ingest.write.circuit_rows import KEY_BASE

    for c in runner.read(Q_COMPLETE_CIRCUITS, {"model": model}):
        imp: dict[str, float] = {}
        up: dict[str, int] = {}
        keys = []
        for f in runner.read(Q_CIRCUIT_FEEDS, {"circuit": c["uid"], "class_index": c["class_index"]}):
            imp[f["lower"]] = imp.get(f["lower"], 0.0) + f["importance"]
            up[f["lower"]] = up.get(f["lower"], 0) + 1
            keys.append((f["depth"] * KEY_BASE + f["u"]) * KEY_BASE + f["v"])
        neurons = [{**n, "importance": imp.get(n["neuron"], 0.0), "up": up.get(n["neuron"], 0)}
                   for n in runner.read(Q_CIRCUIT_INCLUDES, {"circuit": c["uid"]})]  # fmt: skip
        yield {**c, "neurons": neurons, "keys": sorted(keys)}


def _stats(circuits: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """NeuronStat rows by uid from `raw_circuits`."""
    out: dict[str, dict[str, Any]] = {}
    for c in circuits:
        for n in c["neurons"]:
            uid = stat_uid(n["neuron"], c["params_hash"])
            s = out.setdefault(uid, {
                "uid": uid, "model": c["model"], "params_hash": c["params_hash"], "neuron": n["neuron"], "layer": n["layer"],
                "depth": n["depth"], "channel": n["channel"], "circuits": 0, "importance": 0.0, "class_indices": [],
            })  # fmt: skip
            s["circuits"] += 1
            s["importance"] += n["importance"]
            s["class_indices"].append(c["class_index"])
    for s in out.values():
        s["class_indices"].sort()
        s["classes"] = len(set(s["class_indices"]))
    return out


Q_STORED = """
MATCH (s:NeuronStat)
WHERE $model IS NULL OR s.model = $model
RETURN s.uid AS uid, s.model AS model, s.params_hash AS params_hash, s.neuron AS neuron, s.layer AS layer,
       s.depth AS depth, s.channel AS channel, s.classes AS classes, s.circuits AS circuits,
       s.importance AS importance, s.class_indices AS class_indices
"""

Q_LAYER_STORED = """
MATCH (s:LayerStat)
WHERE $model IS NULL OR s.model = $model
RETURN s.uid AS uid, s.classes AS classes, s.circuits AS circuits, s.importance AS importance, s.top AS top
"""

Q_SETS_RAW = """
MATCH (m:Model)
WHERE $model IS NULL OR m.uid = $model
OPTIONAL MATCH (c:Circuit {status: 'complete'})
WHERE c.model = m.uid
WITH m, c.params_hash AS ph, count(c) AS n, max(c.completed_at) AS last
WITH m, collect(CASE WHEN ph IS NULL THEN null ELSE [ph, n, last] END) AS sets
RETURN m.uid AS model, m.ps_hashes AS hs, m.ps_circuits AS ns, m.ps_last AS ls,
       [x IN sets | x[0]] AS raw_hs, [x IN sets | x[1]] AS raw_ns, [x IN sets | x[2]] AS raw_ls
"""

Q_LABEL_LISTS = """
MATCH (c:Circuit {status: 'complete'})
WHERE $model IS NULL OR c.model = $model
OPTIONAL MATCH (c)-[:HAS_GROUP]->(g:Group)
WHERE g.label IS NOT NULL
WITH c, g ORDER BY g.depth, g.index
RETURN c.uid AS circuit, c.labels_text AS kept, collect(g.label) AS groups
"""

Q_CIRCUIT_NEURONS = """
MATCH (c:Circuit {status: 'complete'})-[:INCLUDES]->(n:Neuron)
WHERE $model IS NULL OR c.model = $model
RETURN c.uid AS circuit, n.layer AS layer, n.channel AS channel
"""

Q_CIRCUIT_LISTS = """
MATCH (c:Circuit {status: 'complete'})
WHERE $model IS NULL OR c.model = $model
RETURN c.uid AS circuit, c.critical_layers AS layers, c.critical_offsets AS offsets, c.critical_channels AS channels
"""


def recompute(runner: Runner, model: str | None = None) -> dict[str, dict[str, Any]]:
    """The `NeuronStat` aggregates as the raw relationships say they should be, by uid."""
    return _stats(raw_circuits(runner, model))


def stored(runner: Runner, model: str | None = None) -> dict[str, dict[str, Any]]:
    """The `NeuronStat` aggregates the writer kept, by uid."""
    return {r["uid"]: r for r in runner.read(Q_STORED, {"model": model})}


def circuit_lists(runner: Runner, model: str | None = None) -> tuple[dict, dict]:
    """(kept, recomputed): per complete circuit, layer -> sorted critical channels, as kept on the
    circuit node and as its INCLUDES say."""
    kept: dict[str, dict[str, list[int]]] = {}
    for r in runner.read(Q_CIRCUIT_LISTS, {"model": model}):
        layers, offsets, chans = r["layers"] or [], r["offsets"] or [], r["channels"] or []
        kept[r["circuit"]] = {name: list(chans[offsets[i] : offsets[i + 1]]) for i, name in enumerate(layers)}
    raw: dict[str, dict[str, list[int]]] = {c: {} for c in kept}
    for r in runner.read(Q_CIRCUIT_NEURONS, {"model": model}):
        raw.setdefault(r["circuit"], {}).setdefault(r["layer"], []).append(r["channel"])
    for layers in raw.values():
        for chans in layers.values():
            chans.sort()
    kept = {c: {k: v for k, v in layers.items() if v} for c, layers in kept.items()}
    return kept, raw


def differences(runner: Runner, model: str | None = None) -> list[str]:
    """Every way the kept aggregates differ from the raw relationships (empty: consistent)."""
    want, got = recompute(runner, model), stored(runner, model)
    out = [f"missing {u}" for u in sorted(set(want) - set(got))]
    out += [f"extra {u} (classes {got[u]['classes']})" for u in sorted(set(got) - set(want))]
    for u in sorted(set(want) & set(got)):
        w, g = want[u], got[u]
        for key in ("model", "params_hash", "neuron", "layer", "depth", "channel", "classes", "circuits", "class_indices"):
            if w[key] != g[key]:
                out.append(f"{u}: {key} {g[key]!r}, raw relationships say {w[key]!r}")
        if not math.isclose(w["importance"], g["importance"] or 0.0, rel_tol=1e-9, abs_tol=1e-9):
            out.append(f"{u}: importance {g['importance']!r}, raw relationships say {w['importance']!r}")
    layers: dict[str, dict[int, tuple]] = {}
    for w in want.values():
        layers.setdefault(layer_uid(w["model"], w["layer"], w["params_hash"]), {})[w["channel"]] = (
            w["classes"], w["circuits"], w["importance"])
    kept_layers = {r["uid"]: r for r in runner.read(Q_LAYER_STORED, {"model": model})}
    for u in sorted(set(layers) | set(kept_layers)):
        k = kept_layers.get(u)
        got_l = {} if k is None else {ch: (k["classes"][ch], k["circuits"][ch], k["importance"][ch])
                                      for ch in range(len(k["circuits"])) if k["circuits"][ch] > 0}  # fmt: skip
        w = layers.get(u, {})
        if {ch: v[:2] for ch, v in got_l.items()} != {ch: v[:2] for ch, v in w.items()} or not all(
            math.isclose(got_l[ch][2], w[ch][2], rel_tol=1e-9, abs_tol=1e-9) for ch in got_l
        ):
            out.append(f"layer aggregate {u} differs from the raw relationships")
        if k is not None and not (len(k["classes"]) == len(k["circuits"]) == len(k["importance"])):
            out.append(f"layer aggregate {u}: lists of different lengths")
        if k is not None and k["top"] != _top([k])[0]["top"]:
            out.append(f"layer aggregate {u}: top channels {k['top'][:10]}..., the counts rank {_top([k])[0]['top'][:10]}...")
    for r in runner.read(Q_SETS_RAW, {"model": model}):
        kept_sets = sorted(zip(r["hs"] or [], r["ns"] or [], r["ls"] or []))
        if kept_sets != sorted(zip(r["raw_hs"], r["raw_ns"], r["raw_ls"])):
            out.append(f"model {r['model']}: parameter sets kept {kept_sets}, circuits say "
                       f"{sorted(zip(r['raw_hs'], r['raw_ns'], r['raw_ls']))}")
    from ingest.write.circuit_rows import KEY_BASE

    kept_keys = {r["uid"]: r["keys"] for r in runner.read(
        "MATCH (x:CircuitFeeds) WHERE $model IS NULL OR x.model = $model RETURN x.uid AS uid, x.keys AS keys", {"model": model})}
    complete = runner.read("MATCH (c:Circuit {status: 'complete'}) WHERE $model IS NULL OR c.model = $model "
                           "RETURN c.uid AS uid, c.class_index AS ci", {"model": model})  # fmt: skip
    for r in complete:
        raw = sorted((f["depth"] * KEY_BASE + f["u"]) * KEY_BASE + f["v"]
                     for f in runner.read(Q_FEEDS_RAW, {"circuit": r["uid"], "class_index": r["ci"]}))
        if kept_keys.pop(r["uid"], None) != raw:
            out.append(f"{r['uid']}: FEEDS keys kept differ from its FEEDS")
    out += [f"FEEDS keys kept for {u}, which is not complete" for u in sorted(kept_keys)]
    for r in runner.read(Q_LABEL_LISTS, {"model": model}):
        if (r["kept"] or []) != r["groups"]:
            out.append(f"{r['circuit']}: labelled groups kept {r['kept']}, groups say {r['groups']}")
    kept, raw = circuit_lists(runner, model)
    for c in sorted(set(kept) | set(raw)):
        if kept.get(c) != raw.get(c):
            out.append(f"{c}: critical channels kept {kept.get(c)}, INCLUDES say {raw.get(c)}")
    return out


Q_DROP = "MATCH (s:NeuronStat) WHERE $model IS NULL OR s.model = $model WITH s LIMIT 10000 DELETE s RETURN count(*) AS n"
Q_DROP_LAYERS = "MATCH (s:LayerStat) WHERE $model IS NULL OR s.model = $model DELETE s RETURN count(*) AS n"
Q_LAYER_SIZES = "MATCH (l:Layer) WHERE $model IS NULL OR l.model = $model RETURN l.model AS model, l.name AS name, l.channels AS channels"
Q_CLASS_NAMES = """
MATCH (cl:Class)-[:HAS_CIRCUIT]->(c:Circuit)
WHERE $model IS NULL OR c.model = $model
SET c.class_name = cl.name
"""
Q_PUT = """
UNWIND $rows AS r
CREATE (s:NeuronStat {uid: r.uid, model: r.model, params_hash: r.params_hash, neuron: r.neuron, layer: r.layer,
                      depth: r.depth, channel: r.channel, classes: r.classes, circuits: r.circuits,
                      importance: r.importance, class_indices: r.class_indices})
"""
Q_SET_INCLUDES = """
MATCH (:Circuit {uid: $circuit})-[i:INCLUDES]->(n:Neuron)
SET i.importance = coalesce($importance[n.uid], 0.0), i.feeds_up = coalesce($up[n.uid], 0)
RETURN count(i) AS n
"""
Q_DROP_FEEDS_KEYS = """
MATCH (x:CircuitFeeds)
WHERE ($model IS NULL OR x.model = $model) AND NOT x.uid IN $keep
DELETE x
RETURN count(*) AS n
"""
Q_SET_LISTS = """
UNWIND $rows AS r
MATCH (c:Circuit {uid: r.circuit})
SET c.critical_layers = r.layers, c.critical_offsets = r.offsets, c.critical_channels = r.channels
"""
def rebuild(runner: Runner, model: str | None = None, *, progress: Any = None) -> int:
    """Replace the kept aggregates by ones recomputed from the raw relationships (for a store
    written before the writer kept them); returns the number of `NeuronStat` nodes.  One circuit
    at a time for what reads relationships (see `raw_circuits`); `progress(done, total)` is called
    every 100 circuits."""
    circuits = []
    for c in raw_circuits(runner, model):
        circuits.append(c)
        runner.write(Q_SET_INCLUDES, {"circuit": c["uid"], "importance": {n["neuron"]: n["importance"] for n in c["neurons"]},
                                      "up": {n["neuron"]: n["up"] for n in c["neurons"]}})  # fmt: skip
        runner.write(Q_FEEDS_KEYS, {"circuit": c["uid"], "model": c["model"], "keys": c["keys"]})
        if progress is not None and len(circuits) % 100 == 0:
            progress(len(circuits))
    runner.write(Q_DROP_FEEDS_KEYS, {"model": model, "keep": [c["uid"] for c in circuits]})
    while runner.write(Q_DROP, {"model": model})[0]["n"]:
        pass
    runner.write(Q_DROP_LAYERS, {"model": model})
    runner.write(Q_CLASS_NAMES, {"model": model})
    for i in range(0, len(circuits), 100):
        runner.write(Q_REFRESH_LABELS, {"circuits": [c["uid"] for c in circuits[i : i + 100]]})
    rows = list(_stats(circuits).values())
    for i in range(0, len(rows), 5000):
        runner.write(Q_PUT, {"rows": rows[i : i + 5000]})
    sizes = {(r["model"], r["name"]): r["channels"] for r in runner.read(Q_LAYER_SIZES, {"model": model})}
    by_set: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_set.setdefault((r["model"], r["params_hash"]), []).append(r)
    for (m, ph), changed in by_set.items():
        layers = runner.write(Q_LAYER_ADD, {"rows": _layer_rows(m, ph, changed, {n: c for (mm, n), c in sizes.items() if mm == m}),
                                            "model": m, "params_hash": ph})
        runner.write(Q_LAYER_TOP, {"rows": _top(layers)})
    for r in runner.read(Q_SETS_RAW, {"model": model}):
        runner.write("MATCH (m:Model {uid: $model}) SET m.ps_hashes = $hs, m.ps_circuits = $ns, m.ps_last = $ls",
                     {"model": r["model"], "hs": r["raw_hs"], "ns": r["raw_ns"], "ls": r["raw_ls"]})
    lists = []
    for c in circuits:
        by_layer: dict[str, tuple[int, list[int]]] = {}
        for n in c["neurons"]:
            by_layer.setdefault(n["layer"], (n["depth"], []))[1].append(n["channel"])
        names = sorted(by_layer, key=lambda name: by_layer[name][0])
        lists.append({"circuit": c["uid"], **critical_lists([(name, sorted(by_layer[name][1])) for name in names])})
    for i in range(0, len(lists), 1000):
        runner.write(Q_SET_LISTS, {"rows": lists[i : i + 1000]})
    return len(rows)


# --------------------------------------------------------------------------- stores written before
# A store written before the writer kept the aggregates has complete circuits without them: every
# cross-class query would answer nothing (the default parameter set comes from the Model node's
# `ps_*` lists).  Its mark: a Model node without `ps_hashes` that has complete circuits.  The
# writer sets `ps_hashes` in the very transaction that marks a model's first circuit complete
# (and the list stays, empty, when the last one leaves), and a writer's open rebuilds before its
# first completion, so a writer at work in parallel never makes a store in step look stale (a
# count of circuits against the Model's counts could: they are read at different moments).  The
# query reads the Model nodes only when the store is in step (median 2 ms on the 1,000-class
# bench store, as much as `RETURN 1`; a look at every complete circuit took 13-30 ms), so it runs
# on every writer open.  (`WITH collect(...)` first: otherwise ArcadeDB plans the circuits too.)
Q_MISSING = """
MATCH (m:Model)
WHERE m.ps_hashes IS NULL
WITH collect(m.uid) AS models
UNWIND models AS model
MATCH (c:Circuit {status: 'complete'})
WHERE c.model = model
RETURN model, count(c) AS complete
"""

FIX_COMMAND = "neurflow store rebuild-aggregates"


def missing(runner: Runner) -> dict[str, int]:
    """Models whose complete circuits lack their aggregates -> their number of complete circuits
    (empty: none; a store in step with its writer)."""
    return {r["model"]: r["complete"] for r in runner.read(Q_MISSING) if r["complete"] > 0}


def missing_message(stale: dict[str, int]) -> str:
    """One line for a reader that cannot rebuild: what is wrong and the command that fixes it."""
    n = sum(stale.values())
    return (f"the store's aggregates are missing for {n} complete circuit{'s' if n != 1 else ''} "
            f"(model{'s' if len(stale) != 1 else ''} {', '.join(sorted(stale))}; written before the writer kept them), "
            f"so cross-class queries answer nothing: run `{FIX_COMMAND}` (or any `neurflow ingest`) with the writer account")


def ensure(target: Any, *, say: Any = None) -> int:
    """Rebuild the aggregates of every model whose complete circuits lack them (see `Q_MISSING`),
    saying so in one line on stderr; returns the number of circuits rebuilt (0: nothing to do).
    Runs when a writer opens the store (`ingest.store.schema.ensure_schema`)."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    with Runner(target) as runner:
        stale = missing(runner)
        if not stale:
            return 0
        n = sum(stale.values())
        say(f"store: rebuilding the aggregates of {n} complete circuit{'s' if n != 1 else ''} "
            f"(model{'s' if len(stale) != 1 else ''} {', '.join(sorted(stale))}), written before the writer kept them ...")
        for model in sorted(stale):
            rebuild(runner, model)
    return n


def critical_lists(layers: list[tuple[str, list[int]]]) -> dict[str, list]:
    """Circuit-node properties for (layer name, sorted critical channels) in depth order."""
    names, offsets, chans = [], [0], []
    for name, cs in layers:
        names.append(name)
        chans.extend(cs)
        offsets.append(len(chans))
    return {"layers": names, "offsets": offsets, "channels": chans}


def main(argv: list[str] | None = None) -> int:
    """``python -m ingest.write.aggregates [--model M] [--check]``: rebuild (or only check) the aggregates
    (the command line's ``neurflow store rebuild-aggregates`` does the same)."""
    import argparse

    from ingest.store.connection import Store, start_store

    ap = argparse.ArgumentParser(description="Rebuild or check the aggregates the writer keeps (NeuronStat, critical lists).")
    ap.add_argument("--model", default=None)
    ap.add_argument("--check", action="store_true", help="only compare them with the raw relationships")
    args = ap.parse_args(argv)
    with Store(start_store()) as store, Runner(store) as runner:  # not open_store: it would rebuild first
        if args.check:
            diff = differences(runner, args.model)
            print("\n".join(diff[:50]) if diff else "aggregates consistent with the raw relationships")
            return 1 if diff else 0
        print(f"rebuilt {rebuild(runner, args.model)} neuron aggregates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
