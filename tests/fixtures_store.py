"""Store fixtures (a pytest plugin module, listed in tests/conftest.py) and a circuit builder.

Fixtures:

- ``store_server`` (session): a fresh embedded ArcadeDB server in a temporary data folder on
  free ports, stopped at the end.  While it runs, ``NEURFLOW_STORE_DIR`` and the port
  variables point at it, so code that calls ``start_store()`` reuses it.
- ``store_config`` (function): the server's config on a new, empty database of its own
  (dropped afterwards), so tests are independent.
- ``store`` (function): an open `ingest.store.connection.Store` on that database, schema in place.

`make_circuit(class_index, ...)` builds a small but structurally valid `Circuit` (logits + 3
layers, critical neurons, core sets, concepts, DRIVES edges, groups, group edges, images,
crops and representatives), deterministic per (class, params).  It is input data.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from typing import Iterator

import pytest

from ingest.store.config import StoreConfig
from ingest.store.embedded import create_database, drop_database, ensure_embedded_server, free_port, stop_embedded_server
from ingest.store.schema import ensure_schema
from ingest.store.connection import Store

TEST_MODEL = "testnet"
LAYERS = [("logits", 4), ("layer3", 8), ("layer2", 8), ("layer1", 6)]  # depth 0..3
_ENV_KEYS = (
    "NEURFLOW_STORE_URI", "NEURFLOW_STORE_USER", "NEURFLOW_STORE_PASSWORD", "NEURFLOW_STORE_DATABASE",
    "NEURFLOW_STORE_READONLY_USER", "NEURFLOW_STORE_READONLY_PASSWORD",
    "NEURFLOW_STORE_DIR", "NEURFLOW_STORE_BOLT_PORT", "NEURFLOW_STORE_HTTP_PORT",
)  # fmt: skip


# --------------------------------------------------------------------------- circuits
def make_circuit(
    class_index: int,
    *,
    model: str = TEST_MODEL,
    params=None,
    tau: int = 3,
    layers: list[tuple[str, int]] | None = None,
    class_name: str | None = None,
    num_images: int = 6,
):
    """A deterministic small circuit for class `class_index` (see the module docstring)."""
    from neurflow.circuit import (
        Circuit,
        ConceptMemberRec,
        ConceptRec,
        CoreRec,
        CropRec,
        EdgeRec,
        GroupEdgeRec,
        GroupMemberRec,
        ImageRec,
        LayerRec,
        NeuronRec,
        Params,
        TopSampleRec,
    )

    params = params or Params(tau=tau, k=4, ig_steps=8, granularities=(1.0, 0.5), num_representatives=2)
    layers = layers or LAYERS
    rng = random.Random(f"{model}/{class_index}/{params.hash()}")
    c = Circuit(
        model=model,
        class_index=class_index,
        class_name=class_name or f"class{class_index}",
        params=params,
        image_size=28,
        neurflow_version="test",
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:00:05Z",
        seconds=5.0,
        data_source=f"folder:/data/{model}",
        data_fingerprint=hashlib.sha256(f"{model}/{class_index}".encode()).hexdigest()[:16],
    )
    c.layers = [LayerRec(depth=d, name=name, channels=ch) for d, (name, ch) in enumerate(layers)]
    last = len(layers) - 1
    critical: dict[int, list[int]] = {0: [class_index]}
    for d in range(0, last):
        lower: set[int] = set()
        for u in critical[d]:
            core = rng.sample(range(layers[d + 1][1]), min(params.tau, layers[d + 1][1]))
            imps = sorted((round(rng.uniform(0.05, 1.0), 4) for _ in core), reverse=True)
            for rank, (v, imp) in enumerate(zip(core, imps)):
                c.core.append(CoreRec(depth=d, channel=u, lower_channel=v, rank=rank, importance=imp))
                lower.add(v)
        critical[d + 1] = sorted(lower)
    for d, chans in critical.items():
        c.neurons += [NeuronRec(depth=d, channel=ch) for ch in chans]

    # images and crops: crop i cuts image i % num_images
    for i in range(num_images):
        sha = hashlib.sha256(f"{model}-image-{i}".encode()).hexdigest()
        c.images.append(ImageRec(image_id=i, source=f"/data/{model}/img{i}.png", sha256=sha, label=i % layers[0][1]))
    for i in range(num_images * 2):
        g = 1.0 if i < num_images else 0.5
        x0 = 0 if g == 1.0 else 7
        c.crops.append(CropRec(crop_id=i, image_id=i % num_images, x0=x0, y0=x0, x1=x0 + int(28 * g), y1=x0 + int(28 * g), granularity=g))

    # top samples, concepts (neurons that have a core), members, DRIVES edges
    for d in range(0, last + 1):
        for u in critical[d]:
            samples = rng.sample(range(len(c.crops)), params.k)
            acts = sorted((round(rng.uniform(0.1, 5.0), 3) for _ in samples), reverse=True)
            for rank, (crop, act) in enumerate(zip(samples, acts)):
                c.top_samples.append(TopSampleRec(depth=d, channel=u, rank=rank, crop_id=crop, activation=act))
            if d == last:
                continue
            core = c.core_of(d, u)
            n_concepts = 1 + (u + class_index + d) % 2
            for j in range(n_concepts):
                members = [(crop, act) for r, (crop, act) in enumerate(zip(samples, acts)) if r % n_concepts == j]
                c.concepts.append(
                    ConceptRec(
                        depth=d, channel=u, index=j, size=len(members),
                        mean_activation=round(sum(a for _, a in members) / len(members), 4),
                        vector=tuple(round(rng.uniform(0, 1), 3) for _ in core),
                    )
                )  # fmt: skip
                for r, (crop, act) in enumerate(members):
                    rep = r if r < params.num_representatives else -1
                    c.concept_members.append(
                        ConceptMemberRec(depth=d, channel=u, concept=j, crop_id=crop, activation=act, rep_rank=rep)
                    )
                raw = [rng.uniform(-1, 1) for _ in core]
                norm = sum(abs(x) for x in raw) or 1.0
                for cr, w in zip(core, raw):
                    c.edges.append(EdgeRec(depth=d, channel=u, concept=j, lower_channel=cr.lower_channel, weight=round(w / norm, 4)))

    # groups: depth 0 one group; deeper layers two groups by (channel + concept) parity
    for d in range(0, last):
        for con in c.concepts:
            if con.depth == d:
                g = 0 if d == 0 else (con.channel + con.index) % 2
                c.group_members.append(GroupMemberRec(depth=d, group=g, channel=con.channel, concept=con.index))
    for d in range(0, last - 1):
        for up in c.groups(d):
            for lo in c.groups(d + 1):
                c.group_edges.append(GroupEdgeRec(depth=d, upper_group=up, lower_group=lo, weight=round(rng.uniform(0.01, 1.0), 4)))
    return c


def expected_counts(circuits) -> dict[str, int]:
    """Node and relationship counts the store must hold after writing `circuits` (all complete)."""
    models = {c.model for c in circuits}
    layers = {(c.model, rec.name) for c in circuits for rec in c.layers}
    classes = {(c.model, c.class_index) for c in circuits}
    neurons: set = set()
    images: set = set()
    crops: set = set()
    stats: set = set()  # the writer's per-(neuron, parameter set) aggregates (ingest/write/aggregates.py)
    out = {k: 0 for k in ("Concept", "Group", "INCLUDES", "FEEDS", "DRIVES", "IN_GROUP", "GROUP_FEEDS", "EXEMPLIFIED_BY")}
    for c in circuits:
        neurons |= {(c.model, n.depth, n.channel) for n in c.neurons}
        stats |= {(c.model, n.depth, n.channel, c.identity.param_set) for n in c.neurons}
        neurons |= {(c.model, r.depth + 1, r.lower_channel) for r in c.core} | {(c.model, r.depth, r.channel) for r in c.core}
        neurons |= {(c.model, e.depth + 1, e.lower_channel) for e in c.edges}
        neurons |= {(c.model, k.depth, k.channel) for k in c.concepts}
        groups = {(m.depth, m.group) for m in c.group_members}
        groups |= {(g.depth, g.upper_group) for g in c.group_edges} | {(g.depth + 1, g.lower_group) for g in c.group_edges}
        crop_by_id = {cr.crop_id: cr for cr in c.crops}
        sha = {im.image_id: im.sha256 for im in c.images}
        reps = {(m.depth, m.channel, m.concept, m.crop_id) for m in c.concept_members if m.rep_rank >= 0}
        for *_, crop_id in reps:
            cr = crop_by_id[crop_id]
            images.add(sha[cr.image_id])
            crops.add((sha[cr.image_id], cr.x0, cr.y0, cr.x1, cr.y1))
        out["Concept"] += len(c.concepts)
        out["Group"] += len(groups)
        out["INCLUDES"] += len(c.neurons)
        out["FEEDS"] += len(c.core)
        out["DRIVES"] += len(c.edges)
        out["IN_GROUP"] += len(c.group_members)
        out["GROUP_FEEDS"] += len(c.group_edges)
        out["EXEMPLIFIED_BY"] += len(reps)
    out.update(
        Model=len(models), Layer=len(layers), Class=len(classes), Circuit=len(circuits), Neuron=len(neurons),
        Image=len(images), Crop=len(crops), HAS_LAYER=len(layers), HAS_NEURON=len(neurons), HAS_CLASS=len(classes),
        HAS_CIRCUIT=len(circuits), HAS_CONCEPT=out["Concept"], OF=out["Concept"], HAS_GROUP=out["Group"], CROP_OF=len(crops),
        NeuronStat=len(stats), LayerStat=len({(m, d, ph) for m, d, _, ph in stats}),
        CircuitFeeds=len(circuits),
    )  # fmt: skip
    return out


def model_info(model: str = TEST_MODEL) -> dict:
    return {"name": model, "arch": "tiny-cnn", "weights_sha256": "0" * 64, "num_classes": LAYERS[0][1], "input_size": 28}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def store_server(tmp_path_factory) -> Iterator[StoreConfig]:
    """A fresh embedded server for the test session (tmp data folder, free ports)."""
    data_dir = tmp_path_factory.mktemp("neurflow-store")
    bolt, http = free_port(), free_port()
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    for k in _ENV_KEYS:
        os.environ.pop(k, None)
    os.environ.update(
        {"NEURFLOW_STORE_DIR": str(data_dir), "NEURFLOW_STORE_BOLT_PORT": str(bolt), "NEURFLOW_STORE_HTTP_PORT": str(http)}
    )
    cfg = ensure_embedded_server(data_dir, bolt_port=bolt, http_port=http, owner_pid=os.getpid(), heap="1g")
    try:
        yield cfg
    finally:
        stop_embedded_server(data_dir)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def store_config(store_server: StoreConfig) -> Iterator[StoreConfig]:
    """The test server on a new empty database of this test's own."""
    name = "t_" + uuid.uuid4().hex[:12]
    create_database(store_server, name)
    try:
        yield store_server.with_database(name)
    finally:
        try:
            drop_database(store_server, name)
        except Exception:  # noqa: BLE001 - a test that stopped the server must not fail teardown
            pass


@pytest.fixture
def store(store_config: StoreConfig) -> Iterator[Store]:
    s = Store(store_config)
    ensure_schema(s)
    try:
        yield s
    finally:
        s.close()
