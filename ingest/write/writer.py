"""Write a `Circuit` into the graph schema (docs/schema.md): batched, idempotent, crash-safe.

    stats = write_circuit(store, circuit, artifact_dir, model_info={...}, thumbnails=crop_image)

Order of work (each batch is one transaction of one ``UNWIND $rows`` statement):

1. the Circuit node is MERGEd with ``status = 'running'`` (with Model, Class, Layers);
2. a circuit found ``running``/``failed`` (a crashed or failed earlier write), or ``complete``
   with ``force=True``, is cleaned first: its Concepts and Groups (DETACH), its FEEDS and
   DRIVES (by their ``circuit`` property), its INCLUDES, and the Crop/Image nodes nothing
   else uses any more; shared Neuron nodes stay;
3. neurons + INCLUDES, FEEDS, concepts + HAS_CONCEPT + OF, DRIVES, groups + HAS_GROUP,
   IN_GROUP, GROUP_FEEDS, images + crops + CROP_OF, EXEMPLIFIED_BY;
4. ``status = 'complete'`` with the sizes, in one last transaction that also counts the circuit
   into the aggregates (`ingest.write.aggregates`); a forced rewrite or a delete takes a complete
   circuit out of them in the transaction that sets it back to ``running``.

Shared nodes (Model, Class, Layer, Neuron, Image, Crop) are MERGEd on ``uid``.  What belongs
to the circuit (Concept and Group nodes, INCLUDES, FEEDS, DRIVES and the other relationships)
is CREATEd: it is written only into a store that holds nothing of the circuit (a new uid, or
after step 2 removed what an earlier partial, failed or forced write left), so a rerun after a
crash at any point leaves no duplicates, and the uniqueness constraints refuse a duplicate node.
Every CREATE statement returns what it created and the writer checks it against its rows.  A
``complete`` circuit with the same uid is left alone unless ``force=True``; another parameter
set has another uid and lands beside it.

Throughput (``bench/store_scale.py``): relationship MERGEs between shared neurons scan the
edges of hub neurons, which grow with every class written, so they are CREATEs; each distinct
node of a batch is looked up once and rows refer to it by position; rows travel as columns.

The store code by concern: `ingest.store.runner` (the one execute path), `ingest.write.statements` (the
Cypher of each step), `ingest.write.circuit_rows` (row mapping), `ingest.write.thumbnails`,
`ingest.write.cleanup` (clean before a rewrite, delete), `ingest.write.aggregates`, `ingest.write.group_labels`.
This module holds the order of work and re-exports the names other modules import from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ingest.write import statements
from ingest.write.aggregates import complete_circuit, critical_lists, retract_circuit
from ingest.write.circuit_rows import circuit_rows, crop_uid_of  # noqa: F401 - re-exported
from ingest.write.cleanup import clean, delete_circuit  # noqa: F401 - re-exported
from ingest.write.group_labels import label_lists, set_group_labels  # noqa: F401 - re-exported
from ingest.store.schema import constraint_statements, ensure_schema
from ingest.store.runner import Runner, is_store_unreachable, now
from ingest.store.connection import Store
from ingest.write.thumbnails import THUMBNAIL_MAX, thumbnail_path, write_thumbnails  # noqa: F401 - re-exported

if TYPE_CHECKING:  # importing neurflow pulls in torch; the writer only needs the records
    import neo4j
    from PIL.Image import Image as PILImage

    from neurflow.circuit import Circuit

DEFAULT_BATCH = 10000

# (step, statement name in ingest.write.statements, node rows per row, relationship rows per row), in
# the order they run; statements are looked up when a write starts (tests swap one for a broken one)
STEPS = (
    ("neurons", "Q_NEURONS", 1, 1),
    ("includes", "Q_INCLUDES", 0, 1),
    ("feeds", "Q_FEEDS", 0, 1),
    ("concepts", "Q_CONCEPTS", 1, 2),
    ("drives", "Q_DRIVES", 0, 1),
    ("groups", "Q_GROUPS", 1, 1),
    ("in_group", "Q_IN_GROUP", 0, 1),
    ("group_feeds", "Q_GROUP_FEEDS", 0, 1),
    ("crop_thumbnails", "Q_CROP_THUMBNAILS", 0, 0),
    ("crops", "Q_CROPS", 2, 1),
    ("exemplified", "Q_EXEMPLIFIED", 0, 1),
)


@dataclass
class WriteStats:
    """What one `write_circuit` call did."""

    circuit: str
    action: str  # "written" | "rewritten" (an earlier running/failed/forced one was cleaned) | "skipped"
    nodes: int = 0  # node rows MERGEd
    relationships: int = 0  # relationship rows MERGEd
    thumbnails: int = 0  # PNG files written
    seconds: float = 0.0
    cleaned: dict[str, int] = field(default_factory=dict)

    @property
    def rel_per_s(self) -> float:
        return self.relationships / self.seconds if self.seconds > 0 else 0.0

    @property
    def skipped(self) -> bool:
        return self.action == "skipped"


def circuit_status(target: Store | neo4j.Driver | neo4j.Session, uid: str, *, database: str | None = None) -> str | None:
    """Status of the circuit `uid` in the store, or None."""
    with Runner(target, database) as runner:
        rows = runner.read(statements.Q_CIRCUIT_STATUS, {"uid": uid})
    return rows[0]["status"] if rows else None


def _kept_labels(runner: Runner, cid: str) -> dict[tuple[int, int], dict[str, Any]]:
    """Labels the groups of an earlier write of `cid` had: a rewrite without new labels keeps them."""
    out = {}
    for r in runner.read(statements.Q_KEPT_LABELS, {"uid": cid}):
        out[(r["depth"], r["idx"])] = {k: r[k] for k in ("label", "label_source", "label_score")}
    return out


def _completion(circuit: "Circuit", rows: dict[str, Any], started: str) -> dict[str, Any]:
    """Properties the circuit node gets with ``complete``: sizes, its critical channels per layer
    and its labelled groups (what the per-class library queries read instead of the graph)."""
    by_layer = {rec.depth: (rec.name, circuit.critical(rec.depth)) for rec in circuit.layers}
    lists = critical_lists([by_layer[d] for d in sorted(by_layer)])
    return {
        "completed_at": now(),
        "finished_at": circuit.finished_at or started,
        "num_neurons": len(rows["includes"]),
        "num_feeds": len(rows["feeds"]),
        "num_concepts": len(rows["concepts"]),
        "num_drives": len(rows["drives"]),
        "num_groups": len(rows["groups"]),
        "num_group_feeds": len(rows["group_feeds"]),
        "num_crops": len(rows["crops"]),
        "critical_layers": lists["layers"],
        "critical_offsets": lists["offsets"],
        "critical_channels": lists["channels"],
        **label_lists(rows["groups"]),
    }


@dataclass(frozen=True)
class WriteOptions:
    """How a circuit is written, apart from what: rows per write transaction, whether the schema is
    ensured first (`schema=False`: the caller did it, as a bench writing thousands of circuits
    does), the database of a bare Driver, and the testing hook `stop_after` (stop after that step,
    or after its first batch with ``"<step>:first"``, leaving the circuit ``running``)."""

    batch_size: int = DEFAULT_BATCH
    schema: bool = True
    database: str | None = None
    stop_after: str | None = None


def write_circuit(
    target: Store | neo4j.Driver | neo4j.Session,
    circuit: "Circuit",
    artifact_dir: str | Path | None = None,
    *,
    force: bool = False,
    model_info: dict[str, Any] | None = None,
    thumbnails: Callable[[int], "PILImage"] | None = None,
    group_labels: dict[tuple[int, int], dict[str, Any]] | None = None,
    options: WriteOptions = WriteOptions(),
) -> WriteStats:
    """Write `circuit` to the store.  See the module docstring for the guarantees.

    - `artifact_dir`: folder for crop thumbnails (PNG); the Crop node keeps the path relative
      to it.  Needed only with `thumbnails`.
    - `model_info`: name, arch, weights_sha256, num_classes, input_size of the Model node.
    - `thumbnails`: crop id -> PIL image of the crop (representative crops only are asked).
    - `group_labels`: (depth, group index) -> {label, label_source, label_score}.  Without it a
      forced rewrite keeps the labels the groups had.
    - `options`: batch size, schema, a bare Driver's database, the testing hook (`WriteOptions`).
    """
    t0 = time.perf_counter()
    cid = circuit.uid
    runner = Runner(target, options.database)
    stats = WriteStats(circuit=cid, action="written")
    try:
        if options.schema:
            _ensure_schema(target, runner)
        existing = runner.read(statements.Q_CIRCUIT_STATUS, {"uid": cid})
        status = existing[0]["status"] if existing else None
        if status == "complete" and not force:
            stats.action = "skipped"
            stats.seconds = time.perf_counter() - t0
            return stats

        kept_labels = _kept_labels(runner, cid) if status is not None and group_labels is None else {}
        crop_paths: dict[int, str] = {}
        if thumbnails is not None:
            if artifact_dir is None:
                raise ValueError("write_circuit: thumbnails need an artifact_dir to write the PNG files to")
            crop_paths, stats.thumbnails = write_thumbnails(circuit, Path(artifact_dir), thumbnails)

        rows = circuit_rows(
            circuit, model_info=model_info, crop_thumbnails=crop_paths, group_labels=group_labels or kept_labels
        )
        started = now()
        if not _write_head(runner, circuit, rows, status, started, stats, options.stop_after):
            return stats
        if not _write_steps(runner, circuit, rows, stats, options):
            return stats
        props = _completion(circuit, rows, started)
        runner.execute(lambda tx: complete_circuit(tx, rows, props))
        stats.seconds = time.perf_counter() - t0
        return stats
    except BaseException as exc:
        # best effort: mark the circuit failed so readers and reruns know (a SIGKILL leaves `running`).
        # Not when the server is gone: the driver would wait for it once more, and the circuit
        # left `running` is cleaned and rewritten by the rerun all the same
        if not is_store_unreachable(exc):
            try:
                runner.write(statements.Q_MARK_FAILED, {"uid": cid})
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        raise
    finally:
        runner.close()


def _ensure_schema(target, runner: Runner) -> None:
    """Constraints before the first MERGE: once per `Store` object, every time for a bare Driver
    or Session (no object to remember it on)."""
    if isinstance(target, Store):
        ensure_schema(target)
    else:
        for st in constraint_statements():
            runner.write(st)


def _write_head(runner: Runner, circuit: "Circuit", rows: dict[str, Any], status: str | None, started: str,
                stats: WriteStats, stop_after: str | None) -> bool:  # fmt: skip
    """Steps 1-2: an earlier circuit of this uid retracted and cleaned, the Circuit node written
    `running` with its Model and Class (readers ignore it until the last transaction), then the
    Layers.  False when the testing hook stops after the head."""
    cid = circuit.uid
    if status is not None:  # leaves the aggregates (if complete) and becomes `running`: one transaction
        runner.execute(lambda tx: retract_circuit(tx, cid))
    runner.write(statements.Q_HEAD, {"model": rows["model"], "cls": rows["cls"], "circuit": rows["circuit"], "now": started})
    stats.nodes += 3
    stats.relationships += 2
    if status is not None:
        stats.action = "rewritten"
        stats.cleaned = clean(runner, cid, circuit.model, circuit.class_index)
    if stop_after == "head":
        return False
    runner.write(statements.Q_LAYERS, {"model": circuit.model, "rows": rows["layers"]})
    stats.nodes += len(rows["layers"])
    stats.relationships += len(rows["layers"])
    return True


def _write_steps(runner: Runner, circuit: "Circuit", rows: dict[str, Any], stats: WriteStats, options: WriteOptions) -> bool:
    """The `STEPS` in order, each in batches of `options.batch_size` rows, each batch checked to
    have created all its rows.  False when the testing hook stops the write."""
    cid = circuit.uid
    common = {"circuit": cid, "model": circuit.model, "class_index": circuit.class_index}
    rows["crop_thumbnails"] = [{"uid": r["uid"], "thumbnail": r["thumbnail"]} for r in rows["crops"] if r["thumbnail"]]
    for name, statement, nodes_per_row, rels_per_row in STEPS:
        cypher = getattr(statements, statement)
        data = rows[name]
        for i in range(0, len(data), options.batch_size):
            chunk = data[i : i + options.batch_size]
            out = runner.write(cypher, {**common, **statements.payload(name, chunk)})
            if out and "created" in out[0] and out[0]["created"] != len(chunk):
                raise RuntimeError(
                    f"writing {cid}: step {name} created {out[0]['created']} of {len(chunk)} rows (missing nodes?)"
                )
            stats.nodes += nodes_per_row * len(chunk)
            stats.relationships += rels_per_row * len(chunk)
            if options.stop_after == f"{name}:first":
                return False
        if options.stop_after == name:
            return False
    return True
