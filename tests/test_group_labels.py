"""The circuit node's copy of its labelled groups (ingest/write/group_labels.py `label_lists`), on plain rows."""

from __future__ import annotations

from ingest.write.group_labels import LABEL_KEYS, label_lists


def test_label_lists_keep_labelled_groups_in_depth_then_index_order():
    rows = [
        {"uid": "c/l2/g1", "depth": 2, "index": 1, "layer": "l2", "size": 3, "label": "Stripes.", "label_source": "manual"},
        {"uid": "c/l1/g0", "depth": 1, "index": 0, "layer": "l1", "size": 5, "label": "Edges.", "label_source": "llm:m",
         "label_score": 0.8},
        {"uid": "c/l2/g0", "depth": 2, "index": 0, "layer": "l2", "size": 2, "label": None},
        {"uid": "c/l1/g1", "depth": 1, "index": 1, "layer": "l1", "size": 1, "label": ""},
    ]  # fmt: skip
    got = label_lists(rows)
    assert sorted(got) == sorted(f"labels_{k}" for k in LABEL_KEYS)
    assert got["labels_group"] == ["c/l1/g0", "c/l1/g1", "c/l2/g1"]  # an empty label is a label; None is none
    assert got["labels_text"] == ["Edges.", "", "Stripes."]
    assert got["labels_source"] == ["llm:m", None, "manual"] and got["labels_score"] == [0.8, None, None]
    assert got["labels_depth"] == [1, 1, 2] and got["labels_size"] == [5, 1, 3] and got["labels_layer"] == ["l1", "l1", "l2"]
    assert label_lists([]) == {f"labels_{k}": [] for k in LABEL_KEYS}
