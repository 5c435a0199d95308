"""Write a `Circuit` into the graph schema (docs/schema.md): batched, idempotent, crash-safe.

    stats = write_circuit(store, circuit, artifact_dir, model_info={...}, thumbnails=crop_image)

Order of work (each batch is one transaction of one ``UNWIND $rows`` statement):

1. the Circuit node is MERGEd with ``status = 'running'`` (with Model, Class, Layers);
2. a circuit found ``running``/``failed`` (a crashed or failed earlier write), or ``complete``
   with ``force=True``, is cleaned first: its Concepts and Groups (DETACH), its FEEDS and
   DRIVES (by their ``circuit`` property), its INCLUDES, and the Crop/Image nodes nothing
   else uses any more; shared Neuron nodes stay;
3. neurons + INCLUDES, FEEDS, concepts + HAS_CONCEPT + OF, DRIVES, groups + HAS_GROUP,
   IN_GROUP, GROUP_FEEDS, images + crops + CROP_OF, EXEMPLIFIED_BY;
4. ``status = 'complete'`` with the sizes, in one last statement.

Shared nodes (Model, Class, Layer, Neuron, Image, Crop) are MERGEd on ``uid``.  What belongs
to the circuit (Concept and Group nodes, INCLUDES, FEEDS, DRIVES and the other relationships)
is CREATEd: it is written only into a store that holds nothing of the circuit (a new uid, or
after step 2 removed what an earlier partial, failed or forced write left), so a rerun after a
crash at any point leaves no duplicates, and the uniqueness constraints refuse a duplicate node.
Every CREATE statement returns what it created and the writer checks it against its rows.  A
``complete`` circuit with the same uid is left alone unless ``force=True``; another parameter
set has another uid and lands beside it.

Throughput (``bench/store_scale.py``): relationship MERGEs between shared neurons scan the
edges of hub neurons, which grow with every class written, so they are CREATEs; each distinct
node of a batch is looked up once and rows refer to it by position; rows travel as columns.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import neo4j

from ingest.cypher_record import record as record_cypher
from ingest.schema import ensure_schema
from ingest.store import Store, translate_error

if TYPE_CHECKING:  # importing neurflow pulls in torch; the writer only needs the records
    from PIL.Image import Image as PILImage

    from neurflow.circuit import Circuit

DEFAULT_BATCH = 10000
THUMBNAIL_MAX = 128  # pixels, longest side of a stored crop thumbnail


@dataclass
class WriteStats:
    """What one `write_circuit` call did."""

    circuit: str
    action: str  # "written" | "rewritten" (an earlier running/failed/forced one was cleaned) | "skipped"
    nodes: int = 0  # node rows MERGEd
    relationships: int = 0  # relationship rows MERGEd
    thumbnails: int = 0  # PNG files written
    seconds: float = 0.0
    cleaned: dict[str, int] = field(default_factory=dict)

    @property
    def rel_per_s(self) -> float:
        return self.relationships / self.seconds if self.seconds > 0 else 0.0

    @property
    def skipped(self) -> bool:
        return self.action == "skipped"


# --------------------------------------------------------------------------- runner
class _Runner:
    """Runs statements in managed write transactions on a Store, Driver or Session."""

    def __init__(self, target: Store | neo4j.Driver | neo4j.Session, database: str | None = None):
        self.store = target if isinstance(target, Store) else None
        self.session: neo4j.Session | None = None
        self._own_session = False
        if isinstance(target, Store):
            self.session = target.session()
            self._own_session = True
            self.config = target.config
        elif isinstance(target, neo4j.Driver):
            self.session = target.session(database=database)
            self._own_session = True
            self.config = None
        else:
            self.session = target
            self.config = None

    def write(self, cypher: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        p = params or {}

        def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
            return [r.data() for r in tx.run(cypher, p)]

        try:
            rows = self.session.execute_write(work)
        except Exception as exc:
            if self.config is not None:
                raise translate_error(exc, self.config) from None
            raise
        record_cypher(cypher, p)  # the test suite's lint (no-op unless NEURFLOW_RECORD_CYPHER)
        return rows

    def read(self, cypher: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        p = params or {}

        def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
            return [r.data() for r in tx.run(cypher, p)]

        try:
            rows = self.session.execute_read(work)
        except Exception as exc:
            if self.config is not None:
                raise translate_error(exc, self.config) from None
            raise
        record_cypher(cypher, p)  # the test suite's lint (no-op unless NEURFLOW_RECORD_CYPHER)
        return rows

    def close(self) -> None:
        if self._own_session and self.session is not None:
            self.session.close()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- statements
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
CREATE (c)-[:INCLUDES {depth: $rows.depth[i]}]->(n)
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


def _payload(name: str, chunk: list[dict[str, Any]]) -> dict[str, Any]:
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
        rows = [{"n": r["uid"], "depth": r["depth"]} for r in rows]
    out: dict[str, Any] = {param: list(p) for param, p in pos.items()}
    out["rows"] = {key: [r[key] for r in rows] for key in rows[0]}
    return out


Q_COMPLETE = """
MATCH (c:Circuit {uid: $circuit})
SET c += $props, c.status = 'complete'
RETURN c.status AS status
"""


# --------------------------------------------------------------------------- rows
def _uids(circuit: "Circuit") -> dict[str, Any]:
    model = circuit.model
    layers = {rec.depth: rec for rec in circuit.layers}
    cid = circuit.uid

    def layer_name(depth: int) -> str:
        if depth not in layers:
            raise ValueError(f"circuit {cid} has no layer at depth {depth}")
        return layers[depth].name

    return {
        "model": model,
        "circuit": cid,
        "layers": layers,
        "layer_name": layer_name,
        "neuron": lambda d, ch: f"{model}/{layer_name(d)}/{ch}",
        "concept": lambda d, ch, j: f"{cid}/{layer_name(d)}/{ch}/{j}",
        "group": lambda d, g: f"{cid}/{layer_name(d)}/g{g}",
    }


def circuit_rows(
    circuit: "Circuit",
    *,
    model_info: dict[str, Any] | None = None,
    crop_thumbnails: dict[int, str] | None = None,
    group_labels: dict[tuple[int, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The rows of every statement for `circuit` (no database access; exported for tests)."""
    u = _uids(circuit)
    cid, model = u["circuit"], u["model"]
    info = dict(model_info or {})
    logits = u["layers"].get(0)
    model_row = {
        "uid": model,
        "name": info.get("name", model),
        "arch": info.get("arch"),
        "weights_sha256": info.get("weights_sha256"),
        "num_classes": info.get("num_classes", logits.channels if logits else None),
        "input_size": info.get("input_size", circuit.image_size),
    }
    cls_row = {"uid": f"{model}/{circuit.class_index}", "model": model, "index": circuit.class_index, "name": circuit.class_name}
    p = circuit.params
    identity = circuit.identity
    circuit_row = {
        "uid": cid,
        "model": model,
        "class_index": circuit.class_index,
        "tau": p.tau,
        "k": p.k,
        "ig_steps": p.ig_steps,
        "granularities": [float(g) for g in p.granularities],
        # the parameter set (method parameters, layers, data source, precision, method version): what
        # the circuits of one comparison share; the uid adds the class's image fingerprint
        "params": json.dumps(identity.param_set_dict(), sort_keys=True),
        "params_hash": identity.param_set,
        "layers": list(identity.layers),
        "data_source": identity.data_source,
        "data_fingerprint": identity.data_fingerprint,
        "precision": identity.precision,
        "method_version": identity.method_version,
        "notes": list(circuit.notes),
        # a flag readers can filter on: core members ranked by tie-breaking, not by the data
        "num_zero_importance_core": circuit.zero_importance_core(),
        "status": "running",
        "started_at": circuit.started_at or None,
        "finished_at": circuit.finished_at or None,
        "neurflow_version": circuit.neurflow_version or None,
        "image_size": circuit.image_size,
        "seconds": float(circuit.seconds),
    }
    layer_rows = [
        {"uid": f"{model}/{rec.name}", "name": rec.name, "depth": rec.depth, "channels": rec.channels}
        for rec in sorted(u["layers"].values(), key=lambda r: r.depth)
    ]

    # every neuron any row touches: critical ones and the lower ends of FEEDS / DRIVES
    keys: set[tuple[int, int]] = {(n.depth, n.channel) for n in circuit.neurons}
    keys |= {(c.depth + 1, c.lower_channel) for c in circuit.core}
    keys |= {(e.depth + 1, e.lower_channel) for e in circuit.edges}
    keys |= {(c.depth, c.channel) for c in circuit.core}
    keys |= {(c.depth, c.channel) for c in circuit.concepts}
    neuron_rows = [
        {
            "uid": u["neuron"](d, ch),
            "layer_uid": f"{model}/{u['layer_name'](d)}",
            "layer": u["layer_name"](d),
            "channel": ch,
            "depth": d,
        }
        for d, ch in sorted(keys)
    ]
    include_rows = [{"uid": u["neuron"](n.depth, n.channel), "depth": n.depth} for n in circuit.neurons]
    feeds_rows = [
        {"v": u["neuron"](c.depth + 1, c.lower_channel), "u": u["neuron"](c.depth, c.channel), "importance": float(c.importance), "rank": c.rank}
        for c in circuit.core
    ]
    concept_rows = [
        {
            "uid": u["concept"](c.depth, c.channel, c.index),
            "neuron": u["neuron"](c.depth, c.channel),
            "layer": u["layer_name"](c.depth),
            "depth": c.depth,
            "channel": c.channel,
            "index": c.index,
            "size": c.size,
            "mean_activation": float(c.mean_activation),
        }
        for c in circuit.concepts
    ]
    drives_rows = [
        {"v": u["neuron"](e.depth + 1, e.lower_channel), "k": u["concept"](e.depth, e.channel, e.concept), "weight": float(e.weight)}
        for e in circuit.edges
    ]
    sizes: dict[tuple[int, int], int] = {}
    for m in circuit.group_members:
        sizes[(m.depth, m.group)] = sizes.get((m.depth, m.group), 0) + 1
    for ge in circuit.group_edges:  # a group referenced by an edge exists even with no member row
        sizes.setdefault((ge.depth, ge.upper_group), 0)
        sizes.setdefault((ge.depth + 1, ge.lower_group), 0)
    labels = group_labels or {}
    group_rows = []
    for (d, g), size in sorted(sizes.items()):
        lab = labels.get((d, g), {})
        group_rows.append(
            {
                "uid": u["group"](d, g),
                "layer": u["layer_name"](d),
                "depth": d,
                "index": g,
                "size": size,
                "label": lab.get("label"),
                "label_source": lab.get("label_source", lab.get("source")),
                "label_score": lab.get("label_score", lab.get("score")),
            }
        )
    in_group_rows = [{"k": u["concept"](m.depth, m.channel, m.concept), "g": u["group"](m.depth, m.group)} for m in circuit.group_members]
    group_feeds_rows = [
        {"lower": u["group"](ge.depth + 1, ge.lower_group), "upper": u["group"](ge.depth, ge.upper_group), "weight": float(ge.weight)}
        for ge in circuit.group_edges
    ]

    crops = {c.crop_id: c for c in circuit.crops}
    images = {im.image_id: im for im in circuit.images}
    reps = [m for m in circuit.concept_members if m.rep_rank >= 0]
    crop_rows: dict[str, dict[str, Any]] = {}  # by uid: the same file twice in a data set is one Image, its crops one Crop
    exemplified_rows = []
    for m in reps:
        if m.crop_id not in crops:
            raise ValueError(f"circuit {cid}: representative crop {m.crop_id} is not in the crop table")
        cr = crops[m.crop_id]
        if cr.image_id not in images:
            raise ValueError(f"circuit {cid}: crop {cr.crop_id} refers to unknown image {cr.image_id}")
        im = images[cr.image_id]
        crop_uid = crop_uid_of(im.sha256, cr)
        crop_rows.setdefault(
            crop_uid,
            {
                "uid": crop_uid,
                "image": im.sha256,
                "source": im.source,
                "label": im.label,
                "x0": cr.x0,
                "y0": cr.y0,
                "x1": cr.x1,
                "y1": cr.y1,
                "granularity": float(cr.granularity),
                "thumbnail": (crop_thumbnails or {}).get(cr.crop_id),
            },
        )
        exemplified_rows.append(
            {"k": u["concept"](m.depth, m.channel, m.concept), "crop": crop_uid, "rank": m.rep_rank, "activation": float(m.activation)}
        )
    return {
        "model": model_row,
        "cls": cls_row,
        "circuit": circuit_row,
        "layers": layer_rows,
        "neurons": neuron_rows,
        "includes": include_rows,
        "feeds": feeds_rows,
        "concepts": concept_rows,
        "drives": drives_rows,
        "groups": group_rows,
        "in_group": in_group_rows,
        "group_feeds": group_feeds_rows,
        "crops": list(crop_rows.values()),
        "exemplified": exemplified_rows,
    }


