"""Options shared by the commands that build circuits: the model, the data and the method.

Their defaults are the library's (`neurflow.Params`), so `neurflow circuit` and
`neurflow.build_circuit` build the same circuit from the same words.
"""

from __future__ import annotations

import argparse

from neurflow.circuit import Params
from neurflow.images import DEFAULT_GRANULARITIES
from neurflow.errors import NeurflowInputError


DEFAULT_MODEL = "fashion-resnet"
"""Every command's default `--model`: the demo model, whose weights ship with the code, so no
command trains anything unasked (`fashion-cnn`, the test suite's model, trains on first use)."""


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="registry name (fashion-resnet, fashion-cnn, resnet50, ...), torchvision:<arch> or "
                        "path/to/file.py:factory (default %(default)s: weights shipped)")
    p.add_argument("--weights", default=None, help="state-dict file (or checkpoint holding one) for the model")
    p.add_argument("--class-names", default=None,
                   help="class names file: one per line or JSON list/dict (default: the model's or the data's)")
    p.add_argument("--random-init", action="store_true", help="random weights (timing and tests only)")
    p.add_argument("--data", default=None, help="dataset name (fashion-mnist) or an ImageFolder-style folder")
    p.add_argument("--split", default="train", help="dataset split whose images form the concept data")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1 ...")


def add_method_args(p: argparse.ArgumentParser) -> None:
    d = Params()
    p.add_argument("--layers", default=None, help="comma-separated module names, top to bottom (default: the model's)")
    # %(default)s: a command that sets lighter defaults (`neurflow demo`) shows its own in --help
    p.add_argument("--tau", type=int, default=d.tau, help="core concept neurons per neuron (default %(default)s)")
    p.add_argument("--k", type=int, default=d.k, help="top samples per neuron (default %(default)s)")
    p.add_argument("--ig-steps", type=int, default=d.ig_steps, help="integrated-gradients steps (default %(default)s)")
    p.add_argument("--max-images", type=int, default=d.max_images,
                   help="images of the class to use (concept data; default %(default)s)")
    p.add_argument("--num-groups", type=int, default=None, help="groups per layer (default: best silhouette)")
    p.add_argument("--epsilon", type=float, default=d.epsilon, help="core-set pruning tolerance (<0: off)")
    p.add_argument("--all-images", action="store_true", help="keep images the model misclassifies too")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    paper = ",".join(f"{g:g}" for g in DEFAULT_GRANULARITIES)
    p.add_argument("--granularities", default=",".join(f"{g:g}" for g in d.granularities),
                   help=f"crop sizes as fractions of the image side, comma-separated (default %(default)s; the paper's: {paper})")
    p.add_argument("--min-crop-std", type=float, default=d.min_crop_std,
                   help="leave crops whose pixel std is below this out of the concept data (default %(default)s; "
                        "0 keeps every crop, the paper's rule; e.g. 0.2 for images on large uniform backgrounds)")
    p.add_argument("--ig-internal-batch", type=int, default=None,
                   help="IG path points per forward pass (memory knob; default: sized from free memory)")
    p.add_argument("--bf16", action="store_true",
                   help="IG in bfloat16 (faster on AMX CPUs / tensor cores); close calls are redone in fp32 "
                        "so core sets stay the fp32 ones")
    p.add_argument("--tf32", action="store_true",
                   help="IG convolutions in TF32 on CUDA (close calls redone in fp32); TF32 is off otherwise")
    from neurflow.adaptive import DEFAULT_ON as adaptive

    ig = p.add_mutually_exclusive_group()
    ig.add_argument("--exact-ig", dest="adaptive_ig", action="store_false", default=adaptive,
                    help="today's exact path: every neuron's IG step by step at --ig-steps, the forward passes "
                         "with BatchNorm as the model has it" + (" (default: adaptive)" if adaptive else " (the default)"))
    ig.add_argument("--adaptive-ig", dest="adaptive_ig", action="store_true", default=adaptive,
                    help="IG on a ladder of path points (the 7-point Gauss-Kronrod pair, 12, 24, ... up to --ig-steps), "
                         "each neuron stopping where its core set, "
                         "ranks and stored values (1 %% tolerance) are certified, or in closed form (one path point) "
                         "where a layer pair crosses at most one ReLU; BatchNorm folded in the forward passes "
                         "(see README, Ingestion speed)" + (" (the default)" if adaptive else ""))


def params_from_args(args: argparse.Namespace) -> Params:
    for name in ("tau", "k", "ig_steps", "max_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise NeurflowInputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    try:
        granularities = tuple(float(g) for g in str(args.granularities).split(",") if g.strip())
    except ValueError:
        raise NeurflowInputError(f"--granularities: {args.granularities!r} is not a comma-separated list of numbers "
                                 "like 1,0.5,0.25") from None
    if not granularities or not all(0 < g <= 1 for g in granularities):
        raise NeurflowInputError(f"--granularities must be fractions in (0, 1], got {args.granularities!r}")
    if args.min_crop_std < 0:
        raise NeurflowInputError(f"--min-crop-std must be 0 or more, got {args.min_crop_std}")
    return Params(
        tau=args.tau,
        k=args.k,
        ig_steps=args.ig_steps,
        max_images=args.max_images,
        granularities=granularities,
        num_groups=args.num_groups,
        epsilon=args.epsilon,
        predicted_only=not args.all_images,
        seed=args.seed,
        min_crop_std=args.min_crop_std,
    )


def budget_from_args(args: argparse.Namespace):
    import torch

    from neurflow.method import Budget

    if args.ig_internal_batch is not None and args.ig_internal_batch < 1:
        raise NeurflowInputError(f"--ig-internal-batch must be at least 1, got {args.ig_internal_batch}")
    return Budget(
        ig_internal_batch=args.ig_internal_batch,
        autocast_dtype=torch.bfloat16 if args.bf16 else None,
        tf32=args.tf32,
        adaptive_ig=getattr(args, "adaptive_ig", Budget().adaptive_ig),
    )


def layers_from_args(args: argparse.Namespace, spec) -> list[str]:
    if args.layers:
        return [name.strip() for name in args.layers.split(",") if name.strip()]
    if not spec.layers:
        raise NeurflowInputError(f"{spec.name} has no default layers (no feature-map blocks found): pass --layers")
    return list(spec.layers)
