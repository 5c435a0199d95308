"""`neurflow ingest --executor ray`: one Ray task per class, each writing its circuit to the shared store.

The driver (the process that runs `neurflow ingest`) does everything a user can get wrong first,
before any task exists: model and weights, class list, data of every class, layer list, store
(reachable), the device against the cluster's resources.  Bad input is one
`error:` line and exit status 2, with no task started and nothing written.  Then:

- the model's weights go into Ray's object store once (`ModelPayload`: spec, uid, weights hash,
  class names, state dict), so workers need neither the weights file nor the training cache;
- classes whose circuit is already `complete` are skipped in the driver (unless `--force`);
- one task per remaining class (`run_class`) asks for `--ray-task-cpus` CPUs, and
  `--ray-task-gpus` GPUs (1 or a fraction) when the cluster has GPUs and `--device` is `auto`
  or `cuda`; it rebuilds the model from the payload, runs `ingest.jobs.pipeline.ingest_class`
  (the local executor's per-class work) and writes to the store named by the driver's
  `StoreConfig` over Bolt (the embedded server is started by the driver and listens on
  127.0.0.1, so its workers must be on the same machine; a cluster uses Neo4j);
- retries: a worker that dies (SIGKILL, OOM, lost node) is retried by Ray (`max_retries`); a
  transient store error (server unreachable, write conflict between concurrent writers,
  deadlock) is retried first inside the task (the write only) and then by Ray
  (`retry_exceptions=[TransientStoreError]`, the whole class); a user-input error
  (`NeurflowInputError`) is never retried: the other tasks are cancelled and the command fails
  with that one line.  The writer is idempotent and crash-safe, so a retried class leaves
  exactly one `complete` circuit;
- the driver waits with `ray.wait`, draws one progress bar over classes and prints the same
  summary table as the local executor.  A class that still fails after its retries is a
  `failed (...)` row, an `error:` line and exit status 1.

`ray` is imported lazily: the project works without it, and `--executor ray` without it is a
one-line error.

Fault injection (tests, drills) — environment of the tasks, forwarded by the driver:

- ``NEURFLOW_RAY_FAULT_DIR``: a folder; every task attempt appends a line to
  ``class-<c>.attempts`` there.
- ``NEURFLOW_RAY_KILL_CLASSES``: comma-separated class indices (needs the folder).  The first
  attempt of each of these classes writes part of its circuit (stops after the first FEEDS
  batch, leaving it `running`), leaves the marker ``class-<c>.killed`` and SIGKILLs its own
  worker process; Ray retries the class and the retry cleans the partial circuit.
- ``NEURFLOW_RAY_STORE_ERROR_CLASSES``: likewise, the first attempt of these classes raises
  `TransientStoreError` at once (marker ``class-<c>.store-error``), as a store outage would;
  Ray retries the class (`retry_exceptions`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ingest.jobs.pipeline import ClassResult, IngestRequest, already_complete, ingest_class, is_transient_store_error
from ingest.queries.jobs import classes_with_complete
from ingest.store.config import artifact_dir
from ingest.store.connection import Store
from ingest.store.errors import StoreError
from ingest.store.logs import route_driver_logs
from ingest.store.schema import ensure_schema
from neurflow.errors import NeurflowInputError

FAULT_DIR_ENV = "NEURFLOW_RAY_FAULT_DIR"
KILL_CLASSES_ENV = "NEURFLOW_RAY_KILL_CLASSES"
STORE_ERROR_CLASSES_ENV = "NEURFLOW_RAY_STORE_ERROR_CLASSES"
_FORWARDED_ENV = (FAULT_DIR_ENV, KILL_CLASSES_ENV, STORE_ERROR_CLASSES_ENV, "NEURFLOW_LOG_FILE")


class TransientStoreError(StoreError):
    """A store error that is worth running the class again for (Ray `retry_exceptions`)."""


def require_ray():
    """The `ray` module, or a one-line `NeurflowInputError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise NeurflowInputError(
            "--executor ray needs Ray, which is not installed: pip install 'neurflow-store[ray]' (ray==2.60.0)"
        ) from None
    return ray


# --------------------------------------------------------------------------- what travels to the tasks
@dataclass
class ModelPayload:
    """The driver's loaded model, as it travels through Ray's object store (weights on the CPU)."""
    spec: Any  # neurflow.models.registry.ModelSpec
    uid: str
    weights_sha256: str | None
    class_names: list[str]
    state: dict[str, Any]  # state dict, CPU tensors

    @classmethod
    def from_loaded(cls, loaded) -> "ModelPayload":
        state = {k: v.detach().to("cpu") for k, v in loaded.module.state_dict().items()}
        return cls(loaded.spec, loaded.uid, loaded.weights_sha256, list(loaded.class_names), state)

    def load(self, device: str):
        """The same model as the driver's (same spec, same weights, same uid) on `device`."""
        from neurflow.models.registry import LoadedModel, build_model

        module = build_model(self.spec.name, self.spec.num_classes)
        module.load_state_dict(self.state, strict=True)
        return LoadedModel(self.spec, module.to(device).eval(), self.uid, self.weights_sha256, list(self.class_names))


@dataclass(frozen=True)
class ClassJob:
    """Everything a task needs besides the model, the store and its class index: the driver's
    request without the model (`request.model` is None; its `device` is "cpu" or "cuda", the GPU
    Ray assigned to the task, and its `save_dir` an absolute path)."""
    request: IngestRequest
    artifacts: str
    threads: int = 1
    env: dict[str, str] = field(default_factory=dict)  # fault-injection settings of the driver


# --------------------------------------------------------------------------- the task
def _first_time(folder: Path, name: str) -> bool:
    """True for the one caller that creates `folder/name` (so only a class's first attempt is hit)."""
    try:
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _fault_plan(class_index: int, env: dict[str, str]) -> str | None:
    """Log this attempt; 'kill' or 'store-error' when this attempt must fail (fault injection)."""
    folder = env.get(FAULT_DIR_ENV)
    if not folder:
        return None
    folder_path = Path(folder)
    folder_path.mkdir(parents=True, exist_ok=True)
    with open(folder_path / f"class-{class_index}.attempts", "a") as fh:
        fh.write(f"pid {os.getpid()} at {time.time():.3f}\n")

    def listed(name: str) -> bool:
        return str(class_index) in {p.strip() for p in env.get(name, "").split(",")}

    if listed(KILL_CLASSES_ENV) and _first_time(folder_path, f"class-{class_index}.killed"):
        return "kill"
    if listed(STORE_ERROR_CLASSES_ENV) and _first_time(folder_path, f"class-{class_index}.store-error"):
        return "store-error"
    return None


def run_class(payload: ModelPayload, store_config, job: ClassJob, class_index: int):
    """One class in a Ray worker: model from the payload, `ingest_class`, write to the shared store."""
    import torch


    env = {**{k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}, **job.env}

    route_driver_logs({**os.environ, **env})  # the driver's retry warnings: the log file, not the driver's terminal
    fault = _fault_plan(class_index, env)
    if fault == "store-error":  # fault injection: the store is away for a moment
        raise TransientStoreError(f"fault injection: store unavailable for class {class_index}")
    die = fault == "kill"
    torch.set_num_threads(max(1, job.threads))
    request = replace(job.request, model=payload.load(job.request.device))
    try:
        with Store(store_config) as store:
            result = ingest_class(
                store, request, class_index, artifacts=Path(job.artifacts), _stop_after="feeds:first" if die else None,
            )  # fmt: skip
            if die:  # fault injection: a worker that dies in the middle of writing its circuit
                os.kill(os.getpid(), signal.SIGKILL)
    except Exception as exc:
        if is_transient_store_error(exc):
            raise TransientStoreError(" ".join(str(exc).split())) from None
        raise
    return result


# --------------------------------------------------------------------------- the driver
def _task_device(requested: str, cluster_gpus: float) -> str:
    """'cpu' or 'cuda' for the tasks, from `--device` and the cluster's GPUs."""
    text = (requested or "auto").strip().lower()
    if text == "auto":
        return "cuda" if cluster_gpus > 0 else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "cuda" or text.startswith("cuda:"):
        if cluster_gpus <= 0:
            raise NeurflowInputError(f"--device {requested}: the Ray cluster has no GPUs; use --device cpu or auto")
        return "cuda"  # Ray gives each task its own CUDA_VISIBLE_DEVICES: the task's GPU is cuda:0
    raise NeurflowInputError(f"--device {requested!r} is not supported with --executor ray: use auto, cpu or cuda")


@dataclass(frozen=True)
class RayOptions:
    """Where and how the classes run on Ray (the command line's ``--ray-*`` options)."""
    address: str | None = None  # None: a new local cluster (never someone else's)
    cpus: int | None = None  # CPUs of that local cluster
    task_cpus: float = 1.0
    task_gpus: float = 1.0
    max_retries: int = 3
    device: str = "auto"  # auto / cpu / cuda: where a task computes
    quiet: bool = False

    def check(self) -> None:
        if self.cpus is not None and self.cpus < 1:
            raise NeurflowInputError(f"--ray-cpus must be at least 1, got {self.cpus}")
        if not self.task_cpus > 0:
            raise NeurflowInputError(f"--ray-task-cpus must be positive, got {self.task_cpus}")
        if not 0 < self.task_gpus <= 1 and not (self.task_gpus > 1 and float(self.task_gpus).is_integer()):
            raise NeurflowInputError(f"--ray-task-gpus must be a fraction in (0, 1] or a whole number, got {self.task_gpus}")
        if self.max_retries < 0:
            raise NeurflowInputError(f"--ray-max-retries must be 0 or more, got {self.max_retries}")
        _task_device(self.device, 1.0)  # spelling only; GPUs are checked against the cluster


class ClassInputError(NeurflowInputError):
    """A user error found by a class's task (never retried); `results` holds the classes done before."""
    def __init__(self, message: str, results: list):
        super().__init__(message)
        self.results = results


def _largest_node(ray, resource: str) -> float:
    return max((float(n.get("Resources", {}).get(resource, 0.0)) for n in ray.nodes() if n.get("Alive")), default=0.0)


def _probe(address: str) -> None:
    """Fail fast on a `host:port` / `ray://host:port` nobody listens on (Ray itself waits minutes, then exits)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto', 'local', or a form Ray will judge
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5):
            pass
    except OSError as exc:
        raise NeurflowInputError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or type(exc).__name__}): check --ray-address / RAY_ADDRESS"
        ) from None


