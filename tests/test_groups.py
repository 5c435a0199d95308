"""`neurflow.groups`: neuron groups of a layer (spec §7) and the edges between groups (spec §8)."""

from __future__ import annotations

import numpy as np
import pytest

from neurflow.circuit import EdgeRec, GroupEdgeRec, GroupMemberRec
from neurflow.groups import group_edges, layer_groups

pytestmark = pytest.mark.usefixtures("single_thread")


def _rows(seed=0, per=4):
    """(channel, concept) rows of one layer with concept vectors in three clear clusters."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
    vectors = np.concatenate([rng.normal(c, 0.1, (per, 3)) for c in centres])
    members = [(ch, j) for ch in range(len(vectors) // 2) for j in range(2)]
    return members, vectors


def test_every_neuron_concept_is_in_exactly_one_group_of_its_layer():
    members, vectors = _rows()
    groups = layer_groups(2, members, vectors, num_groups=None, max_groups=100, num_top_vecs=None)
    assert sorted((g.channel, g.concept) for g in groups) == sorted(members)
    assert all(g.depth == 2 for g in groups)
    labels = sorted({g.group for g in groups})
    assert labels == list(range(len(labels)))


def test_group_count_by_silhouette_recovers_clear_clusters():
    members, vectors = _rows()
    groups = layer_groups(0, members, vectors, num_groups=None, max_groups=100, num_top_vecs=None)
    by_row = [next(g.group for g in groups if (g.channel, g.concept) == m) for m in members]
    assert by_row == [0] * 4 + [1] * 4 + [2] * 4


def test_given_group_count_is_used():
    members, vectors = _rows()
    groups = layer_groups(0, members, vectors, num_groups=2, max_groups=100, num_top_vecs=None)
    assert {g.group for g in groups} == {0, 1} and len(groups) == len(members)


def test_max_groups_bounds_the_count():
    members, vectors = _rows()
    groups = layer_groups(0, members, vectors, num_groups=None, max_groups=2, num_top_vecs=None)
    assert len({g.group for g in groups}) == 2


def test_num_top_vecs_keeps_the_members_closest_to_each_centroid():
    members, vectors = _rows()
    vectors[1] += 0.5  # the farthest row of the first cluster
    groups = layer_groups(0, members, vectors, num_groups=None, max_groups=100, num_top_vecs=3)
    kept = {(g.channel, g.concept) for g in groups}
    assert len(groups) == 9  # three per group
    assert members[1] not in kept
    assert all(sum(1 for g in groups if g.group == h) == 3 for h in range(3))


# A hand-made example of spec §8.  Upper layer (depth 0): group 0 = {(0, 0), (1, 0)}, group 1 = {(0, 1)}.
# Lower layer (depth 1): channel 5 has concepts 0 and 1 in group 0 and concept 2 in group 1;
# channel 7 has concept 0 in group 1; channel 9 is in no group (not critical).
MEMBERS = [
    GroupMemberRec(0, 0, 0, 0), GroupMemberRec(0, 0, 1, 0), GroupMemberRec(0, 1, 0, 1),
    GroupMemberRec(1, 0, 5, 0), GroupMemberRec(1, 0, 5, 1), GroupMemberRec(1, 1, 5, 2), GroupMemberRec(1, 1, 7, 0),
]  # fmt: skip
EDGES = [
    EdgeRec(0, 0, 0, 5, 0.5), EdgeRec(0, 0, 0, 7, -0.5),   # (u=0, j=0)
    EdgeRec(0, 1, 0, 5, 0.25), EdgeRec(0, 1, 0, 7, 0.75),  # (u=1, j=0)
    EdgeRec(0, 0, 1, 5, -1.0), EdgeRec(0, 0, 1, 9, 0.5),   # (u=0, j=1); channel 9 counts in no group
    EdgeRec(1, 5, 0, 3, 1.0),                              # another depth: ignored
]  # fmt: skip


def test_group_edges_follow_the_sum_rule_on_a_hand_made_example():
    # W(G -> H) = sum_{(u,j) in G} sum_v w(u,j -> v) * |{concepts of v in H}|
    #   W(0 -> 0) = 0.5 * 2 + 0.25 * 2                    = 1.5
    #   W(0 -> 1) = 0.5 * 1 - 0.5 * 1 + 0.25 * 1 + 0.75 * 1 = 1.0
    #   W(1 -> 0) = -1.0 * 2                              = -2.0
    #   W(1 -> 1) = -1.0 * 1                              = -1.0
    assert group_edges(0, MEMBERS, EDGES) == [
        GroupEdgeRec(0, 0, 0, 1.5), GroupEdgeRec(0, 0, 1, 1.0), GroupEdgeRec(0, 1, 0, -2.0), GroupEdgeRec(0, 1, 1, -1.0),
    ]  # fmt: skip


def test_zero_group_edges_are_left_out():
    edges = [EdgeRec(0, 0, 0, 5, 0.5), EdgeRec(0, 1, 0, 5, -0.5)]  # cancel out in W(0 -> 0) and W(0 -> 1)
    assert group_edges(0, MEMBERS, edges) == []


def test_edges_of_members_outside_every_group_do_not_count():
    kept = [m for m in MEMBERS if (m.depth, m.channel, m.concept) != (0, 1, 0)]  # e.g. dropped by num_top_vecs
    # W(0 -> 0) = 0.5 * 2 = 1.0; W(0 -> 1) = 0.5 - 0.5 = 0 (left out); group 1 as before
    assert group_edges(0, kept, EDGES) == [GroupEdgeRec(0, 0, 0, 1.0), GroupEdgeRec(0, 1, 0, -2.0), GroupEdgeRec(0, 1, 1, -1.0)]


def test_group_edges_on_a_built_circuit_follow_the_sum_rule(tiny):
    c = tiny.circuit
    checked = 0
    for d in c.depths[:-1]:
        uppers, lowers = c.groups(d), c.groups(d + 1)
        got = {(e.upper_group, e.lower_group): e.weight for e in c.group_edges if e.depth == d}
        assert all(g in uppers and h in lowers for g, h in got)
        for g, members in uppers.items():
            for h, lower_members in lowers.items():
                expected = 0.0
                for u, j in members:
                    for e in c.edges:
                        if (e.depth, e.channel, e.concept) == (d, u, j):
                            expected += e.weight * sum(1 for v, _ in lower_members if v == e.lower_channel)
                assert got.get((g, h), 0.0) == pytest.approx(expected, abs=1e-9)
                checked += 1
    assert checked >= 4
