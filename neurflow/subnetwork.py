"""`g_l`: the piece of a model that maps one analysed layer's output to the next one up.

Integrated gradients of an upper neuron are taken with respect to the lower layer's output,
through `g_l`, fifty times per sample.  Recomputing the model from the input at every step
(what the reference code does) wastes most of that work, so `g_l` is cut out of the model's
traced graph with `torch.fx`: the nodes the upper layer's output needs, starting from the
lower layer's output.  Tracing respects whatever the forward code does (skip connections,
functional calls), unlike rebuilding the model from `named_children`.

When a model cannot be traced, a hook-based `g_l` is used instead: it runs the model on a
dummy input and substitutes the lower layer's output with a forward hook.  It is exact too,
only slower (it pays for the layers below).
"""

from __future__ import annotations

import copy
import operator
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn

from neurflow.circuit import LOGITS
from neurflow.hooks import _as_tensor, _StopForward, module_of
from neurflow.images import NeurflowInputError


class NotACut(NeurflowInputError):
    """The upper layer's output depends on more than the lower layer's output."""


class _LayerTracer(fx.Tracer):
    def __init__(self, leaves: set[str]):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, layers: list[str]) -> fx.GraphModule | None:
    """Trace `model` keeping every analysed layer as one call node; None if it cannot be traced."""
    leaves = {name for name in layers if name != LOGITS}
    try:
        graph = _LayerTracer(leaves).trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        warnings.warn(f"torch.fx could not trace the model ({type(exc).__name__}: {exc}); using the slower hook-based sub-networks")
        return None
    return fx.GraphModule(model, graph)


def _layer_node(gm: fx.GraphModule, name: str) -> fx.Node:
    if name == LOGITS:
        out = next(n for n in gm.graph.nodes if n.op == "output")
        arg = out.args[0]
        if isinstance(arg, fx.Node):
            return arg
        if isinstance(arg, (tuple, list)) and arg and isinstance(arg[0], fx.Node):
            return arg[0]
        raise NeurflowInputError("cannot find the logits in the traced model's output")
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == name:
            return node
    raise NeurflowInputError(f"layer {name!r} is not called in the model's forward pass")


def _fx_subnetwork(gm: fx.GraphModule, lower: str, upper: str) -> fx.GraphModule:
    lower_node, upper_node = _layer_node(gm, lower), _layer_node(gm, upper)
    needed: set[fx.Node] = set()
    stack = [upper_node]
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        if node is lower_node:
            continue
        if node.op == "placeholder":
            raise NotACut(
                f"layer {upper!r} does not depend on layer {lower!r} alone (a connection bypasses it); "
                "analyse block outputs so that each layer's output is a function of the next lower one"
            )
        stack.extend(node.all_input_nodes)
    if lower_node not in needed:
        raise NotACut(f"layer {upper!r} does not depend on layer {lower!r}; is the layer list ordered top to bottom?")
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node not in needed:
            continue
        if node is lower_node:
            env[node] = graph.placeholder("lower")
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[upper_node])
    sub = fx.GraphModule(gm, graph)
    sub.eval()
    return sub


class HookSubnetwork(nn.Module):
    """`g_l` by substitution: run the model on zeros, replace the lower output, read the upper one."""

    def __init__(self, model: nn.Module, lower: str, upper: str, input_shape: tuple[int, ...]):
        super().__init__()
        self.model, self.lower, self.upper, self.input_shape = model, lower, upper, input_shape

    def forward(self, lower_output: torch.Tensor) -> torch.Tensor:
        captured: dict[str, torch.Tensor] = {}
        dummy = torch.zeros((lower_output.shape[0],) + tuple(self.input_shape), device=lower_output.device)

        def substitute(_m, _i, _o):
            return lower_output

        def read(_m, _i, output):
            captured["out"] = _as_tensor(output)
            raise _StopForward

        handles = [module_of(self.model, self.lower).register_forward_hook(substitute)]
        if self.upper != LOGITS:
            handles.append(module_of(self.model, self.upper).register_forward_hook(read))
        try:
            captured["out"] = _as_tensor(self.model(dummy))
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return captured["out"]


