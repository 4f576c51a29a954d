"""Int8DepthwiseConv2d: integer depthwise conv2d -> one kernel that pads with the zero
point itself and accumulates ``lanes`` output pixels per vector.

Why: :mod:`lwc.passes.lower_qdq_conv2d` writes an int8 conv as ``pad(x, z_x)`` (the zero
point: a real 0) followed by TOPI's conv2d with ``padding=0``. For a depthwise conv that
pad is a kernel of its own (PP-OCR cls: 11 of its 86 kernels, a few microseconds each,
plus a round trip of the activations through memory), and MetaSchedule, searching TOPI's
``group_conv2d_nchw`` with its int8 -> int32 casts, found schedules that vectorize
nothing: cls's 5x5 depthwise conv over 200 channels at 2x96 took 42 us per call where its
fp32 twin took 13 us (Zen 5, 2 threads, both tuned). A depthwise conv has kh*kw products
per output (9 or 25): nothing for a 4-byte dot product (:mod:`lwc.passes.pack_int8_conv2d`),
so the speed comes from the layout of the loops, which this pass fixes instead of
leaving it to the search.

This pass rewrites the conv into one ``call_tir`` of lwc's depthwise kernel
(:mod:`lwc.kernels.int8_depthwise`: the math, the loop layout, its fixed schedule rule and
the measurements are there; on x86 VNNI, 5 kernel columns take its row-window kernel and
other images of at least ``QUAD_MIN_ROWS`` output rows its row-quad kernel, each with the
weights packed 4 to a broadcast int32), the exact integer conv2d of
``conv2d(pad(x, z_x), W, groups=C, out_dtype="int32")``::

    y[n, c, i, j] = sum_{r,q} int32(xp[n, c, i*sh + r*dh, j*sw + q*dw]) * int32(W[c, r, q])

with ``xp`` the input padded with the zero point (folded into the kernel).

Preconditions (declines name the reason): conv2d with out_dtype int32, NCHW/OIHW,
groups == C == O (a channel multiplier of 1), uint8 data (optionally through ``nn.pad``
with a constant uint8 pad value, folded into the kernel), a constant int8 weight, static
shapes.

Before::  xp = pad(xq, ..., pad_value=z); acc = conv2d(xp, Wq, groups=C, out_dtype="int32")
After::   acc = call_tir(int8_depthwise_conv2d, (xq, Wq.reshape(C, kh, kw)), R.Tensor((n, C, oh, ow), "int32"))
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from lwc.kernels.int8_depthwise import (depthwise_kernel, depthwise_quad_kernel, depthwise_window_kernel,
                                        pack_weight_quads, pack_weight_windows, quad_rows, row_windows)
from lwc.passes._qdq import const_value, rewrite_matches
from lwc.kernels.cache import KernelCache
from lwc.passes.pack_int8_conv2d import _pattern, _unpad, conv_geometry, int8_conv_preconditions

NAME = "Int8DepthwiseConv2d"


def check(conv: relax.Call, data, var2val: dict) -> str | None:
    """Why this conv2d does not take the depthwise kernel, or None."""
    source, _, _ = _unpad(data, var2val)
    if not all(isinstance(e.ty.shape[1], tvm.tirx.IntImm) for e in (source, conv)):
        return "dynamic channel count"
    channels, groups, out_channels = int(source.ty.shape[1]), int(conv.attrs.groups), int(conv.ty.shape[1])
    if groups == 1 or groups != channels or out_channels != channels:
        return f"groups={groups} with {channels}->{out_channels} channels (not depthwise with multiplier 1)"
    if const_value(conv.args[1], var2val) is None:
        return "weights are not constant"
    return int8_conv_preconditions(conv, data, var2val)


@tvm.transform.module_pass(opt_level=0, name=NAME)
class Int8DepthwiseConv2d:
    """Rewrite int32-accumulating uint8 x int8 depthwise conv2d into lwc's kernel.

    After the pass runs, ``lowered`` counts the convs rewritten and ``declined`` holds
    ``(conv2d text, reason)`` for the int32-accumulating convs left alone (dense and grouped
    convs are named there too: they are PackInt8Conv2d's or TOPI's).
    """

    def __init__(self, dot=None):
        self.dot = dot  # the CPU's int8 dot product (lwc.kernels.int8_conv2d), None: none
        self.declined: list[tuple[str, str]] = []
        self.lowered = 0
        self.quad_rows = 0  # of ``lowered``: on the row-quad kernel (x86 VNNI, tall images)
        self.row_windows = 0  # of ``lowered``: on the row-window kernel (x86 VNNI, 5 columns)

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        conv_p, data_p = _pattern()
        kernels = KernelCache(mod, prefix="int8_depthwise_conv2d")
        out = rewrite_matches(
            mod, conv_p,
            lambda m, var2val: check(m[conv_p], m[data_p], var2val),
            lambda m, var2val: self._rewrite(m[conv_p], m[data_p], var2val, kernels),
            "conv2d", self, "lowered",
        )
        # only depthwise convs are this pass's business: dense ones are PackInt8Conv2d's
        self.declined = [(op, why) for op, why in self.declined if not why.startswith("groups=1 ")]
        return kernels.add_to(out)

    def _rewrite(self, conv: relax.Call, data, var2val: dict, kernels: KernelCache) -> relax.Expr:
        source, weight, key = conv_geometry(conv, data, var2val)
        source_shape, (channels, _, kh, kw), out_shape, strides, dilation, pads, pad_value = key
        packed = np.ascontiguousarray(weight.reshape(channels, kh, kw))
        if row_windows(self.dot, strides, dilation, (kh, kw)):
            self.row_windows += 1
            gvar = kernels.get(("window", *key), lambda: depthwise_window_kernel(
                source_shape, (kh, kw), out_shape, strides, list(pads), pad_value))
            packed = pack_weight_windows(packed)
        elif quad_rows(self.dot, strides, dilation, out_shape):
            self.quad_rows += 1
            gvar = kernels.get(("quad", *key), lambda: depthwise_quad_kernel(
                source_shape, (kh, kw), out_shape, strides, list(pads), pad_value))
            packed = pack_weight_quads(packed)
        else:
            gvar = kernels.get(key, lambda: depthwise_kernel(
                source_shape, (kh, kw), out_shape, strides, dilation, list(pads), pad_value))
        return relax.call_tir(gvar, relax.Tuple([source, relax.const(packed)]),
                              relax.TensorType(out_shape, "int32"))
