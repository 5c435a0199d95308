"""The loaders of the two model sources beyond the registry (`neurflow.models.sources`):
``torchvision:<arch>`` and ``path/to/file.py:factory``.  Each takes the parsed `Source` and the
weights options and returns a `Loaded`; the registry's own models load in
`neurflow.models.registry`, which dispatches to all three (`load_model`)."""

from __future__ import annotations

from pathlib import Path

from neurflow.errors import NeurflowInputError, option
from neurflow.models import sources, weights as weights_io
from neurflow.models.spec import Loaded, ModelSpec
from neurflow.models.sources import Source

RANDOM_SEED = 0  # the seed of every ``--random-init`` model (`registry.build_model`'s default)


def load_torchvision(source: Source, weights: str | None, random_init: bool, known_layers: tuple[str, ...] | None) -> Loaded:
    """``torchvision:<arch>``: random weights (`random_init`, 1000 classes) or a state-dict file,
    as many classes as its classifier has rows.  `known_layers`: the registry's default layers of
    the same architecture, if it has it; found by `sources.pick_layers` otherwise."""
    arch, name = source.arch, source.name
    if random_init:
        num_classes = 1000
        module = weights_io.seeded(lambda: sources.build_torchvision(arch, num_classes), RANDOM_SEED)
        path, sha, uid = None, None, f"{name}-random"
    elif weights is None:
        raise NeurflowInputError(
            f"{name} has no bundled weights and nothing is downloaded: pass {option('weights', 'FILE', placeholder=True)} "
            f"(a state dict saved with torch.save(model.state_dict(), path), or a checkpoint holding one) or "
            f"{option('random_init', True)}"
        )
    else:
        path = Path(weights).expanduser()
        state, num_classes = sources.torchvision_state(arch, weights_io.read_state_dict(path))
        module = weights_io.load_built(name, path, lambda: sources.build_torchvision(arch, num_classes), state)
        sha = sources.state_hash(module)
        uid = f"{name}-{sha[:8]}"
    size, mean, std = sources.torchvision_preprocessing(arch)
    module.eval()
    layers = known_layers or sources.pick_layers(module, 3, size)
    spec = ModelSpec(name, f"torchvision.{arch}", tuple(layers), size, 3, mean, std, num_classes, None)
    return Loaded(spec, module, path, sha, uid)


def load_factory(source: Source, weights: str | None, random_init: bool) -> Loaded:
    """``path/to/file.py:factory``: the factory's module with its own weights, or a state-dict
    file's; its spec from the module's attributes (`sources.factory_description`)."""
    if random_init:
        raise NeurflowInputError(
            f"{option('random_init', True)} does not apply to {source.path.name}:{source.factory}: the factory makes its own weights"
        )
    module = sources.call_factory(source.path, source.factory)
    where = f"{source.path.name}:{source.factory}()"
    info = sources.factory_description(module, where)
    path = None
    if weights is not None:
        path = Path(weights).expanduser()
        module = weights_io.load_into(where, path, module, weights_io.read_state_dict(path)).eval()
    sha = sources.state_hash(module)
    num_classes = sources.output_classes(module, info["in_channels"], info["input_size"], where)
    layers = info["layers"] if info["layers"] is not None else sources.pick_layers(module, info["in_channels"], info["input_size"])
    spec = ModelSpec(
        source.name, f"file:{source.name}", tuple(layers), info["input_size"], info["in_channels"], info["mean"],
        info["std"], num_classes, None, class_names=info["class_names"],
    )
    return Loaded(spec, module, path, sha, f"{source.uid_name}-{sha[:8]}")
