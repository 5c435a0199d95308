"""`neurflow.concepts.neuron_concepts`: concepts of a neuron (spec §5) and edge weights (spec §6)."""

from __future__ import annotations

import numpy as np
import pytest

from neurflow.clustering import ward_clusters
from neurflow.concepts import neuron_concepts

K, C = 12, 5


def _inputs(seed=0):
    """Top samples in two clear clusters of the lower layer's space, signed attributions."""
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.normal(0, 0.1, (K // 2, C)), rng.normal(5, 0.1, (K // 2, C))])
    activations = np.linspace(3.0, 1.0, K)  # strongest first, as top samples come
    attributions = rng.normal(0, 1, (K, C))
    core = np.array([3, 0, 4])
    return z, activations, attributions, core


def _concepts(z, acts, attributions, core, **kw):
    kw = {"max_concepts": 5, "num_representatives": 3, **kw}
    return neuron_concepts(z, acts, attributions, core, **kw)


def test_concepts_partition_the_top_samples():
    nc = _concepts(*_inputs())
    assert nc.labels.shape == (K,)
    count = len(nc.vectors)
    assert sorted(set(nc.labels.tolist())) == list(range(count))
    assert 2 <= count <= min(K - 1, 5)
    assert sorted(np.bincount(nc.labels)) == [6, 6]
    assert nc.labels[0] == 0  # concept 0 holds the strongest top sample


def test_labels_are_the_ward_silhouette_clusters_of_z():
    z, acts, attributions, core = _inputs(1)
    z = z + np.random.default_rng(2).normal(0, 1.0, z.shape)  # blur the two clusters
    nc = _concepts(z, acts, attributions, core, max_concepts=4)
    assert np.array_equal(nc.labels, ward_clusters(z, max_clusters=min(K - 1, 4)))


def test_concept_vector_is_the_mean_of_its_members():
    z, acts, attributions, core = _inputs()
    nc = _concepts(z, acts, attributions, core)
    assert nc.vectors.shape == (len(nc.vectors), C)  # lives in the lower layer's space
    for j, vector in enumerate(nc.vectors):
        np.testing.assert_allclose(vector, z[nc.labels == j].mean(axis=0))


def test_mean_activation_is_the_mean_over_members():
    z, acts, attributions, core = _inputs()
    nc = _concepts(z, acts, attributions, core)
    for j, mean in enumerate(nc.mean_activations):
        assert mean == pytest.approx(acts[nc.labels == j].mean())


def test_representatives_are_the_members_closest_to_the_centre_on_core_coordinates():
    """A sample far off on a non-core coordinate is still a representative if it is central on the
    core ones; a sample off-centre on a core coordinate is not."""
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(0, 0.01, (6, C)), rng.normal(5, 0.01, (6, C))])
    z[1, 1] += 3.0  # channel 1 is not a core channel: sample 1 stays central
    z[2, 3] += 0.3  # channel 3 is: sample 2 is the farthest from the centre
    core = np.array([3, 0, 4])
    nc = _concepts(z, np.ones(K), rng.normal(size=(K, C)), core, num_representatives=5)
    j = nc.labels[1]
    members = np.flatnonzero(nc.labels == j)
    centre = z[members][:, core].mean(axis=0)
    dist = {int(m): np.linalg.norm(z[m, core] - centre) for m in members}
    want = sorted(dist, key=lambda m: (dist[m], m))[:5]
    assert nc.representatives[j] == want  # closest first
    assert 1 in nc.representatives[j] and 2 not in nc.representatives[j]


def test_representatives_are_at_most_n_members_of_their_concept():
    nc = _concepts(*_inputs(), num_representatives=4)
    for j, reps in enumerate(nc.representatives):
        assert len(reps) == min(4, int((nc.labels == j).sum()))
        assert len(set(reps)) == len(reps) and all(nc.labels[p] == j for p in reps)


def test_edge_weight_rule():
    """w(u,j -> v) = mean over the concept's samples of A_u(x)_v, divided by (sum_v |.| + 1e-7)."""
    z, acts, attributions, core = _inputs()
    nc = _concepts(z, acts, attributions, core)
    assert nc.weights.shape == (len(nc.vectors), len(core))  # columns: core neurons in rank order
    for j in range(len(nc.vectors)):
        raw = attributions[nc.labels == j][:, core].mean(axis=0)
        np.testing.assert_allclose(nc.weights[j], raw / (np.abs(raw).sum() + 1e-7))


def test_edge_weights_are_signed_and_sum_to_one_in_absolute_value():
    z, acts, attributions, core = _inputs()
    nc = _concepts(z, acts, attributions, core)
    for j in range(len(nc.vectors)):
        raw = attributions[nc.labels == j][:, core].mean(axis=0)
        assert np.array_equal(np.sign(nc.weights[j]), np.sign(raw))
        assert abs(np.abs(nc.weights[j]).sum() - 1) <= 1e-7 / np.abs(raw).sum() + 1e-12


def test_edge_weights_follow_the_core_order():
    z, acts, attributions, core = _inputs()
    a = _concepts(z, acts, attributions, core)
    b = _concepts(z, acts, attributions, core[::-1])
    np.testing.assert_allclose(b.weights, a.weights[:, ::-1])


def test_zero_attributions_give_zero_weights_not_nan():
    z, acts, attributions, core = _inputs()
    nc = _concepts(z, acts, np.zeros_like(attributions), core)
    assert np.array_equal(nc.weights, np.zeros_like(nc.weights))


def test_identical_top_samples_make_one_concept():
    z = np.ones((K, C))
    nc = _concepts(z, np.ones(K), np.ones((K, C)), np.array([0, 1]))
    assert nc.labels.tolist() == [0] * K and len(nc.vectors) == 1
    np.testing.assert_allclose(nc.weights[0], [0.5, 0.5], atol=1e-6)
