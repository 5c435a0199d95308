"""`neurflow ingest`: build the circuits of the classes a user asks for and write them to the store.

Everything a user can get wrong (model, weights, classes, data, store) is checked before the
first write, so bad input leaves the store as it was.  A class whose circuit (same model,
class and parameters) is already `complete` in the store is skipped unless `--force`.

`ingest_class` is the unit of work (one class: build, write, retry the write on transient store
errors); `ingest_classes` runs it class after class in this process (`--executor local`), and
`ingest.ray_executor` runs it as one Ray task per class (`--executor ray`).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ingest.config import artifact_dir
from neurflow.circuit import Circuit, Identity, Params, circuit_uid, data_fingerprint
from neurflow.errors import NeurflowInputError


def parse_classes(text: str, num_classes: int) -> list[int]:
    """`all`, `0,3,7` or ranges like `2-5` -> sorted class indices, each checked against the model.

    Without the model's names and data (the store's classes, `neurflow label`); `resolve_run`
    also takes names and checks the data (`neurflow.classes.classes_of_run`)."""
    from neurflow.classes import placeholder_names, select_classes

    return select_classes(text, placeholder_names(num_classes))


@dataclass
class ClassResult:
    class_index: int
    class_name: str
    action: str
    neurons: int = 0
    relationships: int = 0
    seconds: float = 0.0
    notes: tuple[str, ...] = ()  # e.g. images upscaled to the model input: printed under the table


def model_info(loaded) -> dict:
    spec = loaded.spec
    return {
        "name": spec.name,
        "arch": spec.arch,
        "weights_sha256": loaded.weights_sha256,
        "num_classes": len(loaded.class_names),
        "input_size": spec.input_size,
    }


def thumbnail_source(circuit: Circuit, images, spec):
    """crop id -> PIL picture of the crop, from the pixels the circuit was built on."""
    from neurflow.images import crop_picture

    by_sha = {sha: i for i, sha in enumerate(images.sha256)}
    crops = {c.crop_id: c for c in circuit.crops}

    def picture(crop_id: int):
        crop = crops[crop_id]
        pixels = images.pixels[by_sha[circuit.images[crop.image_id].sha256]]
        return crop_picture(pixels, (crop.x0, crop.y0, crop.x1, crop.y1), spec.mean, spec.std)

    return picture


# Store errors that say "try again": a race between concurrent writers (ArcadeDB reports a MERGE
# that lost the race on a unique index as a duplicated key, or a concurrent modification of the
# same record), a deadlock, or a server that went away for a moment.  The writer is idempotent, so
# writing the circuit again is safe.
_TRANSIENT_MARKERS = (
    "duplicated key", "concurrentmodification", "concurrent modification", "deadlock", "transienterror",
    "neo.transienterror", "lock acquisition", "locked by",
)  # fmt: skip


def is_transient_store_error(exc: BaseException) -> bool:
    """True for store errors worth retrying: unreachable server, write conflicts, deadlocks."""
    from neo4j import exceptions as nx

    from ingest.errors import StoreQueryError, StoreUnavailable

    if isinstance(exc, (StoreUnavailable, nx.ServiceUnavailable, nx.SessionExpired, nx.TransientError)):
        return True
    if isinstance(exc, (StoreQueryError, nx.Neo4jError)):
        text = " ".join(str(exc).split()).lower()
        return any(marker in text for marker in _TRANSIENT_MARKERS)
    return False


def write_with_retries(store, circuit: Circuit, artifacts: Path, *, attempts: int = 6, **kwargs):
    """`write_circuit`, written again (after a jittered, growing pause) when a transient store error
    stops it: concurrent writers (other classes of a distributed ingestion, another process) race
    on the shared Model, Layer and Neuron nodes.  The writer cleans the partial circuit first."""
    from ingest.writer import write_circuit

    for attempt in range(attempts):
        try:
            return write_circuit(store, circuit, artifacts, **kwargs)
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient_store_error(exc):
                raise
            time.sleep(min(8.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def planned_uid(loaded, images, class_index: int, params: Params, layers: list[str], budget=None) -> str:
    """The uid the circuit of these images will have, known before it is built (the skip check):
    parameters, layers, data source, image fingerprint, precision and method version."""
    from neurflow.method import Budget

    identity = Identity(params, tuple(layers), images.origin, data_fingerprint(images.sha256), (budget or Budget()).precision)
    return circuit_uid(loaded.uid, class_index, identity)


def ingest_class(
    store,
    loaded,
    data: str,
    class_index: int,
    params: Params,
    *,
    layers: list[str],
    split: str = "train",
    device="cpu",
    budget=None,
    force: bool = False,
    artifacts: Path | None = None,
    save_dir: Path | None = None,
    write_batch: int | None = None,
    on_phase=None,
    _stop_after: str | None = None,
) -> ClassResult:
    """Build one class's circuit and write it to `store`: the unit of work of every executor.

    A circuit that is already `complete` (same model, class and parameters) is skipped unless
    `force`.  `on_phase(phase, done, total)` reports progress ("writing" last).  `_stop_after`
    is the writer's testing hook (stop mid-write, leaving the circuit `running`)."""
    from ingest.writer import circuit_status
    from neurflow.datasets import load_images
    from neurflow.method import Budget, build_circuit, resolve_layers

    c = class_index
    name = loaded.class_names[c] if c < len(loaded.class_names) else str(c)
    t0 = time.perf_counter()
    images = load_images(data, loaded.spec, class_index=c, split=split)
    layers = resolve_layers(loaded.module, layers, images.pixels[:1].to(loaded.device))[0]  # as the circuit will have them
    if not force and circuit_status(store, planned_uid(loaded, images, c, params, layers, budget)) == "complete":
        return ClassResult(c, name, "skipped (already complete)")
    artifacts = artifacts or artifact_dir(getattr(store, "cfg", None))
    circuit = build_circuit(
        loaded.module, layers, images, c, params, model_uid=loaded.uid, class_name=name, device=device,
        budget=budget or Budget(), progress=False, on_phase=on_phase,
    )
    if on_phase is not None:
        on_phase("writing", 0, 1)
    stats = write_with_retries(
        store, circuit, artifacts, force=force, model_info=model_info(loaded),
        thumbnails=thumbnail_source(circuit, images, loaded.spec),
        **({"batch_size": write_batch} if write_batch else {}),
        **({"_stop_after": _stop_after} if _stop_after else {}),
    )
    if save_dir is not None:
        circuit.save(Path(save_dir) / f"class-{c}")
    return ClassResult(c, name, stats.action, len(circuit.neurons), stats.relationships, time.perf_counter() - t0,
                       tuple(circuit.notes))


