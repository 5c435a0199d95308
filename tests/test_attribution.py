"""Shared-path IG (`layer_attributions`) against captum's IG, and the memory sizing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurflow.attribution import (
    IGRule,
    IGRun,
    _kronrod_nodes,
    auto_max_rows,
    integrated_gradients,
    kronrod_quadrature,
    layer_attributions,
    plan_chunks,
    quadrature,
)
from neurflow.subnetwork import build_subnetworks, fold_batchnorm, restrict_outputs


class Block(nn.Module):
    """A residual conv block with BatchNorm: the shape of the sub-networks IG runs through."""

    def __init__(self, c: int = 6):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, c, 1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


def _block() -> nn.Module:
    torch.manual_seed(0)
    block = Block()
    with torch.no_grad():  # non-trivial running statistics so that folding has work to do
        for bn in (block.bn1, block.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    block.eval()
    for p in block.parameters():
        p.requires_grad_(False)
    return block


MAPS = torch.randn(5, 6, 7, 7, generator=torch.Generator().manual_seed(1)).relu()
# crops shared by several targets, one crop with a single target, targets in no particular order
PAIRS = [(0, 1), (3, 1), (5, 1), (2, 0), (0, 0), (4, 3), (1, 2), (2, 2), (3, 4), (1, 4), (5, 4), (0, 4)]


def _captum(sub, pairs, steps=12):
    h = MAPS[[c for _, c in pairs]]
    return integrated_gradients(sub, h, torch.tensor([u for u, _ in pairs]), steps=steps)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("max_rows", [12, 36, 10_000])  # one crop per chunk, a few, all at once
def test_shared_paths_equal_captum(channels_last, max_rows):
    sub = _block()
    lower = MAPS.contiguous(memory_format=torch.channels_last) if channels_last else MAPS
    seen = []
    ours = layer_attributions(
        sub, PAIRS, lambda ids: lower[ids], IGRule(12), IGRun("cpu", max_rows, channels_last=channels_last),
        on_rows=seen.append,
    )
    assert ours.shape == (len(PAIRS), 6)
    assert sum(seen) == len(PAIRS)
    torch.testing.assert_close(ours, _captum(sub, PAIRS), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n", [3, 4, 5])
def test_kronrod_pair_integrates_polynomials_to_degree_3n_plus_1(n):
    """The (n, 2n + 1) Gauss-Kronrod pair on [0, 1]: Kronrod exact to degree 3n + 1, its Gauss row
    is captum's n-point Gauss-Legendre rule on the shared nodes."""
    x, wk, _ = _kronrod_nodes(n)  # float64 on [-1, 1]
    for degree in range(3 * n + 2):
        assert float((wk * x**degree).sum()) == pytest.approx((1 - (-1) ** (degree + 1)) / (degree + 1), abs=1e-12)
    even = 3 * n + 2 + (3 * n + 2) % 2  # the first even degree above 3n + 1 (odd ones vanish by symmetry)
    assert abs(float((wk * x**even).sum()) - 2 / (even + 1)) > 1e-9  # and no further
    alphas, weights = kronrod_quadrature(n)
    assert alphas.shape == (2 * n + 1,) and weights.shape == (2, 2 * n + 1) and torch.all(alphas[1:] > alphas[:-1])
    assert float(weights[0].sum()) == pytest.approx(1.0, abs=1e-6) and float(weights[1].sum()) == pytest.approx(1.0, abs=1e-6)
    gauss_alphas, gauss_weights = quadrature(n)
    used = weights[1] != 0
    assert int(used.sum()) == n
    torch.testing.assert_close(alphas[used], torch.sort(gauss_alphas).values, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights[1][used], gauss_weights[torch.argsort(gauss_alphas)], rtol=0, atol=1e-6)


