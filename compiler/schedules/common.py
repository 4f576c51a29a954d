"""Schedule primitives shared by the rule families.

- :func:`vector_factor`: how many elements of a loop to put in the vector register tile.
- :func:`parallel_pays`: whether a kernel is big enough for a fork/join (T.parallel).
- :func:`choose_tile`: the register tile (vector elements x reuse rows) for the registers.
- :func:`schedule_spatial`: an injective block -> fused outer loops (parallel when it pays)
  and a vectorized inner loop.
- :func:`inline_neighbours`: inline the injective blocks around a main (reduction) block
  so it has at most one consumer (its fused epilogue) and no copy-only producers.
- :func:`register_tile`: the FMA-bound kernel schedule (conv2d, matmul, pooling).
- :func:`pack_operand`: a per-tile copy of a weight slice with the vector axis innermost.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.tirx import IndexMap

from .analysis import (
    Nest,
    const_extent,
    extent_range,
    is_reduction,
    nest,
    planned_extent,
    sblocks,
    symbolic_loops_enabled,
    uses,
)
from .facts import CpuFacts

#: Below this many block-body iterations (MACs for a conv) a kernel stays on one thread.
#: A T.parallel region is a fork/join of TVM's thread pool: a few microseconds on an idle
#: machine, tens of microseconds on a busy one (measured here, 2 shared cores: PP-OCR cls
#: was fastest with this threshold among 2**18 .. 2**24; benchmarks/schedule_rules.md).
#: 2**22 MACs take ~250 us on one core at ~16 GMAC/s, so the join costs < 10%.
PARALLEL_MIN_WORK = 1 << 22
#: Injective kernels: elements below which one thread is faster. 2**18 fp32 elements are
#: 1 MiB, a copy of ~50-100 us; below that the fork/join is a visible share (cls, rec).
PARALLEL_MIN_ELEMS = 1 << 18


#: At most this many accumulator registers in a register tile. With 30 (NEON, one vector x
#: 30 rows) LLVM's register allocator copies the accumulators' loop phis around every FMLA
#: (50 MOVs per 30 FMLAs in PP-OCRv4 det's 384->360 1x1 conv on arm64: 58.8 M instructions
#: against 31.4 M with 24); AVX2's 16 registers never reach it.
MAX_ACCUMULATORS = 24


def vector_factor(extent: int, lanes: int) -> int:
    """Elements of a loop of ``extent`` to hold in the register tile (1: do not vectorize).

    Prefers two full vectors, then one, then half a vector, each dividing ``extent`` so no
    tail predicate is needed; a loop shorter than a vector is taken whole.
    """
    for f in (2 * lanes, lanes, lanes // 2):
        if f >= 2 and extent % f == 0:
            return f
    if 2 <= extent < lanes:
        return extent
    return 1


def largest_divisor(extent: int, limit: int) -> int:
    """Largest divisor of ``extent`` that is <= ``limit`` (at least 1)."""
    for f in range(min(extent, max(1, limit)), 0, -1):
        if extent % f == 0:
            return f
    return 1


def choose_tile(v_extent: int, u_extent: int, facts: CpuFacts) -> tuple[int, int]:
    """(vi, ui): the register tile of ``vi`` vector-axis elements x ``ui`` reuse-axis rows.

    Each candidate vector tile (four vectors, two, one, half) is paired with the largest
    divisor ``ui`` of the reuse axis such that the ``ui * nvec`` accumulators plus the
    ``nvec`` vector operands and one broadcast scalar fit in the vector registers. The pair
    with the fewest operand loads per FMA wins -- ``(nvec + ui) / (nvec * ui)``: each step
    of the reduction loads ``nvec`` vectors and broadcasts ``ui`` scalars for ``nvec * ui``
    FMAs -- ties to more accumulators. That is the GEMM micro-kernel's choice (Goto & van
    de Geijn, ACM TOMS 34(3), 2008; BLIS's Haswell sgemm kernel is 6 x 16 on AVX2's 16
    registers): AVX2 2 vectors x 6, NEON 4 vectors x 6 (0.42 loads per FMLA), where the
    most accumulators (NEON 1 vector x 30) cost one broadcast load per FMLA: 27% of
    PP-OCRv4 rec's arm64 instructions were one such 1x1 conv (benchmarks/arm64_proxy.md).
    """
    lanes = facts.lanes(32)
    best = (0.0, 0, 1, 1)
    for vi in (4 * lanes, 2 * lanes, lanes, lanes // 2, v_extent if v_extent < lanes else 0):
        if vi < 2 or v_extent % vi:
            continue
        nvec = -(-vi // lanes)
        budget = min(facts.vector_regs - nvec - 1, MAX_ACCUMULATORS)
        ui = largest_divisor(u_extent, max(1, budget // nvec))
        score = (nvec * ui / (nvec + ui), ui * vi)
        if score > best[:2]:
            best = (*score, vi, ui)
    if best[1] == 0:
        return 1, largest_divisor(u_extent, facts.vector_regs - 2)
    return best[2], best[3]


def parallel_pays(work: int, outer: int, facts: CpuFacts, min_work: int = PARALLEL_MIN_WORK) -> bool:
    """True when a parallel loop of ``outer`` iterations over ``work`` units pays."""
    return facts.cores > 1 and outer >= 2 and work >= min_work


def schedule_spatial(sch: s_tir.Schedule, block, facts: CpuFacts) -> None:
    """Parallelize a spatial block's outer loops when big and vectorize its innermost loop.

    The innermost loop is split by a vector factor when one divides it and vectorized;
    otherwise it stays a plain inner loop (LLVM may still vectorize it). Only the outer
    loops are fused: fusing the innermost axis too would put an integer div/mod per
    element into the loop body (squeezenet's concat: 10x slower).
    """
    loops = sch.get_loops(block)
    if not loops:
        return
    extents = [planned_extent(sch.get(lp).extent) for lp in loops]
    total = 1
    for e in extents:
        total *= e
    lanes = facts.lanes(32)
    vf = min(vector_factor(extents[-1], lanes), lanes)
    if const_extent(sch.get(loops[-1]).extent) is None:
        vf = 1  # a symbolic innermost loop stays plain: a split's tail predicate on the
        # lanes would scalarize it; LLVM vectorizes the plain loop with a remainder
    if "if_then_else" in str(sch.get(block).body):
        # padding / concat: TVM scalarizes a vector if_then_else (per-lane branches); a
        # plain inner loop is left for LLVM, which vectorizes it (cls: pad 2.5x faster)
        vf = 1
    inner = None
    if vf > 1:
        outer_last, inner = sch.split(loops[-1], [None, vf])
        outer = list(loops[:-1]) + [outer_last]
    elif len(loops) > 1:
        outer = list(loops[:-1])
    else:
        outer = list(loops)
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    n_outer = planned_extent(sch.get(fused).extent)
    if total >= PARALLEL_MIN_ELEMS and facts.cores > 1 and n_outer >= 2:
        sch.parallel(fused)
    if inner is not None:
        sch.vectorize(inner)


def _size(sch: s_tir.Schedule, block) -> int | None:
    """The element count of the buffer ``block`` writes (None when a dim is symbolic)."""
    size = 1
    for d in sch.get(block).writes[0].source.shape:
        if not isinstance(d, tirx.IntImm):
            return None
        size *= int(d)
    return size


def _pads_or_slices(sch: s_tir.Schedule, epilogue, main) -> bool:
    """Whether ``epilogue`` writes elements no tile of ``main`` covers (a fused Pad: its
    border is an ``if_then_else``) or drops some (a slice: fewer elements). A broadcast
    epilogue (squeeze-and-excitation's ``x * sigmoid(conv(pool(x)))``: more elements,
    each tile of ``main`` covering whole rows of it) is fine."""
    if "if_then_else" in str(sch.get(epilogue).body):
        return True
    out, acc = _size(sch, epilogue), _size(sch, main)
    if (out is None or acc is None) and symbolic_loops_enabled():
        return not _provably_no_fewer(sch, epilogue, main)
    return out is None or acc is None or out < acc


def _provably_no_fewer(sch: s_tir.Schedule, epilogue, main) -> bool:
    """Symbolic shapes: the epilogue's output provably has at least the elements of
    ``main``'s (same shape, or a broadcast of it), every symbolic dim being >= 1."""
    from tvm.sym.analyzer import Analyzer
    from tvm.tirx.analysis import undefined_vars  # TVM 0.27's home of the arith analyzer

    def count(block):
        size = tirx.const(1, "int64")
        for d in sch.get(block).writes[0].source.shape:
            size = size * tirx.Cast("int64", d)
        return size

    out, acc = count(epilogue), count(main)
    analyzer = Analyzer()
    assume = tirx.const(True, "bool")
    for var in undefined_vars(out - acc):  # a dim is at least 1
        assume = tirx.And(assume, tirx.Cast("int64", var) >= 1)
    with analyzer.constraint_scope(assume):
        return bool(analyzer.can_prove(out >= acc))


def inline_neighbours(sch: s_tir.Schedule, main) -> tuple[list, object | None]:
    """Inline the injective blocks around ``main``.

    Producers that only copy or reshape (no ``if_then_else``: padding stays a separate
    block so the main loop has no branch) are inlined into ``main``; consumers are inlined
    into each other until one epilogue block is left.

    Returns:
        (producer blocks left, the single epilogue block or None).
    Raises:
        ValueError: more than one block is left after ``main`` (several outputs), or the
            epilogue pads or slices ``main``'s output (a fused Pad).
    """
    main_name = sch.get(main).name_hint
    for block in sblocks(sch):
        if sch.get(block).name_hint == main_name or is_reduction(sch, block):
            continue
        if _before(sch, block, main) and "if_then_else" not in str(sch.get(block).body):
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001, S110 - not inlinable (TVM's ScheduleError)
                pass
    # epilogue: inline every consumer except the last writer into its consumers
    changed = True
    while changed:
        changed = False
        after = blocks_after(sch, main)
        for block in after[:-1]:
            try:
                sch.compute_inline(block)
                changed = True
                break
            except Exception:  # noqa: BLE001, S112 - TVM raises its own error types
                continue
    after = blocks_after(sch, main)
    if len(after) > 1:
        raise ValueError(f"{len(after)} blocks after the main block")
    main = sch.get_sblock(main_name)
    if after and _pads_or_slices(sch, after[0], main):
        # a Pad (or slice) epilogue: computed at the main block's tiles, it would never
        # write the region no tile covers (Conv -> Pad gave garbage there)
        raise ValueError("the epilogue pads or slices the output")
    producers = [b for b in sblocks(sch) if _before(sch, b, main)]
    return producers, (after[0] if after else None)


def _order(sch: s_tir.Schedule) -> list[str]:
    return [sch.get(b).name_hint for b in sblocks(sch)]


def _before(sch: s_tir.Schedule, block, main) -> bool:
    names = _order(sch)
    return names.index(sch.get(block).name_hint) < names.index(sch.get(main).name_hint)


def blocks_after(sch: s_tir.Schedule, main) -> list:
    """The blocks after ``main`` in program order (SBlock RVs)."""
    names = _order(sch)
    i = names.index(sch.get(main).name_hint)
    return [sch.get_sblock(n) for n in names[i + 1 :]]


#: Elements of a plain row tile (a constant axis beside a symbolic one, left to LLVM's
#: loop vectorizer) at most: the row is split into chunks that divide it (rec's 6625
#: classes: 25 chunks of 265), 2 KB of fp32 per row of the streamed operand.
PLAIN_CHUNK = 512

#: Time of one element of a symbolic axis' partial tile (run scalar) in units of one
#: element of a full vector tile: "~20x slower per element" (docs/dynamic_dims.md,
#: PP-OCRv4 rec on a znver3).
TAIL_ELEMENT_COST = 20


def symbolic_vector(extent, facts: CpuFacts) -> int:
    """Lanes of the vector tile over a symbolic axis (the dynamic width, split with a
    partitioned tail by :func:`register_tile`): of the CPU's fp32 lanes and its halves
    down to 4, the one with the least modeled time, relative to all-vector time, summed
    over the axis' smallest, planned and largest extents (:func:`analysis.extent_range`,
    :func:`analysis.planned_extent`).

    Model, per extent E and tile v (L the CPU's lanes): ``E // v`` full tiles of
    ``max(v, L/2)`` element-times each (half a register costs about as much as a full one
    per element: Zen 4 splits 512-bit operations in two, and a narrower tile keeps
    more accumulators), plus ``E % v`` tail elements of :data:`TAIL_ELEMENT_COST` each.
    A wide tile leaves up to ``v - 1`` columns scalar at every width: PP-OCRv4 rec
    (``96..1280``) at width 96 has 24 columns in its late stages, 16 + 8 scalar with
    AVX-512's 16 lanes, and the artifact ran 5.0x a fixed build there (znver4); with 8
    lanes, 1.25x (docs/dynamic_dims.md). Ties go to the wider tile.
    """
    lanes = facts.lanes(32)
    ends = extent_range(extent)
    if ends is None:
        return lanes
    extents = {ends[0], planned_extent(extent), ends[1]}

    def modeled(v: int) -> float:
        tile = max(v, lanes / 2)
        return sum(((e // v) * tile + (e % v) * TAIL_ELEMENT_COST) / e for e in extents if e > 0)

    candidates = [v for v in (lanes, lanes // 2, lanes // 4) if v >= 4] or [lanes]
    return min(candidates, key=lambda v: (modeled(v), -v))


def register_tile(
    sch: s_tir.Schedule,
    main: Nest,
    epilogue,
    facts: CpuFacts,
    vec_var,
    reuse_var=None,
) -> dict:
    """Register-block a reduction block: outer spatial tiles, reduction, then the tile.

    Loop order after the schedule::

        for outer spatial tiles (fused; parallel when the work pays):
            init acc[ui, vi] (vectorized)
            for reduction loops:
                for u in ui (unrolled): for v in vi (vectorized): acc[u, v] += ...
            epilogue(acc) (vectorized)

    ``vec_var`` is the block iter var of the output axis held in vectors (normally the
    innermost, contiguous one); ``reuse_var`` an output axis the vector operand does not
    depend on, so one vector load serves ``ui`` FMAs (the conv's output channel, the
    matmul's row). When the vector axis is not the innermost index of its operand (conv
    weights with channels in the vector), that operand's tile is packed under the
    vector axis' outer loop (:func:`pack_operand`), which then becomes the parallel loop on
    its own. The accumulator is
    the main block's output buffer, shrunk to the tile by TVM's buffer compaction
    (``global`` scope, which keeps it on the stack), or a ``cache_write`` when the main block
    writes the function output.

    Returns:
        the tile chosen: {"vi": ..., "ui": ..., "parallel": bool, "prepacked": the operand
        left unpacked for :func:`lwc.schedules.prepack.rewrite_weight_layout`, or None}.
    Raises:
        ValueError: ``vec_var`` does not drive a loop of ``main``.
    """
    vloop = main.loop_of(vec_var)
    if vloop is None:
        raise ValueError("vector axis is not a loop of the block")
    uloop = main.loop_of(reuse_var) if reuse_var is not None else None
    # a symbolic vector axis (rec's dynamic width) is split with a tail: the tile loop
    # over it is the innermost of the outer loops, unfused, and carries TVM's
    # loop-partition hint, so its full tiles are a loop with no predicate (vectorized,
    # accumulators in registers) and only the last partial tile is predicated
    # (docs/dynamic_dims.md: why one vector)
    peel = vloop.symbolic and main.spatial[-1] is vloop
    v_extent = vloop.extent
    if vloop.symbolic:  # one vector: the scalar tail (the last partial tile) stays short
        v_extent = symbolic_vector(sch.get(vloop.rv).extent, facts) if peel else 1
    u_extent = 1 if uloop is None or uloop.symbolic else uloop.extent
    vi, ui = choose_tile(v_extent, u_extent, facts)
    # dynamic dims, no lane tile (rec's head: 6625 classes x a symbolic sequence): a chunk
    # of the constant axis is the tile, left to LLVM's loop vectorizer (remainder loop
    # included), so the operand it indexes streams contiguously: acc[t, c] += a[t, k] * b[k, c]
    plain = vi == 1 and not vloop.symbolic and vloop.extent > 1 and any(lp.symbolic for lp in main.loops)
    chunked = False
    if plain:
        # in chunks of at most PLAIN_CHUNK, the chunk loop outermost: each chunk of the
        # streamed operand then serves every row from L2 (rec's head at width 1280: 160
        # rows x a 3.2 MB weight, read once per row unchunked: 6.6 ms vs 1.9 fixed)
        vi, ui = largest_divisor(vloop.extent, PLAIN_CHUNK), 1
        chunked = vi < vloop.extent
    # a symbolic vector axis that is not the innermost loop: the whole row, unsplit, is
    # the tile, for LLVM's loop vectorizer; the accumulator is rows x the width
    row = vloop.symbolic and not peel
    plain = plain or row
    outer, tile, reuse_outer = [], {}, None
    for lp in main.spatial:
        if lp is vloop and row:
            tile["v"] = lp.rv
        elif lp is vloop and vi > 1:
            o, i = sch.split(lp.rv, [None, vi])
            if peel:
                sch.annotate(o, "pragma_loop_partition_hint", 1)
            outer.append(o)
            tile["v"] = i
        elif lp is uloop and ui > 1:
            o, i = sch.split(lp.rv, [None, ui])
            outer.append(o)
            tile["u"], reuse_outer = i, o
        else:
            outer.append(lp.rv)
    inner = [tile[k] for k in ("u", "v") if k in tile]
    reduction = [lp.rv for lp in main.reduction]
    packed = strided_operand(main, vec_var) if "v" in tile and not row else None
    prepacked = None
    if packed is not None and _layout_free(sch, main.reads[packed[0]][0]):
        # a constant: re-laid out at compile time instead (lwc.schedules.prepack)
        prepacked = {"dim": packed[1],
                     "tile": vi, "buffer": main.reads[packed[0]][0]}
        packed = None
    if packed is not None or chunked:  # the vector axis' outer loop first: the pack is per
        # channel tile; a chunk of a plain row is reused by every row
        vo = outer[[lp is vloop for lp in main.spatial].index(True)]
        outer = [vo] + [lp for lp in outer if lp != vo]
    if reuse_outer is not None and packed is None and not vloop.symbolic and _reuse_operand_fits(main, vec_var, reuse_var, facts):
        # the reuse operand (conv weights) stays in L2 whole: step over its tiles innermost,
        # so each tile of the larger vector operand (the input) is read from memory once,
        # not once per weight tile (PP-OCRv4 det's 96->24 3x3 convs at 160x160, 10 MB of
        # input: 41 -> 16 ms alone, host)
        outer = [lp for lp in outer if lp != reuse_outer] + [reuse_outer]
    sch.reorder(*outer, *reduction, *inner)

    block = main.block
    # The accumulator tile is "global" scope, not "local": TVM's LowerTVMBuiltin keeps only
    # constant-size *global* CPU allocations under kMaxStackAlloca (1 KB) on the stack and turns
    # every other one into a TVMBackendAllocWorkspace/FreeWorkspace pair -- here once per
    # iteration of the parallel loop (det on arm64: 84 M of 1,437 M instructions per inference).
    if epilogue is None:
        epilogue = sch.cache_write(block, 0, "global")
    else:
        sch.set_scope(block, 0, "global")
    if "v" in tile:
        _vector_dim_last(sch, block, main, vec_var)
    sch.reverse_compute_at(epilogue, outer[-1], preserve_unit_loops=True)
    if packed is not None:
        pack_operand(sch, block, packed, outer[0])
    # parallel and vectorize before decompose_reduction: both need the reduction block to
    # still have its init (a "local reduction block" in TVM's dataflow check).
    n_outer = main.out_elems // max(1, vi * ui)
    par = parallel_pays(main.work, n_outer, facts)
    if packed is not None:
        groups = [[outer[0]], outer[1:]]
    elif peel and "v" in tile and len(outer) > 1:  # the partitioned tile loop stays unfused
        groups = [outer[:-1], outer[-1:]]
    else:
        groups = [outer]
    fused = [sch.fuse(*g) if len(g) > 1 else g[0] for g in groups if g]
    if par:
        sch.parallel(fused[0])
    n_fused = len(fused)
    if "v" in tile and not plain:
        sch.vectorize(tile["v"])
    eloops = sch.get_loops(epilogue)[n_fused:]
    if eloops and not plain and const_extent(sch.get(eloops[-1]).extent) is not None:
        extent = int(sch.get(eloops[-1]).extent)
        if "v" in tile and extent == vi:
            sch.vectorize(eloops[-1])
        elif extent > 1 and ("v" not in tile or extent != vi):
            # a broadcast epilogue (x * sigmoid(conv(pool(x))): the tile's rows of x) runs
            # along x's own innermost axis
            vf = min(vector_factor(extent, facts.lanes(32)), facts.lanes(32))
            if vf > 1:
                _, inner = sch.split(eloops[-1], [None, vf]) if vf < extent else (None, eloops[-1])
                sch.vectorize(inner)
    if "u" in tile:
        sch.unroll(tile["u"])
    if reduction:
        init = sch.decompose_reduction(block, reduction[0])
        iloops = sch.get_loops(init)[n_fused:]
        if "v" in tile and not plain and iloops and sch.get(iloops[-1]).kind != 2 and (
                const_extent(sch.get(iloops[-1]).extent) is not None):
            sch.vectorize(iloops[-1])
    if prepacked is not None:
        prepacked["block"] = sch.get(block).name_hint  # "<name>_update" after the decomposition
    return {"vi": vi, "ui": ui, "parallel": par, "prepacked": prepacked}


def _operand_bytes(buf) -> int | None:
    """Bytes of a buffer with a static shape (4 per element: fp32 and int32 operands)."""
    dims = [const_extent(d) for d in buf.shape]
    return None if None in dims else 4 * math.prod(dims)


def _reuse_operand_fits(main: Nest, vec_var, reuse_var, facts: CpuFacts) -> bool:
    """Whether the operand indexed by the reuse axis and not the vector axis (conv weights)
    fits in half the L2 whole and is smaller than the operands the vector axis indexes."""
    reuse_ops = [buf for buf, idx in main.reads
                 if any(uses(i, reuse_var) for i in idx) and not any(uses(i, vec_var) for i in idx)]
    vector_ops = [buf for buf, idx in main.reads if any(uses(i, vec_var) for i in idx)]
    if len(reuse_ops) != 1 or not vector_ops:
        return False
    reuse_bytes = _operand_bytes(reuse_ops[0])
    vector_bytes = [_operand_bytes(b) for b in vector_ops]
    if reuse_bytes is None or None in vector_bytes:
        return False
    return reuse_bytes <= facts.l2_bytes // 2 and max(vector_bytes) > reuse_bytes


def _vector_dim_last(sch: s_tir.Schedule, block, main: Nest, vec_var) -> None:
    """Lay the accumulator tile out with the vector axis innermost.

    With a symbolic dim in the nest the compacted tile's indices are not all constants, so
    LLVM cannot keep a tile whose vector axis is strided (conv channels in the vector,
    rows beside them) in registers: it gathers and scatters every FMA's accumulator. With
    static shapes LLVM promotes the (stack) tile to registers, but in the epilogue's
    orientation: light_resnet50's 1024->2048 1x1 conv (channels in the vector, 7 pixels
    beside them) ran 36 shuffles per 8 FMAs in its reduction loop, at 8 GFLOP/s instead of
    20 (host, AVX2).
    """
    dims = [i for i, var in enumerate(main.out_index) if var is not None and var.same_as(vec_var)]
    rank = len(main.out_index)
    if len(dims) != 1 or dims[0] == rank - 1:
        return
    order = [a for a in range(rank) if a != dims[0]] + [dims[0]]
    sch.transform_layout(
        block, ("write", 0), IndexMap.from_func(lambda *ax: [ax[a] for a in order], ndim=rank)
    )


def _layout_free(sch: s_tir.Schedule, buf) -> bool:
    """Whether ``buf`` is a parameter the compile re-lays out (:mod:`lwc.schedules.prepack`)."""
    func = sch.mod["main"]
    free = func.attrs.get("layout_free_buffers") if func.attrs is not None else None
    return bool(free) and any(func.params[int(i)].same_as(buf) for i in free)


def strided_operand(main: Nest, vec_var) -> tuple[int, int] | None:
    """(read index, dim) of the one operand indexed by ``vec_var`` in a dim other than its
    innermost (conv weights ``W[f, c, r, s]`` with channels in the vector), else None."""
    hits = [(i, d) for i, (_, idx) in enumerate(main.reads) for d, e in enumerate(idx) if uses(e, vec_var)]
    if len(hits) != 1:
        return None
    i, d = hits[0]
    if d == len(main.reads[i][1]) - 1:
        return None
    return i, d


def pack_operand(sch: s_tir.Schedule, block, packed: tuple[int, int], at) -> None:
    """Copy one operand tile under loop ``at`` with the vector axis moved innermost.

    The copy covers the operand's region for one tile of the vector axis (e.g. ``vi``
    output channels of a conv weight: ``[C, R, S, vi]`` after buffer compaction), so each
    weight is copied once per call and the FMA loop loads it as contiguous vectors.
    """
    read_index, dim = packed
    cache = sch.cache_read(block, read_index, "global")
    sch.compute_at(cache, at, preserve_unit_loops=True)
    rank = len(sch.get(cache).writes[0].region)
    order = [a for a in range(rank) if a != dim] + [dim]
    sch.transform_layout(
        cache, ("write", 0), IndexMap.from_func(lambda *ax: [ax[a] for a in order], ndim=rank)
    )


def schedule_rest(sch: s_tir.Schedule, blocks, facts: CpuFacts) -> None:
    """Schedule leftover spatial blocks (padding) with :func:`schedule_spatial`."""
    for block in blocks:
        n = nest(sch, block)
        if n is not None and not n.reduction:
            schedule_spatial(sch, block, facts)
