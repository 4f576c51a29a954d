"""Injective rule: elementwise, broadcast, transpose, concat, resize, pad.

Structure handled: no block has a reduction axis. Every block that can be inlined into its
consumers is (chains of elementwise ops become one loop nest); each block left is fused
into one parallel loop (when it has at least :data:`common.PARALLEL_MIN_ELEMS` elements)
over a vectorized inner loop (:func:`common.schedule_spatial`).
"""

from __future__ import annotations

from tvm import s_tir

from .analysis import classify, sblocks
from .common import schedule_spatial
from .facts import CpuFacts


class Injective:
    """Fused, parallel when large, vectorized elementwise kernels."""

    name = "injective"

    def apply(self, func, facts: CpuFacts) -> s_tir.Schedule | None:
        """Schedule ``func`` or return None when it has a reduction."""
        sch = s_tir.Schedule(func)
        kind, _ = classify(sch)
        if kind != "injective":
            return None
        _inline_all(sch)
        for block in sblocks(sch):
            schedule_spatial(sch, block, facts)
        return sch


def _inline_all(sch: s_tir.Schedule) -> None:
    changed = True
    while changed:
        changed = False
        for block in sblocks(sch):
            try:
                sch.compute_inline(block)
                changed = True
                break
            except Exception:  # noqa: BLE001, S112 - an output block, or read with other indices
                continue
