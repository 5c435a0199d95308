"""Store reads for the app: one read-only connection, cached results keyed on the store's version.

Every read goes through `lib()` (a library query of `ingest/queries.py`) or `app_query()` (the
app's own Cypher below: plain Cypher that ArcadeDB and Neo4j 5 both run, no APOC).  Results are
cached with ``st.cache_data`` under the store *version* (store address, database, number of
circuits and the latest ``Circuit.completed_at``), so a new ingestion shows up at once and an
unchanged store is read once.  The version itself is re-read at most every few seconds.

Large circuits stay readable because the graph queries prune in the store (weight threshold,
top-k per upper node, an edge cap): only the pruned subgraph ever leaves the database.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import streamlit as st

from ingest.evaluation_rows import Q_READ
from ingest.config import StoreConfig
from ingest.config import artifact_dir as config_artifact_dir
from ingest.queries import get_query, run_query
from ingest.readonly import readonly_store
from ingest.store import Store, start_store

VERSION_TTL_S = 3.0
RESULT_TTL_S = 600  # backstop for changes the version does not see (e.g. new group labels)
MAX_EDGES = 1500  # hard cap of edges one graph view may draw

_ENV_KEYS = (
    "NEURFLOW_STORE_URI", "NEURFLOW_STORE_USER", "NEURFLOW_STORE_DATABASE", "NEURFLOW_STORE_READONLY_USER",
    "NEURFLOW_STORE_DIR", "NEURFLOW_STORE_BOLT_PORT", "NEURFLOW_STORE_HTTP_PORT", "NEURFLOW_ARTIFACT_DIR",
)  # fmt: skip


# --------------------------------------------------------------------------- connection
def _env_key() -> tuple:
    return tuple(os.environ.get(k) for k in _ENV_KEYS)


@st.cache_resource(show_spinner="Connecting to the store…")
def _config(env_key: tuple) -> StoreConfig:  # noqa: ARG001 - the key only
    return start_store()


def config() -> StoreConfig:
    """The store configuration (the embedded server is started when it is not running)."""
    return _config(_env_key())


def store() -> Store:
    """The read-only connection (the reader account; Neo4j sessions in READ mode)."""
    return readonly_store(config())


def artifact_dir() -> Path:
    """Where crop thumbnails live (Crop.thumbnail paths are relative to it)."""
    return config_artifact_dir(config())


def store_kind(cfg: StoreConfig) -> str:
    return "embedded ArcadeDB" if cfg.embedded else "external (Bolt)"


_version_memo: dict[tuple, tuple[float, str]] = {}


def version() -> str:
    """Identity of the store's content: changes whenever a circuit is written or its status changes."""
    cfg = config()
    key = (cfg.uri, cfg.database)
    now = time.monotonic()
    hit = _version_memo.get(key)
    if hit and now - hit[0] < VERSION_TTL_S:
        return hit[1]
    rows = store().run(
        "MATCH (c:Circuit) RETURN count(c) AS n, max(c.completed_at) AS last, "
        "sum(CASE WHEN c.status = 'complete' THEN 1 ELSE 0 END) AS complete"
    )
    r = rows[0] if rows else {}
    v = f"{cfg.uri}|{cfg.database}|{r.get('n')}|{r.get('complete')}|{r.get('last')}"
    _version_memo[key] = (now, v)
    return v


def forget_version() -> None:
    _version_memo.clear()


