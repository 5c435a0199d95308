"""The statements of stored evaluations: the read the faithfulness page and `neurflow evaluate`
share (`Q_READ`, torch-free: `ingest.read.evaluation_rows`), and those of the evaluation job
(`ingest.jobs.evaluations`): the circuits to evaluate, a circuit read back, the Evaluation nodes'
constraint, index and MERGE.
"""

from __future__ import annotations

Q_READ = """
MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(c:Circuit)-[:HAS_EVALUATION]->(e:Evaluation)
WHERE c.status = 'complete' AND ($params IS NULL OR c.params_hash = $params)
RETURN e.circuit AS circuit, e.model AS model, e.class_index AS class_index, cl.name AS class_name,
       e.kind AS kind, e.layer AS layer, e.depth AS depth, e.lower AS lower, e.mode AS mode, e.scope AS scope,
       e.value AS value, e.value_std AS value_std, e.random_mean AS random_mean, e.random_std AS random_std,
       e.baseline AS baseline, e.size AS size, e.n AS n, e.draws AS draws, e.seed AS seed,
       c.completed_at AS completed_at, c.params_hash AS params_hash
ORDER BY class_index, kind, depth, mode, scope
"""

Q_CIRCUITS = """
MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(c:Circuit)
WHERE c.status = 'complete' AND cl.index IN $classes AND ($params IS NULL OR c.params_hash = $params)
RETURN c.uid AS uid, cl.index AS class_index, cl.name AS class_name, c.params AS params,
       c.params_hash AS params_hash, c.completed_at AS completed_at
ORDER BY class_index, completed_at
"""

Q_CIRCUITS_BY_UID = """
MATCH (cl:Class)-[:HAS_CIRCUIT]->(c:Circuit)
WHERE c.uid IN $uids AND c.status = 'complete'
RETURN c.uid AS uid, cl.index AS class_index, cl.name AS class_name, c.params AS params,
       c.params_hash AS params_hash, c.completed_at AS completed_at
ORDER BY class_index
"""

Q_EVALUATED = """
MATCH (c:Circuit)-[:HAS_EVALUATION]->(:Evaluation)
WHERE c.uid IN $uids
RETURN DISTINCT c.uid AS uid
"""

Q_INCLUDES = """
MATCH (c:Circuit {uid: $uid})-[i:INCLUDES]->(n:Neuron)
RETURN i.depth AS depth, n.layer AS layer, n.channel AS channel
"""

Q_FEEDS = """
MATCH (c:Circuit {uid: $uid})-[:INCLUDES]->(u:Neuron)<-[f:FEEDS]-(v:Neuron)
WHERE f.circuit = $uid
RETURN u.layer AS layer, u.channel AS channel, v.layer AS lower_layer, v.channel AS lower_channel,
       f.rank AS rank, f.importance AS importance
"""

Q_LAYERS = """
MATCH (l:Layer) WHERE l.uid IN $uids
RETURN l.name AS name, l.channels AS channels
"""

Q_CONSTRAINT = "CREATE CONSTRAINT evaluation_uid IF NOT EXISTS FOR (n:Evaluation) REQUIRE n.uid IS UNIQUE"
Q_INDEX = "CREATE INDEX evaluation_circuit IF NOT EXISTS FOR (n:Evaluation) ON (n.circuit)"

Q_WRITE = """
MATCH (c:Circuit {uid: $circuit})
UNWIND $rows AS r
MERGE (e:Evaluation {uid: r.uid})
SET e += r
MERGE (e)<-[:HAS_EVALUATION]-(c)
"""
