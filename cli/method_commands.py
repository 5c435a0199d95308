"""`neurflow circuit` (one class's circuit, printed and saved) and `neurflow train` (fashion-cnn, the
test suite's model; the demo model fashion-resnet ships trained)."""

from __future__ import annotations

import argparse
import json

from cli.options import add_method_args, add_model_args, budget_from_args, layers_from_args, params_from_args
from neurflow.errors import NeurflowInputError


def cmd_circuit(args: argparse.Namespace) -> int:
    """Build one class's circuit, print its summary, optionally save it as Parquet."""
    from neurflow.datasets import load_images
    from neurflow.method import RunOptions, build_circuit
    from neurflow.models.registry import load_model, resolve_device

    params = params_from_args(args)
    device = resolve_device(args.device)
    loaded = load_model(args.model, args.weights, device=str(device), random_init=args.random_init,
                        class_names=args.class_names)
    data = args.data or loaded.spec.default_data
    if data is None:
        raise NeurflowInputError(f"model {args.model!r} has no default dataset: pass --data FOLDER")
    from neurflow.datasets import classes_of_run

    from cli.ingest_commands import preflight_run

    (args.class_index,) = classes_of_run(loaded, data, args.class_index, option="--class", single=True)
    layers, budget = layers_from_args(args, loaded.spec), budget_from_args(args)
    preflight_run(loaded, data, [args.class_index], params, layers, split=args.split)  # before reading every image
    images = load_images(data, loaded.spec, class_index=args.class_index, split=args.split)
    circuit = build_circuit(
        loaded.module,
        layers,
        images,
        args.class_index,
        params,
        budget=budget,
        run=RunOptions(
            model_uid=loaded.uid,
            class_name=loaded.class_names[args.class_index] if args.class_index < len(loaded.class_names) else None,
            device=device,
            progress=not args.quiet,
        ),
    )
    print(json.dumps(circuit.summary(), indent=2))
    if args.out:
        path = circuit.save(args.out)
        print(f"saved to {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train fashion-cnn unless its weights are cached; print where they are and how good they are."""
    from neurflow.train import ensure_trained, read_sidecar, test_accuracy

    path = ensure_trained(force=args.force, verbose=not args.quiet)
    info = read_sidecar() or {}
    acc = info.get("test_accuracy")
    if acc is None:  # sidecar lost: measure again
        from neurflow.models.registry import load_model

        acc = test_accuracy(load_model("fashion-cnn", train_if_missing=False).module)
    print(f"test accuracy {acc:.4f}  seconds {info.get('seconds', '?')}  weights {path}")
    return 0


def add_method_commands(sub) -> None:
    p = sub.add_parser("circuit", help="build one class's circuit and print a summary")
    add_model_args(p)
    add_method_args(p)
    p.add_argument("--class", dest="class_index", required=True,
                   help="class index or name (e.g. 238, Chihuahua or n02085620)")
    p.add_argument("--out", default=None, help="folder to save the circuit to (Parquet tables)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_circuit)

    p = sub.add_parser("train", help="train fashion-cnn (the test suite's model) if its weights are not cached; fashion-resnet ships trained")
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.set_defaults(func=cmd_train)
