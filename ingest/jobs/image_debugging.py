"""`neurflow debug`: which groups of the stored circuits fire on an image, and what zeroing one does.

    neurflow debug fashion-mnist:test:42 --model fashion-cnn [--class 6] [--ablate GROUP_UID] [--json]
    neurflow debug shirt.png --model fashion-cnn

The model predicts the image; the groups of the predicted class's circuit (and of the true
class's with `--class`, or the data set's label for a `fashion-mnist:` image) are read from the
store and scored on the image's crops (neurflow/debugging.py).  `--ablate` zeroes one group's
channels and prints the logit change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.queries.jobs import Q_DEBUG_GROUPS
from ingest.store.uids import group_uid
from neurflow.errors import NeurflowInputError

_DATASET_REF = re.compile(r"^fashion-mnist:(train|test):(\d+)$")

def groups_from_circuit(circuit) -> list:
    """Every group of a `neurflow.circuit.Circuit` as `neurflow.debugging.GroupRef`s, with the uids
    the store gives them (`ingest.store.uids.group_uid`): what `read_groups` would read back after the
    circuit is written.  Here, not in neurflow/: the uid is the store's."""
    from neurflow.debugging import make_group  # torch: not at this module's import (the app's pages)

    mean = {(k.depth, k.channel, k.index): k.mean_activation for k in circuit.concepts}
    out = []
    for depth in circuit.depths:
        layer = circuit.layer_name(depth)
        for g, members in circuit.groups(depth).items():
            rows = [(ch, mean[(depth, ch, j)]) for ch, j in members]
            out.append(make_group(group_uid(circuit.uid, layer, g), layer, depth, g, rows))
    return out


def read_groups(store, model: str, class_index: int, params: str | None = None, max_thumbnails: int = 6):
    """`(circuit uid, [GroupRef])` of a class's chosen complete circuit; `(None, [])` when it has none."""
    uid, groups, _ = read_circuit_groups(store, model, class_index, params, max_thumbnails)
    return uid, groups


def read_circuit_groups(store, model: str, class_index: int, params: str | None = None, max_thumbnails: int = 6):
    """`(circuit uid, [GroupRef], Params)` of a class's chosen complete circuit; `(None, [], None)`
    when it has none.  The `Params` say on which crops the groups were found (granularities,
    min_crop_std): the image is debugged on the same kind of crops."""
    from neurflow.circuit import Params
    from neurflow.debugging import make_group

    rows = store.run(Q_DEBUG_GROUPS, {"model": model, "class_index": int(class_index), "params": params})
    if not rows:
        return None, [], None
    by_group: dict[str, list[dict]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    groups = []
    for uid, rs in by_group.items():
        thumbs: list[str] = []
        for r in rs:
            thumbs += [t for t in r["thumbnails"] if t and t not in thumbs]
        first = rs[0]
        groups.append(make_group(uid, first["layer"], first["depth"], first["index"],
                                 [(r["channel"], r["mean_activation"] or 0.0) for r in rs],
                                 first["label"], thumbs[:max_thumbnails]))  # fmt: skip
    stored = rows[0].get("params")
    return rows[0]["circuit"], groups, Params.from_dict(json.loads(stored)) if stored else Params()


def load_query_image(ref: str, spec) -> tuple[Any, int | None, str]:
    """`(preprocessed (C, S, S) tensor, true label or None, source)` of an image file or `fashion-mnist:<split>:<i>`."""
    import torch

    m = _DATASET_REF.match(ref.strip())
    if m:
        from neurflow.datasets import FASHION_MNIST, read_fashion_mnist
        from neurflow.datasets import _normalise, _resize_crop  # noqa: PLC2701 - the library's own preprocessing

        if spec.default_data != FASHION_MNIST:
            raise NeurflowInputError(f"{ref}: model {spec.name} is not a Fashion-MNIST model; pass an image file")
        images, labels = read_fashion_mnist(m.group(1))
        i = int(m.group(2))
        if not 0 <= i < len(labels):
            raise NeurflowInputError(f"{ref}: index out of range, the {m.group(1)} split has images 0..{len(labels) - 1}")
        pixels = torch.from_numpy(images[i].copy()).float().div(255.0).reshape(1, 1, 28, 28)
        if spec.in_channels != 1:
            pixels = pixels.expand(-1, spec.in_channels, -1, -1)
        return _normalise(_resize_crop(pixels, spec.input_size), spec)[0], int(labels[i]), ref
    if ref.startswith("fashion-mnist:"):
        raise NeurflowInputError(f"{ref!r}: dataset images are written fashion-mnist:test:<index> (or :train:)")
    path = Path(ref).expanduser()
    if not path.is_file():
        raise NeurflowInputError(f"image {ref} not found (give an image file or fashion-mnist:test:<index>)")
    from neurflow.datasets import preprocess_picture

    return preprocess_picture(path, spec), None, str(path)


def image_from_bytes(raw: bytes, spec):
    """A preprocessed `(C, S, S)` tensor of an uploaded image file's bytes (the app's upload).

    Decoded by the same function as ingestion (`neurflow.datasets.preprocess_picture`), so a
    16-bit or transparent upload is not read differently from the circuit's own images."""
    from neurflow.datasets import preprocess_picture

    return preprocess_picture(bytes(raw), spec, what="the uploaded image")


@dataclass
class CircuitDebug:
    class_index: int
    role: str  # 'predicted', 'true' or 'predicted = true'
    circuit: str | None
    scores: list = field(default_factory=list)  # [GroupScore], best first
    boxes: list = field(default_factory=list)  # this circuit's crop boxes (x0, y0, x1, y1, g): GroupScore.evidence indexes them


@dataclass
class DebugReport:
    source: str
    true_class: int | None
    logits: list[float]
    predicted: int
    circuits: list[CircuitDebug]
    boxes: list = field(default_factory=list)  # crop boxes of the first circuit (see CircuitDebug.boxes)
    ablation: Any = None  # neurflow.debugging.Ablation

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "true_class": self.true_class, "predicted": self.predicted, "logits": self.logits,
            "circuits": [{"class_index": c.class_index, "role": c.role, "circuit": c.circuit,
                          "boxes": [list(b) for b in c.boxes],  # what the groups' evidence indices point at
                          "groups": [s.as_dict() for s in c.scores]} for c in self.circuits],
            "ablation": self.ablation.as_dict() if self.ablation is not None else None,
        }  # fmt: skip


