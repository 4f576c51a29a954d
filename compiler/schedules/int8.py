"""lwc's int8 kernels without a tuning record: their own MetaSchedule design space, with
the decisions a search would sample chosen from the CPU's facts.

The packed int8 convs (:mod:`lwc.kernels.int8_conv2d`) and the int8 depthwise conv
(:mod:`lwc.kernels.int8_depthwise`) carry a ``schedule_rule`` annotation: their schedule is
lwc's custom MetaSchedule rule, whose tile sizes ``lwc tune`` searches. Untuned, one
seeded draw of that space used to be taken as is (:func:`lwc.tuning.apply.schedule_fixed`):
the reduction-innermost or register-blocked space by position, tiles at random, and every
kernel parallel. This module picks instead, as the fp32 rules do (:mod:`.common`):

* the register-blocked space (the GEMM micro-kernel of Goto & van de Geijn, ACM TOMS
  34(3), 2008: ``r1 x c1`` independent accumulators over the whole reduction), with
  ``r1`` rows and ``c1`` column blocks that fit the vector registers
  (:func:`choose_tile`: fewest operand loads per dot instruction; x86 one column block,
  :data:`MAX_COLS`; Arm sdot up to :data:`ARM_MAX_COLS`);
* on x86 the activation copy by input rows where its channel count is not a multiple of
  64 (``schedule_im2col``'s measurements: the postprocessor's fused loop pays an int64
  div/mod per element there), as-is otherwise; on Arm sdot as is;
* the blocks after the matmul (write-back with its fused epilogue, a broadcast epilogue)
  vectorized along their innermost axis (:func:`schedule_epilogues`);
* every parallel loop made serial below :data:`.common.PARALLEL_MIN_WORK` multiply-adds
  (a fork/join of TVM's thread pool costs tens of microseconds; PP-OCR cls's int8 convs
  are 0.1-2 M MACs each).
"""

from __future__ import annotations

import math

from .analysis import SPATIAL, const_extent, sblocks
from .common import PARALLEL_MIN_WORK
from .facts import CpuFacts

#: Bound of the rule's sampled row tile (lwc.kernels.int8_conv2d.schedule_dot_product:
#: ``max_innermost_factor`` of its first ``sample_perfect_tile``).
MAX_ROWS = 8
#: Column blocks per tile on x86 (AVX2 ``vpmaddwd``, VNNI). With two or more the write-back
#: used to be one vector over all columns, and LLVM 22 then broke the accumulator tile into
#: lanes around every dot instruction (PP-OCRv4 det's 3x3 conv 96->24 at 160x160,
#: instructions per dot: AVX2 8x1 3.4, 4x2 19.4; NEON sdot 8x1 3.6, 4x3 8.8).
#: :func:`lwc.kernels.int8_conv2d.schedule_dot_product` now writes back one dot vector at a
#: time, which keeps them in registers, but on this x86 (znver4, VNNI) more columns were
#: still slower end to end: det int8 0.55 of fp32 with up to 4 against 0.52 with 1
#: (interleaved p50, untuned, 2026-12-07), so x86 keeps one.
MAX_COLS = 1
#: Column blocks per tile on Arm dotprod (``sdot``, 32 vector registers): up to the rule's
#: limit (``max_innermost_factor=4`` of the column tile). Each broadcast activation then
#: feeds up to 4 ``sdot`` and each weight vector up to 8 (det's 96->24 convs: 8x3).
ARM_MAX_COLS = 4

