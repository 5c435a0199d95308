"""Adaptive, certified IG step counts: few steps where the result they store is safe, more elsewhere.

IG's Gauss-Legendre quadrature (spec §3) converges fast: on ResNet50 4 steps already give the
50-step core sets.  So each layer's attributions are computed on a ladder of step counts,
`2, 4, 8, ...` and finally exactly `ig_steps` (`ladder`):

1. every neuron's attributions at the first two rungs;
2. a neuron is accepted at rung `n` when its stored result is safe (`accept`): with the
   error estimate `e_v = mean_x |A_n(x)_v - A_prev(x)_v|` (the change since the rung below,
   a bound on the change of the importance `I(v) = mean_x |A(x)_v|`),
   * every gap the stored ranks depend on (adjacent ranks inside the core set, and rank
     `tau-1` vs the runner-up `tau`) is at least `SAFETY x` the two neurons' errors;
   * every core importance is within `TOLERANCE / REL_SAFETY` of itself (`e_v <= 0.5 % I(v)`);
   * on every top crop, the core attributions the edge weights are built from (spec §6)
     changed by at most `TOLERANCE / REL_SAFETY` of their L1 norm;
3. the others go up one rung, compared with the rung below, and so on; the last rung is the
   requested step count, i.e. today's exact computation, accepted as it is.

A neuron that climbs the whole ladder pays for every rung (4 + 8 + 16 points instead of 16), so
a layer starts with a probe (`PROBE` neurons): when none of them is accepted below the requested
step count, the layer's other neurons run at `ig_steps` directly, exactly as `--exact-ig` runs
them.  The probe only chooses what the other neurons try first; whether a stored result is safe
is still decided per neuron, so the probe cannot change a result beyond the tolerance (measured
on the fashion-resnet demo model: every neuron of block4, block3 and block2 needs 16 of 16 steps,
and without the probe adaptive IG cost 3x exact IG).  Once a layer's probe fails, the layers
below it run at `ig_steps` directly too (`direct=True`, decided by `build_circuit`): on the
demo model each further probe would cost its 4 + 8 points for nothing.

`TOLERANCE` is what the store records (`Circuit.ig_tolerance`, in the precision string) and what
`bench/ingest_speed.py` checks against the full-step values: importances and edge weights
within 1 %.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

FIRST_RUNG = 4  # 2 Gauss-Legendre points agree with 4 by chance too often (a 33 % error accepted on the demo CNN)
SAFETY = 4.0  # a rank-deciding gap must exceed SAFETY x the sum of the two error estimates
TOLERANCE = 0.01  # stored importances and edge weights: relative deviation from the full-step values
# the estimated change must stay within TOLERANCE / REL_SAFETY: on the demo CNN an estimate of
# 0.9 % (8 vs 4 steps) came with a true deviation from 16 steps of 1.2 %
REL_SAFETY = 2.0
PROBE = 2  # neurons per layer that climb the ladder first; if none stops below ig_steps, the rest run exact
DEFAULT_ON = False  # Budget.adaptive_ig and the CLI's --adaptive-ig / --exact-ig default


def ladder(steps: int, first: int = FIRST_RUNG) -> list[int]:
    """Step counts tried: `first, 2 first, 4 first, ...` up to half of `steps`, then `steps` itself.

    A rung above `steps / 2` would cost more than half the full computation for a neuron that may
    still escalate, so the ladder jumps from there to `steps`.  `first` and `2 first` always run
    (below `steps`): a neuron needs two rungs to estimate its error."""
    rungs, n = [], first
    while n < steps and (len(rungs) < 2 or 2 * n <= steps):
        rungs.append(n)
        n *= 2
    return rungs + [steps]


def accept(a: np.ndarray, prev: np.ndarray, tau: int, *, safety: float = SAFETY, tolerance: float = TOLERANCE / REL_SAFETY) -> bool:
    """Whether one neuron's `(k, C)` attributions `a` at this rung store a safe result, given `prev`
    from the rung below (see the module docstring)."""
    importance = np.abs(a).mean(axis=0)
    err = np.abs(a - prev).mean(axis=0)
    order = np.argsort(-importance, kind="stable")[: tau + 1]
    core = order[:tau]
    if len(order) > 1:
        gaps = importance[order[:-1]] - importance[order[1:]]
        if np.any(gaps < safety * (err[order[:-1]] + err[order[1:]])):
            return False
    if np.any(err[core] > tolerance * importance[core]):
        return False
    change = np.abs(a[:, core] - prev[:, core]).sum(axis=1)
    return bool(np.all(change <= tolerance * np.abs(a[:, core]).sum(axis=1)))


@dataclass
class Escalation:
    """Where a layer's neurons were accepted: `{step count: neurons}`; `direct` of those at the
    full step count ran there at once (the probe found the layer not converging below it)."""

    neurons: int
    rungs: list[int]
    accepted: dict[int, int] = field(default_factory=dict)
    direct: int = 0

    @property
    def converging(self) -> bool:
        """Whether any neuron stopped below the full step count (the probe's verdict on the layer)."""
        return any(s < self.rungs[-1] for s in self.accepted)

    @property
    def escalated(self) -> int:
        """Neurons that needed more than the first comparison (the second rung)."""
        return sum(n for s, n in self.accepted.items() if s > self.rungs[min(1, len(self.rungs) - 1)])

    def __str__(self) -> str:
        text = ", ".join(f"{n} at {s} steps" for s, n in sorted(self.accepted.items()))
        return text + (f" ({self.direct} of them run at {self.rungs[-1]} directly after the probe)" if self.direct else "")


def adaptive_attributions(
    attribute: Callable[[list[int], int], np.ndarray],
    neurons: int,
    tau: int,
    steps: int,
    *,
    first: int = FIRST_RUNG,
    safety: float = SAFETY,
    tolerance: float = TOLERANCE / REL_SAFETY,
    probe: int = PROBE,
    direct: bool = False,
) -> tuple[np.ndarray, Escalation]:
    """`(neurons, k, C)` attributions, each neuron's from the lowest rung that `accept`s it.

    `attribute(neuron indices, steps)` returns those neurons' attributions at that step count.
    The first `probe` neurons climb first; if none of them stops below `steps`, the others are
    computed at `steps` directly (`probe=0` or `probe >= neurons`: every neuron climbs).  With
    `direct`, every neuron is computed at `steps` at once (a layer above failed its probe)."""
    rungs = ladder(steps, first)
    report = Escalation(neurons, rungs)
    if len(rungs) == 1 or direct:
        report.accepted[steps] = neurons
        report.direct = neurons if len(rungs) > 1 else 0
        return attribute(list(range(neurons)), steps), report
    out: np.ndarray | None = None

    def store(idx: list[int], values: np.ndarray, n: int) -> None:
        nonlocal out
        if not idx:
            return
        if out is None:
            out = np.empty((neurons,) + values.shape[1:], dtype=values.dtype)
        out[idx] = values
        report.accepted[n] = report.accepted.get(n, 0) + len(idx)

    def climb(pending: list[int]) -> int:
        """Run `pending` up the ladder; how many stopped below `steps`."""
        early = 0
        prev = attribute(pending, rungs[0])
        for n in rungs[1:]:
            cur = attribute(pending, n)
            last = n == steps
            ok = [last or accept(cur[row], prev[row], tau, safety=safety, tolerance=tolerance) for row in range(len(pending))]
            store([i for i, good in zip(pending, ok) if good], cur[[r for r, good in enumerate(ok) if good]], n)
            early += 0 if last else sum(ok)
            still = [r for r, good in enumerate(ok) if not good]
            if not still:
                break
            pending, prev = [pending[r] for r in still], cur[still]
        return early

    head = list(range(min(probe, neurons))) if 0 < probe < neurons else list(range(neurons))
    early = climb(head)
    rest = list(range(len(head), neurons))
    if rest:
        if early:
            climb(rest)
        else:
            store(rest, attribute(rest, steps), steps)
            report.direct = len(rest)
    assert out is not None
    return out, report
