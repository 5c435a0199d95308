"""Row mapping: a `Circuit` record set -> the rows of every writer statement (no database access).

Kept apart from the statements and the session so that the mapping (uids, which neurons a row
touches, per-neuron sums kept for the aggregates) can be read and tested without a store
(tests/test_circuit_rows.py): one function per statement of `ingest.write.statements` (named in its
docstring), in the writer's order; `circuit_rows` collects them by the writer's step name.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ingest.store import uids
if TYPE_CHECKING:  # importing neurflow pulls in torch; the mapping only needs the records
    from neurflow.circuit import Circuit


def uids_of(circuit: "Circuit") -> dict[str, Any]:
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
        "neuron": lambda d, ch: uids.neuron_uid(model, layer_name(d), ch),
        "concept": lambda d, ch, j: uids.concept_uid(cid, layer_name(d), ch, j),
        "group": lambda d, g: uids.group_uid(cid, layer_name(d), g),
    }


def circuit_rows(
    circuit: "Circuit",
    *,
    model_info: dict[str, Any] | None = None,
    crop_thumbnails: dict[int, str] | None = None,
    group_labels: dict[tuple[int, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The rows of every statement for `circuit`, by the writer's step name (no database access)."""
    u = uids_of(circuit)
    return {
        "feed_keys": feed_keys(circuit),
        "model": model_row(circuit, u, model_info),
        "cls": class_row(circuit),
        "circuit": circuit_row(circuit),
        "layers": layer_rows(u),
        "neurons": neuron_rows(circuit, u),
        "includes": include_rows(circuit, u),
        "feeds": feeds_rows(circuit, u),
        "concepts": concept_rows(circuit, u),
        "drives": drives_rows(circuit, u),
        "groups": group_rows(circuit, u, group_labels),
        "in_group": in_group_rows(circuit, u),
        "group_feeds": group_feeds_rows(circuit, u),
        "crops": crop_rows(circuit, crop_thumbnails),
        "exemplified": exemplified_rows(circuit, u),
    }


# --------------------------------------------------------------------------- Q_HEAD: model, class, circuit
def model_row(circuit: "Circuit", u: dict[str, Any], model_info: dict[str, Any] | None) -> dict[str, Any]:
    """The Model node of `statements.Q_HEAD`: what the loader knows (`model_info`), else what the
    circuit says (its logit layer's width, its image size)."""
    info = dict(model_info or {})
    logits = u["layers"].get(0)
    return {
        "uid": u["model"],
        "name": info.get("name", u["model"]),
        "arch": info.get("arch"),
        "weights_sha256": info.get("weights_sha256"),
        "num_classes": info.get("num_classes", logits.channels if logits else None),
        "input_size": info.get("input_size", circuit.image_size),
    }


def class_row(circuit: "Circuit") -> dict[str, Any]:
    """The Class node of `statements.Q_HEAD`."""
    model = circuit.model
    return {"uid": uids.class_uid(model, circuit.class_index), "model": model, "index": circuit.class_index, "name": circuit.class_name}


