"""`neurflow.clustering.ward_clusters`: Ward clustering, count chosen by silhouette (spec §5, §7)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score, silhouette_score

from neurflow.clustering import ward_clusters


def _blobs(centres, per=5, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, spread, (per, len(c))) for c in centres])
    truth = np.repeat(np.arange(len(centres)), per)
    order = rng.permutation(len(x))  # interleave the blobs
    return x[order], truth[order]


def _same_partition(a, b) -> bool:
    return adjusted_rand_score(a, b) == 1.0


def test_well_separated_blobs_are_recovered_exactly():
    x, truth = _blobs([(0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10)])
    labels = ward_clusters(x, max_clusters=5)
    assert labels.max() + 1 == 4
    assert _same_partition(labels, truth)


@pytest.mark.parametrize("seed", range(4))
def test_count_is_the_best_silhouette_in_range(seed):
    """Brute force with scikit-learn: every count in [2, min(n - 1, max)] clustered by Ward, the
    chosen partition has the best silhouette (the smallest count on ties) and is Ward's at that count."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(12, 4))
    max_clusters = 5
    labels = ward_clusters(x, max_clusters=max_clusters)
    scores = {}
    partitions = {}
    for count in range(2, min(len(x) - 1, max_clusters) + 1):
        partitions[count] = AgglomerativeClustering(n_clusters=count, linkage="ward").fit_predict(x)
        scores[count] = silhouette_score(x, partitions[count])
    best = max(scores.values())
    want = min(c for c, s in scores.items() if s > best - 1e-12)
    assert labels.max() + 1 == want
    assert _same_partition(labels, partitions[want])
    assert silhouette_score(x, labels) == pytest.approx(best)


def test_count_never_exceeds_max_clusters_nor_n_minus_one():
    x, _ = _blobs([(i * 10.0, 0.0) for i in range(6)], per=2)
    assert ward_clusters(x, max_clusters=3).max() + 1 <= 3
    few, _ = _blobs([(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)], per=1)  # 3 rows: only 2 clusters allowed
    assert ward_clusters(few, max_clusters=5).max() + 1 == 2


def test_labels_are_numbered_by_first_appearance():
    x, _ = _blobs([(0, 0), (10, 0), (0, 10)], seed=3)
    labels = ward_clusters(x, max_clusters=5)
    firsts = [int(np.flatnonzero(labels == j)[0]) for j in range(labels.max() + 1)]
    assert labels[0] == 0 and firsts == sorted(firsts)
    assert set(labels.tolist()) == set(range(labels.max() + 1))


def test_labels_are_deterministic():
    x = np.random.default_rng(7).normal(size=(20, 6))
    first = ward_clusters(x, max_clusters=5)
    assert all(np.array_equal(first, ward_clusters(x.copy(), max_clusters=5)) for _ in range(3))


def test_given_count_is_used():
    x = np.random.default_rng(1).normal(size=(10, 3))
    assert ward_clusters(x, max_clusters=5, n_clusters=4).max() + 1 == 4
    ref = AgglomerativeClustering(n_clusters=4, linkage="ward").fit_predict(x)
    assert _same_partition(ward_clusters(x, max_clusters=5, n_clusters=4), ref)


def test_degenerate_inputs():
    assert ward_clusters(np.zeros((0, 3)), max_clusters=5).shape == (0,)
    assert ward_clusters(np.ones((1, 3)), max_clusters=5).tolist() == [0]
    assert ward_clusters(np.array([[0.0], [1.0]]), max_clusters=5).tolist() == [0, 1]  # one cluster per row
    assert ward_clusters(np.array([[0.0], [1.0]]), max_clusters=5, n_clusters=1).tolist() == [0, 0]
    assert ward_clusters(np.ones((6, 2)), max_clusters=5).tolist() == [0] * 6  # all the same point
