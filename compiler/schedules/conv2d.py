"""Conv2d rule: NCHW and NHWC, 1x1, grouped/depthwise, strided, with fused epilogues.

Recognized by structure: one reduction block reading two rank-4 buffers (data, weight)
into a rank-4 output, with reduction loops over input channel and the kernel window.
Schedule (:func:`contraction.schedule_contraction`): the output tile is
[``ui`` output channels x ``vi`` pixels of a row] (NCHW; depthwise: ``ui`` output rows,
which share the broadcast weight), accumulated in registers over (rc, ry, rx) and written
through the fused epilogue (bias, activation) once per tile. Outputs too narrow for whole
vectors (13, 27, 55 wide) put output channels in the vector instead and pack a
[C, R, S, vi] weight tile per channel tile. NHWC puts channels in the vector the same way.
Padding stays a separate block (a plain loop nest LLVM vectorizes) so the FMA loop has no
branch.
"""

from __future__ import annotations

from tvm import s_tir

from .contraction import main_block, schedule_contraction
from .facts import CpuFacts


class Conv2D:
    """Register-blocked direct convolution for any rank-4 contraction."""

    name = "conv2d"

    def apply(self, func, facts: CpuFacts) -> s_tir.Schedule | None:
        """Schedule ``func`` or return None when it is not a conv2d kernel."""
        sch = s_tir.Schedule(func)
        block = main_block(sch)
        if block is None:
            return None
        stmt = sch.get(block)
        if len(stmt.writes[0].source.shape) != 4:
            return None
        if any(len(r.source.shape) != 4 for r in stmt.reads):
            return None
        schedule_contraction(sch, block, facts)
        return sch
