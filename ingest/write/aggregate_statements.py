"""The Cypher of the aggregates (`ingest.write.aggregates`, kept by the writer in the transaction
that marks a circuit complete or takes it back) and of their check, rebuild and upgrade
(`ingest.write.aggregate_maintenance`).  What each aggregate holds: see `ingest.write.aggregates`.
"""

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


Q_LAYER_TOP = """
UNWIND $rows AS r
MATCH (s:LayerStat {uid: r.uid})
SET s.top = r.top
RETURN count(*) AS n
"""


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
Q_FEEDS_KEYS_KEPT = "MATCH (x:CircuitFeeds) WHERE $model IS NULL OR x.model = $model RETURN x.uid AS uid, x.keys AS keys"
Q_COMPLETE_CLASS_INDICES = ("MATCH (c:Circuit {status: 'complete'}) WHERE $model IS NULL OR c.model = $model "
                            "RETURN c.uid AS uid, c.class_index AS ci")
Q_SET_PARAM_SETS = "MATCH (m:Model {uid: $model}) SET m.ps_hashes = $hs, m.ps_circuits = $ns, m.ps_last = $ls"
