"""Adaptive, certified IG step counts: few path points where the result they store is safe, more elsewhere.

IG's Gauss-Legendre quadrature (spec §3) converges fast: on ResNet50 4 steps already give the
50-step core sets.  So each layer's attributions are computed on a ladder of rungs (`ladder`):

1. first the `(3, 7)` Gauss-Kronrod pair: 7 path points give Kronrod's 7-point value and, from the
   same gradients, the 3-point Gauss value (`neurflow.attribution.kronrod_quadrature`); their
   difference estimates the error (of the cruder 3-point value, so it over-estimates the error
   of the stored 7-point one, exact for polynomials to degree 11).  Before the pair, the first
   rungs were Gauss 4 then Gauss 8 (12 points for a comparison of the same kind; ResNet50 bench:
   IG 1.65 s with them, 1.19 s with the (4, 9) pair, 0.99 s with (3, 7), every neuron accepted
   at the first rung each time, core sets identical);
2. a neuron is accepted at a rung when its stored result is safe (`accept`): with the
   error estimate `e_v = mean_x |A_n(x)_v - A_prev(x)_v|` (the change since the rule below,
   a bound on the change of the importance `I(v) = mean_x |A(x)_v|`),
   * every gap the stored ranks depend on (adjacent ranks inside the core set, and rank
     `tau-1` vs the runner-up `tau`) is at least `SAFETY x` the two neurons' errors;
   * every core importance is within `TOLERANCE / REL_SAFETY` of itself (`e_v <= 0.5 % I(v)`);
   * on every top crop, the core attributions the edge weights are built from (spec §6)
     changed by at most `TOLERANCE / REL_SAFETY` of their L1 norm;
3. the others go up to Gauss-Legendre at 12, 24, ... points (up to half of `ig_steps`),
   compared with the rung below, and finally to exactly `ig_steps`: today's exact
   computation, accepted as it is.

A neuron that climbs the whole ladder pays for every rung (7 + 16 points instead of 16), so
a layer starts with a probe (`PROBE` neurons): when none of them is accepted below the requested
step count, the layer's other neurons run at `ig_steps` directly, exactly as `--exact-ig` runs
them.  The probe only chooses what the other neurons try first; whether a stored result is safe
is still decided per neuron, so the probe cannot change a result beyond the tolerance (measured
on the fashion-resnet demo model: every neuron of block4, block3 and block2 needs 16 of 16 steps,
and without the probe adaptive IG cost 3x exact IG).  Once a layer's probe fails, the layers
below it run at `ig_steps` directly too (`direct=True`, decided by `build_circuit`): on the
demo model each further probe would cost its points for nothing.  Below a layer of more than
`PROBE` neurons that all settled below `ig_steps` (`Escalation.settled`), the next layer runs
with `probe=0`: all its neurons climb together, so each top crop goes forward once for all its
targets instead of once for the probe's and once for the others' (ResNet50 bench: IG 0.99 ->
0.92-0.94 s).

Where the sub-network has IG's closed form (at most one ReLU on the path: a VGG-style conv
layer, a classifier head; `neurflow.closed_form`), there is no ladder: one path point per crop
gives the `ig_steps`-point sum itself, equal to the step-by-step sum up to float rounding
(demo CNN: 1e-7 of a row's L1 norm).  Such a layer says nothing about how the next one
converges, so it leaves the probe's verdicts as they were.

`TOLERANCE` is what the store records (`Circuit.ig_tolerance`, in the precision string) and what
`bench/ingest_speed.py` checks against the full-step values: importances and edge weights
within 1 %.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# the first rung: the (3, 7) Gauss-Kronrod pair (measured: see the module docstring); not (2, 5):
# 2 Gauss points agreed with 4 by chance too often (a 33 % error accepted on the demo CNN)
FIRST_RUNG = 3
SAFETY = 4.0  # a rank-deciding gap must exceed SAFETY x the sum of the two error estimates
TOLERANCE = 0.01  # stored importances and edge weights: relative deviation from the full-step values
# the estimated change must stay within TOLERANCE / REL_SAFETY: on the demo CNN an estimate of
# 0.9 % (8 vs 4 steps) came with a true deviation from 16 steps of 1.2 %
REL_SAFETY = 2.0
PROBE = 2  # neurons per layer that climb the ladder first; if none stops below ig_steps, the rest run exact
DEFAULT_ON = True  # Budget.adaptive_ig and the CLI's --adaptive-ig / --exact-ig default


def kronrod_points(first: int = FIRST_RUNG) -> int:
    """Path points of the first rung: the `(first, 2 first + 1)` Gauss-Kronrod pair."""
    return 2 * first + 1


def ladder(steps: int, first: int = FIRST_RUNG) -> list[int]:
    """Path points per rung: the Gauss-Kronrod pair (`2 first + 1`), then Gauss-Legendre at
    `4 first, 8 first, ...` up to half of `steps`, then `steps` itself; `[steps]` alone when
    the pair would not cost fewer points than `steps`.

    A rung above `steps / 2` would cost more than half the full computation for a neuron that may
    still escalate, so the ladder jumps from there to `steps`."""
    if kronrod_points(first) >= steps:
        return [steps]
    rungs, n = [kronrod_points(first)], 4 * first
    while 2 * n <= steps:
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
    closed_form: int = 0  # of those at the full step count: computed in closed form (neurflow.closed_form)

    @property
    def converging(self) -> bool:
        """Whether any neuron stopped below the full step count (the probe's verdict on the layer)."""
        return any(s < self.rungs[-1] for s in self.accepted)

    @property
    def settled(self) -> bool:
        """Whether every neuron stopped below the full step count."""
        return bool(self.accepted) and all(s < self.rungs[-1] for s in self.accepted)

    @property
    def escalated(self) -> int:
        """Neurons that needed more than the first rung (the Gauss-Kronrod pair)."""
        return sum(n for s, n in self.accepted.items() if s > self.rungs[0])

    def __str__(self) -> str:
        text = ", ".join(f"{n} at {s} steps" for s, n in sorted(self.accepted.items()))
        if self.closed_form:
            return text + " (in closed form: one path point per crop)"
        return text + (f" ({self.direct} of them run at {self.rungs[-1]} directly after the probe)" if self.direct else "")


def adaptive_attributions(
    attribute: Callable[[list[int], int, bool], np.ndarray | tuple[np.ndarray, np.ndarray]],
    neurons: int,
    tau: int,
    steps: int,
    *,
    probe: int = PROBE,
    direct: bool = False,
    closed: Callable[[list[int]], np.ndarray] | None = None,
) -> tuple[np.ndarray, Escalation]:
    """`(neurons, k, C)` attributions, each neuron's from the lowest rung that `accept`s it.

    `attribute(neuron indices, steps, False)` returns those neurons' attributions at that step
    count; `attribute(neuron indices, first, True)` the pair `(Kronrod's 2 first + 1 points, Gauss's
    first points)` computed on the Kronrod points.
    The first `probe` neurons climb first; if none of them stops below `steps`, the others are
    computed at `steps` directly (`probe=0` or `probe >= neurons`: every neuron climbs).  With
    `direct`, every neuron is computed at `steps` at once (a layer above failed its probe).  With
    `closed` (the sub-network has IG's closed form, `neurflow.closed_form`), `closed(neuron
    indices)` gives every neuron's `steps`-point values for the cost of one point: no ladder."""
    first = FIRST_RUNG
    rungs = ladder(steps, first)
    report = Escalation(neurons, rungs)
    if closed is not None:
        report.accepted[steps] = report.closed_form = neurons
        return closed(list(range(neurons))), report
    if len(rungs) == 1 or direct:
        report.accepted[steps] = neurons
        report.direct = neurons if len(rungs) > 1 else 0
        return attribute(list(range(neurons)), steps, False), report
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
        cur, prev = attribute(pending, first, True)  # Kronrod's values and Gauss's on the same points
        for i, n in enumerate(rungs):
            if i:
                prev, cur = cur, attribute(pending, n, False)
            last = n == steps
            ok = [last or accept(cur[row], prev[row], tau) for row in range(len(pending))]
            store([p for p, good in zip(pending, ok) if good], cur[[r for r, good in enumerate(ok) if good]], n)
            early += 0 if last else sum(ok)
            still = [r for r, good in enumerate(ok) if not good]
            if not still:
                break
            pending, cur = [pending[r] for r in still], cur[still]
        return early

    head = list(range(min(probe, neurons))) if 0 < probe < neurons else list(range(neurons))
    early = climb(head)
    rest = list(range(len(head), neurons))
    if rest:
        if early:
            climb(rest)
        else:
            store(rest, attribute(rest, steps, False), steps)
            report.direct = len(rest)
    assert out is not None
    return out, report
