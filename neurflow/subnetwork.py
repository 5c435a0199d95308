"""`g_l`: the piece of a model that maps one analysed layer's output to the next one up.

Integrated gradients of an upper neuron are taken with respect to the lower layer's output,
through `g_l`, fifty times per sample.  Recomputing the model from the input at every step
(what the reference code does) wastes most of that work, so `g_l` is cut out of the model's
traced graph with `torch.fx`: the nodes the upper layer's output needs, starting from the
lower layer's output.  Tracing respects whatever the forward code does (skip connections,
functional calls), unlike rebuilding the model from `named_children`.

Reading a tensor's shape is no path around a layer: EfficientNet's forward starts with
`bs = inputs.size(0)` and ends with `x.view(bs, -1)`.  Such a read of a tensor `g_l` does not
compute is replaced by the same value computed from `g_l`'s input (the batch size is the
lower output's first dimension; other sizes are fixed by the model's input shape), worked
out on the meta device; a shape that depends on the input's values makes the layer pair no
cut.  Whether a layer pair is a cut is decided by walking the graph, before any tensor runs
(only the shape reads, if any, are then worked out on meta tensors, which hold no data).

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
from neurflow.hooks import _StopForward, module_of, output_tensor
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


# Reading a tensor's metadata (its shape, rank, size, dtype, device) does not read its values:
# `bs = inputs.size(0)` at the top of a forward, used by `x.view(bs, -1)` at the end, is no
# path around the layers in between.  Such reads of tensors g_l cannot compute are replaced
# by the same value computed from g_l's input (see `_shape_specs`).
_METADATA_METHODS = {"size", "dim", "ndimension", "numel", "nelement"}
_METADATA_ATTRIBUTES = {"shape", "ndim", "dtype", "device"}


def _metadata_read(node: fx.Node) -> bool:
    """Whether `node` reads only metadata of the tensor in its first argument."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_method":
        return node.target in _METADATA_METHODS
    if node.op == "call_function":
        if node.target is getattr:
            return len(node.args) == 2 and node.args[1] in _METADATA_ATTRIBUTES
        return node.target is torch.numel
    return False


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack), None) if stack else None
    return f"{node.name!r} in module {path!r}" if path else repr(node.name)


def _bypass_message(lower: str, upper: str, path: list[fx.Node], from_lower: set[fx.Node]) -> str:
    """Say where the path that avoids the lower layer joins the computation (a residual add, ...)."""
    join = next((n for n in path if n in from_lower), None)
    where = f" at {_module_path(join)}" if join is not None else ""
    return (
        f"layer {upper!r} does not depend on layer {lower!r} alone (a connection bypasses it{where}); "
        "analyse block outputs so that each layer's output is a function of the next lower one"
    )


class _Cut:
    """The nodes of g_l: what the upper node needs, back to the lower node.

    Found by a walk over the graph alone (no tensors run), so a layer pair that is no cut is
    refused at once.  `metadata` holds the metadata reads of tensors outside the cut."""

    def __init__(self, gm: fx.GraphModule, lower: str, upper: str):
        self.lower_node, self.upper_node = _layer_node(gm, lower), _layer_node(gm, upper)
        nodes = list(gm.graph.nodes)
        computable: set[fx.Node] = set()  # values g_l can compute from its input alone
        from_lower: set[fx.Node] = set()  # values that depend on the lower layer's output
        for node in nodes:
            inputs = node.all_input_nodes
            if node is self.lower_node or _metadata_read(node) or (
                node.op != "placeholder" and all(i in computable for i in inputs)
            ):
                computable.add(node)
            if node is self.lower_node or any(i in from_lower for i in inputs):
                from_lower.add(node)
        self.needed: set[fx.Node] = set()
        self.metadata: list[fx.Node] = []
        parent: dict[fx.Node, fx.Node] = {}
        stack = [self.upper_node]
        while stack:
            node = stack.pop()
            if node in self.needed:
                continue
            self.needed.add(node)
            if node is self.lower_node:
                continue
            if _metadata_read(node) and node.args[0] not in computable:
                self.metadata.append(node)
                continue
            if node.op == "placeholder":
                path = [node]
                while path[-1] in parent:
                    path.append(parent[path[-1]])
                raise NotACut(_bypass_message(lower, upper, path, from_lower))
            for i in node.all_input_nodes:
                parent.setdefault(i, node)
                stack.append(i)
        if self.lower_node not in self.needed:
            raise NotACut(f"layer {upper!r} does not depend on layer {lower!r}; is the layer list ordered top to bottom?")
        self.metadata.sort(key=nodes.index)


