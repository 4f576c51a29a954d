"""Conv1x1ToSparse: a 1x1 ``conv2d`` with a block-sparse constant weight -> a BSR TIR kernel.

Math: a 1x1 convolution (NCHW, groups 1, stride 1, no padding, dilation 1) is a matrix
product per image, ``y[b, co, p] = sum_ci W[co, ci] * x[b, ci, p]`` with ``p = h*W + w``
(the im2col of a 1x1 kernel is the input itself). With ``Wt[N=co, K=ci]`` in BSR form the
shared kernel of :mod:`lwc.kernels.bsr` computes it directly, vectorised over ``p``:

    y[b, i*R + r, p] = sum_{j = indptr[i]}^{indptr[i+1]-1} sum_c data[j, r, c] * x[b, indices[j]*C + c, p]

Preconditions (the check declines otherwise, with the reason in
:attr:`Conv1x1ToSparse.decisions`): float32 NCHW/OIHW conv2d with a constant
``[CO, CI, 1, 1]`` weight, ``groups == 1``, strides and dilation 1, zero padding, static
input shape, and at least one all-zero block. As in DenseToSparse, ``decide`` picks the
layers (cost model by default; measured by ``lwc compile --sparsity auto`` on native
targets); ``force`` converts every candidate. A bias stays the ``add`` that follows.

Before / after::

    lv = R.nn.conv2d(x, W)                      # x [1, 64, 12, 48], W const [128, 64, 1, 1], 80% zero
    x3 = R.reshape(x, [1, 64, 576]); y3 = R.call_tir(bsr_conv1x1_1x4, (x3, data, indices, indptr))
    lv = R.reshape(y3, [1, 128, 12, 48])
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from lwc.passes._bsr_rewrite import BsrRewrite, Decision, evaluate
from lwc.passes.dense_to_sparse import _const_array, _ty, call_bsr, static_shape


def _ints(values) -> list[int]:
    return [int(v) for v in values]


class Conv1x1ToSparse(BsrRewrite):
    """``Conv1x1ToSparse(mode="auto", decide=None)(mod) -> mod``; ``.decisions`` per 1x1 conv (labelled ``conv2d#N``, N counting every conv2d).

    Args:
        mode: ``auto`` (ask ``decide``), ``force`` (every candidate) or ``off`` (nothing).
        decide: per-candidate decision for ``auto``; default: the cost model.
        max_density: break-even of the default cost model.
    """

    name = "Conv1x1ToSparse"
    label = "conv2d"

    def _pattern(self):
        x, w = wildcard(), is_const()
        return is_op("relax.nn.conv2d")(x, w), x, w

    def _rewrite(self, builder, expr, x, w, label):
        why = self._check(expr, x, w)
        if why is not None:
            if why != "not a 1x1 kernel":  # 3x3 and depthwise convs are not candidates: no noise
                self.decisions.append(Decision(label, static_shape(w) or (), False, why))
            return expr
        weight = _const_array(w)
        b, k, h, wd = static_shape(x)
        n = weight.shape[0]
        decision, cand = evaluate(label, "conv1x1", {"b": b, "k": k, "n": n, "h": h, "w": wd},
                                  np.ascontiguousarray(weight.reshape(n, k)), weight.shape, self.decide)
        self.decisions.append(decision)
        if not decision.used:
            return expr
        rows, cols = cand.block
        x3 = relax.op.reshape(x, (b, k, h * wd))
        y3 = call_bsr(builder, cand, x3, (b, n, h * wd), f"bsr_conv1x1_{rows}x{cols}")
        return relax.op.reshape(y3, (b, n, h, wd))

    @staticmethod
    def _check(expr, x, w) -> str | None:
        ws, xs = _ty(w), _ty(x)
        if ws.ndim != 4 or static_shape(w) is None or static_shape(w)[2:] != (1, 1):
            return "not a 1x1 kernel"
        attrs = expr.attrs
        if xs.dtype != "float32" or ws.dtype != "float32":
            return "not float32"
        if int(attrs.groups) != 1:
            return f"groups={int(attrs.groups)} (only groups 1)"
        if _ints(attrs.strides) != [1, 1] or _ints(attrs.dilation) != [1, 1]:
            return "stride or dilation is not 1"
        if any(_ints(attrs.padding)):
            return "padded"
        layouts = (attrs.data_layout, attrs.kernel_layout, attrs.out_layout or attrs.data_layout)
        if tuple(str(s) for s in layouts) != ("NCHW", "OIHW", "NCHW"):
            return f"layout {'/'.join(str(s) for s in layouts)} (only NCHW/OIHW)"
        if attrs.out_dtype is not None and str(attrs.out_dtype) not in ("", "float32", "void"):
            return f"out_dtype {attrs.out_dtype}"
        if static_shape(x) is None:
            return "x has a dynamic shape"
        return None
