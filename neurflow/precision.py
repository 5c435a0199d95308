"""bf16 IG whose core sets are the fp32 ones: compute in bf16, redo the close calls in fp32.

bf16 autocast makes IG 2-3x faster on AMX CPUs and tensor-core GPUs, but it rounds: a
lower neuron just outside a core set can swap places with the last one inside (measured on
ResNet50: 8 % of core sets changed).  A core set can only change when the importance gap
at the `tau` boundary is smaller than the rounding error, so:

1. rank every neuron's importances from the bf16 attributions;
2. redo in fp32 every neuron whose relative boundary gap is under `margin`, plus the
   closest call in any case, which measures the bf16 error on this layer;
3. if that measured error times a safety factor exceeds the margin, widen the margin to
   it and redo the neurons now under it.

Neurons left in bf16 have a gap several times the worst error seen, so their core
*sets* are the fp32 ones (their order inside the set and the stored values may differ in
the last bits).  `bench/ingest_speed.py` and the tests check the sets against fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SAFETY = 4.0  # margin >= SAFETY x the largest relative bf16 error measured on the layer
DEFAULT_MARGIN = 0.05


def importances(attributions: np.ndarray) -> np.ndarray:
    """`(neurons, k, C) -> (neurons, C)`: `I_u(v) = mean_x |A_u(x)_v|` (spec §3)."""
    return np.abs(attributions).mean(axis=1)


def boundary_gaps(importance: np.ndarray, tau: int) -> np.ndarray:
    """Per neuron: `(I_(tau) - I_(tau+1)) / I_(tau)` of its sorted importances (inf when no runner-up)."""
    if importance.shape[1] <= tau:
        return np.full(importance.shape[0], np.inf)
    top = -np.sort(-importance, axis=1)[:, : tau + 1]
    last, runner_up = top[:, tau - 1], top[:, tau]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.where(last > 0, (last - runner_up) / last, 0.0)
    return gap


def relative_error(low: np.ndarray, exact: np.ndarray, tau: int) -> float:
    """Largest importance error of one neuron, relative to its fp32 `tau`-th importance."""
    scale = -np.sort(-exact)[min(tau, exact.size) - 1]
    if scale <= 0:
        return 0.0
    return float(np.abs(low - exact).max() / scale)


@dataclass
class Certification:
    refined: int  # neurons recomputed in fp32
    neurons: int
    margin: float  # the relative gap under which a neuron was recomputed
    max_error: float  # largest relative bf16 error measured on the recomputed neurons


def certify(
    attributions: np.ndarray,
    tau: int,
    recompute: Callable[[list[int]], np.ndarray],
    *,
    margin: float = DEFAULT_MARGIN,
) -> tuple[np.ndarray, Certification]:
    """Replace the attributions of close-call neurons by fp32 ones; see the module docstring.

    `attributions` is `(neurons, k, C)` from bf16; `recompute(neuron indices)` returns their
    fp32 attributions in the same layout."""
    out = attributions.copy()
    low = importances(attributions)
    gaps = boundary_gaps(low, tau)
    done: set[int] = set()
    worst = 0.0

    def redo(indices: list[int]) -> None:
        nonlocal worst
        indices = [i for i in indices if i not in done]
        if not indices:
            return
        exact = recompute(indices)
        for row, i in enumerate(indices):
            worst = max(worst, relative_error(low[i], importances(exact[row : row + 1])[0], tau))
            out[i] = exact[row]
            done.add(i)

    first = [int(i) for i in np.flatnonzero(gaps < margin)]
    redo(first or [int(np.argmin(gaps))])
    while SAFETY * worst > margin:
        margin = SAFETY * worst
        more = [int(i) for i in np.flatnonzero(gaps < margin) if int(i) not in done]
        if not more:
            break
        redo(more)
    return out, Certification(refined=len(done), neurons=len(attributions), margin=margin, max_error=worst)
