"""One prepared GPU check: correctness against CPU, then timings, within a time budget.

1. Demo model (fashion-resnet, shipped weights, the demo's settings): circuits of a few classes
   on CUDA and on the CPU; core sets must match.
2. ResNet50 (random weights, generated images, the default layer list): one class circuit on
   CUDA in fp32 with exact IG (`--exact-ig`, TF32 off), fp32 with adaptive IG (the default),
   TF32 and bf16 (both with fp32 close calls); seconds per class, the IG phase's achieved FLOP/s
   against the card's peak (counted at the full step count: an upper bound for adaptive IG),
   and whether adaptive, TF32 and bf16 kept the exact run's core sets.
3. ResNet50 CPU-vs-GPU core sets on a reduced parameter set (the CPU is too slow for defaults).

    python bench/gpu_check.py [--budget-s 480] [--out results.json]

Prints one line per measurement and writes a JSON file; stops starting new steps when the
budget is nearly spent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from neurflow.circuit import LOGITS, Params
from neurflow.images import ImageSet
from neurflow.method import Budget, RunOptions, build_circuit

PEAK_TFLOPS = {"H100": {"fp32": 67.0, "bf16": 989.0}, "H200": {"fp32": 67.0, "bf16": 989.0}}


def core_sets(circuit):
    return {(r.depth, r.channel): tuple(r.lower_channel for r in circuit.core_of(r.depth, r.channel)) for r in circuit.core}


def agreement(a, b) -> float:
    """Share of neurons present in both circuits whose core sets are identical (as sets)."""
    ca, cb = core_sets(a), core_sets(b)
    common = set(ca) & set(cb)
    if not common:
        return 0.0
    return sum(set(ca[n]) == set(cb[n]) for n in common) / len(common)


def ig_flops(model, layers, shape, circuit, device) -> float:
    """FLOPs of the IG phase: pairs x steps x (forward + backward ~ 3x forward) of each g_l."""
    from torch.utils.flop_counter import FlopCounterMode

    from neurflow.hooks import capture
    from neurflow.subnetwork import build_subnetworks

    subs = build_subnetworks(model, layers, shape)
    x = torch.randn((1,) + shape, device=device)
    with torch.no_grad():
        outs = capture(model, x, layers, reduce=False, stop_early=False)
    total = 0.0
    for d, sub in enumerate(subs):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            sub(outs[layers[d + 1]])
        pairs = len(circuit.critical(d)) * circuit.params.k
        crops = len({s.crop_id for s in circuit.top_samples if s.depth == d})
        # executed: one forward per crop path point, one input-gradient backward (~1 forward) per pair
        total += counter.get_total_flops() * (crops + pairs) * circuit.params.ig_steps
    return total


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--budget-s", type=float, default=480)
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--fashion-classes", type=int, default=2)
    p.add_argument("--resnet-layers", type=int, default=3, help="analysed ResNet50 layers (of the default list)")
    p.add_argument("--resnet-images", type=int, default=8)
    args = p.parse_args()
    start = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - start)  # noqa: E731
    results: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                     "torch": torch.__version__, "cudnn_tf32": torch.backends.cudnn.allow_tf32}
    cuda = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def save():
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)

    def log(key, value):
        results[key] = value
        print(f"{key}: {value}", flush=True)
        save()

    # 1. demo model, CPU vs GPU
    from neurflow.datasets import load_images
    from neurflow.models.registry import load_model

    loaded = load_model("fashion-resnet")
    layers = list(loaded.spec.layers)
    params = Params(tau=3, k=20, ig_steps=16, max_images=60, granularities=(1.0, 0.5), min_crop_std=0.2)
    for c in range(args.fashion_classes):
        if left() < 120:
            break
        images = load_images("fashion-mnist", loaded.spec, class_index=c, split="test", limit=150)
        t = time.perf_counter()
        on_gpu = build_circuit(loaded.module, layers, images, c, params, run=RunOptions(device=cuda, progress=False),
                               budget=Budget(ig_internal_batch=65536))
        t_gpu = time.perf_counter() - t
        t = time.perf_counter()
        on_cpu = build_circuit(loaded.module.cpu(), layers, images, c, params, run=RunOptions(progress=False))
        t_cpu = time.perf_counter() - t
        log(f"fashion class {c}", {"gpu_s": round(t_gpu, 2), "cpu16_s": round(t_cpu, 2),
                                   "core_agreement": agreement(on_gpu, on_cpu),
                                   "same_critical": on_gpu.neurons == on_cpu.neurons})

    # 2. resnet50 timing at default parameters
    from neurflow.models.registry import load_model as load

    resnet = load("resnet50", random_init=True, device=str(cuda))
    r_layers = [LOGITS] + list(resnet.spec.layers)[: args.resnet_layers]
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.resnet_images, 3, 224, 224, generator=gen)
    images = ImageSet(pixels, [f"generated:{i}" for i in range(len(pixels))], [0] * len(pixels))
    full = Params(predicted_only=False)
    runs = {}
    budgets = {"fp32": Budget(adaptive_ig=False), "fp32-adaptive": Budget(adaptive_ig=True),
               "tf32": Budget(tf32=True), "bf16": Budget(autocast_dtype=torch.bfloat16)}
    for label, budget in budgets.items():
        if left() < 150:
            break
        torch.backends.cudnn.benchmark = True
        t = time.perf_counter()
        circuit = build_circuit(resnet.module, r_layers, images, 1, full, run=RunOptions(device=cuda, progress=False),
                                budget=budget)
        torch.cuda.synchronize() if cuda.type == "cuda" else None
        seconds = time.perf_counter() - t
        runs[label] = circuit
        flops = ig_flops(resnet.module, r_layers, (3, 224, 224), circuit, cuda)
        peak = PEAK_TFLOPS.get(next((k for k in PEAK_TFLOPS if k in results["device"]), ""), {}).get(
            "bf16" if label == "bf16" else "fp32")
        log(f"resnet50 {label}", {"seconds_per_class": round(seconds, 1), "critical": len(circuit.neurons),
                                  "ig_tflop": round(flops / 1e12, 1),
                                  "achieved_tflops_upper_bound": round(flops / 1e12 / seconds, 1),
                                  "peak_tflops": peak})
    for label in ("fp32-adaptive", "tf32", "bf16"):
        if "fp32" in runs and label in runs:  # certified modes: must be 1.0
            log(f"resnet50 {label} vs fp32 core agreement", agreement(runs["fp32"], runs[label]))

    # 3. resnet50 CPU vs GPU on reduced parameters
    if left() > 90:
        small = Params(tau=8, k=10, ig_steps=16, predicted_only=False, max_images=2)
        few = r_layers[:3]
        t = time.perf_counter()
        a = build_circuit(resnet.module, few, images, 1, small, run=RunOptions(device=cuda, progress=False))
        t_gpu = time.perf_counter() - t
        t = time.perf_counter()
        b = build_circuit(resnet.module.cpu(), few, images, 1, small, run=RunOptions(progress=False))
        log("resnet50 reduced cpu vs gpu", {"core_agreement": agreement(a, b), "gpu_s": round(t_gpu, 1),
                                            "cpu16_s": round(time.perf_counter() - t, 1)})
    log("total_s", round(time.perf_counter() - start, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
