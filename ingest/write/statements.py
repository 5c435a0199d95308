"""The Cypher the writer sends, one statement per step, and the parameters of one chunk.

Every statement is plain Neo4j-5 Cypher that the embedded ArcadeDB runs as well (no APOC, no
CALL subqueries); the test suite's lint checks each one with Neo4j's parser.  Why they look the
way they do (CREATE rather than MERGE, distinct nodes looked up once, rows as columns) is
explained next to them: each choice is a measured write-throughput fix.
"""

from __future__ import annotations

from typing import Any

Q_HEAD = """
MERGE (m:Model {uid: $model.uid})
  ON CREATE SET m.created_at = $now
SET m.name = $model.name, m.arch = $model.arch, m.weights_sha256 = $model.weights_sha256,
    m.num_classes = $model.num_classes, m.input_size = $model.input_size
MERGE (cl:Class {uid: $cls.uid})
SET cl.model = $cls.model, cl.index = $cls.index, cl.name = $cls.name
MERGE (cl)<-[:HAS_CLASS]-(m)
MERGE (c:Circuit {uid: $circuit.uid})
SET c += $circuit
MERGE (c)<-[:HAS_CIRCUIT]-(cl)
RETURN c.uid AS uid
"""

Q_LAYERS = """
MATCH (m:Model {uid: $model})
UNWIND $rows AS r
MERGE (l:Layer {uid: r.uid})
SET l.model = $model, l.name = r.name, l.depth = r.depth, l.channels = r.channels
MERGE (l)<-[:HAS_LAYER]-(m)
"""

# Per-circuit nodes (Concept, Group) and relationships (INCLUDES, FEEDS, DRIVES, OF, IN_GROUP, ...)
# are CREATEd, not MERGEd: a circuit is written only when the store holds nothing of it (a new uid)
# or after `_clean` removed everything an earlier partial, failed or forced write left, so a
# CREATE never duplicates, and the uniqueness constraints would refuse a duplicate node anyway.
# MERGE on a relationship between shared nodes scans the edges of a hub neuron, which grows with
# the number of classes in the store (measured: the write rate fell with every class written).
# Shared nodes are MERGEd (Model, Class, Layer, Image) or created when missing (Neuron, Crop).
#
# Statements with many rows look each distinct node up once: the chunk carries the distinct uids
# ($neurons, $concepts, ...) and rows refer to them by position ($rows.v[i] = index into
# $neurons), which ArcadeDB unwinds faster than lists of maps.  Each returns how many
# relationships it created; the writer checks that against the rows it sent.
def _lookup(label: str, param: str, var: str, keep: str = "") -> str:
    """Cypher binding `var` to the list of `label` nodes whose uids are in $param, in that order."""
    k = f"{keep}, " if keep else ""
    return (
        f"UNWIND range(0, size(${param}) - 1) AS j\n"
        f"MATCH (x:{label} {{uid: ${param}[j]}})\n"
        f"WITH {k}j, x ORDER BY j\n"
        f"WITH {k}collect(x) AS {var}\n"
    )


Q_NEURONS = """
UNWIND $rows AS r
OPTIONAL MATCH (old:Neuron {uid: r.uid})
WITH r WHERE old IS NULL
MATCH (l:Layer {uid: r.layer_uid})
CREATE (n:Neuron {uid: r.uid, model: $model, layer: r.layer, channel: r.channel, depth: r.depth})
CREATE (l)-[:HAS_NEURON]->(n)
"""

Q_INCLUDES = (
    "MATCH (c:Circuit {uid: $circuit})\n"
    + _lookup("Neuron", "neurons", "ns", "c")
    + """WHERE size(ns) = size($neurons)
UNWIND range(0, size($rows.n) - 1) AS i
WITH c, ns[$rows.n[i]] AS n, i
CREATE (c)-[:INCLUDES {depth: $rows.depth[i], importance: $rows.importance[i], feeds_up: $rows.feeds_up[i]}]->(n)
RETURN count(*) AS created
"""
)