def build_subnetworks(model: nn.Module, layers: list[str], input_shape: tuple[int, ...]) -> list[nn.Module]:
    """`[g_0, g_1, ...]` where `g_d` maps the output of `layers[d + 1]` to that of `layers[d]`."""
    gm = trace(model, layers)
    subs: list[nn.Module] = []
    for d in range(len(layers) - 1):
        if gm is not None:
            subs.append(_fx_subnetwork(gm, layers[d + 1], layers[d]))
        else:
            subs.append(HookSubnetwork(model, layers[d + 1], layers[d], input_shape))
    return subs


def fold_batchnorm(sub: nn.Module) -> nn.Module:
    """A copy of `sub` with every eval-mode BatchNorm folded into the conv before it.

    IG runs `g_l` forward and backward fifty times per sample; folding removes the
    BatchNorm passes (about a fifth of a ResNet block's time on CPU) and changes the
    result only by float rounding.  Sub-networks that cannot be traced are returned as they are."""
    if not isinstance(sub, fx.GraphModule) or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in sub.modules()):
        return sub
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(sub)
    except Exception as exc:  # fx raises many types for code it cannot retrace
        warnings.warn(f"could not fold BatchNorm into convolutions ({type(exc).__name__}: {exc}); IG runs unfolded")
        return sub
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval()


_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.ELU, nn.Mish, nn.Identity, nn.Dropout,
)
_CHANNELWISE_FUNCTIONS = {
    operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.sub, torch.relu, torch.sigmoid,
    torch.tanh, F.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, F.leaky_relu,
}
_CHANNELWISE_METHODS = {"relu", "sigmoid", "tanh", "add", "mul", "sub"}


def restrict_outputs(sub: nn.Module, channels: list[int]) -> nn.Module | None:
    """A copy of `sub` that computes only the output `channels` (in that order), or None.

    IG targets a few of the upper layer's channels (the critical neurons), yet the last
    convolution of `g_l` computes all of them, forward and backward, at every path point.
    Walking back from the output, channel-wise operations (activations, residual adds) take
    sliced inputs, the first convolution or linear layer met on each path keeps only the wanted
    rows of its weight, and anything else is sliced after it.  Callers must check the result
    against `sub` (see `neurflow.attribution`); None when `sub` was not traced."""
    if not isinstance(sub, fx.GraphModule):
        return None
    gm = fx.GraphModule(sub, copy.deepcopy(sub.graph))
    gm.register_buffer("_restricted_channels", torch.tensor(channels, dtype=torch.long), persistent=False)
    modules = dict(gm.named_modules())
    memo: dict[fx.Node, fx.Node] = {}
    graph = gm.graph
    with graph.inserting_before(next(iter(graph.nodes))):
        index = graph.get_attr("_restricted_channels")

    def sliced(arg):
        if not isinstance(arg, fx.Node):
            return arg
        if arg not in memo:
            with graph.inserting_after(arg):
                memo[arg] = _sliced_node(arg)
        return memo[arg]

    def _sliced_node(node: fx.Node) -> fx.Node:
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and getattr(module, "groups", 1) == 1:
            smaller = copy.deepcopy(module)
            with torch.no_grad():
                smaller.weight = nn.Parameter(module.weight[channels].clone(), requires_grad=False)
                if module.bias is not None:
                    smaller.bias = nn.Parameter(module.bias[channels].clone(), requires_grad=False)
            if isinstance(smaller, nn.Linear):
                smaller.out_features = len(channels)
            else:
                smaller.out_channels = len(channels)
            name = node.target.replace(".", "_") + "_restricted"
            gm.add_submodule(name, smaller)
            return graph.call_module(name, node.args, node.kwargs)
        channelwise = (
            isinstance(module, _CHANNELWISE_MODULES)
            or (node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS)
            or (node.op == "call_method" and node.target in _CHANNELWISE_METHODS)
        )
        if channelwise:
            args = tuple(sliced(a) for a in node.args)
            kwargs = {k: sliced(v) for k, v in node.kwargs.items()}
            return graph.create_node(node.op, node.target, args, kwargs)
        return graph.call_function(torch.index_select, (node, 1, index))

    output = next(n for n in graph.nodes if n.op == "output")
    result = output.args[0]
    if not isinstance(result, fx.Node):
        return None
    output.args = (sliced(result),)
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    return gm.eval()