def crop_uid_of(image_sha256: str, crop: Any) -> str:
    return f"{image_sha256}/{crop.x0},{crop.y0},{crop.x1},{crop.y1}"


def thumbnail_path(image_sha256: str, crop: Any) -> str:
    """Path of a crop's PNG, relative to the artifact folder."""
    return f"crops/{image_sha256[:2]}/{image_sha256}_{crop.x0}_{crop.y0}_{crop.x1}_{crop.y1}.png"


def _write_thumbnails(
    circuit: "Circuit", artifact_dir: Path, thumbnails: Callable[[int], "PILImage"]
) -> tuple[dict[int, str], int]:
    crops = {c.crop_id: c for c in circuit.crops}
    images = {im.image_id: im for im in circuit.images}
    out: dict[int, str] = {}
    written = 0
    for m in circuit.concept_members:
        if m.rep_rank < 0 or m.crop_id in out or m.crop_id not in crops:
            continue
        cr = crops[m.crop_id]
        rel = thumbnail_path(images[cr.image_id].sha256, cr)
        path = artifact_dir / rel
        if not path.is_file():
            img = thumbnails(m.crop_id)
            if img is None:
                continue
            img = img.copy()
            img.thumbnail((THUMBNAIL_MAX, THUMBNAIL_MAX))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.png")
            img.save(tmp, format="PNG", optimize=True)
            tmp.replace(path)
            written += 1
        out[m.crop_id] = rel
    return out, written