def ingest_classes(
    store,
    loaded,
    data: str,
    classes: list[int],
    params: Params,
    *,
    layers: list[str],
    split: str = "train",
    device="cpu",
    budget=None,
    force: bool = False,
    progress: bool = True,
    artifacts: Path | None = None,
    save_dir: Path | None = None,
    write_batch: int | None = None,
) -> list[ClassResult]:
    """Build and write one circuit per class, one after the other in this process (the local
    executor); returns one summary row per class."""
    from neurflow.progress import bars_wanted, tqdm

    artifacts = artifacts or artifact_dir(getattr(store, "cfg", None))
    results: list[ClassResult] = []
    log_lines = progress and not bars_wanted()  # no terminal: one plain line per class instead of bars
    outer = tqdm(classes, desc="classes", unit="class", disable=not progress)
    for c in outer:
        name = loaded.class_names[c] if c < len(loaded.class_names) else str(c)
        outer.set_postfix_str(f"{c} {name}")
        bar = tqdm(total=1, desc="  phase", leave=False, disable=not progress)
        current = [""]

        def on_phase(phase: str, done: int, total: int) -> None:
            if phase != current[0]:
                current[0] = phase
                bar.reset(total=total)
                bar.set_description(f"  {phase}")
            bar.n = done
            bar.refresh()

        try:
            results.append(
                ingest_class(
                    store, loaded, data, c, params, layers=layers, split=split, device=device, budget=budget,
                    force=force, artifacts=artifacts, save_dir=save_dir, write_batch=write_batch, on_phase=on_phase,
                )
            )
            if log_lines:
                r = results[-1]
                print(f"class {c} ({name}): {r.action}, {r.seconds:.1f} s ({len(results)}/{len(classes)})",
                      file=sys.stderr, flush=True)
        finally:
            bar.close()
    return results