Q_FEEDS = (
    _lookup("Neuron", "neurons", "ns")
    + """WITH ns WHERE size(ns) = size($neurons)
UNWIND range(0, size($rows.v) - 1) AS i
WITH ns[$rows.v[i]] AS v, ns[$rows.u[i]] AS u, i
CREATE (v)-[:FEEDS {circuit: $circuit, class_index: $class_index, importance: $rows.importance[i], rank: $rows.rank[i]}]->(u)
RETURN count(*) AS created
"""
)

Q_CONCEPTS = (
    "MATCH (c:Circuit {uid: $circuit})\n"
    + _lookup("Neuron", "neurons", "ns", "c")
    + """WHERE size(ns) = size($neurons)
UNWIND range(0, size($rows.uid) - 1) AS i
WITH c, i, ns[$rows.neuron[i]] AS n
CREATE (k:Concept {uid: $rows.uid[i], circuit: $circuit, layer: $rows.layer[i], depth: $rows.depth[i], channel: $rows.channel[i],
                   index: $rows.index[i], size: $rows.size[i], mean_activation: $rows.mean_activation[i]})
CREATE (c)-[:HAS_CONCEPT]->(k)
CREATE (k)-[:OF]->(n)
RETURN count(*) AS created
"""
)

Q_DRIVES = (
    _lookup("Neuron", "neurons", "ns")
    + _lookup("Concept", "concepts", "ks", "ns")
    + """WITH ns, ks WHERE size(ns) = size($neurons) AND size(ks) = size($concepts)
UNWIND range(0, size($rows.v) - 1) AS i
WITH ns[$rows.v[i]] AS v, ks[$rows.k[i]] AS k, i
CREATE (v)-[:DRIVES {circuit: $circuit, weight: $rows.weight[i]}]->(k)
RETURN count(*) AS created
"""
)

Q_GROUPS = """
MATCH (c:Circuit {uid: $circuit})
UNWIND $rows AS r
CREATE (g:Group {uid: r.uid, circuit: $circuit, layer: r.layer, depth: r.depth, index: r.index, size: r.size,
                 label: r.label, label_source: r.label_source, label_score: r.label_score})
CREATE (c)-[:HAS_GROUP]->(g)
RETURN count(*) AS created
"""

Q_IN_GROUP = (
    _lookup("Group", "groups", "gs")
    + _lookup("Concept", "concepts", "ks", "gs")
    + """WITH gs, ks WHERE size(gs) = size($groups) AND size(ks) = size($concepts)
UNWIND range(0, size($rows.k) - 1) AS i
WITH ks[$rows.k[i]] AS k, gs[$rows.g[i]] AS g
CREATE (k)-[:IN_GROUP]->(g)
RETURN count(*) AS created
"""
)

Q_GROUP_FEEDS = (
    _lookup("Group", "groups", "gs")
    + """WITH gs WHERE size(gs) = size($groups)
UNWIND range(0, size($rows.lower) - 1) AS i
WITH gs[$rows.lower[i]] AS lo, gs[$rows.upper[i]] AS up, i
CREATE (lo)-[:GROUP_FEEDS {circuit: $circuit, weight: $rows.weight[i]}]->(up)
RETURN count(*) AS created
"""
)

# Images and crops are shared (a class's images serve every parameter set): MERGEd images (the
# images of a chunk travel once, in $images), crops CREATEd when missing (Q_CROPS) and, when
# existing, given the chunk's thumbnail paths (Q_CROP_THUMBNAILS; the rest of a crop follows
# from its uid).
Q_CROPS = """
UNWIND $images AS ri
MERGE (im:Image {uid: ri.uid})
SET im.source = ri.source, im.label = ri.label
WITH ri.uid AS uid, im ORDER BY uid
WITH collect(im) AS ims
UNWIND range(0, size($rows.uid) - 1) AS i
OPTIONAL MATCH (old:Crop {uid: $rows.uid[i]})
WITH ims, i WHERE old IS NULL
WITH ims[$rows.image_pos[i]] AS im, i
CREATE (cr:Crop {uid: $rows.uid[i], image: $rows.image[i], x0: $rows.x0[i], y0: $rows.y0[i], x1: $rows.x1[i], y1: $rows.y1[i],
                 granularity: $rows.granularity[i], thumbnail: $rows.thumbnail[i]})
CREATE (cr)-[:CROP_OF]->(im)
"""

