"""Stored evaluations as rows (ingest/read/evaluation_rows.py) on plain rows: each class's latest
evaluated circuit, the class averages and their text table."""

from __future__ import annotations

import math

from ingest.read.evaluation_rows import format_summary, latest_per_class, summary_table


def _row(circuit, class_index, completed_at, value, **kw):
    return {"circuit": circuit, "class_index": class_index, "completed_at": completed_at, "kind": "ablation",
            "layer": "layer2", "depth": 2, "lower": None, "mode": "keep", "scope": "circuit", "value": value,
            "random_mean": 0.1, "baseline": 1.0, "size": 4, **kw}  # fmt: skip


def test_latest_per_class_keeps_each_class_s_latest_circuit():
    rows = [_row("c0/new", 0, "2026-02", 0.5), _row("c0/old", 0, "2026-01", 0.9), _row("c1/a", 1, None, 0.7),
            _row("c0/new", 0, "2026-02", 0.6, mode="drop")]  # fmt: skip
    got = latest_per_class(rows)
    assert [r["circuit"] for r in got] == ["c0/new", "c1/a", "c0/new"]


def test_summary_averages_over_classes_and_skips_missing_values():
    rows = [_row("a", 0, "t", 0.5), _row("b", 1, "t", 1.0), _row("c", 2, "t", None),
            _row("d", 3, "t", float("nan")), _row("e", 0, "t", 0.2, depth=1, layer="layer1", lower="stem")]  # fmt: skip
    table = summary_table(rows)
    assert [(r["layer"], r["classes"]) for r in table] == [("layer1", 1), ("layer2", 4)]
    assert table[0]["lower"] == "stem" and table[1]["lower"] == ""
    assert math.isclose(table[1]["value"], 0.75) and table[1]["size"] == 4 and table[1]["random_mean"] == 0.1
    assert summary_table([_row("a", 0, "t", None, size=None)])[0]["value"] is None


def test_format_summary_is_an_aligned_text_table():
    text = format_summary(summary_table([_row("a", 0, "t", 0.5), _row("e", 0, "t", 0.25, depth=1, layer="l1", lower="stem")]))
    lines = text.splitlines()
    assert lines[0].split() == ["kind", "layer", "mode", "scope", "value", "random", "baseline", "size", "classes"]
    assert set(lines[1].replace(" ", "")) == {"-"} and len(lines) == 4
    assert lines[2].split() == ["ablation", "l1<-stem", "keep", "circuit", "0.250", "0.100", "1.000", "4.0", "1"]
    assert lines[2].index("keep") == lines[3].index("keep") == lines[0].index("mode")  # columns aligned
