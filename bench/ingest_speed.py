"""Time one class circuit: our pipeline against the straightforward implementation.

The baseline is what the reference code does: one captum IG call per upper neuron with
that neuron's top samples, plain NCHW fp32 forward passes, BatchNorm left in the IG
sub-networks, the top crops' lower maps read by a second forward pass, in a process with
glibc's default malloc (it runs first: our runs set the allocator thresholds for the process,
neurflow/allocator.py; `baseline-alloc` is the baseline with them, to show their share).
Ours: one forward pass per crop shared by all its IG targets (chunks of crops with equal
target counts), BatchNorm folded, channels-last, IG batches sized from free memory, the lower
maps kept from the activation pass, freed memory kept for the next batch, every neuron at the
full step count (ours-exact, `--exact-ig`); the same with adaptive IG step counts, IG in closed
form where a sub-network crosses at most one ReLU (neurflow/closed_form.py) and BatchNorm folded
in the activation pass too (ours-adaptive, the default, neurflow/adaptive.py); and the same with bf16 IG whose close
calls are redone in fp32.  The
model, layers, images, crops and clustering are the same; wall and CPU seconds of this
process are printed (on a shared machine CPU time moves less with other jobs' load); the fp32 runs must give identical
core sets (members and ranks), the bf16 run the same core sets (members), every run the same
top samples (crops and ranks), and the adaptive
run's stored importances and edge weights must lie within its tolerance (1 %) of the
full-step values of ours-exact.  Per-phase seconds show where the time goes; the adaptive
run also prints how many neurons were accepted at which step count.

    python bench/ingest_speed.py --model fashion-cnn               # demo CNN, one class
    python bench/ingest_speed.py --model resnet50 --random-init --photos 2 \\
        --layers layer4.2,layer4.1,layer4.0 --tau 4 --k 8          # ResNet50 on scikit-image photos
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import replace

import torch

import neurflow.ig_strategy as ig_strategy
import neurflow.method as method
from neurflow.adaptive import TOLERANCE
from neurflow.attribution import per_neuron_attributions
from cli.options import add_method_args, add_model_args, layers_from_args, params_from_args
from neurflow.circuit import Params
from neurflow.allocator import thresholds_set
from neurflow.method import Budget


BASELINE = Budget(crop_batch=512, channels_last=False, fold_batchnorm=False, reuse_maps=False, adaptive_ig=False,
                  keep_freed_memory=False)
RUNS = {
    "baseline": ("one captum IG call per neuron, NCHW, BatchNorm, glibc's default malloc", BASELINE),
    "baseline-alloc": ("the baseline with our allocator setting (neurflow/allocator.py)",
                       replace(BASELINE, keep_freed_memory=True)),
    "ours-exact": ("shared IG paths, target channels only, BN folded, channels-last from 64 px", Budget(adaptive_ig=False)),
    "ours-adaptive": ("the same, adaptive certified IG step counts or IG's closed form, BN folded in the forward passes",
                      Budget(adaptive_ig=True)),
    "ours-bf16": ("the same, bf16 IG + fp32 close calls", Budget(autocast_dtype=torch.bfloat16)),
}


@contextmanager
def phase_timer(times: dict[str, float]):
    """Seconds spent reading activations and in IG (the rest: tracing, clustering, ...)."""
    wrapped = {"activations": "_collect_means", "IG": "layer_attributions"}
    where = {"_collect_means": method, "layer_attributions": ig_strategy, "adaptive_attributions": ig_strategy}
    originals = {name: getattr(where[name], name) for name in where}

    def timed(label, fn):
        def run(*a, **kw):
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                times[label] += time.perf_counter() - t
                times[label + " cpu"] += time.process_time() - c
        return run

    def counted(*a, **kw):
        out, report = originals["adaptive_attributions"](*a, **kw)
        for steps, n in report.accepted.items():
            times[f"accepted at {steps}"] += n
        times["direct"] += report.direct
        times["closed form"] += report.closed_form
        return out, report

    for label, name in wrapped.items():
        setattr(where[name], name, timed(label, originals[name]))
    ig_strategy.adaptive_attributions = counted
    read = method._MapReader.read
    method._MapReader.read = timed("maps", read)  # lower-layer maps read for IG (inside the IG phase)
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(where[name], name, fn)
        method._MapReader.read = read


def load_inputs(args):
    from neurflow.datasets import images_from_tensor, load_images
    from neurflow.models.registry import load_model, resolve_device

    device = resolve_device(args.device)
    loaded = load_model(args.model, args.weights, device=str(device), random_init=args.random_init)
    if args.photos:
        images = photo_images(args.photos, loaded.spec, images_from_tensor)
    else:
        images = load_images(args.data or loaded.spec.default_data, loaded.spec, class_index=args.class_index,
                             split=args.split, limit=args.limit)
    return loaded, images, device


def photo_images(n: int, spec, images_from_tensor):
    """The first `n` colour photos bundled with scikit-image, resized to the model's input."""
    import numpy as np
    import torch.nn.functional as F
    from skimage import data

    names = ["chelsea", "astronaut", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "retina"]
    pixels = []
    for name in names[:n]:
        img = torch.from_numpy(np.asarray(getattr(data, name)(), dtype=np.float32) / 255).permute(2, 0, 1)[:3]
        pixels.append(F.interpolate(img[None], size=(spec.input_size, spec.input_size), mode="bilinear")[0])
    return images_from_tensor(torch.stack(pixels), spec, labels=[0] * len(pixels), sources=names[:n])