Q_CROP_THUMBNAILS = """
UNWIND $rows AS r
MATCH (cr:Crop {uid: r.uid})
SET cr.thumbnail = r.thumbnail
"""

Q_EXEMPLIFIED = (
    _lookup("Concept", "concepts", "ks")
    + _lookup("Crop", "crops", "crs", "ks")
    + """WITH ks, crs WHERE size(ks) = size($concepts) AND size(crs) = size($crops)
UNWIND range(0, size($rows.k) - 1) AS i
WITH ks[$rows.k[i]] AS k, crs[$rows.crop[i]] AS cr, i
CREATE (k)-[:EXEMPLIFIED_BY {rank: $rows.rank[i], activation: $rows.activation[i]}]->(cr)
RETURN count(*) AS created
"""
)

# step -> {row key: (parameter of distinct uids, row key of the uid)}: these rows are sent as
# columns with node references replaced by positions in the distinct-uid lists.
INDEXED: dict[str, dict[str, str]] = {
    "includes": {"uid": "neurons"},
    "feeds": {"v": "neurons", "u": "neurons"},
    "concepts": {"neuron": "neurons"},
    "drives": {"v": "neurons", "k": "concepts"},
    "in_group": {"k": "concepts", "g": "groups"},
    "group_feeds": {"lower": "groups", "upper": "groups"},
    "exemplified": {"k": "concepts", "crop": "crops"},
}


def payload(name: str, chunk: list[dict[str, Any]]) -> dict[str, Any]:
    """Statement parameters of one chunk of step `name` (see INDEXED)."""
    refs = INDEXED.get(name)
    if refs is None:
        if name == "crops":
            images = {r["image"]: {"uid": r["image"], "source": r["source"], "label": r["label"]} for r in chunk}
            at = {uid: i for i, uid in enumerate(sorted(images))}  # Q_CROPS collects the images by uid
            cols = {key: [r[key] for r in chunk] for key in ("uid", "image", "x0", "y0", "x1", "y1", "granularity", "thumbnail")}
            cols["image_pos"] = [at[r["image"]] for r in chunk]
            return {"rows": cols, "images": [images[k] for k in sorted(images)]}
        return {"rows": chunk}
    pos: dict[str, dict[str, int]] = {param: {} for param in refs.values()}
    rows = []
    for r in chunk:
        row = dict(r)
        for key, param in refs.items():
            row[key] = pos[param].setdefault(r[key], len(pos[param]))
        rows.append(row)
    if name == "includes":
        rows = [{"n": r["uid"], "depth": r["depth"], "importance": r["importance"], "feeds_up": r["feeds_up"]} for r in rows]
    out: dict[str, Any] = {param: list(p) for param, p in pos.items()}
    out["rows"] = {key: [r[key] for r in rows] for key in rows[0]}
    return out