# --------------------------------------------------------------------------- cleaning
def circuit_status(target: Store | neo4j.Driver | neo4j.Session, uid: str, *, database: str | None = None) -> str | None:
    """Status of the circuit `uid` in the store, or None."""
    runner = _Runner(target, database)
    try:
        rows = runner.read("MATCH (c:Circuit {uid: $uid}) RETURN c.status AS status", {"uid": uid})
    finally:
        runner.close()
    return rows[0]["status"] if rows else None


def _delete_loop(runner: _Runner, cypher: str, params: dict[str, Any], batch: int) -> int:
    total = 0
    while True:
        n = runner.write(cypher, {**params, "batch": batch})[0]["n"]
        total += n
        if n < batch:
            return total


def _clean(runner: _Runner, uid: str, model: str, class_index: int, batch: int = 10000) -> dict[str, int]:
    """Delete what a circuit wrote, keeping shared nodes (Neuron; Crop/Image still used elsewhere).

    DRIVES, OF, IN_GROUP, HAS_CONCEPT, EXEMPLIFIED_BY, HAS_GROUP and GROUP_FEEDS go with the
    (DETACH-deleted) Concept and Group nodes; FEEDS, between shared neurons, by its `circuit`.
    The circuit's Evaluation nodes go too: they describe the circuit being replaced."""
    p = {"circuit": uid, "model": model, "class_index": class_index}
    crops = [r["uid"] for r in runner.read(
        "MATCH (k:Concept {circuit: $circuit})-[:EXEMPLIFIED_BY]->(cr:Crop) RETURN DISTINCT cr.uid AS uid", p
    )]  # fmt: skip
    out = {
        "concepts": _delete_loop(
            runner, "MATCH (k:Concept {circuit: $circuit}) WITH k LIMIT $batch DETACH DELETE k RETURN count(*) AS n", p, batch
        ),
        "groups": _delete_loop(
            runner, "MATCH (g:Group {circuit: $circuit}) WITH g LIMIT $batch DETACH DELETE g RETURN count(*) AS n", p, batch
        ),
        # through the FEEDS.class_index index (a scan of the model's neurons' FEEDS takes seconds at scale)
        "feeds": _delete_loop(
            runner,
            "MATCH ()-[f:FEEDS]->() WHERE f.class_index = $class_index AND f.circuit = $circuit "
            "WITH f LIMIT $batch DELETE f RETURN count(*) AS n",
            p,
            batch,
        ),
        "includes": _delete_loop(
            runner,
            "MATCH (:Circuit {uid: $circuit})-[i:INCLUDES]->() WITH i LIMIT $batch DELETE i RETURN count(*) AS n",
            p,
            batch,
        ),
        "evaluations": _delete_loop(
            runner,
            "MATCH (:Circuit {uid: $circuit})-[:HAS_EVALUATION]->(e:Evaluation) WITH e LIMIT $batch "
            "DETACH DELETE e RETURN count(*) AS n",
            p,
            batch,
        ),
    }
    if crops:
        rows = runner.write(
            """
            UNWIND $crops AS cu
            MATCH (cr:Crop {uid: cu})
            WHERE NOT (cr)<-[:EXEMPLIFIED_BY]-()
            OPTIONAL MATCH (cr)-[:CROP_OF]->(im:Image)
            DETACH DELETE cr
            RETURN count(*) AS n, collect(DISTINCT im.uid) AS images
            """,
            {"crops": crops},
        )
        out["crops"] = rows[0]["n"] if rows else 0
        images = rows[0]["images"] if rows else []
        if images:
            out["images"] = runner.write(
                "UNWIND $images AS iu MATCH (im:Image {uid: iu}) WHERE NOT (im)<-[:CROP_OF]-() "
                "DETACH DELETE im RETURN count(*) AS n",
                {"images": images},
            )[0]["n"]
    return out


