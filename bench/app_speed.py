"""How fast the app is on a store: first render of each page, and every library query.

    python bench/app_speed.py [--model fashion-cnn] [--runs 5] [--pages-only]

    # at 1,000 classes: the synthetic store of bench/store_scale.py, kept in a folder
    python bench/store_scale.py --classes 1000 --keep --store-dir /tmp/scale1000 --only models --repeats 1
    NEURFLOW_STORE_DIR=/tmp/scale1000 python -m ingest.write.aggregates   # a store written before the writer kept aggregates
    NEURFLOW_STORE_DIR=/tmp/scale1000 python bench/app_speed.py --model resnet50-synth --pages-only

Reads the configured store (the embedded one by default, where `neurflow demo` puts the demo;
NEURFLOW_STORE_DIR / NEURFLOW_STORE_URI / NEURFLOW_STORE_DATABASE select another).  Every page of
the app is measured (the sidebar's list), the circuit page at both levels, and the compare page
as it opens and, where the model has more classes than it shows at once, with each of its
sections.  Prints:

- imports: one-off cost of a fresh Python process importing the app (streamlit, neo4j, plotly);
  a running `neurflow app` pays it once at start, not per page.
- per page: the first render (a new AppTest session run, with the app's store caches cleared, so
  every store read of the page is a real query) and a warm render (caches filled).  Target: the
  first render <= 2 s.
- per library query of ingest/queries/library.py: the first run and the median / max of `--runs` more,
  through the read-only connection the app uses.  Target: median <= 100 ms.
- the app's own queries (app/data.py), for information.

Exit status 0 when every target is met, 1 otherwise, 2 when the store has no circuits.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE_TARGET_S = 2.0
QUERY_TARGET_MS = 100.0


def page_views(classes: int) -> list[tuple[str, dict[str, str]]]:
    """(name, URL query) of every view measured: each page of the sidebar; the circuit page at the
    group and the neuron level; the compare page as it opens and with each of its sections."""
    import app.router  # noqa: F401 - registers every page
    from app.state import PAGES
    from app.views import compare

    views: list[tuple[str, dict[str, str]]] = []
    for page in PAGES:
        views.append((page, {"page": page}))
        if page == "circuit":
            views.append(("circuit:neuron", {"page": "circuit", "level": "neuron"}))
        if page == "compare" and classes > compare.ALL_SECTIONS_MAX:
            views += [(f"compare:{v}", {"page": "compare", "view": v}) for v in compare.SECTIONS if v != "overlap"]
    return views


def query_params(store, model: str) -> dict[str, dict]:
    """Arguments for every library query, chosen from what the store holds."""
    from ingest.queries.library import QUERIES

    classes = [r["index"] for r in store.run(
        "MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(:Circuit {status: 'complete'}) RETURN DISTINCT cl.index AS index "
        "ORDER BY index", {"model": model})]  # fmt: skip
    layers = [r["name"] for r in store.run(
        "MATCH (l:Layer {model: $model}) WHERE l.depth > 0 RETURN l.name AS name ORDER BY l.depth", {"model": model})]  # fmt: skip
    a = classes[0]
    b = 6 if 6 in classes else classes[-1]
    mid = layers[len(layers) // 2] if layers else None
    hub = store.run(
        "MATCH (c:Circuit {model: $model, status: 'complete'})-[:INCLUDES]->(n:Neuron) WHERE n.depth > 0 "
        "RETURN n.layer AS layer, n.channel AS channel, count(*) AS k ORDER BY k DESC, layer, channel LIMIT 1",
        {"model": model},
    )
    concept = store.run(
        "MATCH (c:Circuit {model: $model, class_index: $a, status: 'complete'})-[:HAS_CONCEPT]->(k:Concept) WHERE k.depth > 0 "
        "RETURN k.layer AS layer, k.channel AS channel LIMIT 1",
        {"model": model, "a": a},
    )
    args = {
        "models": {},
        "overview": {"model": model},
        "shared_neurons": {"model": model, "class_a": a, "class_b": b},
        "similarity_matrix": {"model": model, "layer": mid},
        "hub_neurons": {"model": model},
        "class_circuit": {"model": model, "class_index": a},
        "circuit_diff": {"model": model, "class_a": a, "class_b": b},
        "strongest_paths": {"model": model, "class_index": a, "depth": min(2, len(layers))},
        "reverse_lookup": {"model": model, "layer": hub[0]["layer"], "channel": hub[0]["channel"]} if hub else {"model": model},
        "label_search": {"model": model, "text": "a"},
        "neuron_concepts": {"model": model, "class_index": a, **(concept[0] if concept else {})},
    }
    for q in QUERIES:  # a query added to the library later still gets measured (with its defaults)
        args.setdefault(q.name, {"model": model} if "model" in q.params else {})
    return args


def time_queries(store, runs: int, model: str) -> list[tuple[str, float, float, float, int]]:
    from ingest.queries.library import QUERIES, run_query

    out = []
    args = query_params(store, model)
    for q in QUERIES:
        t = time.perf_counter()
        rows = run_query(store, q.name, **args[q.name])
        first = (time.perf_counter() - t) * 1000
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            run_query(store, q.name, **args[q.name])
            times.append((time.perf_counter() - t) * 1000)
        out.append((q.name, first, statistics.median(times), max(times), len(rows)))
    return out


def time_app_queries(store, model: str, runs: int) -> list[tuple[str, float]]:
    from ingest.queries.app_reads import APP_QUERIES

    a = store.run("MATCH (c:Circuit {model: $model, status: 'complete'}) RETURN c.class_index AS i ORDER BY i LIMIT 1",
                  {"model": model})[0]["i"]  # fmt: skip
    group = store.run("MATCH (c:Circuit {model: $model, class_index: $a, status: 'complete'})-[:HAS_GROUP]->(g:Group) "
                      "RETURN g.uid AS uid ORDER BY g.depth DESC LIMIT 1", {"model": model, "a": a})  # fmt: skip
    neuron = store.run("MATCH (c:Circuit {model: $model, class_index: $a, status: 'complete'})-[:INCLUDES]->(n:Neuron) "
                       "WHERE n.depth = 1 RETURN n.uid AS uid LIMIT 1", {"model": model, "a": a})  # fmt: skip
    circuits = [r["uid"] for r in store.run("MATCH (c:Circuit {model: $model, status: 'complete'}) RETURN c.uid AS uid "
                                            "ORDER BY uid LIMIT 50", {"model": model})]  # fmt: skip
    layer = store.run("MATCH (l:Layer {model: $model}) WHERE l.depth > 0 RETURN l.name AS name ORDER BY l.depth LIMIT 1",
                      {"model": model})  # fmt: skip
    p = {
        "model": model, "params": None, "class_index": a, "include_incomplete": True, "n": 6, "min_frac": 0.05,
        "top_k": 3, "max_depth": 99, "limit": 1500, "classes": [a, 6], "group": group[0]["uid"] if group else "",
        "neuron": neuron[0]["uid"] if neuron else "", "class_a": a, "class_b": 6, "params_a": None, "params_b": None,
        "circuits": circuits, "layer": layer[0]["name"] if layer else "",
    }  # fmt: skip
    import re

    out = []
    for name, cypher in APP_QUERIES.items():
        params = {k: p[k] for k in set(re.findall(r"\$(\w+)", cypher))}
        store.run(cypher, params)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            store.run(cypher, params)
            times.append((time.perf_counter() - t) * 1000)
        out.append((name, statistics.median(times)))
    return out


def time_pages(model: str, views: list[tuple[str, dict[str, str]]]) -> list[tuple[str, float, float, int]]:
    from streamlit.testing.v1 import AppTest

    from app import data

    main = str(ROOT / "app" / "main.py")
    out = []
    for name, query in views:
        renders = []
        for cold in (True, False):
            if cold:
                data.clear_caches()
            at = AppTest.from_file(main, default_timeout=120)
            for k, v in {**query, "model": model}.items():
                at.query_params[k] = v
            t = time.perf_counter()
            at.run()
            renders.append(time.perf_counter() - t)
            if at.exception:
                raise SystemExit(f"page {name} raised: {at.exception[0].value}")
        out.append((name, renders[0], renders[1], len(at.error)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model uid (default: the first one with circuits)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query after the first")
    parser.add_argument("--pages-only", action="store_true", help="time the pages only (bench/store_scale.py times the queries)")
    args = parser.parse_args(argv)
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    t = time.perf_counter()
    import streamlit  # noqa: F401

    import app.router  # noqa: F401
    from app.graphs import layered_figure  # noqa: F401
    from ingest.store.connection import start_store
    from ingest.store.readonly import readonly_store

    imports = time.perf_counter() - t
    cfg = start_store()
    store = readonly_store(cfg)
    models = [r["model"] for r in store.run(
        "MATCH (c:Circuit {status: 'complete'}) RETURN DISTINCT c.model AS model ORDER BY model")]  # fmt: skip
    if not models:
        print(f"the store at {cfg.uri} (database {cfg.database}) has no complete circuits: run `neurflow demo --no-app` first")
        return 2
    model = args.model or ("fashion-cnn" if "fashion-cnn" in models else models[0])
    n = store.run("MATCH (c:Circuit {model: $m, status: 'complete'}) RETURN count(c) AS n", {"m": model})[0]["n"]
    classes = store.run("MATCH (cl:Class {model: $m}) RETURN count(cl) AS n", {"m": model})[0]["n"]
    print(f"store: {cfg.uri} database {cfg.database} ({store.server_agent}); model {model}, {classes} classes, "
          f"{n} complete circuits")
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
    print(f"imports (once per process): {imports:.2f} s")

    # warm the process (first AppTest pays one-off Streamlit start-up work)
    from streamlit.testing.v1 import AppTest

    AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120).run()

    ok = True
    print(f"\npage first render (cold caches, new session) and warm render; target first <= {PAGE_TARGET_S:.1f} s")
    print(f"{'page':18s} {'first s':>8s} {'warm s':>8s}  ok")
    for page, cold, warm, errors in time_pages(model, page_views(classes)):
        good = cold <= PAGE_TARGET_S and errors == 0
        ok &= good
        print(f"{page:18s} {cold:8.2f} {warm:8.2f}  {'yes' if good else 'NO'}{'  (error shown)' if errors else ''}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} after the pages")
    if args.pages_only:
        print("\nall page targets met" if ok else "\nSOME PAGE TARGETS MISSED")
        return 0 if ok else 1

    print(f"\nlibrary queries (read-only connection); target median <= {QUERY_TARGET_MS:.0f} ms over {args.runs} runs")
    print(f"{'query':18s} {'first ms':>9s} {'median ms':>10s} {'max ms':>8s} {'rows':>6s}  ok")
    for name, first, med, worst, rows in time_queries(store, args.runs, model):
        good = med <= QUERY_TARGET_MS
        ok &= good
        print(f"{name:18s} {first:9.1f} {med:10.1f} {worst:8.1f} {rows:6d}  {'yes' if good else 'NO'}")

    print("\napp queries (app/data.py), median ms")
    for name, med in time_app_queries(store, model, args.runs):
        print(f"{name:18s} {med:9.1f}")
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
