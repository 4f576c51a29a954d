"""Channel dependency graph of an ONNX model: which channels are zero, which can be removed.

A *channel tensor* is an activation whose channel axis lines up with a weight's output
dimension: the output of a Conv (axis 1 of NC...), of a Gemm/MatMul with a constant weight
(last axis), and of every channel-wise op applied to those (BatchNormalization,
activations, pools, depthwise Conv, broadcast Add/Mul/... with per-channel or scalar
constants, Concat along the channel axis, which shifts channel indices).

Two analyses run over it, in graph (topological) order:

* **zero channels** (forward): channel ``c`` of a tensor is *exactly* zero everywhere when
  its producer guarantees it: a Conv/Gemm/MatMul weight row and bias entry that are all
  zero; BN with ``scale[c] = B[c] = 0``; an activation ``f`` with ``f(0) = 0`` of a zero
  channel; ``x * y`` with either zero; ``x + y`` with both zero; pools of zeros; and so on.
* **removable channels**: channels are tied into components: ``(x, c) ~ (y, c)`` across
  a channel-wise op, ``(x_i, c) ~ (concat, offset_i + c)``. A component can be deleted
  from every tensor in it at once when none of its members is *blocked* (a graph output;
  consumed by an op we do not understand: Reshape, Flatten, Softmax over channels,
  grouped conv, ...) and every member consumed along a contraction (the input channels of
  a Conv/Gemm/MatMul) is exactly zero there, since dropping a zero input channel from a
  contraction, padding included, changes nothing.

:func:`shrink` rewrites the model with a set of removed channels: weight rows/columns,
bias, BN statistics, depthwise ``group`` and per-channel constants are sliced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from lwc.sparsity_analysis import attr, constant_arrays

#: op(0) == 0 for every channel: zero channels stay zero through these.
ZERO_PRESERVING = {
    "Relu", "LeakyRelu", "HardSwish", "Identity", "Dropout", "Tanh", "Neg", "Abs", "Erf",
    "Sqrt", "Softsign", "Elu", "Selu", "Gelu", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Celu", "Mish", "ThresholdedRelu",
}
#: Channel-wise but op(0) may be non-zero.
CHANNELWISE = ZERO_PRESERVING | {"Sigmoid", "HardSigmoid", "Exp", "Softplus", "Clip", "Cast", "Reciprocal"}
#: Elementwise with broadcasting over several operands.
BINARY = {"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "PRelu"}


@dataclass
class ChannelTensor:
    """An activation with a channel axis (negative index), channel count and rank (or None)."""

    name: str
    channels: int
    axis: int
    rank: int | None


@dataclass
class ChannelGraph:
    """Channel tensors, their union-find components, zero masks and constraints.

    Attributes:
        tensors: channel tensors by name; ``base[name]`` is the first global channel index.
        zero: per tensor, a bool mask of the channels that are exactly zero.
        blocked: global channel indices that must not be removed.
        contracted: tensors read along their channel axis by a Conv/Gemm/MatMul.
        roots: tensor name -> index of the Conv/Gemm/MatMul node that creates it.
        sliced: (node index, input index) -> (channel tensor, axis in the constant) for
            per-channel constants that must be sliced with the channels.
        depthwise: node indices of depthwise Convs (their ``group`` tracks the channels).
    """

    tensors: dict[str, ChannelTensor] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=dict)
    parent: list[int] = field(default_factory=list)
    zero: dict[str, np.ndarray] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)
    contracted: set[str] = field(default_factory=set)
    roots: dict[str, int] = field(default_factory=dict)
    sliced: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    depthwise: set[int] = field(default_factory=set)
    producer: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.parent)

    def add(self, name: str, channels: int, axis: int, rank: int | None, zero: np.ndarray) -> None:
        self.tensors[name] = ChannelTensor(name, channels, axis, rank)
        self.base[name] = len(self.parent)
        self.parent.extend(range(len(self.parent), len(self.parent) + channels))
        self.zero[name] = np.asarray(zero, dtype=bool).reshape(channels)

    def indices(self, name: str) -> np.ndarray:
        return np.arange(self.base[name], self.base[name] + self.tensors[name].channels)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def tie(self, a: str, b: str, offset: int = 0) -> None:
        """Union channel c of ``a`` with channel ``offset + c`` of ``b``."""
        base_a, base_b = self.base[a], self.base[b] + offset
        for c in range(self.tensors[a].channels):
            ra, rb = self.find(base_a + c), self.find(base_b + c)
            if ra != rb:
                self.parent[ra] = rb

    def block(self, name: str) -> None:
        if name in self.tensors:
            self.blocked.update(self.indices(name).tolist())

    def components(self) -> np.ndarray:
        """Component id (a representative index) of every global channel index."""
        return np.array([self.find(i) for i in range(self.size)], dtype=np.int64)


# --------------------------------------------------------------------------- building


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is a hint here, never required
        inferred = model
    g = inferred.graph
    return {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in [*g.input, *g.value_info, *g.output]
        if v.type.tensor_type.HasField("shape")
    }


def _const_channel_dim(const: np.ndarray, axis: int) -> int:
    """Index of the channel axis inside a broadcast constant, or -1 when it broadcasts."""
    pos = const.ndim + axis
    return pos if pos >= 0 and const.shape[pos] != 1 else -1


#: Ops evaluated on constant inputs so that e.g. ``Add(conv, Reshape(bias))`` sees a constant.
FOLDABLE = {"Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast", "Flatten", "Transpose"}


def fold_constants(model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``consts`` plus the outputs of :data:`FOLDABLE` nodes whose inputs are all constant."""
    from onnx.reference import ReferenceEvaluator

    out = dict(consts)
    opset = [o for o in model.opset_import]
    for node in model.graph.node:
        if node.op_type not in FOLDABLE or not all(i in out for i in node.input if i):
            continue
        graph = onnx.helper.make_graph(
            [node], "fold", [],
            [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
            [numpy_helper.from_array(out[i], i) for i in dict.fromkeys(node.input) if i],
        )
        try:
            values = ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=opset)).run(None, {})
        except Exception:  # an op the reference evaluator rejects stays non-constant
            continue
        out.update({o: np.asarray(v) for o, v in zip(node.output, values)})
    return out