class _ShapesUnknown(Exception):
    """A metadata read outside the cut that cannot be rebuilt from g_l's input alone."""


_PROBE_BATCHES = (2, 3, 4)


def _shape_specs(gm: fx.GraphModule, cut: _Cut, input_shape: tuple[int, ...]) -> dict[fx.Node, tuple]:
    """How each metadata read outside the cut follows from g_l's input, as a `_from_lower` spec.

    The reads are evaluated on the meta device (shapes only: no arithmetic, a quarter of a
    second for a whole EfficientNet) for model inputs of batch sizes 2, 3 and 4 of
    `input_shape`: a value that stays put is a constant, a size that grows with the batch is
    `a * n + b` of the lower layer's batch size `n` (checked on the third batch size), and
    only when the lower output's first dimension is the batch."""
    keep: set[fx.Node] = set()
    stack = [cut.lower_node, *cut.metadata]
    while stack:
        node = stack.pop()
        if node not in keep:
            keep.add(node)
            stack.extend(node.all_input_nodes)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node in keep or node.op == "placeholder":
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output((env[cut.lower_node], tuple(env[n] for n in cut.metadata)))
    probe = fx.GraphModule(gm, graph)
    tensors = dict([*probe.named_parameters(), *probe.named_buffers()])
    for node in graph.nodes:  # tensor constants held as plain attributes
        if node.op == "get_attr" and node.target not in tensors:
            value = _attribute(probe, node.target)
            if isinstance(value, torch.Tensor):
                tensors[node.target] = value
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)
    lowers, samples = [], []
    try:
        with torch.no_grad():
            for n in _PROBE_BATCHES:
                x = torch.empty((n, *input_shape), dtype=dtype, device="meta")
                lower, values = torch.func.functional_call(probe, meta, (x,))
                lowers.append(output_tensor(lower).shape[0])
                samples.append(values)
    except Exception as exc:  # code that needs tensor values fails on the meta device, in many ways
        raise _ShapesUnknown(f"{type(exc).__name__}: {exc}") from exc
    if lowers != list(_PROBE_BATCHES):
        raise _ShapesUnknown(f"the lower layer's first dimension is {lowers} for batches {list(_PROBE_BATCHES)}, not the batch size")
    return {node: _fit([s[i] for s in samples], node) for i, node in enumerate(cut.metadata)}


def _attribute(module: nn.Module, target: str):
    for part in target.split("."):
        module = getattr(module, part)
    return module


def _fit_int(values: list[int], node: fx.Node) -> tuple[int, int]:
    """`(a, b)` with `value = a * batch + b` at every probed batch size."""
    (n0, n1), (v0, v1) = _PROBE_BATCHES[:2], values[:2]
    a = (v1 - v0) // (n1 - n0)
    b = v0 - a * n0
    if any(a * n + b != v for n, v in zip(_PROBE_BATCHES, values)):
        raise _ShapesUnknown(f"{node.name} is {values} for batches {list(_PROBE_BATCHES)}, not linear in the batch size")
    return a, b


def _fit(values: list, node: fx.Node) -> tuple:
    first = values[0]
    if node.op == "call_function" and node.target is getattr and node.args[1] == "device":
        return ("device",)  # the device g_l runs on
    if isinstance(first, torch.Size) or (isinstance(first, tuple) and all(type(v) is int for v in first)):
        if any(len(v) != len(first) for v in values):
            raise _ShapesUnknown(f"{node.name} changes rank with the batch size")
        return ("size", tuple(_fit_int([v[d] for v in values], node) for d in range(len(first))))
    if type(first) is int:
        return ("int", *_fit_int(values, node))
    if all(v == first for v in values) and isinstance(first, torch.dtype):
        return ("const", first)
    raise _ShapesUnknown(f"{node.name} ({type(first).__name__}) cannot be rebuilt from g_l's input")


def _from_lower(lower: torch.Tensor, spec: tuple):
    """A metadata value of a tensor outside g_l, from g_l's input `lower` (see `_shape_specs`).

    Written with plain tensor and integer operations so that torch.fx can trace through it
    again (BatchNorm folding re-traces the sub-network)."""
    kind = spec[0]
    if kind == "const":
        return spec[1]
    if kind == "device":
        return lower.device
    n = lower.shape[0]
    if kind == "int":
        return n * spec[1] + spec[2] if spec[1] else spec[2]
    dims = tuple(n * a + b if a else b for a, b in spec[1])
    return torch.Size(dims) if all(isinstance(d, int) for d in dims) else dims