def test_kronrod_pass_gives_the_gauss_attributions_and_a_closer_kronrod_value():
    """One pass over the 9 Kronrod points: its Gauss row equals the 4-step attributions (up to
    rounding: the weights are applied after the gradients), its Kronrod row is closer to 64 steps."""
    sub = _block()
    maps, run = (lambda ids: MAPS[ids]), IGRun("cpu", 256)
    pair = layer_attributions(sub, PAIRS, maps, IGRule(4, kronrod=True), run)
    assert pair.shape == (2, len(PAIRS), 6)
    four, fine = (layer_attributions(sub, PAIRS, maps, IGRule(s), run) for s in (4, 64))
    torch.testing.assert_close(pair[1], four, rtol=1e-5, atol=1e-7)
    assert (pair[0] - fine).abs().sum() < (four - fine).abs().sum()


def test_completeness_holds_per_pair():
    """IG's completeness axiom: per pair, the summed (not averaged) attributions equal a(h) - a(0)."""
    sub = _block()
    ours = layer_attributions(sub, PAIRS, lambda ids: MAPS[ids], IGRule(64), IGRun("cpu", 256))
    out_h, out_0 = sub(MAPS).mean(dim=(2, 3)), sub(torch.zeros_like(MAPS)).mean(dim=(2, 3))
    for row, (u, c) in enumerate(PAIRS):
        total = ours[row].sum() * 49
        assert total.item() == pytest.approx((out_h[c, u] - out_0[c, u]).item(), rel=2e-2, abs=1e-4)


def test_chunks_group_crops_with_equal_target_counts():
    chunks = plan_chunks(PAIRS, steps=12, max_rows=24)
    crops = [crop for chunk in chunks for crop, _ in chunk]
    assert sorted(crops) == [0, 1, 2, 3, 4]
    assert all(len(chunk) <= 2 for chunk in chunks)
    counts = [len(t) for chunk in chunks for _, t in chunk]
    assert counts == sorted(counts, reverse=True)  # most targets first
    every = sorted(i for chunk in chunks for _, t in chunk for i in t)
    assert every == list(range(len(PAIRS)))


@pytest.mark.parametrize("max_rows", [24, 120, 10_000])
def test_chunks_carry_no_idle_backward_rows(max_rows):
    """Each backward pass runs over every row of its chunk, so a chunk mixes no target counts:
    the crop-backward passes are exactly the pairs (one per pair), however big the chunks."""
    chunks = plan_chunks(PAIRS, steps=12, max_rows=max_rows)
    assert all(len({len(t) for _, t in chunk}) == 1 for chunk in chunks)
    assert sum(len(chunk) * max(len(t) for _, t in chunk) for chunk in chunks) == len(PAIRS)


def test_fold_batchnorm_keeps_outputs_and_attributions():
    block = _block()
    sub = build_subnetworks(nn.Sequential(nn.Identity(), block), ["1", "0"], (6, 7, 7))[0]
    folded = fold_batchnorm(sub)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in block.modules())  # the model is left alone
    torch.testing.assert_close(folded(MAPS), block(MAPS), rtol=1e-5, atol=1e-5)
    a = layer_attributions(folded, PAIRS, lambda ids: MAPS[ids], IGRule(12), IGRun("cpu", 64))
    torch.testing.assert_close(a, _captum(block, PAIRS), rtol=1e-4, atol=1e-6)


def test_auto_max_rows_follows_the_row_size():
    sub = _block()
    small = auto_max_rows(sub, MAPS[:1], torch.device("cpu"), cap=10**9)
    big = auto_max_rows(sub, torch.randn(1, 6, 70, 70).relu(), torch.device("cpu"), cap=10**9)
    assert small >= 1 and big >= 1
    assert 50 < small / big < 200  # 100x the positions, about 100x fewer rows
    assert auto_max_rows(sub, MAPS[:1], torch.device("cpu"), cap=16) == 16


