"""The class-by-class similarity matrix, computed in the client from one channel list per class.

    from ingest.read.similarity import similarity_matrix
    m = similarity_matrix(store, model="resnet50-imagenet", layer="layer4.2")
    m.classes, m.names, m.jaccard      # class indices, names, (n, n) float array

The whole matrix from the `similarity_matrix` library query is classes rows of classes values (a
million pairs at 1,000 classes, computed in the store); the `class_channels` query returns one row
holding one sorted channel list per class, and the matrix follows from it with numpy in
milliseconds: a 0/1 class-by-channel matrix M, intersections M M^T, unions |A| + |B| - |A and B|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ingest.queries.library import run_query


@dataclass(frozen=True)
class Similarity:
    """Jaccard similarity of the critical channels of classes in one layer."""
    classes: list[int]  # class indices, in class order
    names: list[str | None]
    sizes: np.ndarray  # (n,) critical channels per class
    shared: np.ndarray  # (n, n) channels two classes share
    jaccard: np.ndarray  # (n, n) |A and B| / |A or B| (0 when both are empty)

    def rows(self) -> list[dict[str, Any]]:
        """The matrix as the `similarity_matrix` query's rows: one per class A (class_a, name_a,
        n_a) with lists over every class B (classes_b, names_b, n_b, n_shared, jaccard)."""
        n_b = [int(x) for x in self.sizes]
        return [
            {"class_a": self.classes[i], "name_a": self.names[i], "n_a": int(self.sizes[i]), "classes_b": list(self.classes),
             "names_b": list(self.names), "n_b": n_b, "n_shared": [int(x) for x in self.shared[i]],
             "jaccard": [float(x) for x in self.jaccard[i]]}
            for i in range(len(self.classes))
        ]  # fmt: skip


def per_class(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`class_channels` rows as one dict per class ({class_index, class_name, circuit, channels}).

    The query returns one row of parallel lists (classes, names, circuits, channels); rows that
    already hold one class each ({class_index, class_name, channels}) pass through, so a caller
    can build its own."""
    out: list[dict[str, Any]] = []
    for r in rows:
        if "classes" in r:
            names = r.get("names") or [None] * len(r["classes"])
            circuits = r.get("circuits") or [None] * len(r["classes"])
            channels = r.get("channels") or [[]] * len(r["classes"])
            if not len(names) == len(circuits) == len(channels) == len(r["classes"]):
                raise ValueError("per_class: the lists of a class_channels row differ in length")
            out += [{"class_index": ci, "class_name": n, "circuit": c, "channels": ch}
                    for ci, n, c, ch in zip(r["classes"], names, circuits, channels)]  # fmt: skip
        else:
            out.append(r)
    return out


def jaccard_matrix(rows: Iterable[dict[str, Any]]) -> Similarity:
    """The similarity of the classes in `class_channels` rows (its one row of lists, or rows of one
    class each: {class_index, class_name, channels}), in class order."""
    rows = sorted(per_class(rows), key=lambda r: r["class_index"])
    classes = [int(r["class_index"]) for r in rows]
    if len(set(classes)) != len(classes):
        raise ValueError("jaccard_matrix: a class appears twice in the rows (one channel list per class expected)")
    lists: list[Sequence[int]] = [r.get("channels") or [] for r in rows]
    universe = sorted({int(ch) for chans in lists for ch in chans})
    col = {ch: i for i, ch in enumerate(universe)}
    m = np.zeros((len(rows), len(universe)), dtype=np.float32)  # float32 matmul: exact for counts < 2**24
    for i, chans in enumerate(lists):
        m[i, [col[int(ch)] for ch in chans]] = 1.0
    shared = np.rint(m @ m.T).astype(np.int64)
    sizes = np.diag(shared).copy() if len(rows) else np.zeros(0, dtype=np.int64)
    union = sizes[:, None] + sizes[None, :] - shared
    with np.errstate(divide="ignore", invalid="ignore"):
        jac = np.where(union > 0, shared / np.maximum(union, 1), 0.0)
    return Similarity(classes, [r.get("class_name") for r in rows], sizes, shared, jac)


def similarity_matrix(store: Any, *, model: str, layer: str, params: str | None = None,
                      classes: list[int] | None = None) -> Similarity:
    """Read `class_channels` for (model, layer, parameter set; optionally a class subset) and
    compute the matrix; the same parameter-set rules as the library queries."""
    if not layer:
        raise ValueError("similarity_matrix: name the layer (e.g. layer='layer4.2')")
    return jaccard_matrix(run_query(store, "class_channels", model=model, layer=layer, params=params, classes=classes))
