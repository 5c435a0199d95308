"""Evaluations in the store: read a circuit back, write `Evaluation` nodes, export and plot.

Shape (docs/schema.md, "Evaluations"):
`(Circuit)-[:HAS_EVALUATION]->(Evaluation {uid, circuit, model, class_index, kind, layer, depth,
lower, mode, scope, value, value_std, random_mean, random_std, baseline, size, n, draws, seed,
settings, created_at})`, uid `<circuit uid>/eval/<kind>/<layer>/<mode>/<scope>`, MERGEd so a
rerun overwrites its numbers.  NaN values are stored as null.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from neurflow.circuit import Params
from neurflow.errors import NeurflowInputError, class_label
from ingest.queries.evaluations import (
    Q_CIRCUITS,
    Q_CIRCUITS_BY_UID,
    Q_CONSTRAINT,
    Q_EVALUATED,
    Q_FEEDS,
    Q_INCLUDES,
    Q_INDEX,
    Q_LAYERS,
    Q_WRITE,
)
from ingest.read.evaluation_rows import format_summary, latest_per_class, read_evaluations, summary_table  # noqa: F401 (re-exported)
from ingest.store import uids
from neurflow.evaluation import KINDS, CircuitView, EvalRow, EvalSettings, settings_json

FIELDS = (
    "circuit", "model", "class_index", "class_name", "kind", "layer", "depth", "lower", "mode", "scope", "value",
    "value_std", "random_mean", "random_std", "baseline", "size", "n", "draws", "seed",
)  # fmt: skip


# ------------------------------------------------------------------------------ reading circuits
def stored_circuits(store, model: str, classes: list[int], params: str | None = None,
                    class_names: list[str] | None = None) -> list[dict[str, Any]]:
    """The latest complete circuit (of parameter hash `params`, if given) of each class.

    `class_names` (the model's) name a class that has none the way the user named it."""
    rows = store.run(Q_CIRCUITS, {"model": model, "classes": list(classes), "params": params})
    latest: dict[int, dict[str, Any]] = {}
    for r in rows:  # ordered by completed_at: the last one wins
        latest[int(r["class_index"])] = r
    missing = [c for c in classes if c not in latest]
    if missing:
        what = f" with parameters {params}" if params else ""
        names = list(class_names or [])
        label = lambda c: class_label(c, names[c] if c < len(names) else None)  # noqa: E731
        raise NeurflowInputError(
            f"no complete circuit{what} of class {label(missing[0])} of model {model!r} in the store "
            f"(classes without one: {', '.join(label(c) for c in missing)}); run `neurflow ingest` first"
        )
    return [latest[c] for c in classes]


def circuits_to_evaluate(store, uids: list[str], *, again: bool = False) -> list[dict[str, Any]]:
    """The complete circuits among `uids`, as `stored_circuits` rows, leaving out those that
    already have evaluations unless `again` (a second `neurflow demo` does no evaluation work)."""
    uids = [u for u in uids if u]
    done = set() if again else {r["uid"] for r in store.run(Q_EVALUATED, {"uids": uids})}
    return [r for r in store.run(Q_CIRCUITS_BY_UID, {"uids": uids}) if r["uid"] not in done]


@dataclass(frozen=True)
class HeldOut:
    """Where the evaluation images come from: a data set (folder or name) and its split, held out
    from the split the circuits were built on."""

    data: str
    split: str = "test"


def evaluate_stored(
    store, loaded, held_out: HeldOut, circuits: list[dict[str, Any]], settings: EvalSettings, *,
    kinds: tuple[str, ...] = KINDS, device="cpu", on_class: Callable[[str], None] | None = None,
) -> int:
    """Evaluate each stored circuit (rows of `stored_circuits`) on `held_out` images of its class
    and MERGE the numbers under it: the loop of `neurflow evaluate` and of `neurflow demo`.

    Every circuit is read back before the first computation, so a broken one fails fast.
    `on_class(line)` gets one line per class (its time).  Returns the number of rows written."""
    from neurflow.datasets import load_images
    from neurflow.evaluation import evaluate_circuit

    views = [circuit_view(store, row, loaded.uid) for row in circuits]
    written = 0
    for row, view in zip(circuits, views):
        t0 = time.perf_counter()
        pixels = load_images(held_out.data, loaded.spec, class_index=view.class_index, split=held_out.split,
                             limit=max(settings.test_images, settings.crop_images)).pixels
        rows = evaluate_circuit(loaded.module, view, pixels, settings, device=device, kinds=kinds)
        written += write_evaluations(store, view, loaded.uid, rows, settings)
        if on_class is not None:
            on_class(f"class {view.class_index} ({row['class_name']}): {len(rows)} evaluations "
                     f"in {time.perf_counter() - t0:.1f} s")
    return written


def circuit_view(store, row: dict[str, Any], model: str) -> CircuitView:
    """Rebuild what the evaluations need of a circuit from its INCLUDES and FEEDS."""
    uid = row["uid"]
    params = Params.from_dict(json.loads(row["params"])) if row.get("params") else Params()
    includes = store.run(Q_INCLUDES, {"uid": uid})
    if not includes:
        raise NeurflowInputError(f"circuit {uid} has no critical neurons in the store")
    depth_of: dict[str, int] = {}
    critical: dict[int, list[int]] = {}
    for r in includes:
        depth_of[r["layer"]] = int(r["depth"])
        critical.setdefault(int(r["depth"]), []).append(int(r["channel"]))
    names = {d: n for n, d in depth_of.items()}
    if sorted(names) != list(range(len(names))):
        raise NeurflowInputError(f"circuit {uid} has critical neurons at depths {sorted(names)}: a layer is missing")
    channels = {r["name"]: int(r["channels"]) for r in store.run(Q_LAYERS, {"uids": [f"{model}/{n}" for n in names.values()]})}
    core: dict[tuple[int, int], list[tuple[int, int, float]]] = {}
    for r in store.run(Q_FEEDS, {"uid": uid}):
        d = depth_of[r["layer"]]
        core.setdefault((d, int(r["channel"])), []).append((int(r["rank"]), int(r["lower_channel"]), float(r["importance"])))
    return CircuitView(
        uid=uid,
        class_index=int(row["class_index"]),
        layers=[(names[d], channels[names[d]]) for d in range(len(names))],
        critical={d: sorted(chs) for d, chs in critical.items()},
        core={key: [(v, imp) for _, v, imp in sorted(vals)] for key, vals in core.items()},
        params=params,
    )


# ------------------------------------------------------------------------------ writing / reading
def _clean(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_evaluations(store, view: CircuitView, model: str, rows: list[EvalRow], settings: EvalSettings) -> int:
    """MERGE one Evaluation node per row under its Circuit; returns the number written."""
    if not getattr(store, "_evaluation_schema", False):
        store.run(Q_CONSTRAINT)
        store.run(Q_INDEX)
        store._evaluation_schema = True
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    payload = []
    for r in rows:
        d = {k: _clean(v) for k, v in r.to_dict().items()}
        d.update(uid=uids.evaluation_uid(view.uid, r.key()), circuit=view.uid, model=model, class_index=view.class_index,
                 draws=settings.draws, seed=settings.seed, settings=settings_json(settings), created_at=now)
        payload.append(d)
    store.write(Q_WRITE, {"circuit": view.uid, "rows": payload})
    return len(payload)


# ------------------------------------------------------------------------------ summaries
def export(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """evaluations.csv / .json (every row) and summary.csv / .json (class averages) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in (("evaluations", rows), ("summary", summary_table(rows))):
        cols = list(table[0]) if table else list(FIELDS)
        path = out / f"{name}.csv"
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(table)
        (out / f"{name}.json").write_text(json.dumps(table, indent=1, default=str))
        written += [path, out / f"{name}.json"]
    return written


# ------------------------------------------------------------------------------ plots
def _layer_order(rows):
    return sorted({(int(r["depth"]), r["layer"]) for r in rows})


def fidelity_figure(rows: list[dict[str, Any]], title: str = ""):
    """Accuracy by layer, core vs random, for mask and retain (single and multi scope)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fid = [r for r in rows if r["kind"] == "fidelity"]
    layers = [name for _, name in sorted(_layer_order(fid), reverse=True)]  # bottom layer first
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3), sharey=True)
    for ax, mode in zip(axes, ("mask", "retain")):
        for scope, style in (("single", "-"), ("multi", "--")):
            sel = [r for r in fid if r["mode"] == mode and r["scope"] == scope]
            if not sel:
                continue
            for key, color, label in (("value", "C0", "core"), ("random_mean", "C1", "random")):
                ys = []
                for layer in layers:
                    vals = [float(r[key]) for r in sel if r["layer"] == layer and r[key] is not None]
                    ys.append(sum(vals) / len(vals) if vals else float("nan"))
                ax.plot(layers, ys, style, color=color, marker="o", label=f"{label} ({scope})")
        base = [float(r["baseline"]) for r in fid if r["baseline"] is not None]
        if base:
            ax.axhline(sum(base) / len(base), color="grey", lw=0.8, ls=":", label="unmasked")
        ax.set_title(f"{mode} critical set" if mode == "mask" else "retain only critical set")
        ax.set_xlabel("layer (masked)")
        ax.set_ylim(-0.03, 1.03)
    axes[0].set_ylabel("class top-1 accuracy")
    axes[1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def correlation_figure(rows: list[dict[str, Any]], title: str = ""):
    """Edge-weight fidelity: correlation of top-k overlap with summed / mean importance, per layer pair."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ew = [r for r in rows if r["kind"] == "edge_weight"]
    pairs = [(d, name) for d, name in sorted(_layer_order(ew), reverse=True)]
    lower = {r["layer"]: r.get("lower") or "" for r in ew}
    labels = [f"{name}<-{lower[name]}" for _, name in pairs]
    fig, ax = plt.subplots(figsize=(6, 3.3))
    for (mode, scope), color, style in ((("sum", "pearson"), "C0", "-"), (("sum", "spearman"), "C0", "--"),
                                        (("mean", "pearson"), "C3", "-"), (("mean", "spearman"), "C3", "--")):
        ys = []
        for _, name in pairs:
            vals = [float(r["value"]) for r in ew if r["layer"] == name and r["mode"] == mode and r["scope"] == scope
                    and r["value"] is not None]
            ys.append(sum(vals) / len(vals) if vals else float("nan"))
        ax.plot(labels, ys, style, color=color, marker="o", label=f"{scope}, {mode} of importances")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylim(-1.03, 0.5)
    ax.set_ylabel("correlation with top-k overlap")
    ax.set_xlabel("layer pair (upper <- masked lower)")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_plots(rows: list[dict[str, Any]], out: Path, *, per_class: bool = True) -> list[Path]:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    jobs = [("fidelity.png", fidelity_figure, rows, "all classes (mean)"),
            ("correlation.png", correlation_figure, rows, "all classes (mean)")]
    if per_class:
        for c in sorted({int(r["class_index"]) for r in rows}):
            sel = [r for r in rows if int(r["class_index"]) == c]
            name = sel[0].get("class_name") or str(c)
            jobs.append((f"fidelity-class-{c}.png", fidelity_figure, sel, f"class {c} ({name})"))
    for filename, make, sel, title in jobs:
        if not any(r["kind"] == ("fidelity" if make is fidelity_figure else "edge_weight") for r in sel):
            continue
        fig = make(sel, title)
        fig.savefig(out / filename, dpi=80)
        plt.close(fig)
        written.append(out / filename)
    return written
