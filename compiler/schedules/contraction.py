"""The shared schedule of conv2d and matmul kernels: pick the register tile's axes.

A contraction block computes ``out[s...] += A[...] * B[...]`` over reduction axes. The
vector axis is the innermost output axis (contiguous in the output); the reuse axis is an
output axis that the operand(s) indexed by the vector axis do not depend on, so one
vector load feeds ``ui`` FMAs (conv NCHW: output channel; matmul: row).
"""

from __future__ import annotations

from tvm import s_tir, tirx

from .analysis import Nest, classify, const_extent, is_reduction, nest, uses
from .common import choose_tile, inline_neighbours, register_tile, schedule_rest, vector_factor
from .facts import CpuFacts
from .prepack import rewrite_weight_layout


def main_block(sch: s_tir.Schedule):
    """The only reduction block of a contraction function (None if not a contraction)."""
    kind, blocks = classify(sch)
    if kind != "contraction":
        return None
    return next(b for b in blocks if is_reduction(sch, b))


def index_stride(expr, var) -> int | None:
    """How far ``expr`` moves when ``var`` grows by one, the other variables at 0 (a
    stride-2 conv reads its input at ``2 * ow + rx``: 2); None if not a constant."""
    from tvm.sym.analyzer import Analyzer
    from tvm.tirx.analysis import undefined_vars

    values = []
    try:
        for at in (0, 1):
            analyzer = Analyzer()
            for v in undefined_vars(expr):
                analyzer.bind(v, tirx.const(at if v.same_as(var) else 0, "int64"))
            values.append(const_extent(analyzer.simplify(expr)))
    except Exception:  # noqa: BLE001 - e.g. an int32 index: no claim about the stride
        return None
    return None if None in values else values[1] - values[0]


def vector_operands(n: Nest, vec_var) -> list:
    """The read operands whose indices use ``vec_var``."""
    return [(buf, idx) for buf, idx in n.reads if any(uses(i, vec_var) for i in idx)]


def reuse_axis(n: Nest, vec_var):
    """The output axis to tile in registers beside the vector axis, or None.

    The innermost output axis (extent > 1) that no vector operand depends on (one vector
    load then feeds ``ui`` FMAs); failing that (depthwise conv: every axis indexes the
    data), the innermost other output axis: its rows share the broadcast weight and give
    the FMA pipeline independent accumulators.
    """
    vops = vector_operands(n, vec_var)
    candidates = [
        var for var in reversed(n.out_index[:-1])
        if var is not None and n.loop_of(var) is not None and n.loop_of(var).extent > 1
    ]
    for var in candidates:
        if not any(uses(i, var) for _, idx in vops for i in idx):
            return var
    return candidates[0] if candidates else None


def pick_axes(n: Nest, facts: CpuFacts):
    """(vector axis, reuse axis) of a contraction.

    Normally the innermost output axis is vectorized and :func:`reuse_axis` gives the
    reuse axis. When that axis holds less than a full vector in a divisible tile (conv
    outputs 13, 14, 27 or 109 wide) and the reuse axis (output channels) is a multiple of
    the vector length, the two swap: channels in the vector, pixels in the reuse tile
    (the weights are then loaded strided, which costs less than scalar FMAs).
    """
    lanes = facts.lanes(32)
    vec = n.out_index[-1]
    reuse = reuse_axis(n, vec)
    if n.loop_of(vec).symbolic:
        return vec, reuse  # tiled with a partitioned tail (common.register_tile)
    if reuse is None:
        return vec, reuse
    shares = any(uses(i, reuse) for _, idx in vector_operands(n, vec) for i in idx)
    swappable = not shares and n.loop_of(reuse).extent % lanes == 0
    if vector_factor(n.loop_of(vec).extent, lanes) < lanes:
        return (reuse, vec) if swappable else (vec, reuse)
    if swappable and any(index_stride(idx[-1], vec) not in (0, 1) for _, idx in vector_operands(n, vec)):
        return reuse, vec  # a strided conv's pixels are a gather, not a vector load
    if swappable:  # both work: the tile with fewer operand loads per FMA, by a margin
        v_ext, u_ext = n.loop_of(vec).extent, n.loop_of(reuse).extent
        if _tile_score(u_ext, v_ext, facts) > SWAP_MARGIN * _tile_score(v_ext, u_ext, facts):
            return reuse, vec
    return vec, reuse


#: Channels go in the vector instead of pixels only when their tile does this much more
#: work per operand load (the weights are then packed and the pixels broadcast).
SWAP_MARGIN = 1.2


def _tile_score(v_extent: int, u_extent: int, facts: CpuFacts) -> float:
    """FMAs per operand load of :func:`choose_tile`'s tile (``nvec * ui / (nvec + ui)``),
    scaled by the share of vector lanes used."""
    lanes = facts.lanes(32)
    vi, ui = choose_tile(v_extent, u_extent, facts)
    nvec = -(-vi // lanes)
    return nvec * ui / (nvec + ui) * min(1.0, vi / (nvec * lanes))


def schedule_contraction(sch: s_tir.Schedule, block, facts: CpuFacts) -> dict:
    """Inline neighbours, register-tile ``block``, schedule leftover padding blocks.

    Raises:
        ValueError: the loop nest cannot be described (see :func:`analysis.nest`).
    """
    name = sch.get(block).name_hint
    producers, epilogue = inline_neighbours(sch, block)
    block = sch.get_sblock(name)
    n = nest(sch, block)
    if n is None or n.out_index[-1] is None:
        raise ValueError("loop nest does not bind the block's iter vars one to one")
    vec, reuse = pick_axes(n, facts)
    tile = register_tile(sch, n, epilogue, facts, vec, reuse)
    schedule_rest(sch, producers, facts)
    rewrite_weight_layout(sch, tile["prepacked"])
    return tile