def debug_image(store, loaded, image, *, true_class: int | None = None, params: str | None = None,
                ablate: str | None = None, threshold: float | None = None, source: str = "") -> DebugReport:
    """Predict, score the groups of the predicted (and true) class's circuit, optionally ablate a group."""
    from neurflow.debugging import DEBUG_GRANULARITIES, THRESHOLD, ablate_group, logits, score_groups
    from neurflow.images import crop_boxes

    threshold = THRESHOLD if threshold is None else threshold
    out = logits(loaded.module, image)
    predicted = int(out.argmax())
    classes = [(predicted, "predicted = true" if true_class == predicted else "predicted")]
    if true_class is not None and true_class != predicted:
        classes.append((int(true_class), "true"))
    report = DebugReport(source, true_class, out.tolist(), predicted, [])
    known: dict[str, Any] = {}
    for c, role in classes:
        circuit, groups, built = read_circuit_groups(store, loaded.uid, c, params)
        known.update({g.uid: g for g in groups})
        granularities = built.granularities if built else DEBUG_GRANULARITIES
        scores = score_groups(loaded.module, image, groups, granularities=granularities, threshold=threshold,
                              min_crop_std=built.min_crop_std if built else 0.0) if groups else []
        boxes = crop_boxes(int(image.shape[-1]), tuple(granularities))  # what score_groups cut; no second cut
        report.circuits.append(CircuitDebug(c, role, circuit, scores, boxes))
        report.boxes = report.boxes or boxes
    if ablate:
        group = known.get(ablate)
        if group is None:  # any group of a stored circuit of this model may be ablated
            m = re.match(r"^(.+)/(\d+)/([0-9a-f]+)/(.+)/g(\d+)$", ablate)
            if m and m.group(1) == loaded.uid:
                _, groups = read_groups(store, loaded.uid, int(m.group(2)), m.group(3))
                group = next((g for g in groups if g.uid == ablate), None)
        if group is None:
            raise NeurflowInputError(f"--ablate: no group {ablate!r} in the stored complete circuits of {loaded.uid}")
        report.ablation = ablate_group(loaded.module, image, group)
    return report


def format_report(report: DebugReport, class_names: list[str], top: int = 10) -> str:
    name = lambda c: f"{c} ({class_names[c]})" if c is not None and c < len(class_names) else str(c)  # noqa: E731
    lines = [f"image: {report.source}", f"predicted: {name(report.predicted)}  logit {report.logits[report.predicted]:.3f}"]
    if report.true_class is not None:
        lines.append(f"true class: {name(report.true_class)}" + ("" if report.true_class == report.predicted else "  (misclassified)"))
    for c in report.circuits:
        lines.append("")
        if c.circuit is None:
            lines.append(f"{c.role} class {name(c.class_index)}: no complete circuit in the store (run neurflow ingest)")
            continue
        lines.append(f"{c.role} class {name(c.class_index)}: circuit {c.circuit}, {len(c.scores)} groups, best first")
        for s in c.scores[:top]:
            boxes = [c.boxes[i] for i in s.evidence[:3]]
            ev = ", ".join(f"({b[0]},{b[1]})-({b[2]},{b[3]})@{b[4]:g} {s.crop_scores[i]:.2f}" for b, i in zip(boxes, s.evidence))
            label = f"  [{s.group.label}]" if s.group.label else ""
            lines.append(f"  {s.score:8.3f}  {s.group.uid}{label}  evidence {len(s.evidence)} crops{': ' + ev if ev else ''}")
        if len(c.scores) > top:
            lines.append(f"  ... {len(c.scores) - top} more (--top)")
    a = report.ablation
    if a is not None:
        lines += ["", f"ablation of {a.group} (layer {a.layer}, channels {a.channels}):"]
        for i in sorted(range(len(a.before)), key=lambda i: -abs(a.delta[i]))[:5]:
            lines.append(f"  logit {name(i)}: {a.before[i]:.4f} -> {a.after[i]:.4f}  ({a.delta[i]:+.4f})")
        lines.append(f"  prediction: {name(a.predicted_before)} -> {name(a.predicted_after)}")
    return "\n".join(lines)
