"""Matmul rule: dense, matmul and batch_matmul with fused epilogues.

Recognized by structure: one reduction block reading two buffers into a rank-2 or rank-3
output, with one reduction loop. The tile is [``ui`` rows x ``vi`` columns] accumulated
in registers over k. When the column axis is the innermost index of its operand
(``B[k, j]``) the FMA loop loads it directly; when it is not (dense ``B[j, k]``), a
``[K, vi]`` slice of B is packed per column tile (:func:`common.pack_operand`), so every
weight is copied once per call and loaded as contiguous vectors.
"""

from __future__ import annotations

from tvm import s_tir

from .analysis import nest
from .contraction import main_block, schedule_contraction
from .facts import CpuFacts


class Matmul:
    """Register-blocked GEMM for rank-2/3 contractions with a contiguous column axis."""

    name = "matmul"

    def apply(self, func, facts: CpuFacts) -> s_tir.Schedule | None:
        """Schedule ``func`` or return None when it is not a matmul kernel of that form."""
        sch = s_tir.Schedule(func)
        block = main_block(sch)
        if block is None:
            return None
        n = nest(sch, block)
        if n is None or len(n.out_index) not in (2, 3) or len(n.reduction) != 1:
            return None
        vec = n.out_index[-1]
        if vec is None:
            return None
        schedule_contraction(sch, block, facts)
        return sch