def run(label, loaded, images, args, device):
    original = ig_strategy.layer_attributions
    if label == "baseline":
        ig_strategy.layer_attributions = per_neuron_attributions
    times: dict[str, float] = defaultdict(float)
    try:
        # warm-up: first calls pay for kernel selection (oneDNN primitives, cuDNN plans)
        method.build_circuit(loaded.module, layers_from_args(args, loaded.spec)[:1], images.subset([0]),
                             args.class_index, Params(tau=1, k=2, ig_steps=2, predicted_only=False),
                             budget=RUNS[label][1], run=method.RunOptions(device=device, progress=False))
        times.clear()
        with phase_timer(times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            circuit = method.build_circuit(loaded.module, layers_from_args(args, loaded.spec), images,
                                           args.class_index, params_from_args(args), budget=RUNS[label][1],
                                           run=method.RunOptions(model_uid=loaded.uid, device=device, progress=False))
            if device.type == "cuda":
                torch.cuda.synchronize()
            times["total"] = time.perf_counter() - t
            times["total cpu"] = time.process_time() - c
    finally:
        ig_strategy.layer_attributions = original
    return circuit, times


def core(circuit, ranks: bool):
    return {(r.depth, r.channel, r.lower_channel) + ((r.rank,) if ranks else ()) for r in circuit.core}


def top_samples(circuit):
    """Every critical neuron's top crops with their ranks (the activation pass's result)."""
    return {(r.depth, r.channel, r.rank, r.crop_id) for r in circuit.top_samples}


def deviation(circuit, exact) -> tuple[float, float]:
    """Largest relative deviation from `exact` (same core sets): of the stored importances, and of
    the edge weights relative to their concept's total |weight| (the weights are normalised to 1)."""
    imp = {(r.depth, r.channel, r.lower_channel): r.importance for r in exact.core}
    d_imp = max((abs(r.importance - imp[(r.depth, r.channel, r.lower_channel)]) / max(abs(imp[(r.depth, r.channel, r.lower_channel)]), 1e-30)
                 for r in circuit.core if (r.depth, r.channel, r.lower_channel) in imp), default=0.0)
    w = {(e.depth, e.channel, e.concept, e.lower_channel): e.weight for e in exact.edges}
    total: dict = defaultdict(float)
    for key, value in w.items():
        total[key[:3]] += abs(value)
    d_w = max((abs(e.weight - w[key]) / max(total[key[:3]], 1e-30)
               for e in circuit.edges if (key := (e.depth, e.channel, e.concept, e.lower_channel)) in w), default=0.0)
    return d_imp, d_w


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    add_method_args(p)
    p.add_argument("--class", dest="class_index", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="read at most this many images of the class")
    p.add_argument("--photos", type=int, default=0, help="use N scikit-image photos as the class's images")
    p.add_argument("--runs", default="baseline,ours-exact,ours-adaptive,ours-bf16",
                   help=f"comma list of {', '.join(RUNS)} (the baseline always runs first)")
    args = p.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        p.error(f"unknown run(s) {unknown}; choose from {', '.join(RUNS)}")
    # glibc's thresholds, once set, stay set for the process: the baseline runs before any run that sets them
    runs.sort(key=lambda r: r != "baseline")
    if args.photos:
        args.all_images = True
    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    loaded, images, device = load_inputs(args)
    results = {}
    for label in runs:
        print(f"running {label}: {RUNS[label][0]} ...", flush=True)
        results[label] = run(label, loaded, images, args, device)
    c0 = next(iter(results.values()))[0]
    print(f"\nmodel={args.model} class={args.class_index} layers={len(c0.layers) - 1} tau={args.tau} k={args.k} "
          f"steps={args.ig_steps} images={len(c0.images)} critical={len(c0.neurons)} threads={torch.get_num_threads()} "
          f"device={device}")
    print(f"{'run':<13} {'total s':>8} {'IG s':>8} {'activ. s':>8} {'other s':>8} {'speed-up':>8}  core sets; top samples (crops and ranks)")
    base = results.get("baseline")
    ok = True
    for label, (circuit, t) in results.items():
        other = t["total"] - t["IG"] - t["activations"]
        ratio = f"{base[1]['total'] / t['total']:.2f}x" if base else "-"
        if base and label != "baseline":
            ranks = label in ("ours-exact", "ours-adaptive", "baseline-alloc")
            same = core(base[0], ranks) == core(circuit, ranks)
            tops = top_samples(base[0]) == top_samples(circuit)
            ok &= same and tops
            check = (f"{'identical' if same else 'DIFFERENT'} {'(members and ranks)' if ranks else '(members)'}; "
                     f"top samples {'identical' if tops else 'DIFFERENT'}")
        else:
            check = "reference"
        print(f"{label:<13} {t['total']:8.2f} {t['IG']:8.2f} {t['activations']:8.2f} {other:8.2f} {ratio:>8}  {check}")
    if base:  # the machine may be shared: CPU seconds of this process move less with other jobs' load than wall time
        for label, (_, t) in results.items():
            print(f"{label}: CPU s total {t['total cpu']:.2f}, IG {t['IG cpu']:.2f}, activations {t['activations cpu']:.2f}; "
                  f"speed-up by CPU time {base[1]['total cpu'] / t['total cpu']:.2f}x "
                  f"(IG {base[1]['IG cpu'] / max(t['IG cpu'], 1e-9):.2f}x, "
                  f"activations {base[1]['activations cpu'] / max(t['activations cpu'], 1e-9):.2f}x)")
    if "baseline" in results and "baseline-alloc" in results:
        t0, t1 = results["baseline"][1]["total"], results["baseline-alloc"][1]["total"]
        print(f"allocator: the baseline takes {t0:.2f} s with glibc's default malloc and {t1:.2f} s with the thresholds "
              f"our runs set ({t0 / t1:.2f}x); the ratios above are against the baseline as the reference code runs "
              "(default malloc)")
    print(f"allocator thresholds set in this process after the baseline: {thresholds_set()}")
    for label, (circuit, t) in results.items():
        print(f"{label}: of the IG phase's {t['IG']:.2f} s, {t['maps']:.2f} s read lower-layer maps (forward passes of the top crops)")
    for label, (circuit, t) in results.items():
        accepted = sorted((int(key.split()[-1]), int(n)) for key, n in t.items() if key.startswith("accepted at"))
        if accepted:
            direct, closed = int(t.get("direct", 0)), int(t.get("closed form", 0))
            print(f"{label}: neurons accepted per IG step count: "
                  + ", ".join(f"{n} at {s}" for s, n in accepted) + f" (of {sum(n for _, n in accepted)}"
                  + (f"; {closed} of them in closed form, one path point per crop" if closed else "")
                  + (f"; {direct} of them run at {args.ig_steps} directly after a failed probe" if direct else "") + ")")
        if label == "ours-adaptive" and "ours-exact" in results:
            d_imp, d_w = deviation(circuit, results["ours-exact"][0])
            fine = d_imp <= TOLERANCE and d_w <= TOLERANCE
            ok &= fine
            print(f"{label} vs ours-exact: core sets {'identical' if core(circuit, True) == core(results['ours-exact'][0], True) else 'DIFFERENT'}"
                  f" (members and ranks); largest relative deviation: importances {d_imp:.2e}, edge weights {d_w:.2e}"
                  f" (tolerance {TOLERANCE:g}: {'within' if fine else 'EXCEEDED'})")
    if base:
        for label, (_, t) in results.items():
            if label != "baseline":
                print(f"speed ratio {label} / baseline: {base[1]['total'] / t['total']:.2f}x "
                      f"(IG phase {base[1]['IG'] / t['IG']:.2f}x, activations {base[1]['activations'] / max(t['activations'], 1e-9):.2f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