#: Activation copies with a channel count that is a multiple of this stay as
#: RewriteParallelVectorizeUnroll schedules them (resnet50's 64..512 channels, measured
#: faster that way: lwc.kernels.int8_conv2d.schedule_im2col); others go by rows.
AS_IS_CHANNELS = 64


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def choose_tile(rows: int, cols: int, facts: CpuFacts, max_cols: int = MAX_COLS) -> tuple[int, int]:
    """Register tile ``(r1, c1)`` of the packed int8 matmul: ``r1`` rows (output pixels)
    times ``c1`` column blocks (one dot instruction's lanes of output channels each).

    Each step of the reduction loads ``r1`` broadcast activations and ``c1`` weight
    vectors for ``r1 * c1`` dot instructions; the tile needs ``r1 * c1`` accumulator
    registers, ``c1`` weight registers and one broadcast (AVX2: the widened weights;
    all ISAs: one vector register per operand), so ``r1 * c1 + c1 + 1 <= vector_regs``.
    The tile with the fewest loads per instruction, ``(r1 + c1) / (r1 * c1)``, wins;
    ties go to more accumulators.

    Args:
        rows: extent of the row loop (divisors only: the rule's tiles are perfect).
        cols: extent of the column-block loop.
        facts: the CPU (``vector_regs``).
        max_cols: most column blocks (:data:`MAX_COLS` x86, :data:`ARM_MAX_COLS` Arm sdot).
    Returns:
        (r1, c1), each at least 1.
    """
    best = (float("inf"), 0, 1, 1)
    for r1 in _divisors(rows, MAX_ROWS):
        for c1 in _divisors(cols, max_cols):
            if r1 * c1 + c1 + 1 > facts.vector_regs:
                continue
            score = ((r1 + c1) / (r1 * c1), -r1 * c1)
            if score < best[:2]:
                best = (*score, r1, c1)
    return best[2], best[3]


#: Arm sdot: a 1x1 conv whose reduction has this many 4-channel steps keeps the first
#: seeded space (reduction innermost) instead of a register-blocked tile. Measured on
#: PP-OCRv4 det's 1x1 convs (rpi5 int8, arm64 proxy, cortex-a76, instructions per
#: inference, seeded / blocked): 8-24 steps, seeded fewer on 7 of 8 (32->48 at 160x160
#: 17.5 / 21.0 M, 48->48 26.4 / 29.3 M, 96->96 at 80x80 17.0 / 18.7 M; the exception,
#: 48->12, 14.0 / 13.4 M);
#: 3-6 steps, blocked fewer on 4 of 5 (24->96 at 160x160 29.1 / 26.6 M, 12->96 25.3 / 21.8 M);
#: 48 and 96 steps and every 3x3 conv, blocked fewer (192->192 at 40x40 89.7 / 65.2 M).
#: One model's data: a window, not a law.
SHORT_REDUCTION_STEPS = (8, 24)


def dot_reduction(func) -> tuple[int, int] | None:
    """(kernel taps ``kh * kw``, reduction steps ``kh * kw * C / width``) of an lwc packed
    channel-lane int8 conv (the block whose ``schedule_rule`` names a dot product of
    :mod:`lwc.kernels.int8_conv2d`'s ISA table), None otherwise."""
    from lwc.kernels.int8_conv2d import AVX2, SDOT, VNNI

    widths = {dot.schedule_rule: dot.width for dot in (VNNI, SDOT, AVX2)}
    for block in _blocks(func):
        width = widths.get(str(block.annotations.get("schedule_rule", "")))
        if width is None:
            continue
        extents = [const_extent(iv.dom.extent) for iv in block.iter_vars if iv.iter_type == 2]
        if len(extents) != 3 or None in extents:
            return None
        kh, kw, c = extents
        return kh * kw, kh * kw * c // width
    return None