def build(model: onnx.ModelProto, consts: dict[str, np.ndarray] | None = None) -> ChannelGraph:
    """The channel graph of ``model`` (see the module docstring)."""
    consts = fold_constants(model, constant_arrays(model) if consts is None else consts)
    ranks = _ranks(model)
    g = ChannelGraph()
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            continue
        handled = _visit(g, index, node, consts, ranks)
        if not handled:
            for name in node.input:
                g.block(name)
        for out in node.output:
            if out in g.tensors:
                g.producer[out] = index
    for out in model.graph.output:
        g.block(out.name)
    return g


def _visit(g: ChannelGraph, index: int, node: onnx.NodeProto, consts, ranks) -> bool:
    """Add ``node``'s channel facts to ``g``; False when its channel inputs must be blocked."""
    op = node.op_type
    if op == "Conv":
        return _visit_conv(g, index, node, consts)
    if op in ("Gemm", "MatMul"):
        return _visit_dense(g, index, node, consts, ranks)
    if op == "BatchNormalization":
        return _visit_bn(g, index, node, consts)
    if op in CHANNELWISE:
        return _visit_unary(g, node, consts)
    if op in BINARY:
        return _visit_binary(g, index, node, consts)
    if op == "Concat":
        return _visit_concat(g, node)
    return not any(name in g.tensors for name in node.input)


def _visit_conv(g, index, node, consts) -> bool:
    x, w_name = node.input[0], node.input[1]
    w = consts.get(w_name)
    bias = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if w is None or (len(node.input) > 2 and node.input[2] and bias is None):
        return False
    group = int(attr(node, "group", 1))
    axis = -(w.ndim - 1)
    rows_zero = ~(w.reshape(w.shape[0], -1) != 0).any(axis=1)
    bias_zero = np.ones(w.shape[0], bool) if bias is None else bias.reshape(-1) == 0
    xt = g.tensors.get(x)
    if group == 1:
        if xt is not None:
            if xt.channels != w.shape[1] or xt.axis != axis:
                return False
            g.contracted.add(x)
        g.add(node.output[0], w.shape[0], axis, w.ndim, rows_zero & bias_zero)
        g.roots[node.output[0]] = index
        return True
    if xt is not None and w.shape[1] == 1 and group == w.shape[0] == xt.channels and xt.axis == axis:
        zero = (g.zero[x] | rows_zero) & bias_zero
        g.add(node.output[0], w.shape[0], axis, w.ndim, zero)
        g.tie(x, node.output[0])
        g.depthwise.add(index)
        return True
    return False


