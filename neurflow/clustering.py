"""Ward clustering with the number of clusters chosen by silhouette (spec §5 and §7).

One linkage tree is built and cut at every candidate count, which is what scikit-learn's
agglomerative clustering does internally once per count; the distances for the silhouette
are computed once too.  Clusters are numbered by their first member in input order, so that
the numbering is stable and cluster 0 holds the first (for top samples: the strongest) row.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform
from sklearn.metrics import silhouette_score


def _renumber(labels: np.ndarray) -> np.ndarray:
    mapping: dict[int, int] = {}
    for label in labels:
        mapping.setdefault(int(label), len(mapping))
    return np.array([mapping[int(label)] for label in labels], dtype=np.int64)


def ward_clusters(x: np.ndarray, *, max_clusters: int, n_clusters: int | None = None) -> np.ndarray:
    """Cluster rows of `x` (Ward, Euclidean); labels `0..n-1`.

    With `n_clusters` unset, the count in `[2, min(len(x) - 1, max_clusters)]` with the best
    silhouette wins (the smallest count on ties).  Fewer than 3 rows, or rows that are all the
    same point, give one cluster per distinct row."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n < 3:
        return _renumber(np.arange(n)) if n_clusters is None or n_clusters >= n else np.zeros(n, dtype=np.int64)
    distances = pdist(x)
    if not np.any(distances > 0):
        return np.zeros(n, dtype=np.int64)
    tree = linkage(x, method="ward")
    if n_clusters is not None:
        return _renumber(fcluster(tree, t=min(n_clusters, n), criterion="maxclust"))
    square = squareform(distances)
    best_labels, best_score = None, -np.inf
    for count in range(2, min(n - 1, max_clusters) + 1):
        labels = fcluster(tree, t=count, criterion="maxclust")
        if len(np.unique(labels)) < 2:
            continue
        score = silhouette_score(square, labels, metric="precomputed")
        if score > best_score + 1e-12:
            best_labels, best_score = labels, score
    if best_labels is None:
        return np.zeros(n, dtype=np.int64)
    return _renumber(best_labels)
