"""NeurFlow: neuron groups and their functional interactions (ICLR 2025), as a library.

Pure computation: a model, a layer list and one class's images in, a `Circuit` out.
No database code lives here; `ingest/` writes circuits to a graph store.  Importing the
package does not import torch (the store and the app read circuits without it).
"""

from neurflow.circuit import LOGITS, Circuit, Params
from neurflow.errors import NeurflowInputError

__version__ = "0.1.0"
__all__ = ["load_model", "load_images", "build_circuit", "Circuit", "Params", "LOGITS", "ImageSet",
           "NeurflowInputError", "__version__"]

# Imported on first use, so `import neurflow` stays cheap (no torch) for the store and the app.
_LAZY = {
    "load_model": "neurflow.api",
    "load_images": "neurflow.api",
    "build_circuit": "neurflow.api",
    "ImageSet": "neurflow.images",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neurflow' has no attribute {name!r}")
