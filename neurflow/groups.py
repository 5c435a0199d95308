"""Neuron groups of a layer (spec §7) and the weighted edges between groups (spec §8)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from neurflow.circuit import EdgeRec, GroupEdgeRec, GroupMemberRec
from neurflow.clustering import ward_clusters


def layer_groups(
    depth: int,
    members: list[tuple[int, int]],
    vectors: np.ndarray,
    *,
    num_groups: int | None,
    max_groups: int,
    num_top_vecs: int | None,
) -> list[GroupMemberRec]:
    """Group the `(channel, concept)` rows of one layer by their concept vectors."""
    labels = ward_clusters(vectors, max_clusters=max_groups, n_clusters=num_groups)
    keep = np.ones(len(members), dtype=bool)
    if num_top_vecs is not None:
        keep[:] = False
        for g in np.unique(labels):
            idx = np.flatnonzero(labels == g)
            dist = np.linalg.norm(vectors[idx] - vectors[idx].mean(axis=0), axis=1)
            keep[idx[np.argsort(dist, kind="stable")[:num_top_vecs]]] = True
    return [
        GroupMemberRec(depth=depth, group=int(labels[i]), channel=ch, concept=j)
        for i, (ch, j) in enumerate(members)
        if keep[i]
    ]


def group_edges(depth: int, members: list[GroupMemberRec], edges: list[EdgeRec]) -> list[GroupEdgeRec]:
    """`W(G -> H) = sum_{(u,j) in G} sum_v w(u,j -> v) * |{concepts of v in H}|` (sum aggregation).

    G is a group at `depth`, H a group one layer down.  Only non-zero weights are returned."""
    upper_group = {(m.channel, m.concept): m.group for m in members if m.depth == depth}
    lower_counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))  # v -> H -> count
    for m in members:
        if m.depth == depth + 1:
            lower_counts[m.channel][m.group] += 1
    total: dict[tuple[int, int], float] = defaultdict(float)
    for e in edges:
        if e.depth != depth or (e.channel, e.concept) not in upper_group:
            continue
        g = upper_group[(e.channel, e.concept)]
        for h, count in lower_counts.get(e.lower_channel, {}).items():
            total[(g, h)] += e.weight * count
    return [
        GroupEdgeRec(depth=depth, upper_group=g, lower_group=h, weight=float(w))
        for (g, h), w in sorted(total.items())
        if w != 0.0
    ]