def delete_circuit(target: Store | neo4j.Driver | neo4j.Session, uid: str, *, database: str | None = None) -> dict[str, int]:
    """Remove a circuit entirely (its node too).  Shared Model/Layer/Neuron/Class nodes stay."""
    runner = _Runner(target, database)
    try:
        rows = runner.read("MATCH (c:Circuit {uid: $uid}) RETURN c.model AS model, c.class_index AS class_index", {"uid": uid})
        if not rows:
            return {}
        runner.write("MATCH (c:Circuit {uid: $uid}) SET c.status = 'running'", {"uid": uid})
        out = _clean(runner, uid, rows[0]["model"], rows[0]["class_index"])
        runner.write("MATCH (c:Circuit {uid: $uid}) DETACH DELETE c", {"uid": uid})
        out["circuits"] = 1
        return out
    finally:
        runner.close()


def set_group_labels(target: Store | neo4j.Driver | neo4j.Session, rows: list[dict[str, Any]], *, database: str | None = None) -> int:
    """Set labels of groups: rows of {uid, label, label_source, label_score}; returns groups updated."""
    runner = _Runner(target, database)
    try:
        out = runner.write(
            "UNWIND $rows AS r MATCH (g:Group {uid: r.uid}) "
            "SET g.label = r.label, g.label_source = r.label_source, g.label_score = r.label_score RETURN count(g) AS n",
            {"rows": rows},
        )
        return out[0]["n"] if out else 0
    finally:
        runner.close()


