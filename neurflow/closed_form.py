"""Integrated Gradients in closed form where IG's path crosses at most one ReLU.

IG sums `w_s * grad g(alpha_s h)` over the quadrature's path points (spec §3): `ig_steps` forward
and backward passes per crop.  Many sub-networks `g_l` are a single layer: a VGG-style
`(max pool) conv BatchNorm ReLU`, a classifier head `avg pool -> linear`.  Along the path
`alpha h` (every Gauss-Legendre node lies in `(0, 1)`):

* positively homogeneous ops of the input (max and average pooling, ReLU, convolutions without
  bias, reshapes) give `alpha v`; affine ops (a bias, BatchNorm) of those give
  `v(alpha) = v0 + alpha (v1 - v0)`, `v0` being their value at the zero input.  The gradient of
  such a chain is the same at every alpha (a max pool keeps its argmax: `alpha h` is ordered
  like `h`);
* a ReLU of an affine value `z(alpha)` is where the gradient changes along the path: its
  derivative at point `s` is `[z(alpha_s) > 0]`;
* after that ReLU, ops with a constant Jacobian (convolutions, BatchNorm, average pooling,
  reshapes, adds of values of the kinds above).

So `sum_s w_s grad g(alpha_s h)` is one backward pass at `h` in which that ReLU's derivative
is replaced by the mask `M = sum_s w_s [z0 + alpha_s (z1 - z0) > 0]` (`QuadratureReLU`); with
no such ReLU it is the gradient at `h` times `sum_s w_s`.  One path point gives the quadrature
at any step count: the same sum as the step-by-step computation up to float rounding (a
pre-activation within rounding of 0 at some path point may count that point's weight or not).

`closed_form_network` reads the traced (BatchNorm-folded, output-restricted) sub-network and
returns it with the ReLU replaced, or None when the graph holds anything else: two ReLUs in a
chain, a residual add around a ReLU, a max pool after an offset, an op this module does not
know.  `neurflow.attribution` checks the result on a probe crop against the step-by-step sum.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from numbers import Number

import torch
import torch.nn.functional as F
from torch import fx, nn

from neurflow.subnetwork import InputTap

# what a value along the path is, as a function of alpha
HOMOGENEOUS, AFFINE, AFTER_RELU, CONSTANT = "homogeneous", "affine", "after-relu", "constant"

_SAME_KIND_MODULES = (
    nn.Identity, nn.Dropout, nn.Flatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_LINEAR_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_SAME_KIND_FUNCTIONS = {torch.flatten, torch.index_select, F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean}
_SAME_KIND_METHODS = {"view", "reshape", "flatten", "mean", "contiguous", "squeeze", "unsqueeze"}
_RELU_FUNCTIONS = {torch.relu, F.relu}
_ADD_FUNCTIONS = {operator.add, operator.sub, torch.add, torch.sub}
_SCALE_FUNCTIONS = {operator.mul, operator.truediv, torch.mul}


class _MaskedReLU(torch.autograd.Function):
    """`relu(z)` forward; backward multiplies by a given mask instead of `[z > 0]`."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class QuadratureReLU(nn.Module):
    """The ReLU IG's path crosses, evaluated at `h` with the derivative of every path point summed:
    `M = sum_s w_s [z0 + alpha_s (z - z0) > 0]`.  `z0` (the pre-activation at the zero input) is
    read by one forward pass of zeros with `calibrating` set (`closed_form_network` does that)."""

    def __init__(self, alphas: torch.Tensor, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("alphas", alphas.detach().clone(), persistent=False)
        self.register_buffer("weights", weights.detach().clone(), persistent=False)
        self.z0: torch.Tensor | None = None
        self.calibrating = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.z0 = z.detach().clone()
            return z.clamp_min(0)
        if self.z0 is None:
            raise RuntimeError("QuadratureReLU used before its calibration pass (closed_form_network runs it)")
        if not (z.requires_grad and torch.is_grad_enabled()):
            return z.clamp_min(0)
        with torch.no_grad():
            z0 = self.z0.to(z.dtype)
            step = z.detach() - z0
            mask = torch.zeros_like(z)
            for a, w in zip(self.alphas.tolist(), self.weights.tolist()):
                mask += w * ((z0 + a * step) > 0).to(z.dtype)
        return _MaskedReLU.apply(z, mask)


@dataclass
class ClosedForm:
    """A sub-network whose one backward pass at `h` gives the quadrature's weighted gradient sum:
    the gradient times `scale` (`sum_s w_s` when no ReLU is crossed, else 1: the weights are in
    the mask; a branch that bypasses the ReLU after it is then taken at weight 1, which the
    Gauss-Legendre weights sum to up to rounding)."""

    net: nn.Module
    scale: float


class _Tracer(fx.Tracer):
    """torch.nn's modules stay calls; the pipeline's own (`InputTap`) too; any other module is
    traced through (an analysed layer is one call in the sub-network's graph)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_input_tap(m) or super().is_leaf_module(m, qualname)


def inlined(sub: nn.Module) -> fx.GraphModule | None:
    """`sub`'s graph with every module that is not torch.nn's traced through; None if it cannot be."""
    if not isinstance(sub, fx.GraphModule):
        return None
    modules = dict(sub.named_modules())
    opaque = [n for n in sub.graph.nodes if n.op == "call_module" and not _Tracer().is_leaf_module(modules[n.target], n.target)]
    if not opaque:
        return sub
    try:
        return fx.GraphModule(sub, _Tracer().trace(sub)).eval()
    except Exception:  # fx raises many types for code it cannot trace
        return None


def path_relu(sub: nn.Module) -> fx.Node | None | bool:
    """The one ReLU node whose derivative changes along IG's path, in `inlined(sub)`; None when
    there is none (the gradient is the same at every path point); False when the sub-network is
    not of the form the closed form covers (see the module docstring)."""
    sub = inlined(sub)
    if sub is None:
        return False
    modules = dict(sub.named_modules())
    kinds: dict[fx.Node, str] = {}
    crossed: list[fx.Node] = []

    def kind_of(arg) -> str | None:
        if isinstance(arg, fx.Node):
            return kinds.get(arg)
        if isinstance(arg, (Number, type(None), str, torch.dtype)) or (
            isinstance(arg, (tuple, list)) and all(isinstance(a, (Number, type(None))) for a in arg)
        ):
            return CONSTANT
        return None

    for node in sub.graph.nodes:
        if node.op == "placeholder":
            kinds[node] = HOMOGENEOUS
            continue
        if node.op == "get_attr":
            kinds[node] = CONSTANT
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, fx.Node) or kinds.get(result) not in (HOMOGENEOUS, AFFINE, AFTER_RELU):
                return False
            break
        first = kind_of(node.args[0]) if node.args else None
        rest = [kind_of(a) for a in node.args[1:]] + [kind_of(v) for v in node.kwargs.values()]
        out = _kind(node, modules, first, rest)
        if out == "relu":  # a ReLU: of an affine value it is the one place the gradient changes
            if first == HOMOGENEOUS:
                out = HOMOGENEOUS
            elif first == AFFINE and not crossed:
                crossed.append(node)
                out = AFTER_RELU
            else:
                return False
        if out is None:
            return False
        kinds[node] = out
    return crossed[0] if crossed else None


def _kind(node: fx.Node, modules: dict[str, nn.Module], first: str | None, rest: list[str | None]) -> str | None:
    """The kind of `node`'s output from its inputs' kinds; "relu" for a ReLU (decided by the
    caller); None for anything the closed form does not cover."""
    if any(k is None for k in [first, *rest]):  # an input of a kind not covered (or no input at all)
        return None
    if node.op == "call_module":
        module = modules.get(node.target)
        if module is None or (module.training and isinstance(module, (nn.Dropout, nn.modules.batchnorm._BatchNorm))):
            return None
        if isinstance(module, nn.ReLU):
            return "relu"
        if _is_input_tap(module) or isinstance(module, _SAME_KIND_MODULES):
            return first
        if isinstance(module, _MAX_POOLS):
            return HOMOGENEOUS if first == HOMOGENEOUS else None
        if isinstance(module, _LINEAR_MODULES):
            if first == AFTER_RELU:
                return AFTER_RELU
            return HOMOGENEOUS if first == HOMOGENEOUS and module.bias is None else AFFINE
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            return AFTER_RELU if first == AFTER_RELU else AFFINE
        return None
    if node.op == "call_function":
        if node.target in _RELU_FUNCTIONS and all(k == CONSTANT for k in rest):
            return "relu"
        if node.target in _SAME_KIND_FUNCTIONS:
            return first if all(k == CONSTANT for k in rest) else None
        if node.target in _ADD_FUNCTIONS:
            return _sum_kind([first, *rest])
        if node.target in _SCALE_FUNCTIONS:  # by a constant only: a product of two path values is not covered
            path = [k for k in [first, *rest] if k != CONSTANT]
            divisor_is_path = node.target is operator.truediv and rest[:1] != [CONSTANT]
            return path[0] if len(path) == 1 and not divisor_is_path else None
        return None
    if node.op == "call_method":
        if node.target == "relu" and all(k == CONSTANT for k in rest):
            return "relu"
        if node.target in _SAME_KIND_METHODS:
            return first if all(k == CONSTANT for k in rest) else None
    return None


def _is_input_tap(module: nn.Module) -> bool:
    return isinstance(module, InputTap)


def _sum_kind(kinds: list[str | None]) -> str | None:
    """A sum of path values: after the ReLU if any term is; homogeneous if every term is; else affine."""
    if any(k is None for k in kinds):
        return None
    if AFTER_RELU in kinds:
        return AFTER_RELU
    return HOMOGENEOUS if all(k == HOMOGENEOUS for k in kinds) else AFFINE


def closed_form_applies(sub: nn.Module) -> bool:
    """Whether IG through `sub` has the closed form (at most one ReLU on its path, see the module docstring)."""
    return path_relu(sub) is not False


def closed_form_network(sub: nn.Module, alphas: torch.Tensor, weights: torch.Tensor,
                        example: torch.Tensor) -> ClosedForm | None:
    """`sub` with its path ReLU replaced by a `QuadratureReLU` for the quadrature `(alphas, weights)`,
    calibrated on a zero input shaped like one row of `example`; None when the closed form does
    not cover `sub`."""
    traced = inlined(sub)
    relu = path_relu(traced) if traced is not None else False
    if relu is False:
        return None
    scale = float(weights.double().sum())
    if relu is None:
        return ClosedForm(sub, scale)
    gm = fx.GraphModule(traced, copy.deepcopy(traced.graph))
    node = next(n for n in gm.graph.nodes if n.name == relu.name)
    quad = QuadratureReLU(alphas.to(example.device), weights.to(example.device))
    gm.add_submodule("_quadrature_relu", quad)
    with gm.graph.inserting_after(node):
        replacement = gm.graph.call_module("_quadrature_relu", (node.args[0],))
    node.replace_all_uses_with(replacement)
    gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    gm.eval()
    quad.calibrating = True
    try:
        with torch.no_grad():
            gm(torch.zeros_like(example[:1]))
    finally:
        quad.calibrating = False
    return ClosedForm(gm, 1.0)
