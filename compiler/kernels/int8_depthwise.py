"""lwc's int8 depthwise conv2d kernel: pads with the zero point itself and accumulates
``lanes`` output pixels per vector, with its MetaSchedule schedule rule.
Int8DepthwiseConv2d (:mod:`lwc.passes.int8_depthwise_conv2d`) rewrites integer depthwise
convs to call it.

The kernel (:func:`depthwise_kernel`), per channel ``c`` of a [N, C, H, W] uint8 input x
with int8 weights W [C, kh, kw] and strides (sh, sw)::

    a[n, c, hp, wp]          = x[n, c, hp - pt, wp - pl]     (z_x outside: the padding)
    acc[n, c, i, j, phase]   = sum_{r,q} int32(a[n, c, i*sh + r*dh, j*sw + phase + q*dw]) * int32(W[c, r, q])
    y[n, c, i, j]            = acc[n, c, i, j, 0]

the exact integer conv2d of ``conv2d(pad(x, z_x), W, groups=C, out_dtype="int32")``
(|acc| <= kh*kw * 255 * 128, far from overflow). The accumulators cover every column
(``phase`` < sw) and the output takes every sw-th: the taps then load ``lanes``
consecutive bytes, where reading every second byte (stride 2) gathers them one by one
(PP-OCRv4 det's stride-2 3x3 conv over 32 channels at 320x320: 895 us with strided
loads, 222 us computing all columns). A row holds ``lanes`` x k columns
(:func:`lanes_for`); the columns past OW are padding and dropped.

Its schedule (:func:`schedule_depthwise`, a MetaSchedule custom rule with one design
space, which :func:`lwc.tuning.schedule_fixed` also applies where no tuning record exists):
the padded planes as their own loop nest, (n, c) parallel, 16 bytes per vector; then (n, c)
parallel, and per output row ``lanes`` columns are one vector of int32 accumulators held
in a register over the kh*kw taps (unrolled), each tap one widening load and one
multiply-add with the broadcast weight (the shape of XNNPACK's and oneDNN's depthwise
micro-kernels). The requantize or dequantize epilogue that FuseOps appends is folded into
the output block and runs on each vector right after its taps; where the row is cropped,
once per row, its remainder a shorter vector (a predicate inside a vectorized loop
scalarizes it: 0.6 ms instead of 0.1 for det's 5x5 convs over 192 channels at 40x40).

On x86 VNNI (column stride 1, no dilation) two kernels use ``vpdpbusd``, 4 products per
int32 lane, instead:

- 5 kernel columns: the row-window kernel (:func:`depthwise_window_kernel`,
  :func:`schedule_depthwise_window`): a lane's 4 bytes are 4 neighbouring plane columns,
  permuted from one 32-byte load in a register; a 5x5 conv is 10 (load, permute,
  ``vpdpbusd``) per 16 outputs where the widening kernel runs 75 instructions;
- others with at least :data:`QUAD_MIN_ROWS` output rows: the row-quad kernel
  (:func:`depthwise_quad_kernel`, :func:`schedule_depthwise_quad`): a lane's 4 bytes are 4
  plane rows, interleaved into a buffer per channel.

Measured (znver4, 2 threads, kernel alone, MetaSchedule's postprocessors applied; window /
quad / widening): cls's 5x5 over 200 channels at 2x96 17.2 / 31.0 / 17.3 us, over 88 at
3x96 10.1 / 26.6 / 14.3; det's 5x5 over 96 at 40x40 35.8 / 59.2 / 66.3; a 3x3 over 32
at 160x160 183-333 / 113-124 / 134-142 (the window kernel is slower there, for a reason
not found: 3x3 keeps the other two). PP-OCR cls int8 went from 0.60 to 0.50 ms.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te, tirx

from lwc.kernels.int8_conv2d import SCHEDULED_LOOP_ATTR, round_up


#: Custom MetaSchedule rule of the accumulation block (:func:`schedule_depthwise`).
DEPTHWISE_RULE = "lwc_int8_depthwise"
#: Custom rule of the padded-plane block: nothing (the depthwise rule places it).
PLANE_RULE = "lwc_int8_depthwise_plane"
#: Block annotation with the accumulator lanes the kernel's row width was padded for.
LANES_ATTR = "lwc.depthwise_lanes"
#: Output columns per vector of the epilogue (requantize or dequantize) loop.
OUT_VECTOR = 16
#: Bytes of the padded plane written per vector (its width is a multiple of it).
PLANE_VECTOR = 16
#: Candidate vector widths in int32 lanes (AVX-512: 16 = one zmm; 8 = one ymm or two NEON
#: q registers; 4 = one xmm or NEON q).
LANES = (16, 8, 4)


def lanes_for(width: int) -> int:
    """Accumulator lanes for a row of ``width`` columns: the fewest vectors per row (each
    costs a multiply-add per tap, padded or not), then the fewest padded columns. Measured
    on a Zen 5 (2 threads), PP-OCRv4 det's 5x5 depthwise convs: 384 channels at 20x20,
    56 us with 2 x 16 lanes (12 padded) vs 117 us with 5 x 4; 192 channels at 40x40, 72 us
    with 3 x 16 vs 118 us with 5 x 8."""
    return min(LANES, key=lambda lanes: (-(-width // lanes), round_up(width, lanes) - width))


def row_lanes(out_width: int, stride: int) -> int:
    """Accumulator lanes of a kernel: :func:`lanes_for` its ``out_width * stride``
    accumulator columns, a multiple of the stride (a vector holds whole output columns)."""
    lanes = lanes_for(out_width * stride)
    return lanes if lanes % stride == 0 else stride * lanes_for(out_width)


def schedule_depthwise(sch, block):
    """MetaSchedule custom rule for the accumulation block ``acc[n, c, i, j]`` (its loops
    n, c, i, j, r, q as :func:`depthwise_kernel` makes them): see the module docstring.

    Returns:
        [sch] (one design space: nothing here is worth a search).
    """
    n, c, i, jo, phase, r, q = sch.get_loops(block)
    stride = int(sch.get(phase).extent)
    width = int(sch.get(jo).extent) * stride
    lanes = int(sch.get(block).annotations[LANES_ATTR])
    plane = [p for p in sch.get_producers(block) if sch.get(p).name_hint == "plane"]
    out = [p for p in sch.get_consumers(block) if sch.get(p).name_hint == "to_int32"]
    channel = sch.fuse(n, c)
    sch.parallel(channel)
    if plane:  # its own loop nest: under ``channel`` (compute_at) it would cover only the
        # columns read, not a multiple of PLANE_VECTOR, and the predicate scalarizes it
        b, ch, *rows, columns = sch.get_loops(plane[0])
        sch.parallel(sch.fuse(b, ch))
        _, columns = sch.split(columns, [None, PLANE_VECTOR])
        sch.vectorize(columns)
    j0, j1 = sch.split(jo, [None, lanes // stride])
    sch.reorder(i, j0, r, q, j1, phase)
    columns = sch.fuse(j1, phase)  # lanes consecutive accumulator columns
    local = sch.cache_write(block, 0, "global")  # "global": see lwc.schedules.common.register_tile
    sch.reverse_compute_at(local, j0)
    sch.vectorize(sch.fuse(*sch.get_loops(local)[-2:]) if stride > 1 else sch.get_loops(local)[-1])
    if out and int(sch.get(sch.get_loops(out[0])[-1]).extent) * stride == width:
        # whole vectors: the chunk's output columns (every stride-th) and the epilogue
        # right after its taps, on the accumulators in registers
        sch.reverse_compute_at(out[0], j0)
        _epilogue_into(sch, out[0])
        sch.vectorize(sch.get_loops(out[0])[-1])
        sch.compute_inline(local)
    elif out:  # a cropped row: the epilogue per row, its remainder a vector of its own
        # the row of accumulators stays "global" scope: on the stack while under 1 KB
        sch.reverse_compute_at(out[0], i)
        _epilogue_into(sch, out[0])
        _vectorize_row(sch, sch.get_loops(out[0])[-1])
    sch.vectorize(columns)
    for tap in (r, q):
        sch.unroll(tap)
    return [sch]


def _vectorize_row(sch, loop) -> None:
    """Vectorize a row loop by OUT_VECTOR, its remainder (``width % OUT_VECTOR``) as a
    shorter vector of its own: a predicate inside a vectorized loop scalarizes it (PP-OCRv4
    det's 5x5 depthwise convs at width 40: 0.6 ms each with the requantize epilogue
    scalarized, 0.1 ms vectorized)."""
    width = int(sch.get(loop).extent)
    body = width - width % OUT_VECTOR
    if body and body != width:
        loop, rest = sch.loop_partition(loop, [body, None])
        sch.vectorize(rest)
    if body:
        _, loop = sch.split(loop, [None, OUT_VECTOR])
    sch.vectorize(loop)


def _epilogue_into(sch, tail) -> None:
    """Fold the elementwise chain after ``tail`` (the int32 cast, and the requantize or
    dequantize epilogue FuseOps appended) into it, so it runs on the accumulator vector
    before it leaves the register. Left as a loop over the whole output, the postprocessor
    fuses its four loops into one and every element pays int64 div/mod by the extents."""
    while True:
        consumers = sch.get_consumers(tail)
        if len(consumers) != 1:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except RuntimeError:  # TVM's ScheduleError
            return


def _schedule_plane(sch, block):
    """The padded plane is placed by :func:`schedule_depthwise`; nothing else touches it."""
    return [sch]


def _register_rules() -> None:
    for rule, function in ((DEPTHWISE_RULE, schedule_depthwise), (PLANE_RULE, _schedule_plane)):
        name = f"s_tir.meta_schedule.cpu.{rule}"
        if tvm.get_global_func(name, allow_missing=True) is None:
            tvm.register_global_func(name, function)


_register_rules()


def depthwise_kernel(data_shape, kernel_hw, out_shape, strides, dilation, pads, pad_value: int) -> tirx.PrimFunc:
    """The padded plane + accumulation (+ crop) kernel of an int8 depthwise conv.

    Args:
        data_shape: (N, C, H, W) of the uint8 input (unpadded).
        kernel_hw: (kh, kw).
        out_shape: (N, C, OH, OW).
        strides, dilation: (h, w) each.
        pads: [top, left, bottom, right] padding, filled with ``pad_value`` (the zero point).
    Returns:
        PrimFunc (x uint8 [N, C, H, W], w int8 [C, kh, kw], y int32 [N, C, OH, OW]).
    """
    n, c, h, w = data_shape
    kh, kw = kernel_hw
    _, _, oh, ow = out_shape
    sh, sw = strides
    dh, dw = dilation
    top, left = pads[0], pads[1]
    lanes = row_lanes(ow, sw)
    width = round_up(ow * sw, lanes)  # accumulator columns: all of them, the stride subsamples
    hp = (oh - 1) * sh + (kh - 1) * dh + 1
    wp = round_up(width + (kw - 1) * dw, PLANE_VECTOR)  # the columns past the taps are never read
    i64 = lambda v: tirx.IntImm("int64", v)  # noqa: E731  (Relax shapes are int64)
    x = te.placeholder([i64(d) for d in data_shape], "uint8", name="x")
    weight = te.placeholder([i64(d) for d in (c, kh, kw)], "int8", name="w")

    def padded(b, ch, i, j):
        ih, iw = i - top, j - left
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        return tirx.if_then_else(inside, x[b, ch, ih, iw], tirx.const(pad_value, "uint8"))

    plane = te.compute([i64(d) for d in (n, c, hp, wp)], padded, name="plane",
                       attrs={"meta_schedule.inline_rule": "disable", "schedule_rule": PLANE_RULE})
    r = te.reduce_axis((i64(0), i64(kh)), name="r")
    q = te.reduce_axis((i64(0), i64(kw)), name="q")
    acc = te.compute(  # column j * sw + phase: the output columns are phase 0
        [i64(d) for d in (n, c, oh, width // sw, sw)],
        lambda b, ch, i, j, phase: te.sum(plane[b, ch, i * sh + r * dh, j * sw + phase + q * dw].astype("int32")
                                          * weight[ch, r, q].astype("int32"), axis=[r, q]),
        name="depthwise",
        attrs={"schedule_rule": DEPTHWISE_RULE, LANES_ATTR: lanes},
    )
    y = te.compute([i64(d) for d in out_shape], lambda b, ch, i, j: acc[b, ch, i, j, 0], name="to_int32")
    return te.create_prim_func([x, weight, y])


# --------------------------------------------------------------------------- row quads (VNNI)

#: Custom rule of the row-quad kernel's accumulation block (:func:`schedule_depthwise_quad`).
QUAD_RULE = "lwc_int8_depthwise_quad"
#: Custom rule of its row-quad block: nothing (the accumulation's rule places it).
QUAD_ROWS_RULE = "lwc_int8_depthwise_quad_rows"
#: Rows of the plane one ``vpdpbusd`` reads per output pixel (its 4 bytes per int32 lane).
QUAD = 4
#: Most accumulator vectors (16 int32 each) of one register block along a row.
QUAD_BLOCK = 8
#: Fewest output rows for the row-quad kernel. Its plane and quads cost ~2 rows' taps
#: each, and a conv reads ``oh * sh + 4`` quad rows for ``oh`` output rows. Measured on
#: znver4 (2 threads, kernel alone, row-quad vs widening): 3x3 32 channels at 160x160 142
#: vs 212 us, 5x5 96 at 40x40 74 vs 85, 5x5 192 at 20x20 50 vs 42, 5x5 200 at 2x96 30 vs 17.
QUAD_MIN_ROWS = 32


def quad_rows(dot, strides, dilation, out_shape) -> bool:
    """Whether an int8 depthwise conv takes the row-quad kernel (:func:`depthwise_quad_kernel`):
    x86 VNNI (``dot`` is :data:`lwc.kernels.int8_conv2d.VNNI`), column stride 1, no
    dilation, at least :data:`QUAD_MIN_ROWS` output rows (``out_shape`` NCHW)."""
    from lwc.kernels.int8_conv2d import VNNI

    return (dot == VNNI and int(strides[1]) == 1 and tuple(int(d) for d in dilation) == (1, 1)
            and int(out_shape[2]) >= QUAD_MIN_ROWS)


def pack_weight_quads(weight: np.ndarray) -> np.ndarray:
    """[C, kh, kw] int8 -> [C, G, kw, 4] (G = ceil(kh / 4)): the row-quad kernel's weights,
    the 4 rows of a quad contiguous (one broadcast int32), rows past kh zero."""
    channels, kh, kw = weight.shape
    groups = -(-kh // QUAD)
    padded = np.zeros((channels, groups * QUAD, kw), np.int8)
    padded[:, :kh] = weight
    return np.ascontiguousarray(padded.reshape(channels, groups, QUAD, kw).transpose(0, 1, 3, 2))


def depthwise_quad_kernel(data_shape, kernel_hw, out_shape, strides, pads,
                          pad_value: int) -> tirx.PrimFunc:
    """The int8 depthwise conv on x86 VNNI: 4 kernel rows per ``vpdpbusd``.

    ``vpdpbusd`` adds 4 uint8 x int8 products into each int32 lane. A dense conv feeds it 4
    input channels; a depthwise conv has one, so the 4 bytes of a lane here are 4 rows of
    the plane at one column, ``quad[t, col, k] = plane[t + k, col]`` (built 16 columns at a
    time by :data:`lwc.kernels.dot_intrin.INTERLEAVE_ROWS_INTRIN`), and the weights of 4
    kernel rows at one kernel column are the broadcast operand::

        acc[n, c, i, j] = sum_{g, q, k} int32(quad[n, c, i*sh + 4g, j + q, k])
                                        * int32(W4[c, g, q, k])

    with ``W4`` as :func:`pack_weight_quads` (rows past kh zero: they meet whatever the
    extra plane rows hold). A 5x5 conv is 2 x 5 ``vpdpbusd`` per 16 outputs where the
    widening kernel (:func:`depthwise_kernel`) does 25 x (widen, multiply, add).

    Args:
        data_shape: (N, C, H, W) of the uint8 input (unpadded).
        kernel_hw: (kh, kw).
        out_shape: (N, C, OH, OW).
        strides: (sh, sw), sw == 1 (:func:`quad_rows`).
        pads: [top, left, bottom, right] padding, filled with ``pad_value`` (the zero point).
    Returns:
        PrimFunc (x uint8 [N, C, H, W], w int8 [C, G, kw, 4], y int32 [N, C, OH, OW]).
    """
    from lwc.kernels.int8_conv2d import VNNI_PIXELS

    n, c, h, w = data_shape
    kh, kw = kernel_hw
    _, _, oh, ow = out_shape
    sh = strides[0]
    top, left = pads[0], pads[1]
    lanes = VNNI_PIXELS.lanes
    groups = -(-kh // QUAD)
    width = round_up(ow, lanes)  # accumulator columns; those past OW are dropped
    wq = round_up(width + kw - 1, PLANE_VECTOR)
    rows = (oh - 1) * sh + QUAD * (groups - 1) + 1  # quad rows read
    i64 = lambda v: tirx.IntImm("int64", v)  # noqa: E731  (Relax shapes are int64)
    x = te.placeholder([i64(d) for d in data_shape], "uint8", name="x")
    weight = te.placeholder([i64(d) for d in (c, groups, kw, QUAD)], "int8", name="w")

    def padded(b, ch, i, j):
        ih, iw = i - top, j - left
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        return tirx.if_then_else(inside, x[b, ch, ih, iw], tirx.const(pad_value, "uint8"))

    plane = te.compute([i64(d) for d in (n, c, rows + QUAD - 1, wq)], padded, name="plane",
                       attrs={"meta_schedule.inline_rule": "disable", "schedule_rule": PLANE_RULE})
    quad = te.compute([i64(d) for d in (n, c, rows, wq, QUAD)],
                      lambda b, ch, t, col, k: plane[b, ch, t + k, col], name="quad",
                      attrs={"meta_schedule.inline_rule": "disable",
                             "schedule_rule": QUAD_ROWS_RULE})
    g = te.reduce_axis((i64(0), i64(groups)), name="g")
    q = te.reduce_axis((i64(0), i64(kw)), name="q")
    k = te.reduce_axis((i64(0), i64(QUAD)), name="k")
    acc = te.compute(
        [i64(d) for d in (n, c, oh, width)],
        lambda b, ch, i, j: te.sum(quad[b, ch, i * sh + g * QUAD, j + q, k].astype("int32")
                                   * weight[ch, g, q, k].astype("int32"), axis=[g, q, k]),
        name="depthwise", attrs={"schedule_rule": QUAD_RULE})
    y = te.compute([i64(d) for d in out_shape], lambda b, ch, i, j: acc[b, ch, i, j],
                   name="to_int32")
    return te.create_prim_func([x, weight, y])


def schedule_depthwise_quad(sch, block):
    """MetaSchedule custom rule for the row-quad kernel's accumulation block (loops n, c,
    i, j | g, q, k as :func:`depthwise_quad_kernel` makes them): per (n, c), under one
    parallel loop, the channel's padded plane (16 bytes per vector), its quads (16 columns
    per interleave) and, per output row, blocks of up to :data:`QUAD_BLOCK` accumulator
    vectors held over the unrolled taps (each tap one ``vpdpbusd`` per vector with the
    broadcast weights; MetaSchedule's RewriteTensorize emits it), the epilogue on each
    block right after its taps.

    Returns:
        [sch] (one design space).
    """
    from lwc.kernels.dot_intrin import INTERLEAVE_ROWS_INTRIN, VNNI_PIXELS_INTRIN
    from lwc.kernels.int8_conv2d import VNNI_PIXELS

    quad = [p for p in sch.get_producers(block) if sch.get(p).name_hint == "quad"]
    out = [p for p in sch.get_consumers(block) if sch.get(p).name_hint == "to_int32"]
    b, ch, i, j, g, q, k = sch.get_loops(block)
    width = int(sch.get(j).extent)
    lanes = VNNI_PIXELS.lanes
    channels = [sch.fuse(b, ch)]
    if quad:  # plane and quads per channel, under the one parallel loop (merged below)
        plane = [p for p in sch.get_producers(quad[0]) if sch.get(p).name_hint == "plane"]
        if plane:
            channels.insert(0, _plane_per_channel(sch, plane[0]))
        qb, qc, _, columns, _ = sch.get_loops(quad[0])
        channels.insert(len(channels) - 1, sch.fuse(qb, qc))
        outer, columns = sch.split(columns, [None, lanes])
        sch.tensorize(columns, INTERLEAVE_ROWS_INTRIN)
        sch.annotate(outer, SCHEDULED_LOOP_ATTR, 1)  # else the postprocessor vectorizes it
    _parallel_channels(sch, channels)
    _tap_blocks(sch, (i, j, k), (g, q), width, lanes, VNNI_PIXELS_INTRIN, out)
    return [sch]


def _plane_per_channel(sch, plane):
    """The padded plane's loops: (n, c) fused (returned, for :func:`_parallel_channels`),
    the columns :data:`PLANE_VECTOR` bytes per vector."""
    pb, pc, _, columns = sch.get_loops(plane)
    channel = sch.fuse(pb, pc)
    _, columns = sch.split(columns, [None, PLANE_VECTOR])
    sch.vectorize(columns)
    return channel


def _parallel_channels(sch, channels) -> None:
    """Merge the per-channel loops of the kernel's blocks into one parallel loop."""
    channel = sch.merge(*channels) if len(channels) > 1 else channels[0]
    sch.parallel(channel)
    # MetaSchedule's postprocessor would fuse and parallelize the loops above each block
    # again: on a loop shared by several blocks that fails, and the kernel stays unscheduled
    sch.annotate(channel, SCHEDULED_LOOP_ATTR, 1)


def _tap_blocks(sch, row_column_lane, taps, width: int, lanes: int, intrin: str, out) -> None:
    """Per output row ``i``, blocks of up to :data:`QUAD_BLOCK` accumulator vectors of
    ``lanes`` columns over the unrolled ``taps`` loops; the (column, lane-byte) loops
    blockized for MetaSchedule's postprocessors to tensorize with ``intrin``
    (RewriteReductionBlock puts the init before the taps, RewriteTensorize vectorizes it),
    as lwc's packed int8 convs are; then the epilogue (:func:`_place_epilogue`).

    ``row_column_lane``: the accumulation block's loops (i, j, k).
    """
    i, j, k = row_column_lane
    vectors = width // lanes
    per_block = max(d for d in range(1, min(vectors, QUAD_BLOCK) + 1) if vectors % d == 0)
    j0, j1 = sch.split(j, [None, lanes])
    blocks, inner = sch.split(j0, [None, per_block])
    sch.reorder(i, blocks, *taps, inner, j1, k)
    dot = sch.blockize(j1)
    sch.annotate(dot, "meta_schedule.auto_tensorize", intrin)
    local = sch.cache_write(dot, 0, "global")  # "global": see lwc.schedules.common.register_tile
    sch.reverse_compute_at(local, blocks)
    for loop in (*taps, inner):  # annotated: the postprocessor leaves annotated loops alone
        sch.unroll(loop)
        sch.annotate(loop, "pragma_unroll_explicit", 1)
    _place_epilogue(sch, out, local, i, blocks, width, lanes)


def _place_epilogue(sch, out, local, row, blocks, width: int, lanes: int) -> None:
    """The row kernels' output block (``to_int32`` and the epilogue FuseOps appended):
    where the row is not cropped, on each block of accumulators right after its taps (the
    accumulators never leave registers); else the row's accumulators, then the epilogue
    per row with its remainder a shorter vector (:func:`_vectorize_row`)."""
    whole = bool(out) and int(sch.get(sch.get_loops(out[0])[-1]).extent) == width
    if whole:
        sch.reverse_compute_at(out[0], blocks)
        _epilogue_into(sch, out[0])
        _, vec = sch.split(sch.get_loops(out[0])[-1], [None, lanes])
        sch.vectorize(vec)
        sch.compute_inline(local)
        return
    _, vec = sch.split(sch.get_loops(local)[-1], [None, lanes])
    sch.vectorize(vec)
    if out:
        sch.reverse_compute_at(out[0], row)
        _epilogue_into(sch, out[0])
        _vectorize_row(sch, sch.get_loops(out[0])[-1])



# --------------------------------------------------------------------------- row windows (VNNI)

#: Custom rule of the row-window kernel's accumulation block (:func:`schedule_depthwise_window`).
WINDOW_RULE = "lwc_int8_depthwise_window"
#: Bytes the window intrinsic loads past its 19-byte window (one 32-byte load).
WINDOW_SLACK = 13


def row_windows(dot, strides, dilation, kernel_hw) -> bool:
    """Whether an int8 depthwise conv takes the row-window kernel (:func:`depthwise_window_kernel`):
    x86 VNNI, column stride 1, no dilation, 5 kernel columns."""
    from lwc.kernels.int8_conv2d import VNNI

    return (dot == VNNI and int(strides[1]) == 1 and tuple(int(d) for d in dilation) == (1, 1)
            and int(kernel_hw[1]) == 5)


def pack_weight_windows(weight: np.ndarray) -> np.ndarray:
    """[C, kh, kw] int8 -> [C, kh, G, 4] (G = ceil(kw / 4)): the row-window kernel's
    weights, 4 consecutive kernel columns contiguous (one broadcast int32), columns past
    kw zero."""
    channels, kh, kw = weight.shape
    groups = -(-kw // QUAD)
    padded = np.zeros((channels, kh, groups * QUAD), np.int8)
    padded[:, :, :kw] = weight
    return np.ascontiguousarray(padded.reshape(channels, kh, groups, QUAD))


def depthwise_window_kernel(data_shape, kernel_hw, out_shape, strides, pads,
                            pad_value: int) -> tirx.PrimFunc:
    """The int8 depthwise conv on x86 VNNI: 4 kernel columns per ``vpdpbusd``.

    ``vpdpbusd`` adds 4 uint8 x int8 products into each int32 lane. For 16 outputs of a
    row, the 4 bytes of lane ``j`` are the 4 plane bytes ``j + 4g .. j + 4g + 3`` under
    kernel columns ``4g .. 4g + 3``: one byte permute of a 32-byte load builds them in a
    register (:data:`lwc.kernels.dot_intrin.VNNI_WINDOW_INTRIN`), nothing is written to
    memory::

        acc[n, c, i, j] = sum_{r, g, k} int32(plane[n, c, i*sh + r, j + 4g + k])
                                        * int32(W4[c, r, g, k])

    with ``W4`` as :func:`pack_weight_windows` (columns past kw zero). A 5x5 conv is 5 x 2
    (load, permute, ``vpdpbusd``) per 16 outputs where the widening kernel runs 25 x
    (widen, multiply, add).

    Args:
        data_shape: (N, C, H, W) of the uint8 input (unpadded).
        kernel_hw: (kh, kw).
        out_shape: (N, C, OH, OW).
        strides: (sh, sw), sw == 1.
        pads: [top, left, bottom, right] padding, filled with ``pad_value`` (the zero point).
    Returns:
        PrimFunc (x uint8 [N, C, H, W], w int8 [C, kh, G, 4], y int32 [N, C, OH, OW]).
    """
    from lwc.kernels.int8_conv2d import VNNI_PIXELS

    n, c, h, w = data_shape
    kh, kw = kernel_hw
    _, _, oh, ow = out_shape
    sh = strides[0]
    top, left = pads[0], pads[1]
    groups = -(-kw // QUAD)
    width = round_up(ow, VNNI_PIXELS.lanes)  # accumulator columns; those past OW are dropped
    # the last window starts at width - 16 + 4 (G - 1) and its load reads 32 bytes
    wp = round_up(width + QUAD * (groups - 1) + 3 + WINDOW_SLACK, PLANE_VECTOR)
    hp = (oh - 1) * sh + kh
    i64 = lambda v: tirx.IntImm("int64", v)  # noqa: E731  (Relax shapes are int64)
    x = te.placeholder([i64(d) for d in data_shape], "uint8", name="x")
    weight = te.placeholder([i64(d) for d in (c, kh, groups, QUAD)], "int8", name="w")

    def padded(b, ch, i, j):
        ih, iw = i - top, j - left
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        return tirx.if_then_else(inside, x[b, ch, ih, iw], tirx.const(pad_value, "uint8"))

    plane = te.compute([i64(d) for d in (n, c, hp, wp)], padded, name="plane",
                       attrs={"meta_schedule.inline_rule": "disable", "schedule_rule": PLANE_RULE})
    r = te.reduce_axis((i64(0), i64(kh)), name="r")
    g = te.reduce_axis((i64(0), i64(groups)), name="g")
    k = te.reduce_axis((i64(0), i64(QUAD)), name="k")
    acc = te.compute(
        [i64(d) for d in (n, c, oh, width)],
        lambda b, ch, i, j: te.sum(plane[b, ch, i * sh + r, j + g * QUAD + k].astype("int32")
                                   * weight[ch, r, g, k].astype("int32"), axis=[r, g, k]),
        name="depthwise", attrs={"schedule_rule": WINDOW_RULE})
    y = te.compute([i64(d) for d in out_shape], lambda b, ch, i, j: acc[b, ch, i, j],
                   name="to_int32")
    return te.create_prim_func([x, weight, y])


def schedule_depthwise_window(sch, block):
    """MetaSchedule custom rule for the row-window kernel's accumulation block (loops n, c,
    i, j | r, g, k as :func:`depthwise_window_kernel` makes them): per (n, c), under one
    parallel loop, the channel's padded plane (16 bytes per vector) and, per output row,
    blocks of up to :data:`QUAD_BLOCK` accumulator vectors held over the unrolled taps
    (MetaSchedule's RewriteTensorize emits the window intrinsic), the epilogue on each block
    right after its taps.

    Returns:
        [sch] (one design space).
    """
    from lwc.kernels.dot_intrin import VNNI_WINDOW_INTRIN
    from lwc.kernels.int8_conv2d import VNNI_PIXELS

    plane = [p for p in sch.get_producers(block) if sch.get(p).name_hint == "plane"]
    out = [p for p in sch.get_consumers(block) if sch.get(p).name_hint == "to_int32"]
    b, ch, i, j, r, g, k = sch.get_loops(block)
    width = int(sch.get(j).extent)
    lanes = VNNI_PIXELS.lanes
    channels = [sch.fuse(b, ch)]
    if plane:
        channels.insert(0, _plane_per_channel(sch, plane[0]))
    _parallel_channels(sch, channels)
    _tap_blocks(sch, (i, j, k), (r, g), width, lanes, VNNI_WINDOW_INTRIN, out)
    return [sch]


def _register_row_rules() -> None:
    for rule, function in ((QUAD_RULE, schedule_depthwise_quad), (QUAD_ROWS_RULE, _schedule_plane),
                           (WINDOW_RULE, schedule_depthwise_window)):
        name = f"s_tir.meta_schedule.cpu.{rule}"
        if tvm.get_global_func(name, allow_missing=True) is None:
            tvm.register_global_func(name, function)


_register_row_rules()
