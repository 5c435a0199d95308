"""Concepts of a neuron (spec §5) and the edge weights that feed them (spec §6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurflow.clustering import ward_clusters


@dataclass
class NeuronConcepts:
    """Concepts of one critical neuron, in the shapes the circuit records want."""

    labels: np.ndarray  # (k,) concept of each top sample
    vectors: np.ndarray  # (J, C_lower) concept vectors
    mean_activations: np.ndarray  # (J,)
    representatives: list[list[int]]  # per concept: positions in the top-sample list, closest first
    weights: np.ndarray  # (J, tau) normalised signed edge weights, columns = core neurons in rank order


def neuron_concepts(
    z: np.ndarray,
    activations: np.ndarray,
    attributions: np.ndarray,
    core: np.ndarray,
    *,
    max_concepts: int,
    num_representatives: int,
) -> NeuronConcepts:
    """Concepts from one neuron's top samples.

    z: `(k, C_lower)` spatial means of the lower layer on the top samples;
    activations: `(k,)` the neuron's activation on them;
    attributions: `(k, C_lower)` IG attributions `A_u(x)` on them;
    core: `(tau,)` core neuron channels, most important first.
    """
    k = len(z)
    labels = ward_clusters(z, max_clusters=min(k - 1, max_concepts))
    count = int(labels.max()) + 1 if k else 0
    vectors = np.stack([z[labels == j].mean(axis=0) for j in range(count)])
    mean_acts = np.array([activations[labels == j].mean() for j in range(count)])
    z_core = z[:, core]
    reps = []
    for j in range(count):
        members = np.flatnonzero(labels == j)
        centre = z_core[members].mean(axis=0)
        dist = np.linalg.norm(z_core[members] - centre, axis=1)
        order = np.argsort(dist, kind="stable")[:num_representatives]
        reps.append([int(members[i]) for i in order])
    raw = np.stack([attributions[labels == j][:, core].mean(axis=0) for j in range(count)])
    weights = raw / (np.abs(raw).sum(axis=1, keepdims=True) + 1e-7)
    return NeuronConcepts(labels, vectors, mean_acts, reps, weights)