# --------------------------------------------------------------------------- cached reads
@st.cache_data(show_spinner=False, ttl=RESULT_TTL_S, max_entries=512)
def _lib(version_key: str, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:  # noqa: ARG001
    return run_query(store(), name, **params)


@st.cache_data(show_spinner=False, ttl=RESULT_TTL_S, max_entries=512)
def _app(version_key: str, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:  # noqa: ARG001
    return store().run(APP_QUERIES[name], params)


def lib(name: str, **params: Any) -> list[dict[str, Any]]:
    """A library query (ingest/queries.py), cached; missing parameters take their defaults."""
    return _lib(version(), name, get_query(name).bind(**params))


def app_query(name: str, **params: Any) -> list[dict[str, Any]]:
    """One of this module's queries, cached."""
    return _app(version(), name, params)


def clear_caches() -> None:
    forget_version()
    _lib.clear()
    _app.clear()
    _similarity.clear()


def reconnect() -> None:
    """Forget the configuration and the connection too (Retry after the store was down)."""
    from ingest.readonly import close_readonly_stores

    clear_caches()
    _config.clear()
    close_readonly_stores()


# --------------------------------------------------------------------------- the app's Cypher
def _pick(cls: str, var: str = "c") -> str:
    return (
        f"MATCH {cls}-[:HAS_CIRCUIT]->({var}:Circuit {{status: 'complete'}})\n"
        f"WHERE $params IS NULL OR {var}.params_hash = $params\n"
        f"WITH {var} ORDER BY {var}.completed_at DESC LIMIT 1\n"
    )


_PICK_CLASS = _pick("(:Class {model: $model, index: $class_index})")
_PICK_PER_CLASS = (
    "MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})\n"
    "WHERE $params IS NULL OR c.params_hash = $params\n"
    "WITH cl, c ORDER BY c.completed_at DESC\n"
    "WITH cl, collect(c)[0] AS c\n"
)

APP_QUERIES: dict[str, str] = {
    # every circuit with its parameters, sizes and times (overview table)
    "circuits": """
MATCH (m:Model)-[:HAS_CLASS]->(cl:Class)-[:HAS_CIRCUIT]->(c:Circuit)
WHERE ($model IS NULL OR m.uid = $model) AND (c.status = 'complete' OR $include_incomplete)
RETURN m.uid AS model, cl.index AS class_index, cl.name AS class_name, c.params_hash AS params, c.status AS status,
       c.tau AS tau, c.k AS k, c.ig_steps AS ig_steps, c.num_neurons AS neurons, c.num_feeds AS feeds,
       c.num_concepts AS concepts, c.num_groups AS groups, c.num_group_feeds AS group_feeds,
       c.seconds AS build_seconds, c.started_at AS started_at, c.completed_at AS completed_at, c.uid AS circuit
ORDER BY model, class_index, completed_at DESC
""",
    "classes": """
MATCH (cl:Class {model: $model})
OPTIONAL MATCH (cl)-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})
WITH cl, count(c) AS circuits
RETURN cl.index AS index, cl.name AS name, circuits
ORDER BY index
""",
    "layers": """
MATCH (l:Layer {model: $model})
RETURN l.name AS name, l.depth AS depth, l.channels AS channels
ORDER BY depth
""",
    # the parameter sets of a model: the default (most classes, then the latest) first
    "param_sets": """
MATCH (c:Circuit {model: $model, status: 'complete'})
WITH c.params_hash AS params, collect(c.params)[0] AS definition, count(DISTINCT c.class_index) AS classes,
     collect(DISTINCT c.class_index) AS class_indices, max(c.completed_at) AS last
RETURN params, definition, classes, class_indices, last
ORDER BY classes DESC, last DESC
""",
    # per class of $classes: up to $n top crops of the class-logit neuron's concepts (overview
    # gallery; one page of classes at a time, so 1,000 classes cost what 20 do)
    "class_gallery": (
        "MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})\n"
        "WHERE cl.index IN $classes AND ($params IS NULL OR c.params_hash = $params)\n"
        "WITH cl, c ORDER BY c.completed_at DESC\n"
        "WITH cl, collect(c)[0] AS c\n"
    )
    + """OPTIONAL MATCH (c)-[:HAS_CONCEPT]->(k:Concept {depth: 0})-[e:EXEMPLIFIED_BY]->(cr:Crop)
WITH cl, c, e, cr ORDER BY e.rank, cr.uid
WITH cl, c, collect(cr.thumbnail) AS thumbnails
RETURN cl.index AS class_index, cl.name AS class_name, c.uid AS circuit, thumbnails[0..$n] AS thumbnails
ORDER BY class_index
""",
    "circuit_info": _PICK_CLASS
    + """RETURN c.uid AS circuit, c.params_hash AS params, c.tau AS tau, c.k AS k, c.ig_steps AS ig_steps,
       c.num_neurons AS neurons, c.num_feeds AS feeds, c.num_concepts AS concepts, c.num_groups AS groups,
       c.num_group_feeds AS group_feeds, c.completed_at AS completed_at, c.seconds AS build_seconds
""",
    # the groups of a circuit (node metadata of the group graph)
    "groups": _PICK_CLASS
    + """MATCH (c)-[:HAS_GROUP]->(g:Group)
RETURN g.uid AS uid, g.layer AS layer, g.depth AS depth, g.index AS index, g.size AS size, g.label AS label
ORDER BY depth, index
""",
    # pruned GROUP_FEEDS: |W| >= $min_frac x the strongest |W| into the same layer (weights of
    # different layers differ in scale), then the $top_k strongest inputs of each upper group
    "group_edges": _PICK_CLASS
    + """MATCH (c)-[:HAS_GROUP]->(u0:Group)<-[e0:GROUP_FEEDS]-(:Group)
WITH c, u0.depth AS d, max(abs(e0.weight)) AS top
WITH c, collect({d: d, top: top}) AS tops
MATCH (c)-[:HAS_GROUP]->(up:Group)<-[e:GROUP_FEEDS]-(lo:Group)
WITH up, lo, e, [t IN tops WHERE t.d = up.depth][0].top AS top
WHERE abs(e.weight) >= $min_frac * top
WITH top, up, lo, e ORDER BY abs(e.weight) DESC, lo.uid
WITH top, up, collect({lower: lo.uid, weight: e.weight})[0..$top_k] AS ins
UNWIND ins AS x
RETURN x.lower AS lower, up.uid AS upper, x.weight AS weight, top
ORDER BY abs(weight) / top DESC, lower, upper
LIMIT $limit
""",
    # the concepts of one group with their representative crops
    "group_members": """
MATCH (g:Group {uid: $group})<-[:IN_GROUP]-(k:Concept)
OPTIONAL MATCH (k)-[e:EXEMPLIFIED_BY]->(cr:Crop)
WITH g, k, e, cr ORDER BY e.rank
WITH g, k, collect(cr.thumbnail) AS thumbnails, collect(e.activation) AS activations
RETURN g.layer AS layer, k.channel AS channel, k.index AS concept, k.size AS size,
       k.mean_activation AS mean_activation, thumbnails, activations
ORDER BY mean_activation DESC, channel, concept
""",
    # pruned FEEDS of a circuit, in one pass over the circuit's FEEDS: rank < $top_k (the top-k core
    # neurons of each upper neuron), importance >= $min_frac x the largest importance into the same
    # layer (rank 0 edges are among the kept ones, so the maximum is the layer's), upper end no
    # deeper than $max_depth.  The class's FEEDS come from the relationship index on
    # FEEDS.class_index in the first clause (ArcadeDB uses it only there): walking FEEDS from the
    # circuit's neurons would read every class's edges at hub neurons (seconds at 1,000 classes);
    # no labels on the two ends: with them ArcadeDB scans the label instead (6-8 s at 1,000 classes)
    "neuron_edges": """MATCH (v)-[f:FEEDS]->(u)
WHERE f.class_index = $class_index
WITH collect({v: v, u: u, w: f.importance, rank: f.rank, cu: f.circuit}) AS feeds
"""
    + _pick("(:Class {model: $model, index: $class_index})").replace("WITH c ORDER BY", "WITH feeds, c ORDER BY")
    + """UNWIND [e IN feeds WHERE e.cu = c.uid AND e.rank < $top_k AND e.u.depth <= $max_depth] AS e
WITH e.u.depth AS d, collect(e) AS es, max(e.w) AS top
UNWIND es AS e
WITH e, top WHERE e.w >= $min_frac * top
WITH e.v AS v, e.u AS u, e.w AS weight, e.rank AS rank, top
RETURN v.uid AS lower, v.layer AS lower_layer, v.depth AS lower_depth, v.channel AS lower_channel,
       u.uid AS upper, u.layer AS upper_layer, u.depth AS upper_depth, u.channel AS upper_channel,
       weight, rank, top
ORDER BY weight / top DESC, lower, upper
LIMIT $limit
""",
    # critical channels per layer of several classes (compare page)
    "critical_sets": """
MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})
WHERE cl.index IN $classes AND ($params IS NULL OR c.params_hash = $params)
WITH cl, c ORDER BY c.completed_at DESC
WITH cl, collect(c)[0] AS c
MATCH (c)-[:INCLUDES]->(n:Neuron)
WITH cl, c, n ORDER BY n.channel
RETURN cl.index AS class_index, cl.name AS class_name, c.uid AS circuit, n.layer AS layer, n.depth AS depth,
       collect(n.channel) AS channels
ORDER BY class_index, depth
""",
    # reverse lookup, group level: the groups (and concepts) that use a neuron in the given circuits
    # (those of the page of reverse_lookup rows shown: a hub of 1,000 classes reads one page)
    "neuron_groups": """
MATCH (c:Circuit) WHERE c.uid IN $circuits
MATCH (c)-[:HAS_CONCEPT]->(k:Concept)-[:OF]->(n:Neuron {uid: $neuron})
OPTIONAL MATCH (k)-[:IN_GROUP]->(g:Group)
RETURN c.class_index AS class_index, k.index AS concept, k.size AS size,
       g.uid AS group, g.index AS group_index, g.label AS label
ORDER BY class_index, concept
""",
}
APP_QUERIES["evaluations"] = Q_READ  # the faithfulness page: the library's own read of stored evaluations


def evaluations(model: str, params: str | None) -> list[dict[str, Any]]:
    """Stored evaluations of the latest complete circuit of each class (in parameter set `params`),
    as `ingest.evaluations.read_evaluations` returns them, cached.  `ingest.evaluation_rows` is the
    torch-free half of the evaluations code, so the page does not import torch."""
    from ingest.evaluation_rows import latest_per_class

    return latest_per_class(app_query("evaluations", model=model, params=params))


# --------------------------------------------------------------------------- similarity
def cluster_order(matrix: "np.ndarray") -> list[int]:
    """Row order that puts similar classes next to each other: the leaves of an average-linkage
    tree on the distance 1 - Jaccard (a heatmap page then shows a block of related classes)."""
    import numpy as np

    n = len(matrix)
    if n < 3:
        return list(range(n))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    dist = 1.0 - np.asarray(matrix, dtype=np.float64)
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2, 0.0, 1.0)
    return [int(i) for i in leaves_list(linkage(squareform(dist, checks=False), method="average"))]


@st.cache_data(show_spinner=False, ttl=RESULT_TTL_S, max_entries=16)
def _similarity(version_key: str, model: str, layer: str, params: str | None) -> dict[str, Any]:  # noqa: ARG001
    from ingest.similarity import jaccard_matrix

    sim = jaccard_matrix(run_query(store(), "class_channels", model=model, layer=layer, params=params))
    jac = sim.jaccard.astype("float32")
    return {"classes": sim.classes, "matrix": jac, "order": cluster_order(jac), "sizes": [int(x) for x in sim.sizes]}


def similarity(model: str, layer: str, params: str | None) -> dict[str, Any]:
    """Every class's Jaccard similarity to every other in one layer, cached: `classes` (indices),
    `matrix` (float32, classes x classes), `order` (positions in cluster order), `sizes`.  One
    channel list per class from the store (`class_channels`: one row of per-class lists), the matrix in numpy
    (`ingest.similarity`): the store never returns classes^2 rows."""
    return _similarity(version(), model, layer, params)


# --------------------------------------------------------------------------- helpers
def param_sets(model: str) -> list[dict[str, Any]]:
    """The model's parameter sets, the default one first (the one comparisons use unless the user
    picks another): hash, definition (dict), classes, class_indices, last."""
    import json

    rows = app_query("param_sets", model=model)
    return [{**r, "definition": json.loads(r["definition"]) if r.get("definition") else {}} for r in rows]


def describe_param_set(row: dict[str, Any]) -> str:
    """One line a person can read: tau, k, IG steps, layers, data, precision (plain text)."""
    d = row.get("definition") or {}
    parts = [f"tau {d.get('tau', '?')}", f"k {d.get('k', '?')}", f"{d.get('ig_steps', '?')} IG steps"]
    if d.get("layers"):
        parts.append("layers " + " > ".join(d["layers"]))
    if d.get("data_source"):  # a folder by its name: the app may be open to anyone
        from app.text import data_source

        parts.append("data " + data_source(d["data_source"]))
    if d.get("precision") and d["precision"] != "fp32":
        parts.append(str(d["precision"]))
    return ", ".join(parts)


def models() -> list[dict[str, Any]]:
    return lib("models")


def classes(model: str) -> list[dict[str, Any]]:
    return app_query("classes", model=model)


def class_names(model: str) -> dict[int, str]:
    return {r["index"]: r["name"] for r in classes(model)}


def layers(model: str) -> list[dict[str, Any]]:
    return app_query("layers", model=model)


def thumbnail_paths(rel_paths: list[str | None]) -> list[str]:
    """Existing thumbnail files for paths relative to the artifact folder (missing ones dropped)."""
    base = artifact_dir()
    out = []
    for rel in rel_paths:
        if not rel:
            continue
        p = base / rel
        if p.is_file():
            out.append(str(p))
    return out
