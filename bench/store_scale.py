"""Store scale: a synthetic store shaped like 1,000 ResNet50 class circuits, then every library query.

    .venv/bin/python bench/store_scale.py [--classes 1000] [--layers 10] [--tau 16] [--repeats 20]
                                          [--store-dir DIR] [--keep]

1. Builds real `neurflow.circuit.Circuit` objects (deterministic, `--seed`), one per class, shaped
   like NeurFlow circuits of ResNet50 (logits + 9 bottleneck outputs, tau core neurons per
   critical neuron) with the overlap real circuits have:

   - critical neurons per layer grow from tau (the logit's core set) and saturate at
     `--saturate` (default 40): a class's core sets of one layer are drawn from a pool of that
     size, as real core sets overlap heavily;
   - classes share neurons: each class's pools are drawn from the layer's channels with a
     Zipf-like popularity (hub channels) mixed with a preference of its family of 50 classes
     (dogs, birds, ...);
   - 1-3 concepts per neuron (40/40/20 %), each with tau signed DRIVES weights and
     `num_representatives` exemplar crops (crops of 50 images per class at 3 granularities);
   - 2-6 groups per layer (one at the logit), dense GROUP_FEEDS between adjacent layers,
     about 10 % of groups labelled.

   Top samples and non-representative concept members are left out: the writer stores neither.
2. Writes them through the real writer (`ingest.write.writer.write_circuit`, no thumbnails; its
   aggregates included) into a
   fresh embedded ArcadeDB server in a temporary folder (or `--store-dir`), printing the write
   throughput in relationships/s overall and per batch of classes.
3. Times every query of the library (`ingest.queries.library.QUERIES`, whatever it holds) `--repeats`
   times with varied parameters (classes, layers, depths, class pairs), after one untimed
   warm-up run each, and prints p50 / p95 per query against the goal (p95 <= 100 ms).

Goals on the embedded store (issue 15): every library query p95 <= 100 ms, write throughput
>= 40k rel/s.  Queries run with their default parameters (paged answers: the default page), so
the figures are what a page of the app or a user's first call costs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from neurflow.circuit import (  # noqa: E402
    Circuit,
    ConceptMemberRec,
    ConceptRec,
    CoreRec,
    CropRec,
    EdgeRec,
    GroupEdgeRec,
    GroupMemberRec,
    ImageRec,
    LayerRec,
    NeuronRec,
    Params,
)

MODEL = "resnet50-synth"
QUERY_GOAL_MS = 100.0
WRITE_GOAL = 40_000.0  # relationships / s (issue 15)
# ResNet50, top to bottom: the class logits and the outputs of bottleneck blocks
RESNET50_LAYERS = [
    ("logits", 1000), ("layer4.2", 2048), ("layer4.1", 2048), ("layer4.0", 2048), ("layer3.5", 1024),
    ("layer3.3", 1024), ("layer3.1", 1024), ("layer2.3", 512), ("layer2.1", 512), ("layer1.2", 256),
    ("layer1.1", 256), ("layer1.0", 256),
]  # fmt: skip
FAMILY = 50  # classes per family (ImageNet's dogs, birds, vehicles, ...): they prefer the same channels
IMAGES_PER_CLASS = 50
IMAGE_SIZE = 224
LABEL_WORDS = ("stripes", "fur", "wheel", "eye", "feather", "grass", "sky", "text", "water", "round edge", "snout", "leaf")


def layer_spec(num_layers: int, num_classes: int) -> list[tuple[str, int]]:
    """`num_layers` layers, depth 0 = logits (at least `num_classes` channels)."""
    out = list(RESNET50_LAYERS[:num_layers])
    while len(out) < num_layers:
        out.append((f"stem.{len(out)}", 64))
    out[0] = ("logits", max(out[0][1], num_classes))
    return out


def _boxes(size: int) -> list[tuple[int, int, int, int, float]]:
    """Crop boxes of one image at granularities 1, 0.5, 0.25 (stride half the side)."""
    out = []
    for g in (1.0, 0.5, 0.25):
        side = int(size * g)
        stride = max(side // 2, 1)
        for y in range(0, size - side + 1, stride):
            for x in range(0, size - side + 1, stride):
                out.append((x, y, x + side, y + side, g))
    return out


BOXES = _boxes(IMAGE_SIZE)


@dataclass
class Shape:
    classes: int = 1000
    layers: int = 10
    tau: int = 16
    saturate: int = 40
    seed: int = 0


class Generator:
    """Deterministic synthetic circuits of one model; `circuit(class_index)` builds one."""

    def __init__(self, shape: Shape):
        self.shape = shape
        self.layers = layer_spec(shape.layers, shape.classes)
        self.params = Params(tau=shape.tau, k=50, ig_steps=50, seed=shape.seed)
        rng = np.random.default_rng([shape.seed, 1])
        # per layer: a popularity weight per channel (Zipf-like over a random channel order)
        self.popularity: list[np.ndarray] = []
        for _, channels in self.layers:
            w = 1.0 / np.arange(1, channels + 1) ** 0.9
            self.popularity.append(w[rng.permutation(channels)])
        self._family: dict[tuple[int, int], np.ndarray] = {}

    def model_info(self) -> dict[str, Any]:
        return {"name": "ResNet50 (synthetic circuits)", "arch": "resnet50", "weights_sha256": "0" * 64,
                "num_classes": self.layers[0][1], "input_size": IMAGE_SIZE}  # fmt: skip

    def pool_size(self, depth: int) -> int:
        """Critical neurons a class's circuit has at `depth` at most: tau, 2 tau, ... up to `saturate`."""
        channels = self.layers[depth][1]
        return min(channels, max(self.shape.tau, min(self.shape.saturate, self.shape.tau * depth)))

    def _family_weights(self, family: int, depth: int) -> np.ndarray:
        key = (family, depth)
        if key not in self._family:
            rng = np.random.default_rng([self.shape.seed, 2, family, depth])
            channels = self.layers[depth][1]
            w = np.zeros(channels)
            liked = rng.choice(channels, size=min(channels, 4 * self.shape.saturate), replace=False)
            w[liked] = 1.0 / np.arange(1, len(liked) + 1) ** 0.5
            self._family[key] = w
        return self._family[key]

    def circuit(self, class_index: int) -> Circuit:
        s = self.shape
        rng = np.random.default_rng([s.seed, 3, class_index])
        r = random.Random(f"{s.seed}/{class_index}")
        p = self.params
        c = Circuit(
            model=MODEL, class_index=class_index, class_name=f"class {class_index}", params=p, image_size=IMAGE_SIZE,
            neurflow_version="synthetic", started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:01:00Z", seconds=60.0,
        )  # fmt: skip
        c.layers = [LayerRec(depth=d, name=name, channels=ch) for d, (name, ch) in enumerate(self.layers)]
        last = len(self.layers) - 1
        family = class_index // FAMILY
        critical: dict[int, list[int]] = {0: [class_index]}
        core_of: dict[tuple[int, int], list[int]] = {}
        for d in range(0, last):
            lower = d + 1
            size = self.pool_size(lower)
            w = self.popularity[lower] / self.popularity[lower].sum() + self._family_weights(family, lower) / max(
                self._family_weights(family, lower).sum(), 1e-9
            )
            pool = rng.choice(len(w), size=size, replace=False, p=w / w.sum())  # most wanted first
            pw = 1.0 / np.arange(1, size + 1) ** 0.7
            pw /= pw.sum()
            used: set[int] = set()
            for u in critical[d]:
                picks = pool[rng.choice(size, size=min(s.tau, size), replace=False, p=pw)].tolist()
                imps = sorted((round(x, 5) for x in rng.uniform(0.01, 1.0, len(picks)).tolist()), reverse=True)
                core_of[(d, u)] = picks
                c.core.extend(CoreRec(d, u, v, rank, imp) for rank, (v, imp) in enumerate(zip(picks, imps)))
                used.update(picks)
            critical[lower] = sorted(used)
        for d in range(0, last + 1):
            c.neurons.extend(NeuronRec(d, ch) for ch in critical[d])

        # images: 50 per class; crops are cut on demand (only representative crops are stored)
        c.images = [
            ImageRec(i, f"/data/imagenet/val/{class_index:04d}/{i:02d}.JPEG",
                     hashlib.sha256(f"{MODEL}/{class_index}/{i}".encode()).hexdigest(), class_index)
            for i in range(IMAGES_PER_CLASS)
        ]  # fmt: skip
        crops: dict[int, CropRec] = {}
        n_boxes = len(BOXES)

        vector = tuple(round(x, 3) for x in rng.uniform(0, 1, s.tau).tolist())
        reps = p.num_representatives
        for d in range(0, last):
            for u in critical[d]:
                core = core_of[(d, u)]
                n_concepts = r.choices((1, 2, 3), weights=(4, 4, 2))[0]
                sizes = [p.k // n_concepts + (1 if j < p.k % n_concepts else 0) for j in range(n_concepts)]
                for j in range(n_concepts):
                    acts = sorted((round(r.uniform(0.5, 8.0), 3) for _ in range(reps)), reverse=True)
                    c.concepts.append(ConceptRec(d, u, j, sizes[j], round(sum(acts) / reps, 4), vector[: len(core)]))
                    for rank, act in enumerate(acts):
                        crop_id = r.randrange(IMAGES_PER_CLASS * n_boxes)
                        if crop_id not in crops:
                            x0, y0, x1, y1, g = BOXES[crop_id % n_boxes]
                            crops[crop_id] = CropRec(crop_id, crop_id // n_boxes, x0, y0, x1, y1, g)
                        c.concept_members.append(ConceptMemberRec(d, u, j, crop_id, act, rank))
                    raw = [r.uniform(-1.0, 1.0) for _ in core]
                    norm = sum(abs(x) for x in raw) or 1.0
                    c.edges.extend(EdgeRec(d, u, j, v, round(x / norm, 5)) for v, x in zip(core, raw))
        c.crops = sorted(crops.values(), key=lambda cr: cr.crop_id)

        # groups: one at the logit, 2-6 per deeper layer; dense GROUP_FEEDS between adjacent layers
        groups: dict[int, int] = {}
        by_depth: dict[int, list[ConceptRec]] = {}
        for k in c.concepts:
            by_depth.setdefault(k.depth, []).append(k)
        for d, ks in by_depth.items():
            n = 1 if d == 0 else min(len(ks), r.randint(2, 6))
            order = list(range(len(ks)))
            r.shuffle(order)
            for pos, i in enumerate(order):  # every group gets a member
                k = ks[i]
                c.group_members.append(GroupMemberRec(d, pos % n, k.channel, k.index))
            groups[d] = n
        for d in range(0, last - 1):
            if d in groups and d + 1 in groups:
                for up in range(groups[d]):
                    for lo in range(groups[d + 1]):
                        c.group_edges.append(GroupEdgeRec(d, up, lo, round(r.uniform(-1.0, 1.0), 4)))
        return c

    def group_labels(self, circuit: Circuit) -> dict[tuple[int, int], dict[str, Any]]:
        """About 10 % of a circuit's groups get a label (for `label_search`)."""
        r = random.Random(f"labels/{self.shape.seed}/{circuit.class_index}")
        out = {}
        for key in sorted({(m.depth, m.group) for m in circuit.group_members}):
            if r.random() < 0.1:
                out[key] = {"label": f"{r.choice(LABEL_WORDS)} {key[1]}", "label_source": "manual", "label_score": 1.0}
        return out


# --------------------------------------------------------------------------- queries
def _pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[i]


class LazyCritical(dict):
    """class -> depth -> critical channels, generating a class's circuit on first use."""

    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = gen

    def __missing__(self, ci: int) -> dict[int, list[int]]:
        c = self.gen.circuit(ci)
        self[ci] = {d: c.critical(d) for d in c.depths}
        return self[ci]


OPTIONAL_LAYER = {"hub_neurons"}  # queries whose `layer` may stay null (all layers): half the runs do


class ParamMaker:
    """Varied parameters for any library query, chosen by parameter name (new queries are covered too)."""

    def __init__(self, gen: Generator, written: list[int], critical: dict[int, dict[int, list[int]]], seed: int = 0):
        self.gen = gen
        self.written = written
        self.critical = critical  # class -> depth -> channels
        self.rng = random.Random(f"queries/{seed}")
        self.layers = gen.layers

    def __call__(self, query) -> dict[str, Any]:
        r = self.rng
        names = set(query.params)
        out: dict[str, Any] = {}
        cls = r.choice(self.written)
        if "model" in names:
            out["model"] = MODEL
        if "class_index" in names:
            out["class_index"] = cls
        if "class_a" in names:
            out["class_a"] = cls
        if "class_b" in names:
            others = [x for x in self.written if x != cls] or [cls]
            out["class_b"] = r.choice(others)
        depth = r.randint(1, len(self.layers) - 1)
        if "depth" in names:  # strongest paths: tau^depth paths, the app asks for a few layers
            depth = r.randint(1, min(3, len(self.layers) - 1))
            out["depth"] = depth
        if "layer" in names and not (query.name in OPTIONAL_LAYER and r.random() < 0.5):
            out["layer"] = self.layers[depth][0]
        if "channel" in names:
            chans = self.critical[cls][depth] if "class_index" in names or "class_a" in names else None
            if not chans:  # any channel some written class uses at that depth
                chans = self.critical[r.choice(self.written)][depth]
            out["channel"] = r.choice(chans)
        if "text" in names:
            out["text"] = r.choice(LABEL_WORDS)
        if "include_incomplete" in names:
            out["include_incomplete"] = r.random() < 0.5
        return out


def time_queries(
    store, maker: ParamMaker, repeats: int, only: list[str] | None = None, budget_s: float = 60.0
) -> list[dict[str, Any]]:
    """Time every library query `repeats` times (after an untimed warm-up); a query whose runs
    pass `budget_s` in all stops early (at least 3 timed runs, or just the warm-up's time when
    that alone took longer than the budget)."""
    from ingest.queries.library import QUERIES, run_query

    results = []
    for q in QUERIES:
        if only and q.name not in only:
            continue
        times, rows, error = [], [], None
        try:
            t0 = time.perf_counter()
            out = run_query(store, q.name, **maker(q))  # warm-up (plans, JIT), not timed
            first = time.perf_counter() - t0
            if first > budget_s:
                times, rows = [first * 1000], [len(out)]
            spent = 0.0
            while len(times) < repeats and not (len(times) >= 3 and spent > budget_s):
                params = maker(q)
                t0 = time.perf_counter()
                out = run_query(store, q.name, **params)
                dt = time.perf_counter() - t0
                spent += dt
                times.append(dt * 1000)
                rows.append(len(out))
        except Exception as exc:  # noqa: BLE001 - a failing query is a result too
            error = f"{type(exc).__name__}: {exc}"[:300]
        if error is not None:
            results.append({"query": q.name, "p50": float("nan"), "p95": float("nan"), "max": float("nan"),
                            "runs": len(times), "rows": 0, "ok": False, "error": error})  # fmt: skip
            tqdm_write(f"{q.name}: FAILED {error}")
            continue
        p95 = _pct(times, 0.95)
        results.append({
            "query": q.name, "p50": _pct(times, 0.5), "p95": p95, "max": max(times), "runs": len(times),
            "rows": statistics.mean(rows), "ok": p95 <= QUERY_GOAL_MS,
        })  # fmt: skip
        tqdm_write(f"{q.name}: p50 {results[-1]['p50']:.1f} ms, p95 {p95:.1f} ms ({len(times)} runs)")
    return results


def tqdm_write(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def print_query_table(results: list[dict[str, Any]]) -> None:
    print(f"| query | runs | p50 ms | p95 ms | max ms | rows (mean) | p95 <= {QUERY_GOAL_MS:.0f} ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        if r.get("error"):
            print(f"| {r['query']} | {r['runs']} | - | - | - | - | NO: {r['error']} |")
            continue
        print(f"| {r['query']} | {r['runs']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} | {r['rows']:.0f} | "
              f"{'yes' if r['ok'] else 'NO'} |")


# --------------------------------------------------------------------------- main
def write_all(store, gen: Generator, classes: list[int], report_every: int, critical: dict) -> dict[str, Any]:
    from tqdm import tqdm

    from ingest.write.writer import WriteOptions, write_circuit

    total_rels = total_nodes = 0
    write_s = gen_s = 0.0
    batch_rels, batch_s, batch_first = 0, 0.0, classes[0] if classes else 0
    batches = []
    bar = tqdm(classes, unit="class", desc="writing", file=sys.stderr, mininterval=1.0)
    for n, ci in enumerate(bar, 1):
        t0 = time.perf_counter()
        c = gen.circuit(ci)
        labels = gen.group_labels(c)
        gen_s += time.perf_counter() - t0
        critical[ci] = {d: c.critical(d) for d in c.depths}
        st = write_circuit(store, c, model_info=gen.model_info(), group_labels=labels, options=WriteOptions(schema=False))
        total_rels += st.relationships
        total_nodes += st.nodes
        write_s += st.seconds
        batch_rels += st.relationships
        batch_s += st.seconds
        bar.set_postfix_str(f"{total_rels / write_s:,.0f} rel/s", refresh=False)
        if n % report_every == 0 or n == len(classes):
            batches.append((batch_first, ci, batch_rels, batch_s))
            tqdm.write(f"classes {batch_first}-{ci}: {batch_rels:,} relationships in {batch_s:.1f} s = {batch_rels / batch_s:,.0f} rel/s "
                       f"(store now {total_rels:,})", file=sys.stderr)  # fmt: skip
            batch_rels, batch_s, batch_first = 0, 0.0, ci + 1
    bar.close()
    return {"relationships": total_rels, "nodes": total_nodes, "write_s": write_s, "gen_s": gen_s, "batches": batches}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--layers", type=int, default=10, help="layers including the logits (default 10)")
    ap.add_argument("--tau", type=int, default=16)
    ap.add_argument("--saturate", type=int, default=40, help="critical neurons per layer saturate here (default 40)")
    ap.add_argument("--repeats", type=int, default=20, help="timed runs per query (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store-dir", default=None, help="data folder of the embedded server (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the store folder (and leave a --store-dir as it is)")
    ap.add_argument("--heap", default=os.environ.get("NEURFLOW_STORE_HEAP", "4g"), help="server heap (default 4g)")
    ap.add_argument("--report-every", type=int, default=0, help="classes per throughput line (default classes / 10)")
    ap.add_argument("--only", nargs="*", default=None, help="time only these queries")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of timed runs per query before it stops early (default 60)")
    ap.add_argument("--skip-write", action="store_true", help="reuse the store in --store-dir (written by an earlier --keep run)")
    args = ap.parse_args(argv)
    if args.classes < 2 or args.layers < 3:
        ap.error("--classes must be >= 2 and --layers >= 3")

    from ingest.store.embedded import ensure_embedded_server, free_port, stop_embedded_server
    from ingest.store.schema import ensure_schema
    from ingest.store.connection import Store

    shape = Shape(classes=args.classes, layers=args.layers, tau=args.tau, saturate=args.saturate, seed=args.seed)
    gen = Generator(shape)
    classes = list(range(args.classes))
    folder = Path(args.store_dir) if args.store_dir else Path(tempfile.mkdtemp(prefix="neurflow-scale-"))
    print(f"store scale: {args.classes} classes x {args.layers} layers, tau {args.tau}, critical neurons per layer up to "
          f"{args.saturate}; store in {folder}")  # fmt: skip
    t0 = time.perf_counter()
    cfg = ensure_embedded_server(folder, bolt_port=free_port(), http_port=free_port(), owner_pid=os.getpid(), heap=args.heap)
    print(f"embedded server ready in {time.perf_counter() - t0:.1f} s (heap {args.heap})")
    try:
        with Store(cfg) as store:
            ensure_schema(store)
            critical: dict[int, dict[int, list[int]]] = {}
            if args.skip_write:  # critical channels of a class, generated when a query first asks
                critical = LazyCritical(gen)
            else:
                w = write_all(store, gen, classes, args.report_every or max(1, args.classes // 10), critical)
                rate = w["relationships"] / w["write_s"]
                print(f"RESULT write: {w['relationships']:,} relationships, {w['nodes']:,} node rows in {w['write_s']:.1f} s = "
                      f"{rate:,.0f} rel/s overall (goal >= {WRITE_GOAL:,.0f}: {'yes' if rate >= WRITE_GOAL else 'NO'}); "
                      f"generation {w['gen_s']:.1f} s ({w['gen_s'] / w['write_s']:.0%} of writing)")  # fmt: skip
                rates = [r / s for *_, r, s in w["batches"]]
                print("RESULT write per batch of classes (rel/s): " + ", ".join(f"{a}-{b}: {r / s:,.0f}" for a, b, r, s in w["batches"]))
                print(f"RESULT write first batch {rates[0]:,.0f} rel/s, last batch {rates[-1]:,.0f} rel/s")
            counts = store.run("MATCH ()-[r]->() RETURN count(r) AS n")[0]["n"]
            print(f"store holds {counts:,} relationships")
            if not args.skip_write:  # the writer counts rows; rows for shared nodes that exist create nothing
                print(f"RESULT write, relationships in the store / write time: {counts / w['write_s']:,.0f} rel/s")
            maker = ParamMaker(gen, classes, critical, seed=args.seed)
            results = time_queries(store, maker, args.repeats, args.only, args.budget)
            print(f"\nlibrary queries, {args.repeats} runs each with varied parameters ({args.classes} classes):")
            print_query_table(results)
            bad = [r["query"] for r in results if not r["ok"]]
            print(f"RESULT queries: {len(results) - len(bad)}/{len(results)} meet p95 <= {QUERY_GOAL_MS:.0f} ms"
                  + (f"; over: {', '.join(bad)}" if bad else ""))  # fmt: skip
            print(f"(machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    finally:
        stop_embedded_server(folder)
        if not args.keep and not args.store_dir:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
