"""A reshape kernel for symbolic shapes whose indices stay affine.

TOPI's reshape (what LegalizeOps makes of ``relax.reshape``) flattens the output index and
unravels it into the input's dims, with a ``floormod`` per dim. With static shapes TVM's
simplifier removes those. With a symbolic dim (a dynamic-dims compile: rec's width ``N``)
it cannot prove ``i < N`` for ``floormod(i, N)``, so the kernel keeps indices such as
``(j // 120 + i) % N``. AnnotateTIROpPattern then calls it opaque, so FuseOps fuses
nothing into or out of it: PP-OCRv4 rec at a dynamic width kept its transposes, adds and
SiLUs around reshapes as separate kernels (18 more than its fixed build).

:func:`reshape_compute` matches the two shapes group by group instead (unit dims dropped;
a group closes where the products of its dims are provably equal) and unravels only
inside a group; a group of one dim on each side (``N`` -> ``N``) maps the index through.
The indices are then affine in the output's, and the kernel injective.
"""

from __future__ import annotations

import tvm
from tvm import te, tirx
from tvm.sym.analyzer import Analyzer
from tvm.tirx.analysis import undefined_vars

#: Value every shape variable takes when deciding which side of a group grows next. The
#: decision only steers the matching; the groups themselves are proven equal symbolically.
_PROBE = 997


def _probe(expr) -> int | None:
    """``expr`` with every variable set to :data:`_PROBE`, as an int (None: not an int)."""
    analyzer = Analyzer()
    for var in undefined_vars(expr):
        analyzer.bind(var, tirx.IntImm(var.ty.dtype, _PROBE))
    value = analyzer.simplify(expr)
    return int(value) if isinstance(value, tvm.tirx.IntImm) else None


def dim_groups(src, dst) -> list[tuple[list[int], list[int]]] | None:
    """Pair the dims of two shapes of equal size into groups of equal products.

    Args:
        src, dst: the input and output shapes (sequences of int64 ``PrimExpr``; symbolic
            dims allowed).

    Returns:
        ``[(src_dims, dst_dims), ...]`` in order, each a list of dim positions; dims that are
        provably 1 are in no group. None when no such grouping can be proven (the caller
        keeps TOPI's reshape).
    """
    analyzer = Analyzer()
    s = [i for i, d in enumerate(src) if not analyzer.can_prove_equal(d, 1)]
    t = [j for j, d in enumerate(dst) if not analyzer.can_prove_equal(d, 1)]
    groups = []
    i = j = 0
    while i < len(s) and j < len(t):
        gs, gt = [s[i]], [t[j]]
        ps, pt = src[s[i]], dst[t[j]]
        i, j = i + 1, j + 1
        while not analyzer.can_prove_equal(ps, pt):
            vs, vt = _probe(ps), _probe(pt)
            if vs is None or vt is None or vs == vt:
                return None
            if vs < vt and i < len(s):
                gs.append(s[i])
                ps, i = ps * src[s[i]], i + 1
            elif vt < vs and j < len(t):
                gt.append(t[j])
                pt, j = pt * dst[t[j]], j + 1
            else:
                return None
        groups.append((gs, gt))
    if i < len(s) or j < len(t):
        return None
    return groups


def reshape_compute(data: te.Tensor, new_shape) -> te.Tensor:
    """``data`` reshaped to ``new_shape`` (row-major, as ONNX Reshape and ``relax.reshape``).

    Args:
        data: the input tensor, any dtype, symbolic dims allowed.
        new_shape: the output shape (int64 ``PrimExpr`` list) with the same element count,
            already resolved (no ``-1`` or ``0`` entries).

    Returns:
        The output tensor (tag ``injective``). Where :func:`dim_groups` finds no grouping it
        is TOPI's reshape.
    """
    from tvm import topi

    src, dst = list(data.shape), [tirx.IntImm("int64", d) if isinstance(d, int) else d
                                  for d in new_shape]
    groups = dim_groups(src, dst)
    if groups is None:
        return topi.reshape(data, dst)

    def index(*out):
        at = [tirx.IntImm(out[0].ty.dtype if out else "int64", 0)] * len(src)
        for gs, gt in groups:
            if len(gs) == 1 and len(gt) == 1:
                at[gs[0]] = out[gt[0]]
                continue
            flat = out[gt[0]]
            for j in gt[1:]:
                flat = flat * dst[j] + out[j]
            for k in range(len(gs) - 1, 0, -1):  # innermost first; the outermost takes the rest
                at[gs[k]] = tirx.floormod(flat, src[gs[k]])
                flat = tirx.floordiv(flat, src[gs[k]])
            at[gs[0]] = flat
        return data(*at)

    return te.compute(dst, index, name="T_reshape", tag="injective")


def has_symbolic_dim(shape) -> bool:
    """Whether a Relax shape (``ShapeExpr`` values) has a dim that is not a constant."""
    return any(not isinstance(d, tvm.tirx.IntImm) for d in shape)