def _fx_subnetwork(gm: fx.GraphModule, lower: str, upper: str, input_shape: tuple[int, ...]) -> fx.GraphModule:
    cut = _Cut(gm, lower, upper)
    specs: dict[fx.Node, tuple] = {}
    if cut.metadata:
        try:
            specs = _shape_specs(gm, cut, input_shape)
        except _ShapesUnknown as exc:  # e.g. the size of a nonzero(): it depends on the input's values
            reads = ", ".join(repr(n.name) for n in cut.metadata)
            raise NotACut(
                f"layer {upper!r} reads the shape of a tensor computed without layer {lower!r} ({reads}) and that "
                f"shape does not follow from the batch size alone ({exc}); analyse other layers"
            ) from None
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut.lower_node: graph.placeholder("lower")}
    for node in gm.graph.nodes:
        if node not in cut.needed or node is cut.lower_node:
            continue
        if node in specs:
            env[node] = graph.call_function(_from_lower, (env[cut.lower_node], specs[node]))
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[cut.upper_node])
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
            captured["out"] = output_tensor(output)
            raise _StopForward

        handles = [module_of(self.model, self.lower).register_forward_hook(substitute)]
        if self.upper != LOGITS:
            handles.append(module_of(self.model, self.upper).register_forward_hook(read))
        try:
            captured["out"] = output_tensor(self.model(dummy))
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return captured["out"]


def check_cuts(model: nn.Module, layers: list[str]) -> None:
    """Raise `NeurflowInputError` unless every layer pair of `layers` is a cut of the traced graph:
    `build_subnetworks`' first check alone (a walk over the graph, no tensor run), for the checks
    a command makes before it starts a store or reads images."""
    gm = trace(model, layers)
    if gm is not None:
        for d in range(len(layers) - 1):
            _Cut(gm, layers[d + 1], layers[d])


def build_subnetworks(model: nn.Module, layers: list[str], input_shape: tuple[int, ...]) -> list[nn.Module]:
    """`[g_0, g_1, ...]` where `g_d` maps the output of `layers[d + 1]` to that of `layers[d]`.

    `input_shape` is one model input without the batch dimension, `(C, H, W)`.  Every layer
    pair is checked to be a cut (a walk over the traced graph, no tensor run) before any
    sub-network is built, so a bad list fails in a fraction of a second."""
    gm = trace(model, layers)
    if gm is not None:
        for d in range(len(layers) - 1):
            _Cut(gm, layers[d + 1], layers[d])
    subs: list[nn.Module] = []
    for d in range(len(layers) - 1):
        if gm is not None:
            subs.append(_fx_subnetwork(gm, layers[d + 1], layers[d], input_shape))
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


class InputTap(nn.Module):
    """`x -> x[:, channels]` for a restricted sub-network's own input (a residual block's identity
    shortcut), read from a detached copy: autograd's backward of `index_select` would zero-fill a
    full-size gradient of the input per backward pass and then add it to the input's gradient
    (measured for the issue: 1.8 s of a 14.9 s ResNet50 IG phase at 50 steps).  Instead the slice
    is a leaf of its own (`last`), and whoever takes the gradient with respect to the input asks
    for this leaf's too and adds it into the input gradient's `channels` (`neurflow.attribution`).
    With no gradient wanted it is a plain slice."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.register_buffer("channels", torch.tensor(channels, dtype=torch.long), persistent=False)
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.requires_grad and torch.is_grad_enabled()):
            self.last = None
            return torch.index_select(x, 1, self.channels)
        self.last = torch.index_select(x.detach(), 1, self.channels).requires_grad_(True)
        return self.last


def input_taps(net: nn.Module) -> list[InputTap]:
    """The `InputTap`s of a restricted sub-network (none for any other module)."""
    return [m for m in net.modules() if isinstance(m, InputTap)]


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
        if node.op == "placeholder":  # the sub-network's input: its gradient is added by the caller (InputTap)
            if "_input_tap" not in dict(gm.named_modules()):
                gm.add_submodule("_input_tap", InputTap(channels))
            return graph.call_module("_input_tap", (node,))
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
