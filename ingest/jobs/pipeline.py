"""Ingestion's unit of work: one class's circuit built and written, and the loop over classes.

An `IngestRequest` says what to ingest (model, data, classes, parameters, budget, write options).
`ingest_class` builds one class's circuit and writes it, retrying the write on transient store
errors; `ingest_classes` runs it class after class in this process (the local executor) and
`ingest.jobs.ray_executor` runs it as one Ray task per class.  Both executors import it from here; the
command line (`cli.ingest_commands`) only parses options and prints the table.

A class whose circuit (same identity: model, class, parameters, layers, data, precision, method
version) is already `complete` in the store is skipped unless `force` (`already_complete`, the one
skip check of both executors).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.store.config import artifact_dir

# Store errors that say "try again" (a race between concurrent writers, a deadlock, a server that
# went away for a moment): one definition, in ingest/store/runner.py, whose `Runner.execute` also
# retries a single transaction that lost such a race.
from ingest.store.runner import is_store_unreachable, is_transient_store_error  # noqa: F401 - re-exported (ray_executor, tests)
from ingest.write.writer import WriteOptions, circuit_status, write_circuit
from neurflow.circuit import Circuit, Params, circuit_uid


@dataclass
class ClassResult:
    class_index: int
    class_name: str
    action: str
    neurons: int = 0
    relationships: int = 0
    seconds: float = 0.0
    notes: tuple[str, ...] = ()  # e.g. images upscaled to the model input: printed under the table
    uid: str = ""  # the circuit written or found complete (what `neurflow demo` evaluates next)


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


def write_with_retries(store, circuit: Circuit, artifacts: Path, *, attempts: int = 6, **kwargs):
    """`write_circuit`, written again (after a jittered, growing pause) when a transient store error
    stops it: concurrent writers (other classes of a distributed ingestion, another process) race
    on the shared Model, Layer and Neuron nodes.  The writer cleans the partial circuit first.

    A server that is gone is not retried here: the driver already waited for it
    (`is_store_unreachable`), and the rerun finishes the circuit the failure left `running`."""
    for attempt in range(attempts):
        try:
            return write_circuit(store, circuit, artifacts, **kwargs)
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient_store_error(exc) or is_store_unreachable(exc):
                raise
            time.sleep(min(8.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class IngestRequest:
    """One ingestion as asked for: the model, the data and its classes, the method's parameters and
    budget, and how circuits are written.  Both executors take it (the local loop here, the Ray
    driver and its tasks), so these options are spelled once rather than in each executor's
    parameter list.  A Ray task receives it without the model (`model=None`: the weights travel
    once, as `ModelPayload`).  Defaults live where they are defined: the method's in `Params` and
    `Budget` (`budget=None` is `Budget()`), the command line's in cli/options.py, the write batch
    in the writer (`write_batch=None`)."""
    model: Any  # neurflow.models.registry.LoadedModel (None inside a Ray task until it is rebuilt)
    data: str
    classes: list[int]
    params: Params
    layers: list[str]
    budget: Any = None  # neurflow.method.Budget; None: Budget()
    split: str = "train"
    device: Any = "cpu"  # where the circuits are computed
    force: bool = False  # rebuild circuits that are already complete
    save_dir: Path | None = None  # also save each circuit as Parquet under this folder
    write_batch: int | None = None  # rows per write transaction; None: the writer's default

    def class_name(self, class_index: int) -> str:
        names = self.model.class_names
        return names[class_index] if class_index < len(names) else str(class_index)


def planned_uid(loaded, images, class_index: int, params: Params, layers: list[str], budget=None) -> str:
    """The uid the circuit of these images will have, known before it is built (the skip check):
    parameters, layers, data source, image fingerprint, precision and method version."""
    from neurflow.method import Budget, circuit_identity

    return circuit_uid(loaded.uid, class_index, circuit_identity(images, params, layers, budget or Budget()))


def already_complete(store, request: IngestRequest, class_index: int, images, layers: list[str]) -> str | None:
    """The skip check of both executors: the uid of this class's circuit when the store already has
    it `complete` (same identity: model, class, parameters, layers, data, precision, method
    version), else None; always None with `request.force`."""
    if request.force:
        return None
    uid = planned_uid(request.model, images, class_index, request.params, layers, request.budget)
    return uid if circuit_status(store, uid) == "complete" else None


def ingest_class(
    store,
    request: IngestRequest,
    class_index: int,
    *,
    artifacts: Path | None = None,
    on_phase=None,
    _stop_after: str | None = None,
) -> ClassResult:
    """Build one class's circuit and write it to `store`: the unit of work of every executor.

    A circuit that is already `complete` is skipped unless `request.force`.  `on_phase(phase,
    done, total)` reports progress ("writing" last).  `_stop_after` is the writer's testing hook
    (stop mid-write, leaving the circuit `running`)."""
    from neurflow.datasets import load_images
    from neurflow.method import Budget, RunOptions, build_circuit, resolve_layers

    c, loaded = class_index, request.model
    name = request.class_name(c)
    t0 = time.perf_counter()
    images = load_images(request.data, loaded.spec, class_index=c, split=request.split)
    layers = resolve_layers(loaded.module, request.layers, images.pixels[:1].to(loaded.device))[0]  # as the circuit will have them
    uid = already_complete(store, request, c, images, layers)
    if uid is not None:
        return ClassResult(c, name, "skipped (already complete)", uid=uid)
    artifacts = artifacts or artifact_dir(getattr(store, "cfg", None))
    circuit = build_circuit(
        loaded.module, layers, images, c, request.params, budget=request.budget or Budget(),
        run=RunOptions(model_uid=loaded.uid, class_name=name, device=request.device, progress=False, on_phase=on_phase),
    )
    if on_phase is not None:
        on_phase("writing", 0, 1)
    options = WriteOptions(**({"batch_size": request.write_batch} if request.write_batch else {}), stop_after=_stop_after)
    stats = write_with_retries(
        store, circuit, artifacts, force=request.force, model_info=model_info(loaded),
        thumbnails=thumbnail_source(circuit, images, loaded.spec), options=options,
    )
    if request.save_dir is not None:
        circuit.save(Path(request.save_dir) / f"class-{c}")
    return ClassResult(c, name, stats.action, len(circuit.neurons), stats.relationships, time.perf_counter() - t0,
                       tuple(circuit.notes), circuit.uid)


def ingest_classes(store, request: IngestRequest, *, progress: bool = True, artifacts: Path | None = None) -> list[ClassResult]:
    """Build and write one circuit per class of `request`, one after the other in this process
    (the local executor); returns one summary row per class."""
    from neurflow.progress import bars_wanted, tqdm

    artifacts = artifacts or artifact_dir(getattr(store, "cfg", None))
    classes = request.classes
    results: list[ClassResult] = []
    log_lines = progress and not bars_wanted()  # no terminal: one plain line per class instead of bars
    outer = tqdm(classes, desc="classes", unit="class", disable=not progress)
    for c in outer:
        name = request.class_name(c)
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
            results.append(ingest_class(store, request, c, artifacts=artifacts, on_phase=on_phase))
            if log_lines:
                r = results[-1]
                print(f"class {c} ({name}): {r.action}, {r.seconds:.1f} s ({len(results)}/{len(classes)})",
                      file=sys.stderr, flush=True)
        finally:
            bar.close()
    return results
