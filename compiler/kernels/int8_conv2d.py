"""lwc's int8 conv2d kernels for the CPU's int8 dot-product instruction (x86 VNNI, Arm
sdot; on x86 AVX2 without VNNI lwc's exact 16-bit ``vpmaddwd`` intrinsic), their weight
packing and their MetaSchedule schedule rules; :func:`dot_product_for` is the ISA table.
PackInt8Conv2d (:mod:`lwc.passes.pack_int8_conv2d`) rewrites integer convs to call them.

Each kernel is one PrimFunc of three blocks (activation copy, matmul, write-back) whose
matmul block has the shape of the intrinsic's description, the only shape
``MultiLevelTilingWithIntrin`` tensorizes (``GetTensorizeLoopMapping``: the innermost
spatial iterator indexes ``lanes`` contiguous weights, the innermost reduction iterator
``width`` contiguous elements of both operands)::

    C[i] += int32(A[k]) * int32(B[i, k])     i < lanes (16 VNNI, 4 sdot, 8 AVX2),
                                             k < width (4 VNNI/sdot, 2 AVX2)
    A: activations (VNNI: uint8, sdot: int8, AVX2: int16), B: weights int8, C: int32

The channel-lane kernel (:func:`conv_kernel`; lanes are output channels) of a 3x3 (any
kh*kw > 1) conv is an implicit GEMM on a padded NHWC copy of its input::

    a[n, hp, wp, c] = x[n, c, hp - pt, wp - pl]      (z_x outside: the padding; 0 for c >= C)
    acc[n, oh, ow, o] = sum_{r,q,c} int32(a[n, oh*s + r*d, ow*s + q*d, c]) * int32(Wp[o//L, r, q, c//K, o%L, c%K])
    y[n, o, oh, ow] = acc[n, oh, ow, o] (+ 128 * sum W[o] when a is x - 128)

and a 1x1 conv reads its im2col ``a[n, oh, ow, 0, 0, c] = x[n, c, oh*s - pt, ow*s - pl]``
(the input in NHWC, subsampled by the stride) at ``a[n, oh, ow, r, q, c]``. An im2col for
a 3x3 conv would write each input pixel 9 times (22 MB for PP-OCRv4 det's 96->24 convs at
160x160). (L lanes, K width) with C padded to a multiple of K and O to a multiple of L
with zero weights (they add nothing); every index is affine (no div/mod). The activation
block carries ``meta_schedule.inline_rule = "disable"`` and a custom schedule rule
(:data:`IM2COL_RULE`, :func:`schedule_im2col`), so neither AutoInline nor
RandomComputeLocation inlines it: inlined, the activations would be read with a stride and
the intrinsic would not match. For sdot (int8 x int8) the uint8 activations are shifted to
int8 (x - 128) in the activation block and the weights' row sums times 128 are added back
(for AVX2 it widens them to int16), so the kernel's result is the exact int32
conv2d either way (|acc| stays far from overflow: K * 255 * 127 < 2**31 for K < 66000).

On x86 VNNI a stride-1 conv whose output width is a multiple of 16 takes the pixel-lane
kernel instead (:func:`pixel_conv_kernel`): the 16 lanes of each ``vpdpbusd`` are 16
output pixels of one output channel (``lwc_dot_16x4_vnni_pixels``, weights broadcast)::

    a[n, c//4, hp, wp, c%4] = x[n, c, hp - pt, wp - pl]      (NCHW with 4 channels interleaved)
    acc[n, oh, o, ow] = sum_{r,q,c} int32(a[n, c//4, oh + r*d, ow + q*d, c%4]) * int32(W4[o, r, q, c])
    y[n, o, oh, ow] = acc[n, oh, o, ow]

Its output rows are already NCHW (the write-back and the fused requantization run along
``ow``, contiguous, instead of gathering one channel every ``o_pad`` int32s), its input
copy interleaves 4 channel planes instead of transposing all of them, and no output
channel is padded (PP-OCRv4 det's 24-channel convs waste 8 of 32 lanes in the
channel-lane kernel). Measured on a Zen 5 (2 threads, MetaSchedule): PP-OCRv4 det's 1x1
conv 16->32 at 320x320, 1.1 ms after 32 trials (channel lanes: 3.9 ms, the best record of
209 trials replayed); its 3x3 conv 96->24 at 160x160, 1.7 ms after 32 trials (channel
lanes: 5.1 ms after 64). Strided convs (the lanes would read every s-th byte group) and
widths that are not a multiple of 16 (lanes wasted on padding: resnet50's 56, 28, 14, 7)
keep the channel-lane kernel (:func:`pixel_lanes` decides).

The kernels are numerically the same integer conv2d; schedules change no bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te, tirx


@dataclass(frozen=True)
class DotProduct:
    """An int8 dot-product instruction as the kernel must present it to MetaSchedule.

    Attributes:
        lanes: int32 results per instruction (the intrinsic's spatial extent).
        act_dtype: dtype of the broadcast operand (the activations, as the im2col writes them).
        intrin: TVM tensor intrinsic name MetaSchedule uses for it.
        width: products summed into each lane (the intrinsic's reduction extent).
    """

    lanes: int
    act_dtype: str
    intrin: str
    width: int = 4

    @property
    def schedule_rule(self) -> str:
        """The ``schedule_rule`` block annotation naming :func:`schedule_dot_product`'s rule."""
        return f"lwc_int8_dot_{self.lanes}x{self.width}"


VNNI = DotProduct(16, "uint8", "lwc_dot_16x4_vnni")  # lwc.kernels.dot_intrin (TVM's fails with LLVM 22)
SDOT = DotProduct(4, "int8", "dot_4x4_i8i8s32_sdot")
AVX2 = DotProduct(8, "int16", "lwc_dot_8x2_avx2", width=2)  # lwc.kernels.dot_intrin: vpmaddwd

#: The pixel-lane variant of VNNI (:func:`pixel_conv_kernel`): 16 output pixels x 4 channels.
VNNI_PIXELS = DotProduct(16, "uint8", "lwc_dot_16x4_vnni_pixels")
#: schedule_rule of the pixel-lane matmul (:func:`schedule_dot_product` with VNNI_PIXELS' intrinsic).
PIXELS_RULE = "lwc_int8_dot_pixels_16x4"


def schedule_dot_product(sch, block, intrin: str):
    """MetaSchedule custom rule for the packed matmul block: tensorize + tunable tiles.

    Why a custom rule: with TVM's own ``MultiLevelTilingWithIntrin`` the innermost tile
    loop around the tensorized block is spatial, ``RewriteParallelVectorizeUnroll``
    vectorizes it, and the build fails ("Cannot broadcast lanes=16 to 32"), so nearly
    every tensorized candidate is discarded. Here the intrinsic's loops are split off
    (``tile_with_tensor_intrin``) and blockized with the ``meta_schedule.auto_tensorize``
    annotation (the RewriteTensorize postproc tensorizes after RewriteReductionBlock), and
    the rows (output pixels along ``ow``; in the pixel-lane kernel, output channels) and
    column blocks (``lanes`` output channels; pixel-lane: ``lanes`` pixels along ``ow``)
    get sampled tiles ``r1`` x ``c1`` (what tuning searches). Two design spaces:

    1. Reduction innermost (``r0, c0, r1, c1, kh, kw, c``): one accumulator vector is
       live at a time and stays in a register over the whole reduction; each
       ``vpdpbusd`` waits for the previous one (a latency-bound chain).
    2. Register-blocked (``r0, c0, kh, kw, c, r1, c1``, the GEMM micro-kernel of
       Goto & van de Geijn, ACM TOMS 34(3), 2008): ``r1 * c1`` independent accumulators
       in a local tile (``cache_write``), each broadcast activation used ``c1`` times and
       each weight vector ``r1`` times. ``r1`` and ``c1`` are unrolled and annotated, so
       RewriteParallelVectorizeUnroll leaves them alone (it skips annotated loops).
       Measured on a Zen 5 (64 trials each, 3x3 conv 96->24 at 160x160): 5.1 ms vs 10.7
       ms for 1. on the same implicit-GEMM kernel.

    Returns:
        [reduction innermost, register-blocked] ([sch] when the intrinsic does not map).
    """
    from tvm.s_tir.schedule.transform import tile_with_tensor_intrin

    loop = tile_with_tensor_intrin(sch, block, intrin)
    if loop is None:
        return [sch]
    outer = sch.blockize(loop)
    sch.annotate(outer, "meta_schedule.auto_tensorize", intrin)
    blocked = sch.copy()
    spaces = []
    for space, accumulators_inside in ((sch, False), (blocked, True)):
        # loops: n, oh, ow, column blocks | kh, kw, channel blocks (the intrinsic's are inside);
        # pixel-lane kernel: n, oh, o, ow blocks | kh, kw, channel blocks
        *_, rows, cols, red_h, red_w, red_c = space.get_loops(outer)[-7:]
        r0, r1 = space.split(rows, space.sample_perfect_tile(rows, n=2, max_innermost_factor=8))
        c0, c1 = space.split(cols, space.sample_perfect_tile(cols, n=2, max_innermost_factor=4))
        if not accumulators_inside:
            space.reorder(r0, c0, r1, c1, red_h, red_w, red_c)
        else:
            space.reorder(r0, c0, red_h, red_w, red_c, r1, c1)
            tile = space.cache_write(outer, 0, "global")
            # unit loops kept: _vectorize_by_lanes reads the tile's loops in the trace, and
            # their number must not change when tuning mutates r1 or c1 to 1
            space.reverse_compute_at(tile, c0, preserve_unit_loops=True)
            for inner in (r1, c1):
                space.unroll(inner)
                space.annotate(inner, "pragma_unroll_explicit", 1)
            _vectorize_by_lanes(space, tile, outer)
        spaces.append(space)
    return spaces


def _vectorize_by_lanes(sch, tile, dot_block) -> None:
    """Write the accumulator tile back one intrinsic vector (``lanes`` int32) at a time.

    Left to RewriteParallelVectorizeUnroll, the write-back's ``c1 * lanes`` columns become
    one vector (12 int32 for a 4-lane sdot tile of 3 column blocks). Such a load straddles
    the dot instructions' accumulators, so LLVM's SROA cannot keep them in registers: it
    rebuilds every accumulator lane by lane around each dot (PP-OCRv4 det's 3x3 conv 96->24
    for rpi5, 4x3 tile: 280 stack accesses in the kernel against 98 with 4x2), which is why
    untuned tiles had one column block (:data:`lwc.schedules.int8.MAX_COLS`). Split by
    ``lanes``, each load is one accumulator (8x3: no accumulator on the stack); the loops
    outside are unrolled and annotated, so the postprocessor leaves them alone.
    """
    lanes = _dot_lanes(sch, dot_block)
    loops = sch.get_loops(tile)
    if lanes is None or not loops:
        return
    cols = loops[-1]
    extent = int(sch.get(cols).extent) if isinstance(sch.get(cols).extent, tirx.IntImm) else None
    if extent is None or extent % lanes:
        return
    # split even at one block (outer extent 1): the trace is replayed with other column
    # tiles (lwc.schedules.int8.pick_space), and the split must be in it to apply there
    outer, inner = sch.split(cols, [None, lanes])
    sch.vectorize(inner)
    sch.unroll(outer)
    sch.annotate(outer, "pragma_unroll_explicit", 1)


def _dot_lanes(sch, dot_block) -> int | None:
    """int32 lanes of the blockized dot instruction (the innermost extent it writes)."""
    region = sch.get(dot_block).writes[0].region
    extent = region[-1].extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


#: Custom rule of the im2col block (:func:`schedule_im2col`): it stays a buffer of its own.
#: MetaSchedule's RandomComputeLocation would otherwise sometimes inline it
#: (``inline_rule`` only binds AutoInline), and the tensorized loads would become strided.
IM2COL_RULE = "lwc_int8_im2col"


def schedule_im2col(sch, block):
    """MetaSchedule custom rule for the activation block: two design spaces, tuning picks.

    The block is the im2col ``a[n, oh, ow, kh, kw, c]`` of a 1x1 conv or the padded
    NHWC copy ``a[n, hp, wp, c]`` of an implicit-GEMM kernel (:func:`conv_kernel`).

    1. As is: RewriteParallelVectorizeUnroll parallelizes and vectorizes its loops.
       Fast where c is a multiple of the vector width (resnet50's
       64..512 channels: 120-160 GOP/s for the whole kernel on Zen 3), but with c = 24, 48
       or 96 (PP-OCRv4 det's neck) the postprocessor fuses all the loops into one and
       splits it by 64, so every element pays int64 div/mod by the extents: 12 GOP/s
       for the kernel whatever the matmul tiles (3x3 conv 96->24 at 160x160: 86 ms).
    2. Rows: the input-column loop (``ow`` / ``wp``) innermost, (n, oh / hp) parallel:
       the NCHW input is read along its rows (contiguous for stride 1), the block written
       with a stride; the same conv: 14 ms (76 GOP/s), but 2x slower than 1. at 64
       channels (both measured on Zen 3 with the im2col of 3x3 convs, before the
       implicit GEMM).

    Returns:
        [sch, rows] (the block's loops as the kernel makes them; [sch] otherwise).
    """
    loops = sch.get_loops(block)
    if len(loops) not in (4, 6):
        return [sch]
    rows = sch.copy()
    n, oh, ow, *rest = loops
    rows.reorder(n, oh, *rest, ow)
    rows.parallel(rows.fuse(n, oh))
    return [sch, rows]


#: Annotation of a loop lwc's rules scheduled (no meaning to TVM's lowering):
#: MetaSchedule's RewriteParallelVectorizeUnroll leaves annotated loops alone, where it
#: would fuse, split and vectorize them again.
SCHEDULED_LOOP_ATTR = "lwc_scheduled"

#: Custom rule of the pixel-lane kernel's activation block (:func:`schedule_nchw4c`).
NCHW4C_RULE = "lwc_int8_nchw4c"


def schedule_nchw4c(sch, block):
    """MetaSchedule custom rule for the pixel-lane kernel's activation block
    ``a[n, c//4, hp, wp, c%4]`` (:func:`pixel_conv_kernel`): (n, c//4, hp) parallel, and
    per row:

    * a plain copy (no padding: a 1x1 conv whose channels are a multiple of 4): 16
      columns x 4 channels (64 bytes, one ``vpdpbusd`` operand) tensorized with
      :data:`lwc.kernels.dot_intrin.INTERLEAVE_INTRIN` (four 16-byte loads, one shuffle);
    * with padding (an ``if_then_else`` per byte): the columns serial and the 4 channels
      unrolled, which LLVM turns into 4 byte loads and one 4-byte store per column.

    Left to RewriteParallelVectorizeUnroll, all five loops were fused into one and split
    by 64, so every element paid int64 div/mod by the extents: 11.3 ms for PP-OCRv4 det's
    3x3 conv 96->24 at 160x160 vs 1.7 ms with 16 columns x 4 channels as one vector (Zen 5,
    32 trials each). That vector was still a gather (a ``vpinsrb`` per byte): PP-OCR cls's
    1x1 convs at 96 columns ran 2.4-2.9x their fp32 kernels. cls int8 / fp32 (znver4,
    untuned, interleaved p50): 1.05 with the gather, 0.93 with every copy per column,
    0.87 with the unpadded ones interleaved.

    Returns:
        [sch] (the block's width ``wp`` is a multiple of 16 by construction).
    """
    from lwc.kernels.dot_intrin import INTERLEAVE_INTRIN

    n, c4, hp, wp, k = sch.get_loops(block)
    sch.parallel(sch.fuse(n, c4, hp))
    if "if_then_else" in str(sch.get(block).body):
        sch.unroll(k)
        return [sch]
    outer, columns = sch.split(wp, [None, 16])
    sch.tensorize(columns, INTERLEAVE_INTRIN)
    sch.annotate(outer, SCHEDULED_LOOP_ATTR, 1)  # else the postprocessor vectorizes it
    return [sch]


def _register_rules() -> None:
    from lwc.kernels.dot_intrin import register

    register()
    rules = {IM2COL_RULE: schedule_im2col, NCHW4C_RULE: schedule_nchw4c}
    for rule, intrin in [(dot.schedule_rule, dot.intrin) for dot in (VNNI, SDOT, AVX2)] + [
            (PIXELS_RULE, VNNI_PIXELS.intrin)]:
        rules[rule] = lambda sch, block, intrin=intrin: schedule_dot_product(sch, block, intrin)
    for rule, function in rules.items():
        name = f"s_tir.meta_schedule.cpu.{rule}"
        if tvm.get_global_func(name, allow_missing=True) is None:
            tvm.register_global_func(name, function)


_register_rules()


def dot_product_for(arch: str, features) -> DotProduct | None:
    """The dot-product geometry MetaSchedule tensorizes to on this CPU, or None.

    x86 with ``vnni`` and ``avx512`` (AVX512-VNNI: the 512-bit ``vpdpbusd`` lwc's
    intrinsics call), aarch64 with ``dotprod`` (``sdot``), other x86 with ``avx2`` (lwc's
    ``vpmaddwd`` intrinsic on int16-widened activations, :mod:`lwc.kernels.dot_intrin`;
    AVX-512F without VNNI, e.g. Skylake-SP, and AVX-VNNI without AVX-512, e.g. Alder Lake,
    take this one too: the 512-bit ``vpdpbusd`` would fault there). Never TVM's ``dot_16x4_avx512``
    (``vpmaddubsw``): it saturates its int16 pair sums (255 * 127 * 2 > 32767), which would
    change results. Others (Cortex-A72, pre-AVX2 x86) get None and the pass is not run.
    """
    features = set(features)
    if arch in ("x86_64", "amd64") and {"vnni", "avx512"} <= features:
        return VNNI
    if arch in ("x86_64", "amd64") and "avx2" in features:
        return AVX2
    if arch in ("aarch64", "arm64") and "dotprod" in features:
        return SDOT
    return None


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pack_weight(weight: np.ndarray, dot: DotProduct) -> np.ndarray:
    """OIHW int8 -> [O/L, kh, kw, C/K, L, K] (L lanes, K width; O, C padded with zeros)."""
    out_ch, in_ch, kh, kw = weight.shape
    width = dot.width
    c_pad, o_pad = round_up(in_ch, width), round_up(out_ch, dot.lanes)
    padded = np.zeros((o_pad, c_pad, kh, kw), np.int8)
    padded[:out_ch, :in_ch] = weight
    blocked = padded.transpose(0, 2, 3, 1).reshape(o_pad // dot.lanes, dot.lanes, kh, kw,
                                                    c_pad // width, width)
    return np.ascontiguousarray(blocked.transpose(0, 2, 3, 4, 1, 5))


def conv_kernel(data_shape, weight_shape, out_shape, strides, dilation, pads, pad_value: int,
                dot: DotProduct) -> tirx.PrimFunc:
    """The activation block + packed matmul + NCHW write-back kernel (module docstring).

    The activation block is, for a 1x1 kernel, the im2col ``a[n, oh, ow, 0, 0, c]`` (the
    input in NHWC, subsampled by the stride) and otherwise the padded NHWC copy
    ``a[n, hp, wp, c]`` the matmul reads at ``(oh*s + r*d, ow*s + q*d)`` (implicit GEMM,
    as oneDNN's direct convolutions do): an im2col would write every input pixel kh*kw
    times (22 MB for a 3x3 conv 96->24 at 160x160; after 64 tuning trials on a Zen 5 with
    the reduction-innermost matmul space: 14.4 ms with the im2col, 10.7 ms implicit; 5.1 ms
    implicit with the register-blocked space). Either way each activation the intrinsic broadcasts
    is ``width`` contiguous channels. Every index is affine in the loop variables: a flat
    [pixel, k] im2col needed int64 div/mod per element, which LLVM cannot vectorize on x86
    (measured: 588 us for cls's first conv).

    Args:
        data_shape: (N, C, H, W) of the uint8 input (unpadded).
        weight_shape: (O, C, kh, kw).
        out_shape: (N, O, OH, OW).
        pads: [top, left, bottom, right] padding, filled with ``pad_value``.
    Returns:
        PrimFunc (x uint8, packed weight int8[, weight row sums int32], y int32).
    """
    n, c, h, w = data_shape
    o, _, kh, kw = weight_shape
    _, _, oh, ow = out_shape
    sh, sw = strides
    dh, dw = dilation
    top, left = pads[0], pads[1]
    lanes, width = dot.lanes, dot.width
    c_pad, o_pad = round_up(c, width), round_up(o, lanes)
    i64 = lambda v: tirx.IntImm("int64", v)  # noqa: E731  (Relax shapes are int64)
    x = te.placeholder([i64(d) for d in data_shape], "uint8", name="x")
    wp_shape = (o_pad // lanes, kh, kw, c_pad // width, lanes, width)
    wp = te.placeholder([i64(d) for d in wp_shape], "int8", name="w")
    shift = dot.act_dtype == "int8"

    def activation(b, ih, iw, ch):
        """x[b, ch, ih, iw] as the intrinsic reads it (padding, padded channels, shift)."""
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        value = tirx.if_then_else(inside, x[b, ch, ih, iw].astype("int32"), tirx.const(pad_value, "int32"))
        if c_pad != c:  # the padded channels meet zero weights: any value will do
            value = tirx.if_then_else(ch < c, value, tirx.const(0, "int32"))
        if shift:
            value = value - tirx.const(128, "int32")
        return value.astype(dot.act_dtype)

    attrs = {"meta_schedule.inline_rule": "disable", "schedule_rule": IM2COL_RULE}
    if kh * kw == 1:
        a = te.compute([i64(d) for d in (n, oh, ow, kh, kw, c_pad)],
                       lambda b, i, j, r, q, ch: activation(b, i * sh + r * dh - top, j * sw + q * dw - left, ch),
                       name="im2col", attrs=attrs)
        read = lambda b, i, j, r, q, ch: a[b, i, j, r, q, ch]  # noqa: E731
    else:
        hp, wpad = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
        a = te.compute([i64(d) for d in (n, hp, wpad, c_pad)],
                       lambda b, i, j, ch: activation(b, i - top, j - left, ch), name="nhwc", attrs=attrs)
        read = lambda b, i, j, r, q, ch: a[b, i * sh + r * dh, j * sw + q * dw, ch]  # noqa: E731
    r = te.reduce_axis((i64(0), i64(kh)), name="r")
    q = te.reduce_axis((i64(0), i64(kw)), name="q")
    ch = te.reduce_axis((i64(0), i64(c_pad)), name="c")
    acc = te.compute(
        [i64(d) for d in (n, oh, ow, o_pad)],
        lambda b, i, j, oc: te.sum(read(b, i, j, r, q, ch).astype("int32")
                                   * wp[oc // lanes, r, q, ch // width, oc % lanes, ch % width].astype("int32"),
                                   axis=[r, q, ch]),
        name="matmul",
        attrs={"schedule_rule": dot.schedule_rule},
    )
    inputs = [x, wp]
    if shift:
        wsum = te.placeholder([i64(o)], "int32", name="wsum")
        inputs.append(wsum)
    y = te.compute(
        [i64(d) for d in out_shape],
        lambda b, oc, i, j: acc[b, i, j, oc] + (wsum[oc] * 128 if shift else 0),
        name="to_nchw",
    )
    return te.create_prim_func([*inputs, y])


def pixel_lanes(dot: DotProduct, out_shape, strides) -> bool:
    """Whether a conv takes the pixel-lane kernel (:func:`pixel_conv_kernel`): x86 VNNI,
    stride 1 and an output width that is a multiple of 16 (module docstring)."""
    return dot == VNNI and tuple(strides) == (1, 1) and int(out_shape[3]) % VNNI_PIXELS.lanes == 0


def pack_weight_pixels(weight: np.ndarray) -> np.ndarray:
    """OIHW int8 -> [O, kh, kw, C4] (C padded with zeros to C4, a multiple of 4): the
    pixel-lane kernel's weights, 4 input channels (one broadcast int32) contiguous."""
    out_ch, in_ch, kh, kw = weight.shape
    c_pad = round_up(in_ch, VNNI_PIXELS.width)
    padded = np.zeros((out_ch, c_pad, kh, kw), np.int8)
    padded[:, :in_ch] = weight
    return np.ascontiguousarray(padded.transpose(0, 2, 3, 1))


def pixel_conv_kernel(data_shape, weight_shape, out_shape, dilation, pads, pad_value: int) -> tirx.PrimFunc:
    """The pixel-lane kernel of a stride-1 conv (x86 VNNI; module docstring).

    ``a[n, c//4, hp, wp, c%4]`` is the padded input with 4 channels interleaved (C padded to
    a multiple of 4 with zeros, which meet zero weights; ``wp`` rounded up to a multiple of
    16 for :func:`schedule_nchw4c`, the extra columns are never read); the matmul's lanes
    are 16 consecutive ``ow`` of one output channel, so each ``vpdpbusd`` reads 64
    contiguous activation bytes and one broadcast group of 4 weights.

    Args:
        data_shape: (N, C, H, W) of the uint8 input (unpadded).
        weight_shape: (O, C, kh, kw).
        out_shape: (N, O, OH, OW), OW a multiple of 16 (:func:`pixel_lanes`).
        pads: [top, left, bottom, right] padding, filled with ``pad_value``.
    Returns:
        PrimFunc (x uint8, weight int8 as :func:`pack_weight_pixels`, y int32).
    """
    n, c, h, w = data_shape
    o, _, kh, kw = weight_shape
    _, _, oh, ow = out_shape
    dh, dw = dilation
    top, left = pads[0], pads[1]
    lanes, width = VNNI_PIXELS.lanes, VNNI_PIXELS.width
    c_pad = round_up(c, width)
    hp, wpad = oh + (kh - 1) * dh, round_up(ow + (kw - 1) * dw, lanes)
    i64 = lambda v: tirx.IntImm("int64", v)  # noqa: E731  (Relax shapes are int64)
    x = te.placeholder([i64(d) for d in data_shape], "uint8", name="x")
    w4 = te.placeholder([i64(d) for d in (o, kh, kw, c_pad)], "int8", name="w")

    def activation(b, c4, i, j, k):
        ih, iw, ch = i - top, j - left, c4 * width + k
        if (top, left, hp, wpad, c_pad) == (0, 0, h, w, c):  # a plain copy (schedule_nchw4c)
            return x[b, ch, i, j]
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        value = tirx.if_then_else(inside, x[b, ch, ih, iw].astype("int32"), tirx.const(pad_value, "int32"))
        if c_pad != c:  # the padded channels meet zero weights: any value will do
            value = tirx.if_then_else(ch < c, value, tirx.const(0, "int32"))
        return value.astype("uint8")

    a = te.compute([i64(d) for d in (n, c_pad // width, hp, wpad, width)], activation, name="nchw4c",
                   attrs={"meta_schedule.inline_rule": "disable", "schedule_rule": NCHW4C_RULE})
    r = te.reduce_axis((i64(0), i64(kh)), name="r")
    q = te.reduce_axis((i64(0), i64(kw)), name="q")
    ch = te.reduce_axis((i64(0), i64(c_pad)), name="c")  # one axis: tiling splits off the 4
    acc = te.compute(
        [i64(d) for d in (n, oh, o, ow)],
        lambda b, i, oc, j: te.sum(a[b, ch // width, i + r * dh, j + q * dw, ch % width].astype("int32")
                                   * w4[oc, r, q, ch].astype("int32"), axis=[r, q, ch]),
        name="matmul",
        attrs={"schedule_rule": PIXELS_RULE},
    )
    y = te.compute([i64(d) for d in out_shape], lambda b, oc, i, j: acc[b, i, oc, j], name="to_nchw")
    return te.create_prim_func([x, w4, y])