def _start_ray(ray, address: str | None, options: RayOptions) -> None:
    quiet = dict(logging_level=logging.ERROR, log_to_driver=not options.quiet)
    if address:
        _probe(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:  # always a new local cluster (never someone else's), stopped by ray.shutdown()
            ray.init(address="local", num_cpus=options.cpus, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError, SystemExit) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise NeurflowInputError(f"cannot start or join {where}: {' '.join(str(exc).split()) or type(exc).__name__}") from None


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    text = lines[-1].strip() if lines else ""
    return f"{type(cause).__name__}: {text}"[:200] if text else type(cause).__name__


def pending_classes(store, request: IngestRequest) -> tuple[list[ClassResult], list[int]]:
    """`(skipped rows, classes to build)`: a class whose circuit is already complete is skipped
    (`already_complete`, the local executor's check; `request.layers` as preflight resolved them).

    A class's images are read here (for their fingerprint) only when the class has complete
    circuits at all: a first ingestion of 1,000 classes reads no image twice, and a broken image
    is found by its task (one line, not retried)."""
    from neurflow.datasets import load_images

    loaded, classes = request.model, request.classes
    done = set() if request.force else classes_with_complete(store, loaded.uid, classes)
    skipped, todo = [], []
    for c in classes:
        images = load_images(request.data, loaded.spec, class_index=c, split=request.split) if c in done else None
        if images is not None and already_complete(store, request, c, images, request.layers) is not None:
            skipped.append(ClassResult(c, request.class_name(c), "skipped (already complete)"))
        else:
            todo.append(c)
    return skipped, todo


def ingest_on_ray(store_config, request: IngestRequest, options: RayOptions = RayOptions()) -> tuple[list[ClassResult], list[str]]:
    """Build and write `request.classes` as one Ray task each; `(one row per class, failures)`.

    The model, the layers and the store were checked by the caller.  Workers that die and
    transient store errors are retried (`options.max_retries`); a user error found by a task
    stops everything (`ClassInputError`, with the rows of the classes done before)."""
    from neurflow.progress import tqdm

    ray = require_ray()
    options.check()
    classes = request.classes
    names = {c: request.class_name(c) for c in classes}
    results: list[ClassResult] = []
    failed: list[str] = []
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    _start_ray(ray, address, options)
    try:
        if store_config.embedded and sum(1 for n in ray.nodes() if n.get("Alive")) > 1:
            print(f"note: the embedded store listens on {store_config.uri}; Ray workers on other machines cannot reach it "
                  "(use Neo4j: NEURFLOW_STORE_URI)", file=sys.stderr)  # fmt: skip
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        device = _task_device(options.device, gpus)
        num_gpus = float(options.task_gpus) if device == "cuda" else 0.0
        for resource, need, option in (("CPU", float(options.task_cpus), "--ray-task-cpus"), ("GPU", num_gpus, "--ray-task-gpus")):
            largest = _largest_node(ray, resource)
            if need and largest < need:
                message = f"{option} {need:g}: no node of the Ray cluster has that many {resource}s (largest: {largest:g})"
                if not address:  # our own local cluster will never grow
                    raise NeurflowInputError(message)
                print(f"note: {message}; the tasks wait until such a node joins (autoscaler)", file=sys.stderr)
        job = ClassJob(
            request=replace(request, model=None, data=str(request.data), device=device,
                            save_dir=Path(request.save_dir).resolve() if request.save_dir else None),
            artifacts=str(artifact_dir(store_config)), threads=max(1, int(options.task_cpus)),
            env={k: os.environ[k] for k in _FORWARDED_ENV if os.environ.get(k)},
        )  # fmt: skip
        with Store(store_config) as store:  # the constraints exist before concurrent tasks MERGE (nothing is written before)
            ensure_schema(store)
        payload = ray.put(ModelPayload.from_loaded(request.model))
        config = ray.put(store_config)
        task = ray.remote(run_class).options(
            num_cpus=options.task_cpus, num_gpus=num_gpus, max_retries=options.max_retries,
            retry_exceptions=[TransientStoreError], name="neurflow-ingest-class",
        )  # fmt: skip
        pending = {task.remote(payload, config, job, c): c for c in classes}
        bar = tqdm(total=len(classes), desc="classes", unit="class", disable=options.quiet)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    c = pending.pop(ref)
                    try:
                        results.append(ray.get(ref))
                    except Exception as exc:  # noqa: BLE001 - classified below
                        cause = getattr(exc, "cause", None) or exc
                        if isinstance(cause, NeurflowInputError):  # never retried: stop everything
                            for other in pending:
                                try:
                                    ray.cancel(other)
                                except Exception:  # noqa: BLE001 - finished meanwhile
                                    pass
                            pending.clear()
                            raise ClassInputError(f"class {c} ({names[c]}): {' '.join(str(cause).split())}",
                                                  sorted(results, key=lambda r: r.class_index)) from None
                        reason = _reason(exc)
                        failed.append(f"class {c} ({reason})")
                        results.append(ClassResult(c, names[c], f"failed ({reason})"))
                    bar.set_postfix_str(f"{c} {names[c]}: {results[-1].action}")
                    bar.update(1)
        finally:
            bar.close()
    finally:
        ray.shutdown()
    return sorted(results, key=lambda r: r.class_index), failed