# --------------------------------------------------------------------------- writing
def write_circuit(
    target: Store | neo4j.Driver | neo4j.Session,
    circuit: "Circuit",
    artifact_dir: str | Path | None = None,
    *,
    force: bool = False,
    model_info: dict[str, Any] | None = None,
    thumbnails: Callable[[int], "PILImage"] | None = None,
    group_labels: dict[tuple[int, int], dict[str, Any]] | None = None,
    database: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    schema: bool = True,
    _stop_after: str | None = None,
) -> WriteStats:
    """Write `circuit` to the store.  See the module docstring for the guarantees.

    - `artifact_dir`: folder for crop thumbnails (PNG); the Crop node keeps the path relative
      to it.  Needed only with `thumbnails`.
    - `model_info`: name, arch, weights_sha256, num_classes, input_size of the Model node.
    - `thumbnails`: crop id -> PIL image of the crop (representative crops only are asked).
    - `group_labels`: (depth, group index) -> {label, label_source, label_score}.  Without it a
      forced rewrite keeps the labels the groups had.
    - `database`: with a bare Driver, the database to use.
    - `_stop_after`: testing hook, stop (leaving the circuit ``running``) after that step.
    """
    t0 = time.perf_counter()
    cid = circuit.uid
    runner = _Runner(target, database)
    stats = WriteStats(circuit=cid, action="written")
    try:
        if schema:
            if isinstance(target, Store):
                ensure_schema(target)
            else:
                from ingest.schema import constraint_statements

                for st in constraint_statements():
                    runner.write(st)
        existing = runner.read(
            "MATCH (c:Circuit {uid: $uid}) RETURN c.status AS status", {"uid": cid}
        )
        status = existing[0]["status"] if existing else None
        if status == "complete" and not force:
            stats.action = "skipped"
            stats.seconds = time.perf_counter() - t0
            return stats

        kept_labels: dict[tuple[int, int], dict[str, Any]] = {}
        if status is not None and group_labels is None:
            for r in runner.read(
                "MATCH (g:Group {circuit: $uid}) WHERE g.label IS NOT NULL "
                "RETURN g.depth AS depth, g.index AS idx, g.label AS label, g.label_source AS label_source, "
                "g.label_score AS label_score",
                {"uid": cid},
            ):
                kept_labels[(r["depth"], r["idx"])] = {k: r[k] for k in ("label", "label_source", "label_score")}

        crop_paths: dict[int, str] = {}
        if thumbnails is not None:
            if artifact_dir is None:
                raise ValueError("write_circuit: thumbnails need an artifact_dir to write the PNG files to")
            crop_paths, stats.thumbnails = _write_thumbnails(circuit, Path(artifact_dir), thumbnails)

        rows = circuit_rows(
            circuit, model_info=model_info, crop_thumbnails=crop_paths, group_labels=group_labels or kept_labels
        )
        now = _now()
        # 1. the Circuit node first, as `running`: readers ignore it until the last statement
        runner.write(Q_HEAD, {"model": rows["model"], "cls": rows["cls"], "circuit": rows["circuit"], "now": now})
        stats.nodes += 3
        stats.relationships += 2
        if status is not None:
            stats.action = "rewritten"
            stats.cleaned = _clean(runner, cid, circuit.model, circuit.class_index)
        if _stop_after == "head":
            return stats
        runner.write(Q_LAYERS, {"model": circuit.model, "rows": rows["layers"]})
        stats.nodes += len(rows["layers"])
        stats.relationships += len(rows["layers"])

        common = {"circuit": cid, "model": circuit.model, "class_index": circuit.class_index}
        steps = [
            ("neurons", Q_NEURONS, 1, 1),
            ("includes", Q_INCLUDES, 0, 1),
            ("feeds", Q_FEEDS, 0, 1),
            ("concepts", Q_CONCEPTS, 1, 2),
            ("drives", Q_DRIVES, 0, 1),
            ("groups", Q_GROUPS, 1, 1),
            ("in_group", Q_IN_GROUP, 0, 1),
            ("group_feeds", Q_GROUP_FEEDS, 0, 1),
            ("crop_thumbnails", Q_CROP_THUMBNAILS, 0, 0),
            ("crops", Q_CROPS, 2, 1),
            ("exemplified", Q_EXEMPLIFIED, 0, 1),
        ]
        rows["crop_thumbnails"] = [{"uid": r["uid"], "thumbnail": r["thumbnail"]} for r in rows["crops"] if r["thumbnail"]]
        for name, cypher, nodes_per_row, rels_per_row in steps:
            data = rows[name]
            for i in range(0, len(data), batch_size):
                chunk = data[i : i + batch_size]
                out = runner.write(cypher, {**common, **_payload(name, chunk)})
                if out and "created" in out[0] and out[0]["created"] != len(chunk):
                    raise RuntimeError(
                        f"writing {cid}: step {name} created {out[0]['created']} of {len(chunk)} rows (missing nodes?)"
                    )
                stats.nodes += nodes_per_row * len(chunk)
                stats.relationships += rels_per_row * len(chunk)
                if _stop_after == f"{name}:first":
                    return stats
            if _stop_after == name:
                return stats

        props = {
            "completed_at": _now(),
            "finished_at": circuit.finished_at or now,
            "num_neurons": len(rows["includes"]),
            "num_feeds": len(rows["feeds"]),
            "num_concepts": len(rows["concepts"]),
            "num_drives": len(rows["drives"]),
            "num_groups": len(rows["groups"]),
            "num_group_feeds": len(rows["group_feeds"]),
            "num_crops": len(rows["crops"]),
        }
        runner.write(Q_COMPLETE, {"circuit": cid, "props": props})
        stats.seconds = time.perf_counter() - t0
        return stats
    except BaseException:
        # best effort: mark the circuit failed so readers and reruns know (a SIGKILL leaves `running`)
        try:
            runner.write("MATCH (c:Circuit {uid: $uid}) WHERE c.status = 'running' SET c.status = 'failed'", {"uid": cid})
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise
    finally:
        runner.close()
