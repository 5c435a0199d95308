"""Models NeurFlow Store can analyse: see `neurflow.models.registry`."""

from neurflow.models.registry import (
    LoadedModel,
    ModelSpec,
    available_models,
    get_spec,
    load_model,
    resolve_device,
)

__all__ = ["LoadedModel", "ModelSpec", "available_models", "get_spec", "load_model", "resolve_device"]
