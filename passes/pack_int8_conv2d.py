"""PackInt8Conv2d: integer conv2d -> a matmul on packed weights (implicit GEMM) that
MetaSchedule tensorizes with the CPU's int8 dot-product instruction (x86 VNNI, Arm sdot;
on x86 AVX2 without VNNI lwc's exact 16-bit ``vpmaddwd`` intrinsic).

Why: TVM's MetaSchedule has tensorize rules for int8 dot products
(``ScheduleRule::DefaultX86("vnni")`` with ``dot_16x4_vnni`` when the LLVM target has
avx512vnni, ``DefaultARM("dotprod")`` with
``dot_4x4_i8i8s32_sdot`` when the Arm target has +dotprod; apache/tvm
src/s_tir/meta_schedule/space_generator/space_generator.cc, GetRuleKindFromTarget), but
``MultiLevelTilingWithIntrin`` only fires on a reduction block whose innermost spatial
iterator indexes ``lanes`` contiguous weights and whose innermost reduction iterator
indexes ``width`` contiguous elements of both operands (``GetTensorizeLoopMapping``), i.e.
the intrinsic's description::

    C[i] += int32(A[k]) * int32(B[i, k])     i < lanes (16 VNNI, 4 sdot, 8 AVX2),
                                             k < width (4 VNNI/sdot, 2 AVX2)
    A: activations (VNNI: uint8, sdot: int8, AVX2: int16), B: weights int8, C: int32

TOPI's NCHW conv2d (LowerQdqConv2d's output) has neither shape, so it was never
tensorized and int8 ran slower than fp32. This pass rewrites the conv into one
``call_tir`` of a kernel of :mod:`lwc.kernels.int8_conv2d` whose matmul block has exactly
that shape: an implicit GEMM on a padded NHWC copy of the input (an im2col for a 1x1
conv) with the weights packed ``[O/L, kh, kw, C/K, L, K]`` (L lanes, K width; O and C
padded with zero weights), or, on x86 VNNI for a stride-1 conv whose output width is a
multiple of 16, the pixel-lane kernel whose 16 lanes are 16 output pixels of one output
channel (the kernels' math, layouts, schedule rules and measurements are there). For
sdot the uint8 activations are shifted to int8 (x - 128) in the kernel and the weights'
row sums times 128, a third argument, are added back. Either way the kernel computes

    y[n, o, oh, ow] = sum_{r,q,c} int32(xp[n, c, oh*s + r*d, ow*s + q*d]) * int32(W[o, c, r, q])

with ``xp`` the input padded with the pad value (``nn.pad``'s, folded into the kernel).

Preconditions (declines name the reason): conv2d with out_dtype int32, NCHW/OIHW,
groups 1 (depthwise/grouped convs have 9..few-element reductions: nothing for a dot
product), uint8 data (optionally through ``nn.pad`` with a constant pad value, which is
folded into the activation block), a constant int8 weight.

Before::  xp = pad(xq, ..., pad_value=z); acc = conv2d(xp, Wq, out_dtype="int32")
After::   acc = call_tir(int8_conv2d_packed, (xq, Wp[, wsum]), R.Tensor((n, o, oh, ow), "int32"))

The kernel is numerically the same integer conv2d; schedules change no bit.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from lwc.kernels.int8_conv2d import (
    VNNI,
    DotProduct,
    conv_kernel,
    pack_weight,
    pack_weight_pixels,
    pixel_conv_kernel,
    pixel_lanes,
)
from lwc.passes._qdq import bound_value, const_value, dtype_of, rewrite_matches
from lwc.kernels.cache import KernelCache

NAME = "PackInt8Conv2d"


def _pattern():
    data = wildcard()
    conv = is_op("relax.nn.conv2d")(data, is_const())
    return conv, data


def _unpad(data, var2val: dict):
    """(tensor before an nn.pad, [top, left, bottom, right], pad value) or (data, 0s, 0)."""
    expr = bound_value(data, var2val)
    if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.pad":
        widths = [int(v) for v in expr.attrs.pad_width]
        value = getattr(expr.attrs, "pad_value", None)
        if value is None and len(expr.args) > 1:
            value = const_value(expr.args[1], var2val)
        if len(widths) == 8 and not any(widths[:4]) and value is not None and str(expr.attrs.pad_mode) == "constant":
            top, bottom, left, right = widths[4:]
            return expr.args[0], [top, left, bottom, right], float(np.asarray(value))
    return data, [0, 0, 0, 0], 0.0


def int8_conv_preconditions(conv: relax.Call, data, var2val: dict) -> str | None:
    """Why an integer conv2d cannot take one of lwc's int8 conv kernels (this pass's or
    :mod:`lwc.passes.int8_depthwise_conv2d`'s), or None: an int32 accumulator, NCHW/OIHW,
    uint8 data (through an ``nn.pad`` with a uint8 value at most), int8 weights, static
    shapes."""
    attrs = conv.attrs
    if str(attrs.out_dtype) != "int32":
        return f"out_dtype {attrs.out_dtype} (needs an int32 accumulator)"
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return f"layout {attrs.data_layout}/{attrs.kernel_layout} (needs NCHW/OIHW)"
    source, _, value = _unpad(data, var2val)
    if dtype_of(source) != "uint8":
        return f"data is {dtype_of(source)}, not uint8"
    if not float(value).is_integer() or not 0 <= value <= 255:
        return f"pad value {value} is not a uint8"
    if dtype_of(conv.args[1]) != "int8":
        return f"weights are {dtype_of(conv.args[1])}, not int8"
    if any(not isinstance(d, tvm.tirx.IntImm) for d in list(source.ty.shape) + list(conv.ty.shape)):
        return "dynamic shape"
    return None


def check(conv: relax.Call, data, var2val: dict) -> str | None:
    """Why this conv2d is not packed, or None."""
    if int(conv.attrs.groups) != 1:
        return f"groups={int(conv.attrs.groups)} (a depthwise/grouped reduction is too short for a dot product)"
    return int8_conv_preconditions(conv, data, var2val)


def conv_geometry(conv: relax.Call, data, var2val: dict) -> tuple:
    """(uint8 source before any ``nn.pad``, int8 OIHW weight, key) of an accepted conv;
    key = (source shape, weight shape, output shape, strides, dilation, pads [top, left,
    bottom, right] with the pad folded in, pad value): one kernel per distinct key."""
    attrs = conv.attrs
    source, extra_pads, pad_value = _unpad(data, var2val)
    pads = tuple(int(p) + e for p, e in zip(attrs.padding, extra_pads))
    weight = const_value(conv.args[1], var2val).astype(np.int8)
    shape = lambda e: tuple(int(d) for d in e.ty.shape)  # noqa: E731
    key = (shape(source), weight.shape, shape(conv), tuple(int(s) for s in attrs.strides),
           tuple(int(d) for d in attrs.dilation), pads, int(pad_value))
    return source, weight, key


@tvm.transform.module_pass(opt_level=0, name=NAME)
class PackInt8Conv2d:
    """Rewrite int32-accumulating uint8 x int8 conv2d into a dot-product-shaped kernel.

    Args:
        dot: the target's instruction geometry (:func:`lwc.kernels.int8_conv2d.dot_product_for`).

    After the pass runs, ``lowered`` counts the convs rewritten (``pixel_lanes`` of them on
    the pixel-lane kernel) and ``declined`` holds ``(conv2d text, reason)`` for the others.
    """

    def __init__(self, dot: DotProduct = VNNI):
        self.dot = dot
        self.declined: list[tuple[str, str]] = []
        self.lowered = 0
        self.pixel_lanes = 0  # of ``lowered``: on the pixel-lane kernel

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        conv_p, data_p = _pattern()
        kernels = KernelCache(mod, prefix="int8_conv2d_packed")
        out = rewrite_matches(
            mod, conv_p,
            lambda m, var2val: check(m[conv_p], m[data_p], var2val),
            lambda m, var2val: self._rewrite(m[conv_p], m[data_p], var2val, kernels),
            "conv2d", self, "lowered",
        )
        return kernels.add_to(out)

    def _rewrite(self, conv: relax.Call, data, var2val: dict, kernels: KernelCache) -> relax.Expr:
        source, weight, key = conv_geometry(conv, data, var2val)
        pads, pad_value = list(key[5]), key[6]
        shape = lambda e: tuple(int(d) for d in e.ty.shape)  # noqa: E731
        if pixel_lanes(self.dot, shape(conv), key[3]):
            self.pixel_lanes += 1
            gvar = kernels.get(key, lambda: pixel_conv_kernel(
                shape(source), weight.shape, shape(conv), key[4], pads, int(pad_value)))
            return relax.call_tir(gvar, relax.Tuple([source, relax.const(pack_weight_pixels(weight))]),
                                  relax.TensorType(shape(conv), "int32"))
        gvar = kernels.get(key, lambda: conv_kernel(
            shape(source), weight.shape, shape(conv), key[3], key[4], pads, int(pad_value), self.dot))
        args = [source, relax.const(pack_weight(weight, self.dot))]
        if self.dot.act_dtype == "int8":
            args.append(relax.const(weight.astype(np.int32).reshape(weight.shape[0], -1).sum(axis=1).astype(np.int32)))
        return relax.call_tir(gvar, relax.Tuple(args), relax.TensorType(shape(conv), "int32"))
