"""`neurflow evaluate`: faithfulness numbers (spec §11) of stored circuits, into the store and a report.

    neurflow evaluate --model fashion-resnet --classes all [--draws 5 --seed 0 --out report/]

For each class, the latest complete circuit (or the one of `--params HASH`) is read back from
the store (critical sets from INCLUDES, core sets and importances from FEEDS), evaluated on
held-out images of the class (`--split test` of the model's data set), and its numbers are
MERGEd as `Evaluation` nodes under the Circuit.  `--out` gets evaluations.csv/.json,
summary.csv/.json (class averages) and PNG plots.  Everything checkable is checked before the
first computation; bad input is one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurflow.errors import NeurflowInputError


def settings_from_args(args: argparse.Namespace):
    from neurflow.evaluation import EvalSettings

    try:
        sizes = tuple(int(s) for s in args.edge_sizes.split(",") if s.strip())
    except ValueError:
        raise NeurflowInputError(f"--edge-sizes must be comma-separated integers, got {args.edge_sizes!r}") from None
    return EvalSettings(
        draws=args.draws, seed=args.seed, test_images=args.test_images, crop_images=args.crop_images,
        opt_neurons=args.opt_neurons, opt_random=args.opt_random, edge_sizes=sizes, edge_sets=args.edge_sets,
        ig_steps=args.ig_steps, batch_rows=args.batch_rows,
    ).validate()


def cmd_evaluate(args: argparse.Namespace) -> int:

    rows = run_evaluate(args)
    return 0 if rows is not None else 1


def run_evaluate(args: argparse.Namespace) -> list[dict]:
    from ingest.jobs.evaluations import (
        HeldOut, evaluate_stored, export, format_summary, read_evaluations, save_plots, stored_circuits, summary_table,
    )  # fmt: skip
    from cli.ingest_commands import resolve_run
    from ingest.store.connect import open_store
    from neurflow.evaluation import KINDS

    settings = settings_from_args(args)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise NeurflowInputError(f"--kinds: unknown kind {bad[0] if bad else '(none)'!r}; use {', '.join(KINDS)}")
    device, loaded, classes, data = resolve_run(args, "held-out images")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise NeurflowInputError(f"--out {out} exists and is not a folder")
    with open_store() as store:
        circuits = stored_circuits(store, loaded.uid, classes, args.params, loaded.class_names)  # every class checked before work
        evaluate_stored(store, loaded, HeldOut(data, args.split), circuits, settings, kinds=kinds, device=device,
                        on_class=None if args.quiet else (lambda line: print(line, flush=True)))
        stored = [r for r in read_evaluations(store, loaded.uid, args.params) if int(r["class_index"]) in classes]
    print(format_summary(summary_table(stored)))
    if out is not None:
        paths = export(stored, out) + save_plots(stored, out, per_class=not args.no_class_plots)
        print(f"wrote {len(paths)} files to {out}")
    return stored


def add_evaluate_commands(sub) -> None:
    from cli.options import add_model_args
    from neurflow.evaluation import EDGE_SIZES, EvalSettings

    d = EvalSettings()
    p = sub.add_parser("evaluate", help="faithfulness of stored circuits (fidelity, optimality, edge weights)")
    add_model_args(p)
    p.set_defaults(split="test")
    p.add_argument("--classes", default="all", help="class indices: 0,3,7 or 2-5 or all")
    p.add_argument("--params", default=None, help="parameter hash of the circuits (default: latest per class)")
    p.add_argument("--kinds", default="fidelity,optimality,edge_weight", help="which evaluations to run")
    p.add_argument("--draws", type=int, default=d.draws, help="random sets per fidelity measurement")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--test-images", type=int, default=d.test_images, help="held-out images per class (fidelity)")
    p.add_argument("--crop-images", type=int, default=d.crop_images, help="held-out images whose crops form D")
    p.add_argument("--opt-neurons", type=int, default=d.opt_neurons, help="sampled critical neurons per layer")
    p.add_argument("--opt-random", type=int, default=d.opt_random, help="random core-sized sets per sampled neuron")
    p.add_argument("--edge-sizes", default=",".join(str(s) for s in EDGE_SIZES), help="sizes of the masked random sets")
    p.add_argument("--edge-sets", type=int, default=d.edge_sets, help="random sets per size (the paper: 500)")
    p.add_argument("--ig-steps", type=int, default=None, help="IG steps for non-core importances (default: the circuit's)")
    p.add_argument("--batch-rows", type=int, default=d.batch_rows, help="rows per masked forward pass (memory knob)")
    p.add_argument("--out", default=None, help="folder for CSV, JSON and PNG plots")
    p.add_argument("--no-class-plots", action="store_true", help="only the class-averaged plots")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)
