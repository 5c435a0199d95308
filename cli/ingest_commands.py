"""`neurflow ingest`: build the circuits of the classes a user asks for and write them to the store.

Everything a user can get wrong (model, weights, classes, data, layers, store) is checked before
the first write, so bad input leaves the store as it was.  The work itself is
`ingest.jobs.pipeline` (one class after the other here, `--executor local`) or
`ingest.jobs.ray_executor` (one Ray task per class, `--executor ray`); this module parses the
options and prints one table row per class.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from cli.options import add_method_args, add_model_args, budget_from_args, layers_from_args, params_from_args
from ingest.jobs.pipeline import ClassResult, IngestRequest
from neurflow.errors import NeurflowInputError


def parse_classes(text: str, num_classes: int) -> list[int]:
    """`all`, `0,3,7` or ranges like `2-5` -> sorted class indices, each checked against the model.

    Without the model's names and data (the store's classes, `neurflow label`); `resolve_run`
    also takes names and checks the data (`neurflow.classes.classes_of_run`)."""
    from neurflow.classes import placeholder_names, select_classes

    return select_classes(text, placeholder_names(num_classes))


def format_table(results: list[ClassResult]) -> str:
    head = ("class", "name", "action", "neurons", "relationships", "seconds")
    rows = [(str(r.class_index), r.class_name, r.action, str(r.neurons), str(r.relationships), f"{r.seconds:.1f}")
            for r in results]
    rows.append(("total", "", "", str(sum(r.neurons for r in results)),
                 str(sum(r.relationships for r in results)), f"{sum(r.seconds for r in results):.1f}"))
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def print_notes(results: list[ClassResult]) -> None:
    """What a user should know about a class's circuit that the table has no column for."""
    for r in results:
        for note in r.notes:
            print(f"note: class {r.class_index} ({r.class_name}): {note}", file=sys.stderr)


def resolve_run(args: argparse.Namespace, what: str = "images", *, device: str | None = None):
    """`(device, loaded model, class indices, data)` from the common options, all checked.

    `device` overrides `--device` (the Ray executor's driver checks the model on the CPU; the
    device of the work is the cluster's)."""
    from neurflow.models.registry import load_model, resolve_device

    device = resolve_device(args.device if device is None else device)
    loaded = load_model(args.model, args.weights, device=str(device), random_init=args.random_init,
                        class_names=getattr(args, "class_names", None))
    data = args.data or loaded.spec.default_data
    if data is None:
        raise NeurflowInputError(f"model {args.model!r} has no default dataset: pass --data FOLDER ({what})")
    from neurflow.datasets import classes_of_run

    classes = classes_of_run(loaded, data, args.classes)  # names, ranges, 'all' = the classes the data holds
    return device, loaded, classes, data


def preflight_run(loaded, data: str, classes: list[int], params, layers: list[str], *, split: str = "train"):
    """Check everything that needs only the model, the arguments and the data's first image of a
    class (`neurflow.method.preflight`: layers, tau against their channels, classes, the image
    channels the model takes) before any side effect: the embedded store is not started, no
    connection is opened, no image pass runs.  Returns one image of the first class."""
    from neurflow.datasets import load_images
    from neurflow.method import preflight

    example = load_images(data, loaded.spec, class_index=classes[0], split=split, limit=1)
    preflight(loaded.module, layers, example.pixels[:1], classes, params)
    return example


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.jobs.pipeline import ingest_classes
    from ingest.store.connect import open_store

    if args.executor == "ray":
        return cmd_ingest_ray(args)
    params = params_from_args(args)
    budget = budget_from_args(args)
    if args.write_batch is not None and args.write_batch < 1:
        raise NeurflowInputError(f"--write-batch must be at least 1, got {args.write_batch}")
    device, loaded, classes, data = resolve_run(args)
    layers = layers_from_args(args, loaded.spec)
    preflight_run(loaded, data, classes, params, layers, split=args.split)  # before the store starts
    request = IngestRequest(
        loaded, data, classes, params, layers, budget, split=args.split, device=device, force=args.force,
        save_dir=Path(args.save_circuits) if args.save_circuits else None, write_batch=args.write_batch,
    )
    with open_store() as store:
        results = ingest_classes(store, request, progress=not args.quiet)
    print(format_table(results))
    print_notes(results)
    return 0


