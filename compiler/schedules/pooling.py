"""Pooling rule: max/avg pool windows (NCHW: vector over the output row).

Recognized by structure (:func:`analysis.classify` kind ``"window"``): one reduction block
with a single read operand whose innermost index moves with the innermost output axis.
Scheduled like a contraction without a reuse axis: the output row is the vector tile,
the window loops run outside it, the (avg) division epilogue is applied per tile.
"""

from __future__ import annotations

from tvm import s_tir

from .analysis import classify, is_reduction, nest
from .common import inline_neighbours, register_tile, schedule_rest, vector_factor
from .facts import CpuFacts


#: The output row's vector tile may be half a vector: resnet50's max pool at 56 columns
#: takes 8 of AVX-512's 16 lanes (declined, the Reduction rule ran it scalar: 1.5 ms of
#: resnet50's int8 build, with the quantize fused, on a znver4).
MIN_VECTOR_FRACTION = 0.5


class Pooling:
    """Vectorized window reduction."""

    name = "pooling"

    def apply(self, func, facts: CpuFacts) -> s_tir.Schedule | None:
        """Schedule ``func`` or return None when it is not a window reduction."""
        sch = s_tir.Schedule(func)
        kind, blocks = classify(sch)
        if kind != "window":
            return None
        block = next(b for b in blocks if is_reduction(sch, b))
        name = sch.get(block).name_hint
        producers, epilogue = inline_neighbours(sch, block)
        block = sch.get_sblock(name)
        n = nest(sch, block)
        row = n.loop_of(n.out_index[-1]) if n is not None else None
        if row is None or row.symbolic or (
                vector_factor(row.extent, facts.lanes()) < MIN_VECTOR_FRACTION * facts.lanes()):
            return None  # odd widths (55, 27): Reduction runs rows in parallel instead
        register_tile(sch, n, epilogue, facts, n.out_index[-1], None)
        schedule_rest(sch, producers, facts)
        return sch
