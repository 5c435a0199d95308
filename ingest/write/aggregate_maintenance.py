"""Check, rebuild and upgrade of the aggregates the writer keeps (`ingest.write.aggregates`).

`recompute` rebuilds them from the raw relationships (the test suite compares them with what the
writer kept, `differences`); `rebuild` replaces the stored ones by it.  A store written before the
aggregates existed gets them when a writer first opens it (`ensure`, from
`ingest.store.schema.ensure_schema`); a reader that cannot rebuild names the command that does
(`missing_message`: ``neurflow store rebuild-aggregates``, cli/store_commands.py, which also checks).
"""

from __future__ import annotations

import math
import sys
from typing import Any, Iterable, Iterator

from ingest.store import uids
from ingest.store.runner import Runner
from ingest.write.aggregate_statements import (
    Q_CIRCUIT_FEEDS,
    Q_CIRCUIT_INCLUDES,
    Q_CIRCUIT_LISTS,
    Q_CIRCUIT_NEURONS,
    Q_CLASS_NAMES,
    Q_COMPLETE_CIRCUITS,
    Q_COMPLETE_CLASS_INDICES,
    Q_DROP,
    Q_DROP_FEEDS_KEYS,
    Q_DROP_LAYERS,
    Q_FEEDS_KEYS,
    Q_FEEDS_KEYS_KEPT,
    Q_FEEDS_RAW,
    Q_LABEL_LISTS,
    Q_LAYER_ADD,
    Q_LAYER_SIZES,
    Q_LAYER_STORED,
    Q_LAYER_TOP,
    Q_MISSING,
    Q_PUT,
    Q_SET_INCLUDES,
    Q_SET_LISTS,
    Q_SET_PARAM_SETS,
    Q_SETS_RAW,
    Q_STORED,
)
from ingest.write.aggregates import critical_lists, layer_rows, top_rows
from ingest.write.circuit_rows import KEY_BASE
from ingest.write.statements import Q_REFRESH_LABELS


def raw_circuits(runner: Runner, model: str | None = None) -> Iterator[dict[str, Any]]:
    """Per complete circuit, what its raw relationships say: its neurons (with their importance,
    the sum of ``I_u(v)`` over their FEEDS in the circuit, and the number of those FEEDS) and its
    FEEDS keys (`ingest.write.circuit_rows.feed_keys`)."""
    for c in runner.read(Q_COMPLETE_CIRCUITS, {"model": model}):
        imp: dict[str, float] = {}
        up: dict[str, int] = {}
        keys = []
        for f in runner.read(Q_CIRCUIT_FEEDS, {"circuit": c["uid"], "class_index": c["class_index"]}):
            imp[f["lower"]] = imp.get(f["lower"], 0.0) + f["importance"]
            up[f["lower"]] = up.get(f["lower"], 0) + 1
            keys.append((f["depth"] * KEY_BASE + f["u"]) * KEY_BASE + f["v"])
        neurons = [{**n, "importance": imp.get(n["neuron"], 0.0), "up": up.get(n["neuron"], 0)}
                   for n in runner.read(Q_CIRCUIT_INCLUDES, {"circuit": c["uid"]})]  # fmt: skip
        yield {**c, "neurons": neurons, "keys": sorted(keys)}