# --------------------------------------------------------------------------- cleanup (ingest/write/cleanup.py)
# Deleting what a circuit wrote, in batches of $batch (each returns how many it deleted).
Q_CLEAN_CROPS_OF = "MATCH (k:Concept {circuit: $circuit})-[:EXEMPLIFIED_BY]->(cr:Crop) RETURN DISTINCT cr.uid AS uid"
Q_CLEAN_CONCEPTS = "MATCH (k:Concept {circuit: $circuit}) WITH k LIMIT $batch DETACH DELETE k RETURN count(*) AS n"
Q_CLEAN_GROUPS = "MATCH (g:Group {circuit: $circuit}) WITH g LIMIT $batch DETACH DELETE g RETURN count(*) AS n"
# through the FEEDS.class_index index (a scan of the model's neurons' FEEDS takes seconds at scale)
Q_CLEAN_FEEDS = (
    "MATCH ()-[f:FEEDS]->() WHERE f.class_index = $class_index AND f.circuit = $circuit "
    "WITH f LIMIT $batch DELETE f RETURN count(*) AS n"
)
Q_CLEAN_INCLUDES = "MATCH (:Circuit {uid: $circuit})-[i:INCLUDES]->() WITH i LIMIT $batch DELETE i RETURN count(*) AS n"
Q_CLEAN_EVALUATIONS = (
    "MATCH (:Circuit {uid: $circuit})-[:HAS_EVALUATION]->(e:Evaluation) WITH e LIMIT $batch "
    "DETACH DELETE e RETURN count(*) AS n"
)
Q_CLEAN_UNUSED_CROPS = """
            UNWIND $crops AS cu
            MATCH (cr:Crop {uid: cu})
            WHERE NOT (cr)<-[:EXEMPLIFIED_BY]-()
            OPTIONAL MATCH (cr)-[:CROP_OF]->(im:Image)
            DETACH DELETE cr
            RETURN count(*) AS n, collect(DISTINCT im.uid) AS images
            """
Q_CLEAN_UNUSED_IMAGES = (
    "UNWIND $images AS iu MATCH (im:Image {uid: iu}) WHERE NOT (im)<-[:CROP_OF]-() "
    "DETACH DELETE im RETURN count(*) AS n"
)
Q_CIRCUIT_CLASS = "MATCH (c:Circuit {uid: $uid}) RETURN c.model AS model, c.class_index AS class_index"
Q_DELETE_CIRCUIT = "MATCH (c:Circuit {uid: $uid}) DETACH DELETE c"


# --------------------------------------------------------------------------- group labels (ingest/write/group_labels.py)
Q_SET_LABELS = (
    "UNWIND $rows AS r MATCH (g:Group {uid: r.uid}) "
    "SET g.label = r.label, g.label_source = r.label_source, g.label_score = r.label_score "
    "RETURN count(g) AS n, collect(DISTINCT g.circuit) AS circuits"
)

# the labelled groups of each circuit, in (depth, index) order, as parallel lists on the circuit
Q_REFRESH_LABELS = """
UNWIND $circuits AS cu
MATCH (c:Circuit {uid: cu})
OPTIONAL MATCH (c)-[:HAS_GROUP]->(g:Group)
WHERE g.label IS NOT NULL
WITH c, g ORDER BY g.depth, g.index
WITH c, collect(g) AS gs
SET c.labels_group = [g IN gs | g.uid], c.labels_text = [g IN gs | g.label],
    c.labels_source = [g IN gs | g.label_source], c.labels_score = [g IN gs | g.label_score],
    c.labels_layer = [g IN gs | g.layer], c.labels_depth = [g IN gs | g.depth], c.labels_size = [g IN gs | g.size]
RETURN count(c) AS n
"""


# --------------------------------------------------------------------------- the writer's reads and its failure mark
Q_CIRCUIT_STATUS = "MATCH (c:Circuit {uid: $uid}) RETURN c.status AS status"
Q_KEPT_LABELS = (
    "MATCH (g:Group {circuit: $uid}) WHERE g.label IS NOT NULL "
    "RETURN g.depth AS depth, g.index AS idx, g.label AS label, g.label_source AS label_source, "
    "g.label_score AS label_score"
)
"""The labels the groups of an earlier write of a circuit had: a rewrite without new labels keeps them."""
Q_MARK_FAILED = "MATCH (c:Circuit {uid: $uid}) WHERE c.status = 'running' SET c.status = 'failed'"
