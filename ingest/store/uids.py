"""The uid of each node kind of the store: one builder and, where the program reads a uid back,
one parser.

The writer (`ingest.write.circuit_rows`), the queries (as parameters) and the app build and read uids
only through these functions, so that a uid's form is written down once:

    Model    `<model>`                                  (the model's uid, `neurflow.models`)
    Class    `<model>/<class index>`
    Layer    `<model>/<layer>`
    Neuron   `<model>/<layer>/<channel>`
    Circuit  `<model>/<class index>/<identity hash>`    (built by `neurflow.circuit.circuit_uid` alone: the
                                                        identity is the method's, and neurflow/ does not import ingest/)
    Concept  `<circuit>/<layer>/<channel>/<concept>`
    Group    `<circuit>/<layer>/g<group>`
    Crop     `<image sha256>/<x0>,<y0>,<x1>,<y1>`
    Image    `<image sha256>`
    NeuronStat  `<neuron uid>@<parameter set hash>`     (aggregates the writer keeps, docs/schema.md)
    LayerStat   `<model>/<layer>@<parameter set hash>`
    Evaluation  `<circuit>/eval/<curve key>`

Layer names hold no "/" (they are module paths with dots), so the parsers split from the right.
"""

from __future__ import annotations

from typing import Any


def class_uid(model: str, class_index: int) -> str:
    return f"{model}/{class_index}"


def layer_uid(model: str, layer: str) -> str:
    return f"{model}/{layer}"


def neuron_uid(model: str, layer: str, channel: int) -> str:
    return f"{model}/{layer}/{channel}"


def concept_uid(circuit: str, layer: str, channel: int, concept: int) -> str:
    return f"{circuit}/{layer}/{channel}/{concept}"


def group_uid(circuit: str, layer: str, group: int) -> str:
    return f"{circuit}/{layer}/g{group}"


def neuron_stat_uid(neuron: str, params_hash: str) -> str:
    return f"{neuron}@{params_hash}"


def layer_stat_uid(model: str, layer: str, params_hash: str) -> str:
    return f"{layer_uid(model, layer)}@{params_hash}"


def evaluation_uid(circuit: str, key: str) -> str:
    return f"{circuit}/eval/{key}"


def crop_uid(image_sha256: str, crop: Any) -> str:
    """A crop of an image: its box (`x0, y0, x1, y1`) in the image's pixels."""
    return f"{image_sha256}/{crop.x0},{crop.y0},{crop.x1},{crop.y1}"


def parse_neuron(uid: str) -> tuple[str, str, int]:
    """`<model>/<layer>/<channel>` -> (model, layer, channel)."""
    model, layer, channel = uid.rsplit("/", 2)
    return model, layer, int(channel)


def parse_group(uid: str) -> tuple[str, str, int]:
    """`<circuit>/<layer>/g<group>` -> (circuit, layer, group)."""
    circuit, layer, g = uid.rsplit("/", 2)
    if not g.startswith("g"):
        raise ValueError(f"not a group uid: {uid!r}")
    return circuit, layer, int(g[1:])


def short_group(uid: str) -> str:
    """`<circuit>/<layer>/g<group>` -> `<layer>/g<group>` (stable across parameter sets)."""
    _, layer, g = parse_group(uid)
    return f"{layer}/g{g}"


def short_neuron(uid: str) -> str:
    """`<model>/<layer>/<channel>` -> `<layer>/<channel>`."""
    _, layer, channel = parse_neuron(uid)
    return f"{layer}/{channel}"
