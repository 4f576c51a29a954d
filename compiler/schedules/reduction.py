"""Reduction rule: softmax, layer norm, mean, and contractions the other rules declined.

Structure handled: reduction blocks (``S...SR...R``) and injective blocks that share at
least one leading spatial axis (softmax = max(SR) -> exp(SS) -> sum(SR) -> div(SS)).
Schedule, after TVM's dlight CPU reduction rule (s_tir/dlight/cpu/reduction.py):

1. inline the injective blocks that can be inlined (exp into its consumers);
2. fuse the shared leading spatial axes of the last block; parallel when the work pays;
3. ``compute_at`` every other block under that loop (one fork/join per kernel);
4. vectorize the injective blocks' inner axis;
5. a reduction whose innermost reduction axis is contiguous in its input (mean or sum over
   a row: global average pooling, layer norm's statistics) keeps ``lanes`` partial sums in
   one vector (``rfactor``: the sum of a row is then ``lanes`` interleaved serial sums added
   at the end, as vectorized runtimes such as onnxruntime's MLAS do). Serial, each addition
   waits for the previous one's latency: PP-OCR cls's squeeze-excite means (200 channels x
   192 pixels) ran at 1.4 GFLOP/s, 48-56 us per call on the host.
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
        partial = [rf for b in sblocks(sch) if is_reduction(sch, b) and (rf := _partial_sums(sch, b, facts))]
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
        for rf in partial:
            _lanes_innermost(sch, rf, facts)
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


#: Fewest vectors of a row worth splitting into partial sums (shorter rows stay serial).
MIN_PARTIAL_VECTORS = 2


def _partial_sums(sch: s_tir.Schedule, block, facts: CpuFacts):
    """Split a sum's innermost reduction loop into ``lanes`` partial sums (``rfactor``)
    where that loop is the contiguous axis of the block's only read and its extent a
    multiple of the vector length.

    Returns:
        the partial-sum block (its innermost loop is the lanes, to vectorize), or None
        with the block left as it is.

    Only additions (``x + y`` updates): a max/min reduction is exact in any order, but it
    is not where the time goes.
    """
    from tvm import tirx

    sblock = sch.get(block)
    if not isinstance(sblock.body, tirx.BufferStore) or not isinstance(sblock.body.value, tirx.Add):
        return None
    loops = sch.get_loops(block)
    if len(loops) != len(sblock.iter_vars):  # not the block's own grid (already scheduled)
        return None
    inner = sch.get(loops[-1])
    extent = const_extent(inner.extent)
    lanes = facts.lanes(32)
    if extent is None or extent % lanes or extent < MIN_PARTIAL_VECTORS * lanes:
        return None
    last_iv = sblock.iter_vars[-1]
    if last_iv.iter_type != tirx.IterVar.CommReduce:
        return None
    source = [r for r in sblock.reads if not r.source.same_as(sblock.writes[0].source)]
    if len(source) != 1 or source[0].source.dtype != "float32":
        return None
    index = source[0].region[-1].min
    if not (isinstance(index, tirx.Var) and index.same_as(last_iv.var)):
        return None  # not the contiguous axis (a strided row would be a gather)
    try:
        _, ki = sch.split(loops[-1], [None, lanes])
        return sch.rfactor(ki, len(sch.get(block).writes[0].source.shape))
    except Exception:  # noqa: BLE001 - rfactor refuses this block: serial sums, as before
        return None


def _lanes_innermost(sch: s_tir.Schedule, rf, facts: CpuFacts) -> None:
    """Vectorize the lanes of a partial-sum block (:func:`_partial_sums`). ``rfactor``
    makes the lanes the block's first iter var, so after ``compute_at`` their loop is the
    first of extent ``lanes`` below the shared row loop: moved innermost, under the row's
    reduction loops, it is one vector accumulator."""
    lanes = facts.lanes(32)
    loops = sch.get_loops(rf)
    lane = next((lp for lp in loops[1:] if const_extent(sch.get(lp).extent) == lanes), None)
    if lane is None:
        return
    sch.reorder(*loops[loops.index(lane) + 1:], lane)
    sch.vectorize(lane)