def _visit_dense(g, index, node, consts, ranks) -> bool:
    a, b_name = node.input[0], node.input[1]
    b = consts.get(b_name)
    if b is None or b.ndim != 2 or b.dtype.kind != "f" or a in consts:
        return False
    if node.op_type == "Gemm" and attr(node, "transA", 0):
        return False
    k, n = (b.shape[1], b.shape[0]) if attr(node, "transB", 0) else b.shape
    at = g.tensors.get(a)
    if at is not None:
        if at.axis != -1 or at.channels != k:
            return False
        g.contracted.add(a)
    zero = ~((b.T if attr(node, "transB", 0) else b) != 0).any(axis=0)
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        c = consts.get(node.input[2])
        if c is None or c.ndim > 2:
            return False
        if c.shape[-1:] == (n,):
            zero &= ~(c.reshape(-1, n) != 0).any(axis=0)
            g.sliced[(index, 2)] = (node.output[0], c.ndim - 1)
        else:
            zero &= bool(np.all(c == 0))
    rank = 2 if node.op_type == "Gemm" else (at.rank if at is not None else ranks.get(a))
    g.add(node.output[0], n, -1, rank, zero)
    g.roots[node.output[0]] = index
    return True


def _visit_bn(g, index, node, consts) -> bool:
    x = node.input[0]
    xt = g.tensors.get(x)
    params = [consts.get(n) for n in node.input[1:5]]
    if xt is None or len(node.output) != 1 or any(p is None or p.shape != (xt.channels,) for p in params):
        return xt is None
    scale, bias, mean, _ = params
    zero = ((scale == 0) & (bias == 0)) | (g.zero[x] & (mean == 0) & (bias == 0))
    g.add(node.output[0], xt.channels, xt.axis, xt.rank, zero)
    g.tie(x, node.output[0])
    for i in range(1, 5):
        g.sliced[(index, i)] = (node.output[0], 0)
    return True


def _visit_unary(g, node, consts) -> bool:
    x = node.input[0]
    xt = g.tensors.get(x)
    if xt is None:
        return not any(n in g.tensors for n in node.input)
    if len([o for o in node.output if o]) != 1 or any(n in g.tensors for n in node.input[1:]):
        return False
    preserving = node.op_type in ZERO_PRESERVING
    if node.op_type == "Clip":
        lo = consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else attr(node, "min", None)
        hi = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else attr(node, "max", None)
        preserving = (lo is None or float(np.max(lo)) <= 0) and (hi is None or float(np.min(hi)) >= 0)
    g.add(node.output[0], xt.channels, xt.axis, xt.rank, g.zero[x] & preserving)
    g.tie(x, node.output[0])
    return True


def _visit_binary(g, index, node, consts) -> bool:
    names = list(node.input)
    chans = [n for n in names if n in g.tensors]
    if not chans:
        return True
    ref = g.tensors[chans[0]]
    if any(g.tensors[n].channels != ref.channels or g.tensors[n].axis != ref.axis for n in chans):
        return False
    const_zero = []
    for i, n in enumerate(names):
        if n in g.tensors:
            continue
        const = consts.get(n)
        if const is None or (ref.rank is not None and const.ndim > ref.rank):
            return False
        dim = _const_channel_dim(const, ref.axis)
        if dim >= 0:
            if const.shape[dim] != ref.channels:
                return False
            g.sliced[(index, i)] = (node.output[0], dim)
            const_zero.append(~(np.moveaxis(const, dim, 0).reshape(ref.channels, -1) != 0).any(axis=1))
        else:
            const_zero.append(np.full(ref.channels, bool(np.all(const == 0))))
    zeros = [g.zero[n] for n in chans] + const_zero
    op = node.op_type
    if op == "Mul":
        zero = np.logical_or.reduce(zeros)
    elif op in ("Add", "Sub", "Sum"):
        zero = np.logical_and.reduce(zeros)
    elif op == "Div" and names[0] in g.tensors and names[1] in consts:
        zero = g.zero[names[0]] & np.all(consts[names[1]] != 0)
    elif op == "PRelu" and names[0] in g.tensors:
        zero = g.zero[names[0]]
    else:
        zero = np.zeros(ref.channels, bool)
    g.add(node.output[0], ref.channels, ref.axis, ref.rank, zero)
    for n in chans:
        g.tie(n, node.output[0])
    return True


def _visit_concat(g, node) -> bool:
    ins = list(node.input)
    if not any(n in g.tensors for n in ins):
        return True
    if not all(n in g.tensors for n in ins):
        return False
    ref = g.tensors[ins[0]]
    axis = int(attr(node, "axis", 0))
    if axis >= 0:
        if ref.rank is None:
            return False
        axis -= ref.rank
    if any(g.tensors[n].axis != axis for n in ins):
        return False
    total = sum(g.tensors[n].channels for n in ins)
    g.add(node.output[0], total, axis, ref.rank, np.concatenate([g.zero[n] for n in ins]))
    offset = 0
    for n in ins:
        g.tie(n, node.output[0], offset)
        offset += g.tensors[n].channels
    return True