def format_table(results: list[ClassResult]) -> str:
    head = ("class", "name", "action", "neurons", "relationships", "seconds")
    rows = [(str(r.class_index), r.class_name, r.action, str(r.neurons), str(r.relationships), f"{r.seconds:.1f}")
            for r in results]
    rows.append(("total", "", "", str(sum(r.neurons for r in results)),
                 str(sum(r.relationships for r in results)), f"{sum(r.seconds for r in results):.1f}"))
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


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
    from neurflow.classes import classes_of_run

    classes = classes_of_run(loaded, data, args.classes)  # names, ranges, 'all' = the classes the data holds
    return device, loaded, classes, data


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.store import open_store
    from neurflow.cli import budget_from_args, layers_from_args, params_from_args
    from neurflow.datasets import load_images

    if getattr(args, "executor", "local") == "ray":
        from ingest.ray_executor import cmd_ingest_ray

        return cmd_ingest_ray(args)
    params = params_from_args(args)
    device, loaded, classes, data = resolve_run(args)
    load_images(data, loaded.spec, class_index=classes[0], split=args.split, limit=1)  # fail before writing
    with open_store() as store:
        results = ingest_classes(
            store, loaded, data, classes, params, layers=layers_from_args(args, loaded.spec), split=args.split,
            device=device, budget=budget_from_args(args), force=args.force, progress=not args.quiet,
            save_dir=Path(args.save_circuits) if args.save_circuits else None, write_batch=args.write_batch,
        )
    print(format_table(results))
    print_notes(results)
    return 0


def print_notes(results: list[ClassResult]) -> None:
    """What a user should know about a class's circuit that the table has no column for."""
    for r in results:
        for note in r.notes:
            print(f"note: class {r.class_index} ({r.class_name}): {note}", file=sys.stderr)


def add_ingest_commands(sub) -> None:
    from neurflow.cli import add_method_args, add_model_args

    p = sub.add_parser("ingest", help="build circuits for classes and write them to the store")
    add_model_args(p)
    add_method_args(p)
    p.add_argument("--classes", default="all",
                   help="class indices, ranges, names or synset ids: 0,3,7 or 2-5 or Chihuahua,n07920052 or all "
                        "(= every class the data has images of)")
    p.add_argument("--force", action="store_true", help="rebuild circuits that are already complete")
    p.add_argument("--save-circuits", default=None, help="also save each circuit as Parquet under this folder")
    p.add_argument("--write-batch", type=int, default=None, help="rows per write transaction (default 5000)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("distributed ingestion (--executor ray)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: classes one after the other in this process (default); ray: one Ray task per class")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster to use (ray://head:10001, head:6379, auto); default $RAY_ADDRESS, else a local Ray")
    g.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray started when there is no address (default: all)")
    g.add_argument("--ray-task-cpus", type=float, default=1.0, help="CPUs each class task asks for (default 1)")
    g.add_argument("--ray-task-gpus", type=float, default=1.0,
                   help="GPUs each class task asks for when it runs on GPUs (a fraction like 0.25 packs tasks; default 1)")
    g.add_argument("--ray-max-retries", type=int, default=3,
                   help="retries per class after a worker death or a transient store error (default 3)")
    p.set_defaults(func=cmd_ingest)