def cmd_ingest_ray(args: argparse.Namespace) -> int:
    """The Ray driver: checks the model, the classes (one image each), the layers, the store and
    the options before any task runs; skips complete circuits; one Ray task per other class."""
    from ingest.jobs.ray_executor import ClassInputError, RayOptions, ingest_on_ray, pending_classes, require_ray
    from ingest.store.connect import open_store
    from neurflow.datasets import load_images
    from neurflow.method import preflight

    require_ray()
    options = RayOptions(address=args.ray_address, cpus=args.ray_cpus, task_cpus=args.ray_task_cpus,
                         task_gpus=args.ray_task_gpus, max_retries=args.ray_max_retries, device=args.device,
                         quiet=args.quiet)
    options.check()
    params = params_from_args(args)
    _, loaded, classes, data = resolve_run(args, device="cpu")  # the driver checks on the CPU
    example = None
    for c in classes:  # every class has data (an empty class folder fails here, not in a task)
        images = load_images(data, loaded.spec, class_index=c, split=args.split, limit=1)
        example = images.pixels[:1] if example is None else example
    layers = preflight(loaded.module, layers_from_args(args, loaded.spec), example, classes, params)  # as the circuits will have them
    request = IngestRequest(
        loaded, data, classes, params, layers, budget_from_args(args), split=args.split, force=args.force,
        save_dir=Path(args.save_circuits) if args.save_circuits else None, write_batch=args.write_batch,
    )  # device: the cluster's, chosen by ingest_on_ray from --device (options)
    with open_store() as store:  # reachable, right credentials and database; embedded: started here
        cfg = store.config
        skipped, todo = pending_classes(store, request)
    failed: list[str] = []
    results = list(skipped)
    if todo:
        try:
            done, failed = ingest_on_ray(cfg, replace(request, classes=todo), options)
        except ClassInputError as exc:
            if skipped or exc.results:
                print(format_table(sorted(skipped + exc.results, key=lambda r: r.class_index)))
            raise
        results = sorted(results + done, key=lambda r: r.class_index)
    print(format_table(results))
    print_notes(results)
    if failed:
        print(f"error: {len(failed)} of {len(classes)} classes failed after retries: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def add_ingest_commands(sub) -> None:
    from ingest.write.writer import DEFAULT_BATCH

    p = sub.add_parser("ingest", help="build circuits for classes and write them to the store")
    add_model_args(p)
    add_method_args(p)
    p.add_argument("--classes", default="all",
                   help="class indices, ranges, names or synset ids: 0,3,7 or 2-5 or Chihuahua,n07920052 or all "
                        "(= every class the data has images of)")
    p.add_argument("--force", action="store_true", help="rebuild circuits that are already complete")
    p.add_argument("--save-circuits", default=None, help="also save each circuit as Parquet under this folder")
    p.add_argument("--write-batch", type=int, default=DEFAULT_BATCH, help="rows per write transaction")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("distributed ingestion (--executor ray)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: classes one after the other in this process; ray: one Ray task per class")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster to use (ray://head:10001, head:6379, auto); default $RAY_ADDRESS, else a local Ray")
    g.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray started when there is no address (default: all)")
    g.add_argument("--ray-task-cpus", type=float, default=1.0, help="CPUs each class task asks for")
    g.add_argument("--ray-task-gpus", type=float, default=1.0,
                   help="GPUs each class task asks for when it runs on GPUs (a fraction like 0.25 packs tasks)")
    g.add_argument("--ray-max-retries", type=int, default=3,
                   help="retries per class after a worker death or a transient store error")
    p.set_defaults(func=cmd_ingest)