def circuit_row(circuit: "Circuit") -> dict[str, Any]:
    """The Circuit node of `statements.Q_HEAD`, written `running` (the last step completes it)."""
    p = circuit.params
    identity = circuit.identity
    return {
        "uid": circuit.uid,
        "model": circuit.model,
        "class_index": circuit.class_index,
        # a copy of the class name, so that per-class library queries read circuit nodes only
        "class_name": circuit.class_name,
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


# --------------------------------------------------------------------------- Q_LAYERS, Q_NEURONS, Q_INCLUDES, Q_FEEDS
def layer_rows(u: dict[str, Any]) -> list[dict[str, Any]]:
    """`statements.Q_LAYERS`: one Layer per depth of the circuit, the logits (depth 0) first."""
    model = u["model"]
    return [
        {"uid": uids.layer_uid(model, rec.name), "name": rec.name, "depth": rec.depth, "channels": rec.channels}
        for rec in sorted(u["layers"].values(), key=lambda r: r.depth)
    ]


def neuron_rows(circuit: "Circuit", u: dict[str, Any]) -> list[dict[str, Any]]:
    """`statements.Q_NEURONS`: every neuron any row touches (the critical ones and the lower ends
    of FEEDS and DRIVES), each once, sorted by (depth, channel)."""
    keys: set[tuple[int, int]] = {(n.depth, n.channel) for n in circuit.neurons}
    keys |= {(c.depth + 1, c.lower_channel) for c in circuit.core}
    keys |= {(e.depth + 1, e.lower_channel) for e in circuit.edges}
    keys |= {(c.depth, c.channel) for c in circuit.core}
    keys |= {(c.depth, c.channel) for c in circuit.concepts}
    return [
        {
            "uid": u["neuron"](d, ch),
            "layer_uid": uids.layer_uid(u["model"], u["layer_name"](d)),
            "layer": u["layer_name"](d),
            "channel": ch,
            "depth": d,
        }
        for d, ch in sorted(keys)
    ]


def include_rows(circuit: "Circuit", u: dict[str, Any]) -> list[dict[str, Any]]:
    """`statements.Q_INCLUDES`, one row per critical neuron: its importance in this circuit (the sum
    of I_u(v) over its FEEDS) and how many neurons it FEEDS, kept on INCLUDES for the aggregates
    and reverse_lookup."""
    importance: dict[tuple[int, int], float] = {}
    feeds_up: dict[tuple[int, int], int] = {}
    for c in circuit.core:
        key = (c.depth + 1, c.lower_channel)
        importance[key] = importance.get(key, 0.0) + float(c.importance)
        feeds_up[key] = feeds_up.get(key, 0) + 1
    return [
        {
            "uid": u["neuron"](n.depth, n.channel),
            "depth": n.depth,
            "importance": importance.get((n.depth, n.channel), 0.0),
            "feeds_up": feeds_up.get((n.depth, n.channel), 0),
        }
        for n in circuit.neurons
    ]


def feeds_rows(circuit: "Circuit", u: dict[str, Any]) -> list[dict[str, Any]]:
    """`statements.Q_FEEDS`: one row per core edge, lower neuron `v` FEEDS upper neuron `u`."""
    return [
        {"v": u["neuron"](c.depth + 1, c.lower_channel), "u": u["neuron"](c.depth, c.channel), "importance": float(c.importance), "rank": c.rank}
        for c in circuit.core
    ]


# --------------------------------------------------------------------------- Q_CONCEPTS, Q_DRIVES
def concept_rows(circuit: "Circuit", u: dict[str, Any]) -> list[dict[str, Any]]:
    """`statements.Q_CONCEPTS`: one Concept per (neuron, concept index)."""
    return [
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


def drives_rows(circuit: "Circuit", u: dict[str, Any]) -> list[dict[str, Any]]:
    """`statements.Q_DRIVES`: one row per concept edge, lower neuron `v` DRIVES concept `k`."""
    return [
        {"v": u["neuron"](e.depth + 1, e.lower_channel), "k": u["concept"](e.depth, e.channel, e.concept), "weight": float(e.weight)}
        for e in circuit.edges
    ]


# --------------------------------------------------------------------------- Q_GROUPS, Q_IN_GROUP, Q_GROUP_FEEDS
def group_rows(
    circuit: "Circuit", u: dict[str, Any], group_labels: dict[tuple[int, int], dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """`statements.Q_GROUPS`: one Group per (depth, group) with its member count; a group that only
    an edge refers to exists too (size 0).  `group_labels` (by (depth, group)) are the labels an
    earlier write of the circuit had, kept on a rewrite."""
    sizes: dict[tuple[int, int], int] = {}
    for m in circuit.group_members:
        sizes[(m.depth, m.group)] = sizes.get((m.depth, m.group), 0) + 1
    for ge in circuit.group_edges:  # a group referenced by an edge exists even with no member row
        sizes.setdefault((ge.depth, ge.upper_group), 0)
        sizes.setdefault((ge.depth + 1, ge.lower_group), 0)
    labels = group_labels or {}
    rows = []
    for (d, g), size in sorted(sizes.items()):
        lab = labels.get((d, g), {})
        rows.append(
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
    return rows


def in_group_rows(circuit: "Circuit", u: dict[str, Any]) -> list[dict[str, Any]]:
    """`statements.Q_IN_GROUP`: concept `k` is IN_GROUP `g`, one row per group member."""
    return [{"k": u["concept"](m.depth, m.channel, m.concept), "g": u["group"](m.depth, m.group)} for m in circuit.group_members]


def group_feeds_rows(circuit: "Circuit", u: dict[str, Any]) -> list[dict[str, Any]]:
    """`statements.Q_GROUP_FEEDS`: group `lower` (one depth down) feeds group `upper`."""
    return [
        {"lower": u["group"](ge.depth + 1, ge.lower_group), "upper": u["group"](ge.depth, ge.upper_group), "weight": float(ge.weight)}
        for ge in circuit.group_edges
    ]


# --------------------------------------------------------------------------- Q_CROPS, Q_EXEMPLIFIED
def representatives(circuit: "Circuit"):
    """(member, image, crop) for each representative crop of a concept (`rep_rank` >= 0), checked:
    a crop or image the circuit's tables do not hold is a ValueError naming the circuit."""
    crops = {c.crop_id: c for c in circuit.crops}
    images = {im.image_id: im for im in circuit.images}
    for m in circuit.concept_members:
        if m.rep_rank < 0:
            continue
        if m.crop_id not in crops:
            raise ValueError(f"circuit {circuit.uid}: representative crop {m.crop_id} is not in the crop table")
        cr = crops[m.crop_id]
        if cr.image_id not in images:
            raise ValueError(f"circuit {circuit.uid}: crop {cr.crop_id} refers to unknown image {cr.image_id}")
        yield m, images[cr.image_id], cr


def crop_rows(circuit: "Circuit", crop_thumbnails: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """`statements.Q_CROPS`: one Crop per representative crop, by uid (the same file twice in a data
    set is one Image, its crops one Crop: the first occurrence's row is kept)."""
    rows: dict[str, dict[str, Any]] = {}
    for _, im, cr in representatives(circuit):
        uid = crop_uid_of(im.sha256, cr)
        rows.setdefault(
            uid,
            {
                "uid": uid,
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
    return list(rows.values())


def exemplified_rows(circuit: "Circuit", u: dict[str, Any]) -> list[dict[str, Any]]:
    """`statements.Q_EXEMPLIFIED`: concept `k` is EXEMPLIFIED by `crop` at rank `rank`."""
    return [
        {"k": u["concept"](m.depth, m.channel, m.concept), "crop": crop_uid_of(im.sha256, cr), "rank": m.rep_rank, "activation": float(m.activation)}
        for m, im, cr in representatives(circuit)
    ]


crop_uid_of = uids.crop_uid  # the writer's name for it

KEY_BASE = 1 << 16  # channels per layer stay below it (ResNet50: 2,048; EfficientNet-B7: 2,560)


def feed_keys(circuit: "Circuit") -> list[int]:
    """The circuit's FEEDS edges as sorted integers, depth * 2**32 + upper * 2**16 + lower (the
    upper neuron at `depth`, the lower one below it): `circuit_diff` compares two such lists in
    memory instead of reading both circuits' FEEDS and the neurons at their ends."""
    for c in circuit.core:
        if not (0 <= c.channel < KEY_BASE and 0 <= c.lower_channel < KEY_BASE):
            raise ValueError(f"circuit {circuit.uid}: channel {max(c.channel, c.lower_channel)} too large for a FEEDS key")
    return sorted((c.depth * KEY_BASE + c.channel) * KEY_BASE + c.lower_channel for c in circuit.core)
