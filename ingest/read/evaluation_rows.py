"""Stored evaluations as rows: the read query, the choice of each class's circuit, class averages.

Torch-free on purpose: the app's faithfulness page reads stored numbers and must not pay for
importing torch (1.6-1.8 s on its first visit); computing evaluations lives in
`ingest.jobs.evaluations` / `neurflow.evaluation`.
"""

from __future__ import annotations

import math
from typing import Any

Q_READ = """
MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(c:Circuit)-[:HAS_EVALUATION]->(e:Evaluation)
WHERE c.status = 'complete' AND ($params IS NULL OR c.params_hash = $params)
RETURN e.circuit AS circuit, e.model AS model, e.class_index AS class_index, cl.name AS class_name,
       e.kind AS kind, e.layer AS layer, e.depth AS depth, e.lower AS lower, e.mode AS mode, e.scope AS scope,
       e.value AS value, e.value_std AS value_std, e.random_mean AS random_mean, e.random_std AS random_std,
       e.baseline AS baseline, e.size AS size, e.n AS n, e.draws AS draws, e.seed AS seed,
       c.completed_at AS completed_at, c.params_hash AS params_hash
ORDER BY class_index, kind, depth, mode, scope
"""


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
