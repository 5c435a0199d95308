"""NeurFlow: neuron groups and their functional interactions (ICLR 2025), as a library.

Pure computation: a model, a layer list and one class's images in, a `Circuit` out.
No database code lives here; `ingest/` writes circuits to a graph store.
"""

from neurflow.circuit import Circuit, Params, LOGITS
from neurflow.images import ImageSet, NeurflowInputError

__version__ = "0.1.0"
__all__ = ["Circuit", "Params", "LOGITS", "ImageSet", "NeurflowInputError", "__version__"]
