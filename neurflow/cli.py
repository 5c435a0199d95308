"""The `neurflow` command line.

One error contract for every command (neurflow/errors.py): bad input is one `error: ...` line
on stderr and exit status 2, a runtime failure one `error: ...` line and status 1, Ctrl-C
status 130.  The commands that touch the store live in `ingest/` and `app/` and are wired in here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from neurflow.circuit import Params
from neurflow.errors import EXIT_BAD_INPUT, NeurflowInputError, classify


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad option is one `error:` line (naming the command and where its help
    is) and exit status 2, not the usage text.  Subcommand parsers inherit the class."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        message = " ".join(message.split())
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="fashion-cnn",
                   help="registry name (fashion-cnn, resnet50, ...), torchvision:<arch> or path/to/file.py:factory")
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
    p.add_argument("--max-images", type=int, default=200,
                   help="images of the class to use (concept data; default %(default)s)")
    p.add_argument("--num-groups", type=int, default=None, help="groups per layer (default: best silhouette)")
    p.add_argument("--epsilon", type=float, default=d.epsilon, help="core-set pruning tolerance (<0: off)")
    p.add_argument("--all-images", action="store_true", help="keep images the model misclassifies too")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--ig-internal-batch", type=int, default=None,
                   help="IG path points per forward pass (memory knob; default: sized from free memory)")
    p.add_argument("--bf16", action="store_true",
                   help="IG in bfloat16 (faster on AMX CPUs / tensor cores); close calls are redone in fp32 "
                        "so core sets stay the fp32 ones")
    p.add_argument("--tf32", action="store_true",
                   help="IG convolutions in TF32 on CUDA (close calls redone in fp32); TF32 is off otherwise")


def params_from_args(args: argparse.Namespace) -> Params:
    for name in ("tau", "k", "ig_steps", "max_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise NeurflowInputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    return Params(
        tau=args.tau,
        k=args.k,
        ig_steps=args.ig_steps,
        max_images=args.max_images,
        num_groups=args.num_groups,
        epsilon=args.epsilon,
        predicted_only=not args.all_images,
        seed=args.seed,
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
    )


def layers_from_args(args: argparse.Namespace, spec) -> list[str]:
    if args.layers:
        return [name.strip() for name in args.layers.split(",") if name.strip()]
    if not spec.layers:
        raise NeurflowInputError(f"{spec.name} has no default layers (no feature-map blocks found): pass --layers")
    return list(spec.layers)


def cmd_circuit(args: argparse.Namespace) -> int:
    """Build one class's circuit, print its summary, optionally save it as Parquet."""
    from neurflow.datasets import load_images
    from neurflow.method import build_circuit
    from neurflow.models.registry import load_model, resolve_device

    params = params_from_args(args)
    device = resolve_device(args.device)
    loaded = load_model(args.model, args.weights, device=str(device), random_init=args.random_init,
                        class_names=args.class_names)
    data = args.data or loaded.spec.default_data
    if data is None:
        raise NeurflowInputError(f"model {args.model!r} has no default dataset: pass --data FOLDER")
    from neurflow.classes import classes_of_run

    (args.class_index,) = classes_of_run(loaded, data, args.class_index, option="--class", single=True)
    images = load_images(data, loaded.spec, class_index=args.class_index, split=args.split)
    circuit = build_circuit(
        loaded.module,
        layers_from_args(args, loaded.spec),
        images,
        args.class_index,
        params,
        model_uid=loaded.uid,
        class_name=loaded.class_names[args.class_index] if args.class_index < len(loaded.class_names) else None,
        device=device,
        budget=budget_from_args(args),
        progress=not args.quiet,
    )
    print(json.dumps(circuit.summary(), indent=2))
    if args.out:
        path = circuit.save(args.out)
        print(f"saved to {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from neurflow.train import ensure_trained, read_sidecar

    path = ensure_trained(force=args.force)
    print(json.dumps({"weights": str(path), **(read_sidecar() or {})}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="neurflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("circuit", help="build one class's circuit and print a summary")
    add_model_args(p)
    add_method_args(p)
    p.add_argument("--class", dest="class_index", required=True,
                   help="class index or name (e.g. 238, Chihuahua or n02085620)")
    p.add_argument("--out", default=None, help="folder to save the circuit to (Parquet tables)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_circuit)

    p = sub.add_parser("train", help="train the demo model (fashion-cnn) if its weights are not cached")
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.set_defaults(func=cmd_train)

    for register in _extra_commands():
        register(sub)
    return parser


_COMMAND_MODULES = (
    ("ingest.ingest_cli", "add_ingest_commands"),
    ("ingest.store_cli", "add_store_commands"),
    ("ingest.evaluate_cli", "add_evaluate_commands"),
    ("ingest.debug_cli", "add_debug_commands"),
    ("ingest.label_cli", "add_label_commands"),
    ("app.app_cli", "add_app_commands"),
)


def _extra_commands() -> list[Callable]:
    """Commands from the store and app packages, registered when those packages are importable."""
    found = []
    for module, name in _COMMAND_MODULES:
        try:
            mod = __import__(module, fromlist=[name])
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but something it needs is missing
                raise
            continue
        found.append(getattr(mod, name))
    return found


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command under the error contract of neurflow/errors.py."""
    try:
        return int(args.func(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - classified; anything unknown is re-raised
        outcome = classify(exc)
        if outcome is None:  # a bug: keep the traceback
            raise
        code, line = outcome
        print(line, file=sys.stderr, flush=True)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2, one line printed): a status, for main(argv) callers
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_BAD_INPUT)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
