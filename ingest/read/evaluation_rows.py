"""Stored evaluations as rows: the choice of each class's circuit, class averages (the read query is
`ingest.queries.evaluations.Q_READ`).

Torch-free on purpose: the app's faithfulness page reads stored numbers and must not pay for
importing torch (1.6-1.8 s on its first visit); computing evaluations lives in
`ingest.jobs.evaluations` / `neurflow.evaluation`.
"""

from __future__ import annotations

import math
from typing import Any

from ingest.queries.evaluations import Q_READ


def latest_per_class(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of each class's most recently completed evaluated circuit (a class may have several)."""
    latest: dict[int, str] = {}
    for r in sorted(rows, key=lambda r: r.get("completed_at") or ""):
        latest[int(r["class_index"])] = r["circuit"]
    return [r for r in rows if latest.get(int(r["class_index"])) == r["circuit"]]


def read_evaluations(store, model: str, params: str | None = None) -> list[dict[str, Any]]:
    """Stored evaluations of the latest complete circuit (or of parameter hash `params`) of each class."""
    return latest_per_class(store.run(Q_READ, {"model": model, "params": params}))


def summary_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Class-averaged numbers per (kind, layer, mode, scope)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["kind"], int(r["depth"]), r["layer"], r["mode"], r["scope"]), []).append(r)

    def avg(items, key):
        vals = [float(x[key]) for x in items if x.get(key) is not None and math.isfinite(float(x[key]))]
        return sum(vals) / len(vals) if vals else None

    out = []
    for (kind, depth, layer, mode, scope), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][3], kv[0][4])):
        out.append({
            "kind": kind, "layer": layer, "depth": depth, "lower": items[0].get("lower") or "", "mode": mode,
            "scope": scope, "classes": len(items), "value": avg(items, "value"), "random_mean": avg(items, "random_mean"),
            "baseline": avg(items, "baseline"), "size": avg(items, "size"),
        })  # fmt: skip
    return out


def format_summary(rows: list[dict[str, Any]]) -> str:
    def f(x):
        return "" if x is None else f"{x:.3f}"

    head = ("kind", "layer", "mode", "scope", "value", "random", "baseline", "size", "classes")
    lines = [(r["kind"], r["layer"] + (f"<-{r['lower']}" if r["lower"] else ""), r["mode"], r["scope"], f(r["value"]),
              f(r["random_mean"]), f(r["baseline"]), f"{r['size']:.1f}" if r["size"] is not None else "", str(r["classes"]))
             for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(x) for x in lines])
