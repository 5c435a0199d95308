"""The `Circuit`: the one data type that crosses from the method to the store to the app.

A circuit is the result of one NeurFlow run for one class and one parameter set.  It is
kept as flat tables of small records (one list per record type) because that is what the
graph writer, the Parquet files and the app all want: rows.  Everything the later stages
need (image debugging, labelling, evaluations) is kept here, so a circuit saved to disk can
be inspected, evaluated or re-ingested without re-running the method.

Depth convention (the graph schema's): depth 0 is the class-logit layer, depth grows downward.
"Upper" neurons live at depth d, their core ("lower") neurons at depth d + 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

LOGITS = "logits"
"""Name of the pseudo-layer holding the model's output (depth 0)."""

METHOD_VERSION = "2"
"""Version of the method's results: bump it whenever a change to `neurflow/` changes the circuits
it builds from the same inputs.  It is part of every circuit's identity, so circuits built by an
older method are rebuilt instead of being taken for today's."""


@dataclass(frozen=True)
class Params:
    """Every knob that changes a circuit.  Its hash is part of the circuit's identity."""

    tau: int = 16
    k: int = 50
    ig_steps: int = 50
    granularities: tuple[float, ...] = (1.0, 0.5, 0.25)
    max_concepts: int = 5
    num_groups: int | None = None
    max_groups: int = 100
    num_top_vecs: int | None = None
    epsilon: float = -1.0
    predicted_only: bool = True
    max_images: int | None = 200  # images of the class used (None: all); the CLI's and the library's default
    num_representatives: int = 5
    seed: int = 0
    # Crops whose pixels' standard deviation (over every channel and pixel, in the model's input
    # units) is below this are left out of the concept data (spec §1): never a top sample, so
    # never a concept member or representative.  0: every crop, the paper's (and its code's) rule.
    # A named departure for data with large uniform backgrounds (Fashion-MNIST's black margins,
    # where small crops are often pure background); the demo turns it on.
    min_crop_std: float = 0.0

    # fields added after circuits were stored: left out of `to_dict` (so of `hash`) at their default,
    # which keeps every earlier circuit's identity; `from_dict` fills them back in
    _LATER: ClassVar[dict[str, Any]] = {"min_crop_std": 0.0}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["granularities"] = list(self.granularities)
        for name, default in self._LATER.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Params":
        d = dict(d)
        d["granularities"] = tuple(float(g) for g in d.get("granularities", (1.0, 0.5, 0.25)))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def hash(self) -> str:
        """Stable short hash of the parameters (first 12 hex digits of a sha256)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LayerRec:
    depth: int
    name: str
    channels: int


@dataclass(frozen=True)
class ImageRec:
    image_id: int
    source: str
    sha256: str
    label: int


@dataclass(frozen=True)
class CropRec:
    crop_id: int
    image_id: int
    x0: int
    y0: int
    x1: int
    y1: int
    granularity: float


@dataclass(frozen=True)
class NeuronRec:
    """A critical neuron of the circuit."""

    depth: int
    channel: int


@dataclass(frozen=True)
class TopSampleRec:
    """One of the k crops that activate a critical neuron most (spec §2)."""

    depth: int
    channel: int
    rank: int
    crop_id: int
    activation: float


@dataclass(frozen=True)
class CoreRec:
    """Lower neuron `lower_channel` (depth + 1) is a core concept neuron of (depth, channel)."""

    depth: int
    channel: int
    lower_channel: int
    rank: int
    importance: float


@dataclass(frozen=True)
class ConceptRec:
    """Concept `index` of critical neuron (depth, channel) (spec §5).

    `vector` lives in the space of the layer below (depth + 1)."""

    depth: int
    channel: int
    index: int
    size: int
    mean_activation: float
    vector: tuple[float, ...]


@dataclass(frozen=True)
class ConceptMemberRec:
    """A top sample of a neuron assigned to one of its concepts.

    `rep_rank` is the position among the concept's representative crops, or -1."""

    depth: int
    channel: int
    concept: int
    crop_id: int
    activation: float
    rep_rank: int


@dataclass(frozen=True)
class EdgeRec:
    """Signed normalised weight w(u, j -> v) of spec §6, u = (depth, channel), v one depth lower."""

    depth: int
    channel: int
    concept: int
    lower_channel: int
    weight: float


@dataclass(frozen=True)
class GroupMemberRec:
    """(depth, channel, concept) is a member of group `group` of its layer (spec §7)."""

    depth: int
    group: int
    channel: int
    concept: int