def test_restricted_network_computes_only_the_targets():
    block = _block()
    sub = fold_batchnorm(build_subnetworks(nn.Sequential(nn.Identity(), block), ["1", "0"], (6, 7, 7))[0])
    targets = [4, 1]
    small = restrict_outputs(sub, targets)
    convs = {n: m for n, m in small.named_modules() if isinstance(m, nn.Conv2d) and n.endswith("_restricted")}
    assert [m.out_channels for m in convs.values()] == [2]  # the last conv computes 2 of 6 channels
    torch.testing.assert_close(small(MAPS), sub(MAPS)[:, targets], rtol=1e-5, atol=1e-6)
    assert sub(MAPS).shape[1] == 6  # the original is left whole
    restricted = layer_attributions(sub, PAIRS, lambda ids: MAPS[ids], IGRule(12), IGRun("cpu", 64))
    whole = layer_attributions(sub, PAIRS, lambda ids: MAPS[ids], IGRule(12), IGRun("cpu", 64),
                               restrict=False)
    torch.testing.assert_close(restricted, whole, rtol=1e-5, atol=1e-7)


def test_restriction_slices_after_operations_it_does_not_know():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1)  # mixes channels: must be sliced after, not before

    sub = build_subnetworks(nn.Sequential(nn.Identity(), Odd()), ["1", "0"], (6, 7, 7))[0]
    small = restrict_outputs(sub, [5, 0])
    torch.testing.assert_close(small(MAPS), sub(MAPS)[:, [5, 0]])


def test_ig_of_a_linear_map_is_the_known_answer():
    """For a linear g (1x1 conv, no bias) IG is exact at any step count.  a_u = sum_v W[u, v] mean_hw(h_v), so
    each position's attribution is h_v(pos) W[u, v] / HW and its spatial mean (spec §3) is
    A_u(h)_v = mean_hw(h_v) W[u, v] / HW; a channel g does not read (W[:, v] = 0) gets exactly 0."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 1, bias=False).eval()
    with torch.no_grad():
        conv.weight[:, 2] = 0
    for p in conv.parameters():
        p.requires_grad_(False)
    sub = build_subnetworks(nn.Sequential(nn.Identity(), conv), ["1", "0"], (6, 7, 7))[0]
    pairs = [(u, c) for c in range(5) for u in (0, 3)]
    want = torch.stack([MAPS[c].mean(dim=(1, 2)) * conv.weight[u, :, 0, 0] / 49 for u, c in pairs])
    for steps in (1, 3):
        got = layer_attributions(sub, pairs, lambda ids: MAPS[ids], IGRule(steps), IGRun("cpu", 64))
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
        assert (got[:, 2] == 0).all()
        ref = integrated_gradients(sub, MAPS[[c for _, c in pairs]], torch.tensor([u for u, _ in pairs]), steps=steps)
        assert torch.allclose(ref, want, rtol=1e-5, atol=1e-7)


def test_restricted_identity_shortcut_has_no_full_size_index_select_backward():
    """The block's identity shortcut `+ x`, cut to the targets, is read through an InputTap: its
    backward graph holds no IndexSelectBackward (which zero-fills a gradient of the whole input per
    pass), and the attributions still equal the whole block's (test above)."""
    from neurflow.subnetwork import input_taps

    sub = fold_batchnorm(build_subnetworks(nn.Sequential(nn.Identity(), _block()), ["1", "0"], (6, 7, 7))[0])
    small = restrict_outputs(sub, [4, 1])
    assert len(input_taps(small)) == 1
    x = MAPS.clone().requires_grad_(True)
    seen, stack = set(), [small(x).sum().grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack += [f for f, _ in fn.next_functions]
    names = {type(fn).__name__ for fn in seen}
    assert not any("IndexSelect" in n for n in names) and any("Convolution" in n for n in names)
    whole = layer_attributions(sub, PAIRS, lambda ids: MAPS[ids], IGRule(12), IGRun("cpu", 64),
                               restrict=False)
    for max_rows in (12, 64):  # several backward passes per chunk (retain_graph) and one
        got = layer_attributions(sub, PAIRS, lambda ids: MAPS[ids], IGRule(12), IGRun("cpu", max_rows))
        torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-7)