def _stats(circuits: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """NeuronStat rows by uid from `raw_circuits`."""
    out: dict[str, dict[str, Any]] = {}
    for c in circuits:
        for n in c["neurons"]:
            uid = uids.neuron_stat_uid(n["neuron"], c["params_hash"])
            s = out.setdefault(uid, {
                "uid": uid, "model": c["model"], "params_hash": c["params_hash"], "neuron": n["neuron"], "layer": n["layer"],
                "depth": n["depth"], "channel": n["channel"], "circuits": 0, "importance": 0.0, "class_indices": [],
            })  # fmt: skip
            s["circuits"] += 1
            s["importance"] += n["importance"]
            s["class_indices"].append(c["class_index"])
    for s in out.values():
        s["class_indices"].sort()
        s["classes"] = len(set(s["class_indices"]))
    return out


def recompute(runner: Runner, model: str | None = None) -> dict[str, dict[str, Any]]:
    """The `NeuronStat` aggregates as the raw relationships say they should be, by uid."""
    return _stats(raw_circuits(runner, model))


def stored(runner: Runner, model: str | None = None) -> dict[str, dict[str, Any]]:
    """The `NeuronStat` aggregates the writer kept, by uid."""
    return {r["uid"]: r for r in runner.read(Q_STORED, {"model": model})}


def circuit_lists(runner: Runner, model: str | None = None) -> tuple[dict, dict]:
    """(kept, recomputed): per complete circuit, layer -> sorted critical channels, as kept on the
    circuit node and as its INCLUDES say."""
    kept: dict[str, dict[str, list[int]]] = {}
    for r in runner.read(Q_CIRCUIT_LISTS, {"model": model}):
        layers, offsets, chans = r["layers"] or [], r["offsets"] or [], r["channels"] or []
        kept[r["circuit"]] = {name: list(chans[offsets[i] : offsets[i + 1]]) for i, name in enumerate(layers)}
    raw: dict[str, dict[str, list[int]]] = {c: {} for c in kept}
    for r in runner.read(Q_CIRCUIT_NEURONS, {"model": model}):
        raw.setdefault(r["circuit"], {}).setdefault(r["layer"], []).append(r["channel"])
    for layers in raw.values():
        for chans in layers.values():
            chans.sort()
    kept = {c: {k: v for k, v in layers.items() if v} for c, layers in kept.items()}
    return kept, raw


def differences(runner: Runner, model: str | None = None) -> list[str]:
    """Every way the kept aggregates differ from the raw relationships (empty: consistent)."""
    want, got = recompute(runner, model), stored(runner, model)
    out = [f"missing {u}" for u in sorted(set(want) - set(got))]
    out += [f"extra {u} (classes {got[u]['classes']})" for u in sorted(set(got) - set(want))]
    for u in sorted(set(want) & set(got)):
        w, g = want[u], got[u]
        for key in ("model", "params_hash", "neuron", "layer", "depth", "channel", "classes", "circuits", "class_indices"):
            if w[key] != g[key]:
                out.append(f"{u}: {key} {g[key]!r}, raw relationships say {w[key]!r}")
        if not math.isclose(w["importance"], g["importance"] or 0.0, rel_tol=1e-9, abs_tol=1e-9):
            out.append(f"{u}: importance {g['importance']!r}, raw relationships say {w['importance']!r}")
    layers: dict[str, dict[int, tuple]] = {}
    for w in want.values():
        layers.setdefault(uids.layer_stat_uid(w["model"], w["layer"], w["params_hash"]), {})[w["channel"]] = (
            w["classes"], w["circuits"], w["importance"])
    kept_layers = {r["uid"]: r for r in runner.read(Q_LAYER_STORED, {"model": model})}
    for u in sorted(set(layers) | set(kept_layers)):
        k = kept_layers.get(u)
        got_l = {} if k is None else {ch: (k["classes"][ch], k["circuits"][ch], k["importance"][ch])
                                      for ch in range(len(k["circuits"])) if k["circuits"][ch] > 0}  # fmt: skip
        w = layers.get(u, {})
        if {ch: v[:2] for ch, v in got_l.items()} != {ch: v[:2] for ch, v in w.items()} or not all(
            math.isclose(got_l[ch][2], w[ch][2], rel_tol=1e-9, abs_tol=1e-9) for ch in got_l
        ):
            out.append(f"layer aggregate {u} differs from the raw relationships")
        if k is not None and not (len(k["classes"]) == len(k["circuits"]) == len(k["importance"])):
            out.append(f"layer aggregate {u}: lists of different lengths")
        if k is not None and k["top"] != top_rows([k])[0]["top"]:
            out.append(f"layer aggregate {u}: top channels {k['top'][:10]}..., the counts rank {top_rows([k])[0]['top'][:10]}...")
    for r in runner.read(Q_SETS_RAW, {"model": model}):
        kept_sets = sorted(zip(r["hs"] or [], r["ns"] or [], r["ls"] or []))
        if kept_sets != sorted(zip(r["raw_hs"], r["raw_ns"], r["raw_ls"])):
            out.append(f"model {r['model']}: parameter sets kept {kept_sets}, circuits say "
                       f"{sorted(zip(r['raw_hs'], r['raw_ns'], r['raw_ls']))}")
    kept_keys = {r["uid"]: r["keys"] for r in runner.read(Q_FEEDS_KEYS_KEPT, {"model": model})}
    complete = runner.read(Q_COMPLETE_CLASS_INDICES, {"model": model})
    for r in complete:
        raw = sorted((f["depth"] * KEY_BASE + f["u"]) * KEY_BASE + f["v"]
                     for f in runner.read(Q_FEEDS_RAW, {"circuit": r["uid"], "class_index": r["ci"]}))
        if kept_keys.pop(r["uid"], None) != raw:
            out.append(f"{r['uid']}: FEEDS keys kept differ from its FEEDS")
    out += [f"FEEDS keys kept for {u}, which is not complete" for u in sorted(kept_keys)]
    for r in runner.read(Q_LABEL_LISTS, {"model": model}):
        if (r["kept"] or []) != r["groups"]:
            out.append(f"{r['circuit']}: labelled groups kept {r['kept']}, groups say {r['groups']}")
    kept, raw = circuit_lists(runner, model)
    for c in sorted(set(kept) | set(raw)):
        if kept.get(c) != raw.get(c):
            out.append(f"{c}: critical channels kept {kept.get(c)}, INCLUDES say {raw.get(c)}")
    return out


def rebuild(runner: Runner, model: str | None = None) -> int:
    """Replace the kept aggregates by ones recomputed from the raw relationships (for a store
    written before the writer kept them); returns the number of `NeuronStat` nodes.  One circuit
    at a time for what reads relationships (see `raw_circuits`)."""
    circuits = []
    for c in raw_circuits(runner, model):
        circuits.append(c)
        runner.write(Q_SET_INCLUDES, {"circuit": c["uid"], "importance": {n["neuron"]: n["importance"] for n in c["neurons"]},
                                      "up": {n["neuron"]: n["up"] for n in c["neurons"]}})  # fmt: skip
        runner.write(Q_FEEDS_KEYS, {"circuit": c["uid"], "model": c["model"], "keys": c["keys"]})
    runner.write(Q_DROP_FEEDS_KEYS, {"model": model, "keep": [c["uid"] for c in circuits]})
    while runner.write(Q_DROP, {"model": model})[0]["n"]:
        pass
    runner.write(Q_DROP_LAYERS, {"model": model})
    runner.write(Q_CLASS_NAMES, {"model": model})
    for i in range(0, len(circuits), 100):
        runner.write(Q_REFRESH_LABELS, {"circuits": [c["uid"] for c in circuits[i : i + 100]]})
    rows = list(_stats(circuits).values())
    for i in range(0, len(rows), 5000):
        runner.write(Q_PUT, {"rows": rows[i : i + 5000]})
    sizes = {(r["model"], r["name"]): r["channels"] for r in runner.read(Q_LAYER_SIZES, {"model": model})}
    by_set: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_set.setdefault((r["model"], r["params_hash"]), []).append(r)
    for (m, ph), changed in by_set.items():
        layers = runner.write(Q_LAYER_ADD, {"rows": layer_rows(m, ph, changed, {n: c for (mm, n), c in sizes.items() if mm == m}),
                                            "model": m, "params_hash": ph})
        runner.write(Q_LAYER_TOP, {"rows": top_rows(layers)})
    for r in runner.read(Q_SETS_RAW, {"model": model}):
        runner.write(Q_SET_PARAM_SETS, {"model": r["model"], "hs": r["raw_hs"], "ns": r["raw_ns"], "ls": r["raw_ls"]})
    lists = []
    for c in circuits:
        by_layer: dict[str, tuple[int, list[int]]] = {}
        for n in c["neurons"]:
            by_layer.setdefault(n["layer"], (n["depth"], []))[1].append(n["channel"])
        names = sorted(by_layer, key=lambda name: by_layer[name][0])
        lists.append({"circuit": c["uid"], **critical_lists([(name, sorted(by_layer[name][1])) for name in names])})
    for i in range(0, len(lists), 1000):
        runner.write(Q_SET_LISTS, {"rows": lists[i : i + 1000]})
    return len(rows)


FIX_COMMAND = "neurflow store rebuild-aggregates"


def missing(runner: Runner) -> dict[str, int]:
    """Models whose complete circuits lack their aggregates -> their number of complete circuits
    (empty: none; a store in step with its writer)."""
    return {r["model"]: r["complete"] for r in runner.read(Q_MISSING) if r["complete"] > 0}


def missing_message(stale: dict[str, int]) -> str:
    """One line for a reader that cannot rebuild: what is wrong and the command that fixes it."""
    n = sum(stale.values())
    return (f"the store's aggregates are missing for {n} complete circuit{'s' if n != 1 else ''} "
            f"(model{'s' if len(stale) != 1 else ''} {', '.join(sorted(stale))}; written before the writer kept them), "
            f"so cross-class queries answer nothing: run `{FIX_COMMAND}` (or any `neurflow ingest`) with the writer account")


def ensure(target: Any, *, say: Any = None) -> int:
    """Rebuild the aggregates of every model whose complete circuits lack them (see `Q_MISSING`),
    saying so in one line on stderr; returns the number of circuits rebuilt (0: nothing to do).
    Runs when a writer opens the store (`ingest.store.schema.ensure_schema`)."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    with Runner(target) as runner:
        stale = missing(runner)
        if not stale:
            return 0
        n = sum(stale.values())
        say(f"store: rebuilding the aggregates of {n} complete circuit{'s' if n != 1 else ''} "
            f"(model{'s' if len(stale) != 1 else ''} {', '.join(sorted(stale))}), written before the writer kept them ...")
        for model in sorted(stale):
            rebuild(runner, model)
    return n