@dataclass(frozen=True)
class GroupEdgeRec:
    """W(upper -> lower) of spec §8: upper group at `depth`, lower group at depth + 1."""

    depth: int
    upper_group: int
    lower_group: int
    weight: float


_TABLES: dict[str, type] = {
    "layers": LayerRec,
    "images": ImageRec,
    "crops": CropRec,
    "neurons": NeuronRec,
    "top_samples": TopSampleRec,
    "core": CoreRec,
    "concepts": ConceptRec,
    "concept_members": ConceptMemberRec,
    "edges": EdgeRec,
    "group_members": GroupMemberRec,
    "group_edges": GroupEdgeRec,
}


def _short_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Identity:
    """Everything besides the model and the class that decides what a circuit is.

    Two circuits are the same result only when all of this agrees: the method's parameters, the
    analysed layers, where the images came from (data set and split, or folder), the images
    themselves (a content fingerprint), the IG precision and the method's version.  The store keys
    a circuit on it, so a run with another layer list, split or folder writes a second circuit
    instead of being skipped as "already complete".

    `param_set` leaves out the per-class image fingerprint: it names a *parameter set* that every
    class of a comparison shares (Jaccard across different tau or layer lists compares nothing)."""

    params: Params
    layers: tuple[str, ...]
    data_source: str
    data_fingerprint: str
    precision: str = "fp32"
    method_version: str = METHOD_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(n for n in self.layers if n != LOGITS))

    def param_set_dict(self) -> dict[str, Any]:
        return {
            **self.params.to_dict(),
            "layers": list(self.layers),
            "data_source": self.data_source,
            "precision": self.precision,
            "method_version": self.method_version,
        }

    @property
    def param_set(self) -> str:
        """Hash of the parameter set (12 hex digits): the circuits of one comparison share it."""
        return _short_hash(self.param_set_dict())

    @property
    def hash(self) -> str:
        """Hash of the whole identity (12 hex digits): the last part of the circuit's uid."""
        return _short_hash([self.param_set_dict(), self.data_fingerprint])


def data_fingerprint(sha256s: list[str]) -> str:
    """Content fingerprint of a class's images (their hashes, in order): the same folder path
    or data set name with other images in it is other data."""
    return hashlib.sha256("\n".join(sha256s).encode()).hexdigest()[:16]


def circuit_uid(model: str, class_index: int, identity: Identity) -> str:
    """A circuit's identity in the store, known before it is built: `<model>/<class>/<identity hash>`."""
    return f"{model}/{class_index}/{identity.hash}"


