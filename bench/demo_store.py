"""The demo store against what a first-time user should be able to see in it (issue 13's checks).

    .venv/bin/neurflow demo --no-app            # builds and evaluates the demo store
    .venv/bin/neurflow evaluate --model fashion-resnet --classes all   # the full faithfulness numbers
    .venv/bin/python bench/demo_store.py [--model fashion-resnet] [--layer block2] [--json FILE]

Reads the configured store (the embedded default, or NEURFLOW_STORE_URI) and prints, for the
model's default parameter set (the one the app shows first):

- critical neurons / channels per analysed layer (mean and max over classes; the goal: at most
  a third, so that classes can differ and random sets are no copy of the critical set);
- the range of the off-diagonal Jaccard similarity of one layer (default block2, the app's
  first heatmap): a visible spread, not 0.9-1.0 everywhere;
- the top 10 hub neurons and in how many classes each is critical (goal: not all shared by
  every class);
- from the stored evaluations: per layer, mask (accuracy drop, core set over random sets) and
  retain (accuracy kept, core over random) ratios, goal >= 3x; per layer pair, the Pearson
  correlation of summed importance with top-k overlap, goal <= -0.5.

Each line ends in `ok` or `MISSED`; the exit status is 0 either way (a report, not a test).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

GOAL_FRACTION = 1 / 3
GOAL_RATIO = 3.0
GOAL_PEARSON = -0.5


def critical_fractions(store, model: str) -> dict[str, dict[str, float]]:
    """layer -> {mean, max, channels}: critical neurons over channels, over the chosen circuits."""
    per_layer: dict[str, list[float]] = {}
    widths: dict[str, int] = {}
    for r in store.run(
        """MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})-[i:INCLUDES]->(n:Neuron)
        WHERE i.depth > 0 AND c.params_hash = $ps
        MATCH (l:Layer {uid: $model + '/' + n.layer})
        RETURN c.uid AS circuit, n.layer AS layer, l.channels AS channels, count(n) AS critical""",
        {"model": model, "ps": default_param_set(store, model)},
    ):
        per_layer.setdefault(r["layer"], []).append(r["critical"] / r["channels"])
        widths[r["layer"]] = int(r["channels"])
    return {layer: {"mean": float(np.mean(v)), "max": float(np.max(v)), "channels": widths[layer], "classes": len(v)}
            for layer, v in per_layer.items()}


def default_param_set(store, model: str) -> str:
    """The parameter set the app and the library queries read by default (most complete circuits)."""
    from ingest.queries.library import param_set

    rows = store.run(param_set() + "RETURN ps", {"model": model, "params": None})
    if not rows:
        raise SystemExit(f"error: no complete circuit of {model!r} in the store: run `neurflow demo --no-app` first")
    return rows[0]["ps"]


def fidelity_ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """layer -> mask / retain ratios of the class means (single-layer scope)."""
    from ingest.jobs.evaluations import summary_table

    out: dict[str, dict[str, float]] = {}
    for r in summary_table(rows):
        if r["kind"] != "fidelity" or r["scope"] != "single" or r["value"] is None:
            continue
        d = out.setdefault(r["layer"], {"depth": r["depth"]})
        if r["mode"] == "mask":  # accuracy drop with the critical set masked, over the drop with random sets
            d["mask_core"], d["mask_random"] = r["baseline"] - r["value"], r["baseline"] - r["random_mean"]
            d["mask_x"] = d["mask_core"] / max(d["mask_random"], 1e-3)
        else:  # accuracy kept with only the critical set, over the same with random sets
            d["retain_core"], d["retain_random"] = r["value"], r["random_mean"]
            d["retain_x"] = d["retain_core"] / max(d["retain_random"], 1e-3)
    return out


def pearsons(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """'upper<-lower' -> mean and worst (largest) class Pearson of summed importance with overlap."""
    per: dict[str, list[float]] = {}
    for r in rows:
        if r["kind"] == "edge_weight" and r["mode"] == "sum" and r["scope"] == "pearson" and r["value"] is not None:
            per.setdefault(f"{r['layer']}<-{r['lower']}", []).append(float(r["value"]))
    return {k: {"mean": float(np.mean(v)), "worst": float(np.max(v)), "classes": len(v)} for k, v in per.items()}


def report(store, model: str, layer: str) -> dict[str, Any]:
    from ingest.jobs.evaluations import read_evaluations
    from ingest.queries.library import run_query
    from ingest.read.similarity import similarity_matrix

    ps = default_param_set(store, model)
    sim = similarity_matrix(store, model=model, layer=layer)
    off = sim.jaccard[~np.eye(len(sim.classes), dtype=bool)] if len(sim.classes) > 1 else np.array([np.nan])
    hubs = run_query(store, "hub_neurons", model=model, limit=10)
    evaluations = [r for r in read_evaluations(store, model, ps)]
    return {
        "model": model, "params_hash": ps, "classes": len(sim.classes),
        "critical": critical_fractions(store, model),
        "jaccard": {"layer": layer, "min": float(np.nanmin(off)), "max": float(np.nanmax(off))},
        "hubs": [{"neuron": h["neuron"], "classes": int(h["classes"])} for h in hubs],
        "fidelity": fidelity_ratios(evaluations),
        "pearson": pearsons(evaluations),
        "evaluated_classes": len({r["class_index"] for r in evaluations}),
    }  # fmt: skip


def print_report(r: dict[str, Any]) -> None:
    mark = lambda ok: "ok" if ok else "MISSED"  # noqa: E731
    print(f"model {r['model']}, parameter set {r['params_hash']}, {r['classes']} classes "
          f"({r['evaluated_classes']} evaluated)")
    print("\ncritical / channels per layer (goal <= 1/3)")
    for layer, d in sorted(r["critical"].items(), key=lambda kv: kv[0]):
        print(f"  {layer:12s} mean {d['mean']:.3f}  max {d['max']:.3f}  of {d['channels']} channels  "
              f"{mark(d['max'] <= GOAL_FRACTION)}")
    j = r["jaccard"]
    print(f"\nJaccard of {j['layer']} between classes: {j['min']:.2f} .. {j['max']:.2f}  "
          f"{mark(j['max'] - j['min'] >= 0.1 and j['min'] < 0.9)}")
    counts = [h["classes"] for h in r["hubs"]]
    print(f"\ntop {len(counts)} hubs, classes each: {counts}  "
          f"{mark(bool(counts) and min(counts) < r['classes'])} (not all shared by every class)")
    if not r["fidelity"]:
        print("\nno evaluations stored: run `neurflow evaluate --model <model> --classes all`")
        return
    print(f"\nfidelity, single layer (goal: mask and retain >= {GOAL_RATIO:g}x random)")
    for layer, d in sorted(r["fidelity"].items(), key=lambda kv: kv[1]["depth"]):
        print(f"  {layer:12s} mask {d['mask_x']:5.1f}x ({d['mask_core']:.3f} / {d['mask_random']:.3f})  "
              f"retain {d['retain_x']:5.1f}x ({d['retain_core']:.3f} / {d['retain_random']:.3f})  "
              f"{mark(d['mask_x'] >= GOAL_RATIO and d['retain_x'] >= GOAL_RATIO)}")
    print(f"\nedge weights: Pearson of summed importance with top-k overlap (goal: mean <= {GOAL_PEARSON})")
    for pair, d in r["pearson"].items():
        print(f"  {pair:18s} mean {d['mean']:+.2f}  worst class {d['worst']:+.2f}  {mark(d['mean'] <= GOAL_PEARSON)}")


def main(argv: list[str] | None = None) -> int:
    from ingest.store.connect import open_store

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fashion-resnet")
    p.add_argument("--layer", default="block2", help="layer of the Jaccard range (default block2)")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    with open_store() as store:
        r = report(store, args.model, args.layer)
    print_report(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