# --------------------------------------------------------------------------- decisions


def removable(g: ChannelGraph, require_zero: bool = True) -> dict[str, np.ndarray]:
    """Per channel tensor, the mask of channels that can be deleted together.

    Args:
        require_zero: False answers "which could be removed if they were zero" (the
            channel pruner's question): contraction inputs are then not checked.
    """
    comp = g.components()
    bad = np.zeros(g.size, dtype=bool)
    if g.blocked:
        bad[comp[np.fromiter(g.blocked, dtype=np.int64)]] = True
    if require_zero:
        for name in g.contracted:
            idx = g.indices(name)
            bad[comp[idx[~g.zero[name]]]] = True
    while require_zero:  # never remove every channel of a tensor
        changed = False
        for name in g.tensors:
            idx = g.indices(name)
            if idx.size and not bad[comp[idx]].any():
                bad[comp[idx[0]]] = True
                changed = True
        if not changed:
            break
    return {name: ~bad[comp[g.indices(name)]] for name in g.tensors}


# --------------------------------------------------------------------------- rewriting


def _unique(model: onnx.ModelProto, stem: str, taken: set[str]) -> str:
    name, k = f"{stem}__lwc", 0
    while name in taken:
        k += 1
        name = f"{stem}__lwc{k}"
    taken.add(name)
    return name


def set_inputs(model: onnx.ModelProto, changes: dict[tuple[int, int], np.ndarray]) -> None:
    """Point node inputs at new constant initializers, then drop constants nobody reads."""
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    taken |= {i.name for i in model.graph.input}
    for (index, pos), array in changes.items():
        node = model.graph.node[index]
        name = _unique(model, node.input[pos], taken)
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        node.input[pos] = name
    drop_unused_constants(model)


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _all_nodes(sub)


def drop_unused_constants(model: onnx.ModelProto) -> None:
    graph = model.graph
    used = {i for n in _all_nodes(graph) for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
        names = {t.name for t in keep}
        inputs = [i for i in graph.input if i.name in used or i.name in names]
        del graph.input[:]
        graph.input.extend(inputs)
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    if len(nodes) != len(graph.node):
        del graph.node[:]
        graph.node.extend(nodes)


def shrink(model: onnx.ModelProto, g: ChannelGraph, remove: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` with ``remove[tensor]`` channels deleted everywhere.

    ``remove`` must come from :func:`removable` on ``g`` (a closed set of components).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    consts = fold_constants(model, constant_arrays(model))
    keep = {name: ~mask for name, mask in remove.items() if mask.any()}
    changes: dict[tuple[int, int], np.ndarray] = {}
    for index, node in enumerate(out.graph.node):
        y = node.output[0] if node.output else None
        if y in g.roots:
            _shrink_root(node, index, consts, keep, changes)
        elif index in g.depthwise and y in keep:
            w = consts[node.input[1]]
            changes[(index, 1)] = w[keep[y]]
            if len(node.input) > 2 and node.input[2]:
                changes[(index, 2)] = consts[node.input[2]][keep[y]]
            for a in node.attribute:
                if a.name == "group":
                    a.i = int(keep[y].sum())
    for (index, pos), (tensor, dim) in g.sliced.items():
        if tensor in keep and (index, pos) not in changes:
            const = consts[out.graph.node[index].input[pos]]
            changes[(index, pos)] = np.compress(keep[tensor], const, axis=dim)
    set_inputs(out, changes)
    del out.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(out)
    except Exception:
        return out


def _shrink_root(node, index, consts, keep, changes) -> None:
    w = consts[node.input[1]]
    x, y = node.input[0], node.output[0]
    if node.op_type == "Conv":
        if y in keep:
            w = w[keep[y]]
        if x in keep:
            w = w[:, keep[x]]
        if y in keep and len(node.input) > 2 and node.input[2]:
            changes[(index, 2)] = consts[node.input[2]][keep[y]]
    else:
        trans = node.op_type == "Gemm" and attr(node, "transB", 0)
        out_axis, in_axis = (0, 1) if trans else (1, 0)
        if y in keep:
            w = np.compress(keep[y], w, axis=out_axis)
        if x in keep:
            w = np.compress(keep[x], w, axis=in_axis)
    if x in keep or y in keep:
        changes[(index, 1)] = w