@dataclass
class Circuit:
    """A NeurFlow circuit of one class of one model under one parameter set."""

    model: str
    class_index: int
    class_name: str
    params: Params
    image_size: int
    neurflow_version: str = ""
    data_source: str = ""
    data_fingerprint: str = ""
    precision: str = "fp32"
    method_version: str = METHOD_VERSION
    notes: list[str] = field(default_factory=list)  # what a user should know: upscaled images, logits layer, ...
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0
    layers: list[LayerRec] = field(default_factory=list)
    images: list[ImageRec] = field(default_factory=list)
    crops: list[CropRec] = field(default_factory=list)
    neurons: list[NeuronRec] = field(default_factory=list)
    top_samples: list[TopSampleRec] = field(default_factory=list)
    core: list[CoreRec] = field(default_factory=list)
    concepts: list[ConceptRec] = field(default_factory=list)
    concept_members: list[ConceptMemberRec] = field(default_factory=list)
    edges: list[EdgeRec] = field(default_factory=list)
    group_members: list[GroupMemberRec] = field(default_factory=list)
    group_edges: list[GroupEdgeRec] = field(default_factory=list)

    TABLES: ClassVar[dict[str, type]] = _TABLES

    # ----------------------------------------------------------------- identity
    @property
    def identity(self) -> Identity:
        return Identity(
            self.params, tuple(layer.name for layer in self.layers), self.data_source, self.data_fingerprint,
            self.precision, self.method_version,
        )

    @property
    def ig_tolerance(self) -> float:
        """Largest relative deviation of stored importances and edge weights from the full-step IG
        values that the precision allows: 0 for exact IG, the `-tol` of adaptive IG (neurflow/adaptive.py)."""
        m = re.search(r"adaptive-ig-tol([0-9.e-]+)", self.precision)
        return float(m.group(1)) if m else 0.0

    @property
    def uid(self) -> str:
        """`<model>/<class index>/<identity hash>`, as in the graph schema."""
        return circuit_uid(self.model, self.class_index, self.identity)

    # ---------------------------------------------------------------- accessors
    def layer_name(self, depth: int) -> str:
        return self.layers[depth].name

    @property
    def depths(self) -> list[int]:
        return [layer.depth for layer in self.layers]

    def critical(self, depth: int) -> list[int]:
        """Channels of the critical neurons at `depth`, ascending."""
        return sorted(n.channel for n in self.neurons if n.depth == depth)

    def core_of(self, depth: int, channel: int) -> list[CoreRec]:
        """Core set of one neuron, most important first."""
        return sorted((c for c in self.core if c.depth == depth and c.channel == channel), key=lambda c: c.rank)

    def concepts_of(self, depth: int, channel: int) -> list[ConceptRec]:
        return sorted((c for c in self.concepts if c.depth == depth and c.channel == channel), key=lambda c: c.index)

    def zero_importance_core(self) -> int:
        """How many core-set members have importance 0 (ranked by tie-breaking, not by the data)."""
        return sum(1 for c in self.core if c.importance == 0)

    def groups(self, depth: int) -> dict[int, list[tuple[int, int]]]:
        """Groups of one layer: group index -> [(channel, concept index), ...]."""
        out: dict[int, list[tuple[int, int]]] = {}
        for m in self.group_members:
            if m.depth == depth:
                out.setdefault(m.group, []).append((m.channel, m.concept))
        return {g: sorted(members) for g, members in sorted(out.items())}

    def summary(self) -> dict[str, Any]:
        """Counts a person wants to see after a run."""
        return {
            "circuit": self.uid,
            "class": f"{self.class_index} ({self.class_name})",
            "parameter_set": self.identity.param_set,
            "data": self.data_source,
            "images": len(self.images),
            "crops": len(self.crops),
            "critical_neurons": {self.layers[d].name: len(self.critical(d)) for d in self.depths},
            "feeds_edges": len(self.core),
            "concepts": len(self.concepts),
            "groups": {self.layers[d].name: len(self.groups(d)) for d in self.depths if self.groups(d)},
            "group_edges": len(self.group_edges),
            "seconds": round(self.seconds, 2),
            **({"notes": list(self.notes)} if self.notes else {}),
        }

    # --------------------------------------------------------------- round trip
    def meta(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "class_index": self.class_index,
            "class_name": self.class_name,
            "params": self.params.to_dict(),
            "image_size": self.image_size,
            "neurflow_version": self.neurflow_version,
            "data_source": self.data_source,
            "data_fingerprint": self.data_fingerprint,
            "precision": self.precision,
            "method_version": self.method_version,
            "notes": list(self.notes),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": self.seconds,
        }

    def save(self, folder: str | Path) -> Path:
        """Write the circuit as `meta.json` plus one Parquet file per table."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").write_text(json.dumps(self.meta(), indent=2, sort_keys=True))
        for name, rec_type in self.TABLES.items():
            rows = getattr(self, name)
            columns = {f.name: [getattr(r, f.name) for r in rows] for f in dataclasses.fields(rec_type)}
            schema = pa.schema([(f.name, _arrow_type(f.type)) for f in dataclasses.fields(rec_type)])
            pq.write_table(pa.table(columns, schema=schema), folder / f"{name}.parquet")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Circuit":
        import pyarrow.parquet as pq

        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder} is not a saved circuit (no meta.json)")
        meta = json.loads(meta_path.read_text())
        meta["params"] = Params.from_dict(meta["params"])
        circuit = cls(**meta)
        for name, rec_type in cls.TABLES.items():
            table = pq.read_table(folder / f"{name}.parquet").to_pydict()
            names = [f.name for f in dataclasses.fields(rec_type)]
            n = len(table[names[0]]) if names else 0
            rows = []
            for i in range(n):
                values = {k: table[k][i] for k in names}
                if "vector" in values:
                    values["vector"] = tuple(values["vector"])
                rows.append(rec_type(**values))
            setattr(circuit, name, rows)
        return circuit

    def __eq__(self, other: object) -> bool:  # timing fields are not part of the result
        if not isinstance(other, Circuit):
            return NotImplemented
        return self.uid == other.uid and all(getattr(self, t) == getattr(other, t) for t in self.TABLES) and (
            self.class_name == other.class_name and self.image_size == other.image_size
        )


def _arrow_type(annotation: str):
    import pyarrow as pa

    return {
        "int": pa.int64(),
        "float": pa.float64(),
        "str": pa.string(),
        "tuple[float, ...]": pa.list_(pa.float64()),
    }[annotation]