def pick_space(spaces, facts: CpuFacts, channels: int | None, reduction: tuple[int, int] | None = None):
    """The design space and decisions for an untuned lwc int8 kernel.

    Args:
        spaces: ``TuneContext.generate_design_space()`` of the kernel (tvm.s_tir.Schedule
            list; the dot-product rule gives register-blocked and reduction-innermost
            spaces, each with the activation copy as-is and by rows).
        facts: the CPU.
        channels: the activation copy's innermost (channel) extent, None without one.
        reduction: :func:`dot_reduction` of the kernel (None: not known).
    Returns:
        the trace to replay (tvm.s_tir.schedule.Trace).
    """
    def has(sch, kind: str) -> bool:
        return any(inst.kind.name == kind for inst in sch.trace.insts)

    lo, hi = SHORT_REDUCTION_STEPS
    if facts.has_dotprod and reduction is not None and reduction[0] == 1 and lo <= reduction[1] <= hi:
        return spaces[0].trace  # the seeded space: reduction innermost
    blocked = [s for s in spaces if has(s, "CacheWrite")] or list(spaces)
    # Arm sdot: the copy as is (PP-OCRv4 det, rpi5 int8, arm64 proxy, cortex-a76, with one
    # column block: 1,081 M instructions as is, 1,160 M by rows)
    by_rows = not facts.has_dotprod and channels is not None and channels % AS_IS_CHANNELS != 0
    chosen = next((s for s in blocked if has(s, "Parallel") == by_rows), blocked[0])
    trace = chosen.trace
    tiles = [inst for inst in trace.insts if inst.kind.name == "SamplePerfectTile"]
    if len(tiles) == 2:
        rows, cols = (math.prod(int(f) for f in trace.decisions[inst]) for inst in tiles)
        r1, c1 = choose_tile(rows, cols, facts, ARM_MAX_COLS if facts.has_dotprod else MAX_COLS)
        trace = trace.with_decision(tiles[0], [rows // r1, r1], remove_postproc=True)
        trace = trace.with_decision(tiles[1], [cols // c1, c1], remove_postproc=True)
    return trace


def schedule_epilogues(sch, facts: CpuFacts) -> int:
    """Schedule the blocks after the matmul of a replayed lwc int8 kernel (the write-back
    to NCHW with its fused epilogue), before MetaSchedule's postprocessors run.

    First :func:`write_back_in_tile`. What is still at the root (a broadcast epilogue, or
    a kernel without a register tile) is vectorized along its innermost axis
    (:func:`lwc.schedules.common.schedule_spatial`). Left to RewriteParallelVectorizeUnroll,
    such a block is vectorized only as whole fused loops of at most
    ``max_vectorize_extent`` (64) elements: a width of 96 (PP-OCR cls's pixel-lane convs)
    stayed scalar, int64 requantization included, and a broadcast epilogue (a
    squeeze-excitation scale, ``x * hard_sigmoid(conv(mean(x)))``) was fused over all
    four axes and vectorized by 64 with a div/mod per lane, which made its per-channel
    NaN guard run scalar: 5-8x the fp32 kernel.

    A root block qualifies when it is spatial, carries no ``schedule_rule``, and its loop
    nest holds only it with every loop serial and unannotated. Its innermost loop gets
    the :data:`lwc.kernels.int8_conv2d.SCHEDULED_LOOP_ATTR` annotation: the postprocessor
    leaves annotated loops alone (it would fuse the split loops again) and parallelizes
    the outer loop as before.

    Returns:
        the number of root blocks vectorized.
    """
    from tvm import tirx

    from lwc.kernels.int8_conv2d import SCHEDULED_LOOP_ATTR

    from .common import schedule_spatial

    write_back_in_tile(sch)
    done = 0
    for block in sblocks(sch):
        stmt = sch.get(block)
        if "schedule_rule" in stmt.annotations or any(
                iv.iter_type != SPATIAL for iv in stmt.iter_vars):
            continue
        loops = sch.get_loops(block)
        if not loops or len(sch.get_child_blocks(loops[0])) != 1:
            continue
        if any(sch.get(lp).kind != tirx.ForKind.SERIAL or sch.get(lp).annotations for lp in loops):
            continue
        schedule_spatial(sch, block, facts)
        sch.annotate(sch.get_loops(block)[-1], SCHEDULED_LOOP_ATTR, 1)
        done += 1
    return done


#: Blocks of lwc's packed int8 conv kernels (:mod:`lwc.kernels.int8_conv2d`): the
#: write-back to NCHW, and the register tile's cache-write block that
#: :func:`lwc.kernels.int8_conv2d.schedule_dot_product` adds (``cache_write`` of ``matmul``).
WRITE_BACK = "to_nchw"
TILE_WRITE = "matmul_global"


def write_back_in_tile(sch) -> bool:
    """Compute the write-back of a register-blocked lwc int8 conv inside its tile loop,
    right after the tile's accumulators are stored, with its elementwise epilogue
    (requantization, bias, residual add, activation, quantize) inlined into it.

    The write-back transposes the matmul's output (channel-lane kernel: pixels x output
    channels, NHWC; pixel-lane kernel: output channel rows of 16 pixels) to NCHW. At the
    root it read the whole int32 matmul buffer again after the last tile, with a stride
    of a channel block per element (resnet50's 1x1 convs 64->256 at 56x56: a 3.2 MB
    buffer, beyond a 1 MB L2); in the tile it reads the ``r1 x c1`` tile just written,
    from L1, one vector of the tile's pixels per output channel. Measured untuned, int8
    / fp32 p50 on a znver4 (2 threads, interleaved): resnet50 0.60 -> 0.44, PP-OCRv4 det
    0.47 -> 0.41; PP-OCR cls unchanged; rpi5 int8 det (arm64 proxy) 775.9 -> 771.2 M
    instructions.

    Declines (returns False, nothing moved) for the reduction-innermost space (no tile
    write) and where an epilogue block cannot be inlined (a broadcast: the
    squeeze-excitation scale), which :func:`schedule_epilogues` vectorizes at the root.
    """
    from lwc.kernels.int8_conv2d import SCHEDULED_LOOP_ATTR

    names = {sch.get(b).name_hint for b in sblocks(sch)}
    if WRITE_BACK not in names or TILE_WRITE not in names:
        return False
    _inline_after(sch, WRITE_BACK)
    if sch.get(sblocks(sch)[-1]).name_hint != WRITE_BACK:
        return False
    tile = next((loop for loop in reversed(sch.get_loops(sch.get_sblock(TILE_WRITE)))
                 if len(sch.get_child_blocks(loop)) > 1), None)
    if tile is None:
        return False
    block = sch.get_sblock(WRITE_BACK)
    sch.reverse_compute_at(block, tile, preserve_unit_loops=False)
    inner = sch.get_loops(block)[-1]
    sch.vectorize(inner)
    sch.annotate(inner, SCHEDULED_LOOP_ATTR, 1)
    return True


def _inline_after(sch, name: str) -> None:
    """Reverse-inline the blocks after block ``name`` into their producers while one can be
    (elementwise consumers; a broadcast or a reduction cannot)."""
    from .common import blocks_after

    changed = True
    while changed:
        changed = False
        for block in blocks_after(sch, sch.get_sblock(name)):
            try:
                sch.reverse_compute_inline(block)
            except Exception:  # noqa: BLE001, S112 - TVM's ScheduleError: not inlinable
                continue
            changed = True
            break


def _blocks(func) -> list:
    """The blocks of an unscheduled kernel (tvm.tirx.SBlock list, program order)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    return [sch.get(b) for b in sblocks(sch)]


def block_work(func) -> int:
    """Iterations of the kernel's largest block (its multiply-adds for a conv or matmul:
    the product of the block's constant iteration extents, spatial and reduction)."""
    best = 1
    for block in _blocks(func):
        n = 1
        for iv in block.iter_vars:
            n *= const_extent(iv.dom.extent) or 1
        best = max(best, n)
    return best


def parallel_pays(func, facts: CpuFacts) -> bool:
    """True when ``func`` (unscheduled) has enough work for a fork/join across ``facts.cores``."""
    return facts.cores > 1 and block_work(func) >= PARALLEL_MIN_WORK


def copy_channels(func) -> int | None:
    """Innermost extent of the activation copy block (``schedule_rule`` ``lwc_int8_im2col``),
    None where the kernel has none."""
    for block in _blocks(func):
        if str(block.annotations.get("schedule_rule", "")) == "lwc_int8_im2col" and block.iter_vars:
            return const_extent(block.iter_vars[-1].dom.extent)
    return None

