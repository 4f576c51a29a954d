"""Sparsity analysis of an ONNX model's conv / dense / matmul weights.

For every Conv, Gemm and MatMul whose weight is a constant (an initializer or a
``Constant`` node), the weight is viewed as a 2-D matrix ``[out, in]``:

* Conv ``W[O, I, kh, kw]``       -> ``[O, I*kh*kw]``
* Gemm ``B[K, N]`` (``transB=1``: ``B[N, K]``) -> ``[N, K]``
* MatMul ``B[K, N]`` (2-D constant second operand) -> ``[N, K]``

and measured:

* ``zero_fraction``: elementwise fraction of exact zeros;
* ``zero_out_channels``: rows (output channels) that are all zero; a channel counts as
  dead only when its bias entry is zero too (``dead_out_channels``);
* ``zero_in_channels``: input channels whose weights are zero for every output
  (for Conv: all of ``W[:, i, :, :]``);
* ``blocks``: for block shapes ``r x c`` in :data:`BLOCK_SHAPES` (``1x4`` = one output row
  by four consecutive inputs, the BSR convention of the ``[out, in]`` view), the fraction
  of blocks holding at least one non-zero (``occupancy``; lower is sparser). Edge blocks
  that do not fill the shape are padded with zeros;
* ``two_four``: the fraction of groups of four consecutive inputs that hold at most two
  non-zeros (the 2:4 semi-structured pattern; 1.0 means the weight is 2:4 sparse).

These are pure numpy functions over a ModelProto; ``lwc inspect`` and the compile report
show them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

#: Block shapes (rows x cols of the ``[out, in]`` view) whose occupancy is reported.
BLOCK_SHAPES: tuple[tuple[int, int], ...] = ((1, 4), (4, 1), (4, 4), (8, 1))

PRUNABLE_OPS = ("Conv", "Gemm", "MatMul")


# --------------------------------------------------------------------------- constants


def constant_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every constant tensor of the main graph by name: initializers and ``Constant`` nodes."""
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value":
                out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass(frozen=True)
class WeightRef:
    """One prunable weight: the node using it and how its array maps to ``[out, in]``.

    Attributes:
        node: node name (or ``op#index`` when unnamed).
        node_index: index in ``graph.node``.
        op: Conv, Gemm or MatMul.
        weight: the weight tensor's name.
        bias: the bias tensor's name, or None.
        layout: ``conv`` (W[O, I, ...]), ``kn`` (B[K, N]) or ``nk`` (B[N, K]).
        group: Conv ``group`` (1 otherwise).
    """

    node: str
    node_index: int
    op: str
    weight: str
    bias: str | None
    layout: str
    group: int = 1


def weight_refs(model: onnx.ModelProto, consts: dict[str, np.ndarray] | None = None) -> list[WeightRef]:
    """The conv/dense/matmul weights of ``model`` that are constants, in graph order."""
    consts = constant_arrays(model) if consts is None else consts
    refs = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in PRUNABLE_OPS or len(node.input) < 2:
            continue
        w = node.input[1]
        if w not in consts or consts[w].dtype.kind != "f":
            continue
        name = node.name or f"{node.op_type}#{i}"
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in consts else None
        if node.op_type == "Conv":
            if consts[w].ndim < 3:
                continue
            refs.append(WeightRef(name, i, "Conv", w, bias, "conv", int(attr(node, "group", 1))))
        elif node.op_type == "Gemm":
            if attr(node, "transA", 0) or consts[w].ndim != 2:
                continue
            layout = "nk" if attr(node, "transB", 0) else "kn"
            refs.append(WeightRef(name, i, "Gemm", w, bias, layout))
        elif consts[w].ndim == 2:  # MatMul(x, B[K, N]); the constant-first form is not a layer
            refs.append(WeightRef(name, i, "MatMul", w, None, "kn"))
    return refs


def as_matrix(array: np.ndarray, layout: str) -> np.ndarray:
    """The ``[out, in]`` view of a weight (a copy for ``kn``)."""
    if layout == "conv":
        return array.reshape(array.shape[0], -1)
    if layout == "kn":
        return array.T
    return array


def from_matrix(matrix: np.ndarray, layout: str, shape: tuple) -> np.ndarray:
    """Inverse of :func:`as_matrix`."""
    if layout == "kn":
        return np.ascontiguousarray(matrix.T).reshape(shape)
    return np.ascontiguousarray(matrix).reshape(shape)


# --------------------------------------------------------------------------- measures


