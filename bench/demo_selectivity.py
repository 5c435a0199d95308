"""How selective are the demo's circuits?  (issue 13, items 1-2)

For a model and its weights, builds the circuits of the 10 Fashion-MNIST classes at the demo's
settings directly with `neurflow.method.build_circuit` (no store) and prints, per analysed layer:

* critical / channels: mean over the classes and the largest;
* the mean pairwise Jaccard index of the classes' critical sets (45 pairs);
* how many classes use the 10 most shared neurons of the layer (the "hubs");
* with --fidelity, the single-layer fidelity of `neurflow.evaluation`: the accuracy drop when
  the critical set is masked, over the drop with random sets of the same size ("mask x"), and
  the accuracy kept when only the critical set is retained, over the same with random sets
  ("retain x"), on held-out test images of the class;

and the fraction of blank crops among the crops the circuits show (top samples of every
critical neuron, and the representative crops of the concepts): a crop is *blank* when the
standard deviation of its pixels (model input units) is below --blank-std.

    NEURFLOW_CACHE=/work/main/.cache/neurflow nice -n 19 .venv/bin/python bench/demo_selectivity.py
    nice -n 19 .venv/bin/python bench/demo_selectivity.py --model fashion-resnet --weights /tmp/nf13/fashion-resnet.pt
    ... --granularities 1,0.5 --min-crop-std 0.1 --tau 8 --k 20 --ig-steps 16 --max-images 60

`--model` is a registry name or anything `neurflow --model` takes; `--weights` a state dict.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neurflow.circuit import Params  # noqa: E402
from neurflow.datasets import load_images  # noqa: E402
from neurflow.evaluation import CircuitView, EvalSettings, build_subs, fidelity, optimality_and_edges  # noqa: E402
from neurflow.images import crop_boxes, cut_crops  # noqa: E402
from neurflow.method import RunOptions, build_circuit  # noqa: E402

DEMO = {"tau": 8, "k": 20, "ig_steps": 16, "max_images": 60}


def load(name: str, weights: str | None, channels: str | None = None):
    from neurflow.models.registry import available_models, load_model

    if name == "fashion-resnet" and (channels or name not in available_models()):  # another width / stride
        from dataclasses import replace

        from neurflow.models.fashion_resnet import FashionResNet
        from neurflow.models.registry import LoadedModel, get_spec

        kw = {}
        if channels:  # "c0,...,c4[:s1,...,s4[:stem_stride]]"
            parts = channels.split(":")
            kw["channels"] = tuple(int(c) for c in parts[0].split(","))
            if len(parts) > 1:
                kw["strides"] = tuple(int(c) for c in parts[1].split(","))
            if len(parts) > 2:
                kw["stem_stride"] = int(parts[2])
        module = FashionResNet(**kw)
        module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        spec = replace(get_spec("fashion-cnn"), name=name, arch="neurflow.FashionResNet")
        from neurflow.models.sources import state_hash

        sha = state_hash(module)  # a model is its weights (registry.load_model does the same)
        return LoadedModel(spec, module.eval(), f"{name}-{sha[:8]}", sha, list(spec.class_names))
    return load_model(name, weights, device="cpu", train_if_missing=False)


def core_union(circuit, tau: int) -> dict[int, set[int]]:
    """Critical sets the same circuit would have at a smaller `tau` (core sets are rank prefixes)."""
    ranked: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r in circuit.core:
        ranked.setdefault((r.depth, r.channel), []).append((r.rank, r.lower_channel))
    crit = {0: {circuit.class_index}}
    for d in range(max(circuit.depths)):
        crit[d + 1] = {v for u in crit[d] for _, v in sorted(ranked.get((d, u), []))[:tau]}
    return crit


def crop_std(images, circuit, crop_ids: list[int]) -> np.ndarray:
    """Pixel standard deviation (model input units) of circuit crops, by crop id."""
    by_id = {c.crop_id: c for c in circuit.crops}
    out = []
    for cid in crop_ids:
        c = by_id[cid]
        box = (c.x0, c.y0, c.x1, c.y1, c.granularity)
        out.append(float(cut_crops(images.pixels[c.image_id : c.image_id + 1], [box]).std()))
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="fashion-cnn")
    p.add_argument("--weights", default=None)
    p.add_argument("--channels", default=None, help="fashion-resnet widths c0,...,c4[:strides s1,...,s4[:stem stride]] when not the default")
    p.add_argument("--also-tau", default="", help="comma-separated smaller taus to report too (derived, exact)")
    p.add_argument("--layers", default=None, help="comma-separated, top to bottom (default: the model's)")
    p.add_argument("--classes", default="0-9")
    p.add_argument("--tau", type=int, default=DEMO["tau"])
    p.add_argument("--k", type=int, default=DEMO["k"])
    p.add_argument("--ig-steps", type=int, default=DEMO["ig_steps"])
    p.add_argument("--max-images", type=int, default=DEMO["max_images"])
    p.add_argument("--granularities", default="1,0.5,0.25")
    p.add_argument("--min-crop-std", type=float, default=None, help="Params.min_crop_std (when the field exists)")
    p.add_argument("--blank-std", type=float, default=0.1, help="a crop is blank below this pixel std (input units)")
    p.add_argument("--fidelity", action="store_true", help="also single-layer mask/retain fidelity vs random")
    p.add_argument("--edges", action="store_true", help="also the edge-weight Pearson (sum) and optimality per layer pair")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: two OpenMP threads on 2 busy cores thrash)")
    p.add_argument("--json", default=None, help="write the numbers here too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    loaded = load(args.model, args.weights, args.channels)
    model, spec = loaded.module, loaded.spec
    layers = args.layers.split(",") if args.layers else list(spec.layers)
    lo, _, hi = args.classes.partition("-")
    classes = list(range(int(lo), int(hi or lo) + 1))
    extra = {}
    if args.min_crop_std is not None:
        extra["min_crop_std"] = args.min_crop_std
    params = Params(
        tau=args.tau, k=args.k, ig_steps=args.ig_steps, max_images=args.max_images,
        granularities=tuple(float(g) for g in args.granularities.split(",")), **extra,
    )
    print(f"model {loaded.uid}  layers {layers}  params {params.to_dict()}", flush=True)

    crit: dict[int, dict[str, set[int]]] = {}
    also = [int(t) for t in args.also_tau.split(",") if t]
    crit_at: dict[int, dict[int, dict[str, set[int]]]] = {t: {} for t in also}
    widths: dict[str, int] = {}
    blank_top, blank_rep, n_top, n_rep = 0, 0, 0, 0
    blank_top_layer: dict[str, list[int]] = {}
    fid: dict[str, list[tuple[float, float]]] = {}
    edges: dict[str, list[float]] = {}
    seconds = []
    for c in classes:
        t0 = time.perf_counter()
        images = load_images("fashion-mnist", spec, c, "train", limit=300)
        circuit = build_circuit(model, layers, images, c, params, run=RunOptions(model_uid=loaded.uid, progress=False))
        seconds.append(time.perf_counter() - t0)
        names = {rec.depth: rec.name for rec in circuit.layers}
        for rec in circuit.layers:
            widths[rec.name] = rec.channels
        crit[c] = {names[d]: set(circuit.critical(d)) for d in circuit.depths if d >= 1}
        for t in also:
            crit_at[t][c] = {names[d]: s for d, s in core_union(circuit, t).items() if d >= 1}
        sel_idx = [images.sources.index(r.source) for r in circuit.images]
        kept = images.subset(sel_idx)
        top_ids = [t.crop_id for t in circuit.top_samples]
        rep_ids = [m.crop_id for m in circuit.concept_members if m.rep_rank >= 0]
        std_of = dict(zip(sorted(set(top_ids)), crop_std(kept, circuit, sorted(set(top_ids)))))
        blank_top += sum(std_of[i] < args.blank_std for i in top_ids)
        n_top += len(top_ids)
        blank_rep += sum(std_of[i] < args.blank_std for i in rep_ids)
        n_rep += len(rep_ids)
        for t in circuit.top_samples:
            if t.depth >= 1:
                b = blank_top_layer.setdefault(names[t.depth], [0, 0])
                b[0] += std_of[t.crop_id] < args.blank_std
                b[1] += 1
        line = "  ".join(f"{n} {len(s)}/{widths[n]}" for n, s in crit[c].items())
        msg = f"class {c}: {line}  ({seconds[-1]:.1f}s, {len(circuit.images)} images)"
        if args.fidelity or args.edges:
            test = load_images("fashion-mnist", spec, c, "test", limit=300)
            view = CircuitView.from_circuit(circuit)
            subs = build_subs(model, view, tuple(test.pixels.shape[1:]))
        if args.edges:  # rows name the upper layer; the masked one is the layer below
            for r in optimality_and_edges(model, view, test.pixels, EvalSettings(), subs):
                if r.kind == "edge_weight" and (r.mode, r.scope) == ("sum", "pearson"):
                    edges.setdefault(f"{r.layer}->{r.lower}", []).append(r.value)
                elif r.kind == "optimality":
                    edges.setdefault(f"opt {r.layer}->{r.lower}", []).append(r.value)
        if args.fidelity:
            for r in fidelity(model, view, test.pixels, EvalSettings(), subs):
                if r.scope != "single":
                    continue
                if r.mode == "mask":  # accuracy drop with the core set masked, and with random sets
                    pair = (r.baseline - r.value, r.baseline - r.random_mean)
                else:  # accuracy kept with only the core set, and with only random sets
                    pair = (r.value, r.random_mean)
                fid.setdefault(f"{r.layer}/{r.mode}", []).append(pair)
        print(msg, flush=True)

    rows = []
    print(f"\n{'layer':10s} {'channels':>8s} {'crit mean':>9s} {'mean/ch':>8s} {'max/ch':>7s} {'jaccard':>8s} "
          f"{'hub classes (top 10)':>22s} {'blank top':>9s}" + ("  mask x (drop core/random)  retain x (acc core/random)" if args.fidelity else ""))
    for name in layers:
        sets = [crit[c][name] for c in classes if name in crit[c]]
        if not sets:
            continue
        sizes = np.array([len(s) for s in sets])
        jac = [len(a & b) / max(1, len(a | b)) for a, b in itertools.combinations(sets, 2)]
        counts = sorted((sum(ch in s for s in sets) for ch in range(widths[name])), reverse=True)[:10]
        b = blank_top_layer.get(name, [0, 1])
        row = {
            "layer": name, "channels": widths[name], "critical_mean": float(sizes.mean()),
            "critical_frac_mean": float(sizes.mean() / widths[name]), "critical_frac_max": float(sizes.max() / widths[name]),
            "jaccard_mean": float(np.mean(jac)) if jac else float("nan"),
            "jaccard_min": float(np.min(jac)) if jac else float("nan"),
            "jaccard_max": float(np.max(jac)) if jac else float("nan"),
            "hub_classes": counts, "blank_top_frac": b[0] / max(1, b[1]),
        }
        line = (f"{name:10s} {widths[name]:8d} {sizes.mean():9.1f} {row['critical_frac_mean']:8.2f} "
                f"{row['critical_frac_max']:7.2f} {row['jaccard_mean']:8.2f} {','.join(map(str, counts)):>22s} "
                f"{row['blank_top_frac']:9.2f}")
        if args.fidelity:  # ratios of the class means (accuracy drop / accuracy kept), core set over random sets
            m, r = np.array(fid[f"{name}/mask"]), np.array(fid[f"{name}/retain"])
            row["mask_drop"], row["mask_drop_random"] = float(m[:, 0].mean()), float(m[:, 1].mean())
            row["retain_acc"], row["retain_acc_random"] = float(r[:, 0].mean()), float(r[:, 1].mean())
            row["mask_x"] = row["mask_drop"] / max(row["mask_drop_random"], 1e-3)
            row["retain_x"] = row["retain_acc"] / max(row["retain_acc_random"], 1e-3)
            line += (f"  {row['mask_x']:6.1f} ({row['mask_drop']:.2f}/{row['mask_drop_random']:.2f})"
                     f"  {row['retain_x']:5.1f} ({row['retain_acc']:.2f}/{row['retain_acc_random']:.2f})")
        rows.append(row)
        print(line)
    for t in also:
        print(f"\nat tau {t} (derived from the same circuits):")
        for name in layers:
            sets = [crit_at[t][c][name] for c in classes if name in crit_at[t][c]]
            if not sets:
                continue
            sizes = np.array([len(s) for s in sets])
            jac = [len(a & b) / max(1, len(a | b)) for a, b in itertools.combinations(sets, 2)]
            counts = sorted((sum(ch in s for s in sets) for ch in range(widths[name])), reverse=True)[:10]
            print(f"{name:10s} {widths[name]:8d} {sizes.mean():9.1f} {sizes.mean() / widths[name]:8.2f} "
                  f"{sizes.max() / widths[name]:7.2f} {np.mean(jac):8.2f} {','.join(map(str, counts)):>22s}")
            rows.append({"layer": name, "tau": t, "critical_frac_mean": float(sizes.mean() / widths[name]),
                         "critical_frac_max": float(sizes.max() / widths[name]), "jaccard_mean": float(np.mean(jac)),
                         "hub_classes": counts})
    if edges:
        print("\nedge weights (Pearson of summed |importance| with top-k overlap after masking; the paper: negative)"
              " and optimality (fraction of random core-sized sets the core set beats), mean over classes:")
        for key, values in edges.items():
            print(f"  {key:24s} {np.nanmean(values):6.2f}  (max {np.nanmax(values):.2f})")
    summary = {
        "model": loaded.uid, "layers": layers, "params": params.to_dict(), "rows": rows,
        "blank_std": args.blank_std,
        "blank_top_frac": blank_top / max(1, n_top), "blank_rep_frac": blank_rep / max(1, n_rep),
        "seconds_per_class": float(np.mean(seconds)),
        "edges": {key: float(np.nanmean(v)) for key, v in edges.items()},
    }
    print(f"\nblank crops (pixel std < {args.blank_std}): {summary['blank_top_frac']:.3f} of top samples, "
          f"{summary['blank_rep_frac']:.3f} of concept representatives;  {np.mean(seconds):.1f}s per class")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
