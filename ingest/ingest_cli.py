"""`neurflow ingest`: build the circuits of the classes a user asks for and write them to the store.

Everything a user can get wrong (model, weights, classes, data, store) is checked before the
first write, so bad input leaves the store as it was.  A class whose circuit (same model,
class and parameters) is already `complete` in the store is skipped unless `--force`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from ingest.config import artifact_dir
from neurflow.circuit import Circuit, Params
from neurflow.errors import NeurflowInputError


def parse_classes(text: str, num_classes: int) -> list[int]:
    """`all`, `0,3,7` or ranges like `2-5` -> sorted class indices, each checked against the model."""
    text = text.strip().lower()
    if text == "all":
        return list(range(num_classes))
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out.update(range(int(a), int(b) + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise NeurflowInputError(f"--classes: {part!r} is not a class index, a range like 2-5, or 'all'") from None
    if not out:
        raise NeurflowInputError("--classes is empty: give indices like 0,3,7 or 'all'")
    bad = sorted(c for c in out if not 0 <= c < num_classes)
    if bad:
        raise NeurflowInputError(f"class index {bad[0]} out of range: the model has classes 0..{num_classes - 1}")
    return sorted(out)


@dataclass
class ClassResult:
    class_index: int
    class_name: str
    action: str
    neurons: int = 0
    relationships: int = 0
    seconds: float = 0.0


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
    """Build and write one circuit per class; returns one summary row per class."""
    from tqdm.auto import tqdm

    from ingest.writer import circuit_status, write_circuit
    from neurflow.datasets import load_images
    from neurflow.method import Budget, build_circuit

    artifacts = artifacts or artifact_dir(getattr(store, "cfg", None))
    results: list[ClassResult] = []
    outer = tqdm(classes, desc="classes", unit="class", disable=not progress)
    for c in outer:
        name = loaded.class_names[c] if c < len(loaded.class_names) else str(c)
        outer.set_postfix_str(f"{c} {name}")
        uid = f"{loaded.uid}/{c}/{params.hash()}"
        if not force and circuit_status(store, uid) == "complete":
            results.append(ClassResult(c, name, "skipped (already complete)"))
            continue
        t0 = time.perf_counter()
        images = load_images(data, loaded.spec, class_index=c, split=split)
        bar = tqdm(total=1, desc="  phase", leave=False, disable=not progress)
        current = [""]

        def on_phase(phase: str, done: int, total: int) -> None:
            if phase != current[0]:
                current[0] = phase
                bar.reset(total=total)
                bar.set_description(f"  {phase}")
            bar.n = done
            bar.refresh()

        circuit = build_circuit(
            loaded.module, layers, images, c, params, model_uid=loaded.uid, class_name=name, device=device,
            budget=budget or Budget(), progress=False, on_phase=on_phase,
        )
        bar.set_description("  writing")
        stats = write_circuit(
            store, circuit, artifacts, force=force, model_info=model_info(loaded),
            thumbnails=thumbnail_source(circuit, images, loaded.spec),
            **({"batch_size": write_batch} if write_batch else {}),
        )
        bar.close()
        if save_dir is not None:
            circuit.save(Path(save_dir) / f"class-{c}")
        results.append(
            ClassResult(c, name, stats.action, len(circuit.neurons), stats.relationships, time.perf_counter() - t0)
        )
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


def resolve_run(args: argparse.Namespace, what: str = "images"):
    """`(device, loaded model, class indices, data)` from the common options, all checked."""
    from neurflow.models.registry import load_model, resolve_device

    device = resolve_device(args.device)
    loaded = load_model(args.model, args.weights, device=str(device), random_init=args.random_init)
    classes = parse_classes(args.classes, len(loaded.class_names))
    data = args.data or loaded.spec.default_data
    if data is None:
        raise NeurflowInputError(f"model {args.model!r} has no default dataset: pass --data FOLDER ({what})")
    return device, loaded, classes, data


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.store import open_store
    from neurflow.cli import budget_from_args, layers_from_args, params_from_args
    from neurflow.datasets import load_images

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
    return 0


def add_ingest_commands(sub) -> None:
    from neurflow.cli import add_method_args, add_model_args

    p = sub.add_parser("ingest", help="build circuits for classes and write them to the store")
    add_model_args(p)
    add_method_args(p)
    p.add_argument("--classes", default="all", help="class indices: 0,3,7 or 2-5 or all")
    p.add_argument("--force", action="store_true", help="rebuild circuits that are already complete")
    p.add_argument("--save-circuits", default=None, help="also save each circuit as Parquet under this folder")
    p.add_argument("--write-batch", type=int, default=None, help="rows per write transaction (default 5000)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_ingest)