def block_occupancy(matrix: np.ndarray, rows: int, cols: int) -> float:
    """Fraction of ``rows x cols`` blocks of ``matrix`` with at least one non-zero."""
    o, i = matrix.shape
    po, pi = -o % rows, -i % cols
    nz = np.pad(matrix != 0, ((0, po), (0, pi)))
    blocks = nz.reshape((o + po) // rows, rows, (i + pi) // cols, cols).any(axis=(1, 3))
    return float(blocks.mean()) if blocks.size else 0.0


def two_four_fraction(matrix: np.ndarray) -> float:
    """Fraction of groups of 4 consecutive inputs with at most 2 non-zeros (1.0 = 2:4 sparse)."""
    o, i = matrix.shape
    if i < 4:
        return 0.0
    nz = (matrix[:, : i - i % 4] != 0).reshape(o, -1, 4).sum(axis=2)
    return float((nz <= 2).mean())


@dataclass
class WeightSparsity:
    """Sparsity of one weight (see the module docstring for each field)."""

    node: str
    op: str
    weight: str
    shape: list[int]
    params: int
    zero_fraction: float
    out_channels: int
    zero_out_channels: int
    dead_out_channels: int
    in_channels: int
    zero_in_channels: int
    blocks: dict[str, float]
    two_four: float

    def to_json(self) -> dict:
        return asdict(self)


def analyze_weight(ref: WeightRef, w: np.ndarray, bias: np.ndarray | None) -> WeightSparsity:
    m = as_matrix(w, ref.layout)
    zero_rows = ~(m != 0).any(axis=1)
    dead = zero_rows if bias is None else zero_rows & (bias.reshape(-1) == 0)
    if ref.layout == "conv":
        in_nz = (w != 0).any(axis=tuple(d for d in range(w.ndim) if d != 1))
    else:
        in_nz = (m != 0).any(axis=0)
    return WeightSparsity(
        node=ref.node,
        op=ref.op if ref.group == 1 else f"Conv(group={ref.group})",
        weight=ref.weight,
        shape=list(w.shape),
        params=int(w.size),
        zero_fraction=float((w == 0).mean()) if w.size else 0.0,
        out_channels=int(m.shape[0]),
        zero_out_channels=int(zero_rows.sum()),
        dead_out_channels=int(dead.sum()),
        in_channels=int(in_nz.size),
        zero_in_channels=int((~in_nz).sum()),
        blocks={f"{r}x{c}": block_occupancy(m, r, c) for r, c in BLOCK_SHAPES},
        two_four=two_four_fraction(m),
    )


def analyze(model: onnx.ModelProto) -> list[WeightSparsity]:
    """Sparsity of every constant conv/dense/matmul weight in ``model``, in graph order."""
    consts = constant_arrays(model)
    return [
        analyze_weight(ref, consts[ref.weight], consts.get(ref.bias) if ref.bias else None)
        for ref in weight_refs(model, consts)
    ]


def summarize(layers: list[WeightSparsity]) -> dict:
    """Model-level totals: weights, params, zeros, overall zero fraction, dead channels."""
    params = sum(layer.params for layer in layers)
    zeros = sum(round(layer.zero_fraction * layer.params) for layer in layers)
    return {
        "weights": len(layers),
        "params": params,
        "zeros": zeros,
        "zero_fraction": zeros / params if params else 0.0,
        "dead_out_channels": sum(layer.dead_out_channels for layer in layers),
        "zero_in_channels": sum(layer.zero_in_channels for layer in layers),
    }


def format_table(layers: list[WeightSparsity], limit: int | None = None) -> list[str]:
    """Text rows: one per weight; ``limit`` keeps the sparsest ones and says how many are left."""
    if not layers:
        return ["sparsity  no constant conv/dense/matmul weights"]
    total = summarize(layers)
    lines = [
        f"sparsity  {total['zero_fraction']:.1%} zeros over {total['weights']} weights "
        f"({total['params']:,} params); dead output channels {total['dead_out_channels']}, "
        f"zero input channels {total['zero_in_channels']}",
        f"  {'node':<28} {'op':<16} {'shape':<18} {'zeros':>6} {'0-out':>7} {'0-in':>7} "
        + " ".join(f"{k:>5}" for k in (f"{r}x{c}" for r, c in BLOCK_SHAPES))
        + f" {'2:4':>5}",
    ]
    shown = sorted(layers, key=lambda s: -s.zero_fraction)[:limit] if limit else layers
    for s in shown:
        lines.append(
            f"  {s.node[:28]:<28} {s.op[:16]:<16} {str(s.shape)[:18]:<18} {s.zero_fraction:>6.1%} "
            f"{s.zero_out_channels:>3}/{s.out_channels:<3} {s.zero_in_channels:>3}/{s.in_channels:<3} "
            + " ".join(f"{s.blocks[f'{r}x{c}']:>5.2f}" for r, c in BLOCK_SHAPES)
            + f" {s.two_four:>5.2f}"
        )
    if limit and len(layers) > limit:
        lines.append(f"  ... {len(layers) - limit} more (--json lists all; block columns: occupancy)")
    else:
        lines.append("  (block columns: fraction of blocks holding a non-zero; 2:4: groups that fit 2:4)")
    return lines


# --------------------------------------------------------------------------- cost


def count_flops(model: onnx.ModelProto) -> int:
    """Multiply-add FLOPs (2 per MAC) of Conv/Gemm/MatMul, from inferred static shapes.

    Layers whose output shape is not static are skipped (give static input shapes first).
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
        shapes[v.name] = dims
    consts = {t.name: tuple(t.dims) for t in inferred.graph.initializer}
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = tuple(a.t.dims)
    total = 0
    for node in inferred.graph.node:
        if node.op_type not in PRUNABLE_OPS:
            continue
        out = shapes.get(node.output[0])
        w = consts.get(node.input[1]) or tuple(shapes.get(node.input[1], ()))
        if not out or 0 in out or not w:
            continue
        if node.op_type == "Conv":
            total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
        else:
            a = shapes.get(node.input[0])
            k = a[-1] if a and a[-1] else (w[1] if node.op_type == "Gemm" and attr(node, "transB", 0) else w[0])
            total += 2 * int(np.prod(out)) * int(k)
    return total


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all constant tensors (initializers and Constant nodes)."""
    return sum(int(a.nbytes) for a in constant_arrays(model).values())
