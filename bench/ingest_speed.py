"""Time one class circuit: our batched pipeline against the reference code's loop.

The baseline is the straightforward implementation: one captum IG call per upper neuron with
that neuron's top samples (the reference code's loop).  Everything else (the same model, layers,
images, crops, clustering) is shared, and both runs must give the same core sets.

    python bench/ingest_speed.py [--model fashion-cnn] [--class 0] [--repeat 1] [--tau 16 --k 50 ...]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import neurflow.method as method
from neurflow.attribution import integrated_gradients
from neurflow.cli import add_method_args, add_model_args, budget_from_args, layers_from_args, params_from_args


def per_neuron_attributions(sub, pairs, lower_maps, *, steps, device, autocast_dtype=None, on_rows=None, **_):
    """Baseline: one IG call per upper neuron, its k top samples as one batch."""
    by_neuron: dict[int, list[int]] = {}
    for i, (u, _) in enumerate(pairs):
        by_neuron.setdefault(u, []).append(i)
    result = None
    for u, rows in by_neuron.items():
        h = lower_maps([pairs[i][1] for i in rows]).to(device)
        attr = integrated_gradients(sub, h, torch.full((len(rows),), u, device=device), steps=steps,
                                    autocast_dtype=autocast_dtype).cpu()
        if result is None:
            result = torch.empty((len(pairs), attr.shape[1]))
        result[torch.tensor(rows)] = attr
        if on_rows:
            on_rows(len(rows))
    return result


def run(args, baseline: bool):
    from neurflow.datasets import load_images
    from neurflow.models.registry import load_model, resolve_device

    device = resolve_device(args.device)
    loaded = load_model(args.model, args.weights, device=str(device), random_init=args.random_init)
    images = load_images(args.data or loaded.spec.default_data, loaded.spec, class_index=args.class_index, split=args.split)
    original = method.layer_attributions
    if baseline:
        method.layer_attributions = per_neuron_attributions
    try:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        circuit = method.build_circuit(loaded.module, layers_from_args(args, loaded.spec), images, args.class_index,
                                       params_from_args(args), model_uid=loaded.uid, device=device,
                                       budget=budget_from_args(args), progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return circuit, time.perf_counter() - t
    finally:
        method.layer_attributions = original


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    add_method_args(p)
    p.add_argument("--class", dest="class_index", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ours, base = [], []
    for _ in range(args.repeat):
        c_base, t_base = run(args, baseline=True)
        c_ours, t_ours = run(args, baseline=False)
        base.append(t_base)
        ours.append(t_ours)
    same_core = {(r.depth, r.channel, r.lower_channel, r.rank) for r in c_base.core} == {
        (r.depth, r.channel, r.lower_channel, r.rank) for r in c_ours.core}
    print(f"model={args.model} class={args.class_index} tau={args.tau} k={args.k} steps={args.ig_steps} "
          f"images={len(c_ours.images)} critical={len(c_ours.neurons)} threads={torch.get_num_threads()}")
    print(f"baseline (one IG call per neuron): {min(base):8.2f} s")
    print(f"neurflow (batched):                {min(ours):8.2f} s")
    print(f"speed ratio: {min(base) / min(ours):.2f}x   identical core sets: {same_core}")
    return 0 if same_core else 1


if __name__ == "__main__":
    sys.exit(main())
