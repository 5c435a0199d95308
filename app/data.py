"""Store reads for the app: one read-only connection, cached results keyed on the store's version.

Every read goes through `lib()` (a library query of `ingest/queries/library.py`) or `app_query()` (the
app's own Cypher below: plain Cypher that ArcadeDB and Neo4j 5 both run, no APOC).  Results are
cached with ``st.cache_data`` under the store *version* (store address, database, number of
circuits and the latest ``Circuit.completed_at``), so a new ingestion shows up at once and an
unchanged store is read once.  The version itself is re-read at most every few seconds.

Large circuits stay readable because the graph queries prune in the store (weight threshold,
top-k per upper node, an edge cap): only the pruned subgraph ever leaves the database.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app.text import data_source
from ingest.queries.app_reads import APP_QUERIES, Q_VERSION
from ingest.queries.library import get_query, run_query
from ingest.read.evaluation_rows import latest_per_class
from ingest.read.similarity import jaccard_matrix
from ingest.store.config import StoreConfig
from ingest.store.config import artifact_dir as config_artifact_dir
from ingest.store.connection import Store, start_store
from ingest.store.readonly import close_readonly_stores, readonly_store

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
    rows = store().run(Q_VERSION)
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
    """A library query (ingest/queries/library.py), cached; missing parameters take their defaults."""
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
    clear_caches()
    _config.clear()
    close_readonly_stores()


def evaluations(model: str, params: str | None) -> list[dict[str, Any]]:
    """Stored evaluations of the latest complete circuit of each class (in parameter set `params`),
    as `ingest.jobs.evaluations.read_evaluations` returns them, cached.  `ingest.read.evaluation_rows` is the
    torch-free half of the evaluations code, so the page does not import torch."""
    return latest_per_class(app_query("evaluations", model=model, params=params))


# --------------------------------------------------------------------------- similarity
def cluster_order(matrix: "np.ndarray") -> list[int]:
    """Row order that puts similar classes next to each other: the leaves of an average-linkage
    tree on the distance 1 - Jaccard (a heatmap page then shows a block of related classes)."""
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

    sim = jaccard_matrix(run_query(store(), "class_channels", model=model, layer=layer, params=params))
    jac = sim.jaccard.astype("float32")
    return {"classes": sim.classes, "matrix": jac, "order": cluster_order(jac), "sizes": [int(x) for x in sim.sizes]}


def similarity(model: str, layer: str, params: str | None) -> dict[str, Any]:
    """Every class's Jaccard similarity to every other in one layer, cached: `classes` (indices),
    `matrix` (float32, classes x classes), `order` (positions in cluster order), `sizes`.  One
    channel list per class from the store (`class_channels`: one row of per-class lists), the matrix in numpy
    (`ingest.read.similarity`): the store never returns classes^2 rows."""
    return _similarity(version(), model, layer, params)


# --------------------------------------------------------------------------- helpers
def param_sets(model: str) -> list[dict[str, Any]]:
    """The model's parameter sets, the default one first (the one comparisons use unless the user
    picks another): hash, definition (dict), classes, class_indices, last."""
    rows = app_query("param_sets", model=model)
    return [{**r, "definition": json.loads(r["definition"]) if r.get("definition") else {}} for r in rows]


def describe_param_set(row: dict[str, Any]) -> str:
    """One line a person can read: tau, k, IG steps, layers, data, precision (plain text)."""
    d = row.get("definition") or {}
    parts = [f"tau {d.get('tau', '?')}", f"k {d.get('k', '?')}", f"{d.get('ig_steps', '?')} IG steps"]
    if d.get("layers"):
        parts.append("layers " + " > ".join(d["layers"]))
    if d.get("data_source"):  # a folder by its name: the app may be open to anyone

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
