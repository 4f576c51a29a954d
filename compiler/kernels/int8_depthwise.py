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
"""

from __future__ import annotations

import tvm
from tvm import te, tirx

from lwc.kernels.int8_conv2d import round_up


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
