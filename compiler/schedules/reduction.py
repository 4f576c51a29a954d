"""Reduction rule: softmax, layer norm, mean, and contractions the other rules declined.

Structure handled: reduction blocks (``S...SR...R``) and injective blocks that share at
least one leading spatial axis (softmax = max(SR) -> exp(SS) -> sum(SR) -> div(SS)).
Schedule, after TVM's dlight CPU reduction rule (s_tir/dlight/cpu/reduction.py):

1. inline the injective blocks that can be inlined (exp into its consumers);
2. fuse the shared leading spatial axes of the last block; parallel when the work pays;
3. ``compute_at`` every other block under that loop (one fork/join per kernel);
4. vectorize the injective blocks' inner axis; reductions keep their serial order (a
   vector reduction would reorder float additions).
"""

from __future__ import annotations

from tvm import s_tir

from .analysis import classify, const_extent, is_reduction, nest, sblocks
from .common import parallel_pays, vector_factor
from .facts import CpuFacts


class Reduction:
    """Rows in parallel, blocks of a row computed together, inner axes vectorized."""

    name = "reduction"

    def apply(self, func, facts: CpuFacts) -> s_tir.Schedule | None:
        """Schedule ``func`` or return None when it has no reduction or no shared row axis."""
        sch = s_tir.Schedule(func)
        kind, _ = classify(sch)
        if kind not in ("reduction", "contraction", "window"):
            return None
        _inline_injective(sch)
        blocks = sblocks(sch)
        nests = [nest(sch, b) for b in blocks]
        if any(n is None for n in nests):
            return None
        lead = min(_leading_spatial(n) for n in nests)
        last = nests[-1]
        if lead == 0 or is_reduction(sch, last.block) and len(nests) > 1:
            return None
        if len(nests) == 1 and lead >= 2 and last.loops[lead - 1].extent >= 8:
            lead -= 1  # one reduction block (pool, mean): keep the row loop serial inside
        loops = sch.get_loops(last.block)[:lead]
        outer = 1
        for lp in last.loops[:lead]:
            outer *= lp.extent
        work = max(n.work for n in nests)
        spatial = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        for b in reversed(blocks[:-1]):
            sch.compute_at(b, spatial, preserve_unit_loops=True)
        for b in sblocks(sch):
            if not is_reduction(sch, b):
                _vectorize_inner(sch, b, facts)
        if parallel_pays(work * len(nests), outer, facts):
            sch.parallel(spatial)
        return sch


def _leading_spatial(n) -> int:
    count = 0
    for lp in n.loops:
        if lp.reduce:
            break
        count += 1
    return count


def _inline_injective(sch: s_tir.Schedule) -> None:
    changed = True
    while changed:
        changed = False
        for b in sblocks(sch)[:-1]:
            if is_reduction(sch, b):
                continue
            try:
                sch.compute_inline(b)
                changed = True
                break
            except Exception:  # noqa: BLE001, S112 - output block or not inlinable: keep it
                continue


def _vectorize_inner(sch: s_tir.Schedule, block, facts: CpuFacts) -> None:
    loops = sch.get_loops(block)
    if len(loops) <= 1 or const_extent(sch.get(loops[-1]).extent) is None:
        return  # a symbolic inner loop stays plain (LLVM vectorizes it with a remainder)
    extent = int(sch.get(loops[-1]).extent)
    lanes = facts.lanes(32)
    vf = vector_factor(extent, lanes)
    if vf <= 1:
        return
    if vf >= extent:
        sch.vectorize(loops[-1])
        return
    _, inner = sch.split(loops[-1], [None, min(vf, lanes)])
    sch.vectorize(inner)
