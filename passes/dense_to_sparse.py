"""DenseToSparse: ``matmul(x, W)`` with a block-sparse constant ``W`` -> a BSR TIR kernel.

Math: with the weight viewed as ``Wt[N, K]`` (``Wt = W.T`` for ``matmul(x[M, K], W[K, N])``)
and stored in block compressed sparse row form with ``R x C`` blocks (``indptr[N/R + 1]``,
``indices[nnzb]`` = block column, ``data[nnzb, R, C]``; scipy's ``bsr_matrix`` layout):

    y[m, i*R + r] = sum_{j = indptr[i]}^{indptr[i+1]-1} sum_c data[j, r, c] * x[m, indices[j]*C + c]

The kernel (:mod:`lwc.kernels.bsr`) computes ``yT[N, M]`` from ``xT[K, M]`` so the innermost
loop runs over the batch rows ``m`` with unit stride (vectorisable); two transposes wrap it.

Preconditions (the check declines otherwise, with the reason in :attr:`DenseToSparse.decisions`):
``x`` is a static 2-D float32 tensor, ``W`` a float32 constant ``[K, N]`` (or
``permute_dims`` of a constant: ONNX Gemm with ``transB=1``, torch's Linear) with at least
one all-zero block. Whether a candidate is rewritten is up to ``decide`` (a
:class:`~lwc.passes._bsr_rewrite.Verdict` per :class:`~lwc.passes._bsr_rewrite.Candidate`):
by default the cost model (block density at most ``max_density``); ``lwc compile
--sparsity auto`` measures both kernels on native targets (``lwc.sparsity_decide``);
``force`` converts every candidate.

Before / after::

    lv = R.matmul(x, W)                                   # W: const [768, 3072], 90% zero 1x4 blocks
    xt = R.permute_dims(x); yt = R.call_tir(bsr_matmul_1x4, (xt[1, K, M], data, indices, indptr))
    lv = R.permute_dims(R.reshape(yt, [N, M]))
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from lwc.passes._bsr_rewrite import BsrRewrite, Decision, evaluate


def _ty(expr):
    """An expression's type (TVM 0.27 ``ty``; ``struct_info`` before)."""
    return expr.ty if hasattr(expr, "ty") else expr.struct_info


def _const_array(const) -> np.ndarray:
    """numpy value of a Relax constant (``value`` in TVM 0.27's GenericConst; ``data`` before)."""
    value = const.value if hasattr(const, "value") else const.data
    return value.numpy()


def _tensor_type(shape, dtype):
    make = getattr(relax, "TensorType", None) or relax.TensorStructInfo
    return make(shape, dtype)


def _weight_array(w) -> np.ndarray:
    """``W[K, N]`` of a matched weight: a constant, or ``permute_dims`` of one (a 2-D transpose)."""
    if isinstance(w, relax.Call):  # permute_dims(C): [1, 0] or default axes transpose; [0, 1] is C
        const = _const_array(w.args[0])
        axes = w.attrs.axes
        return const if axes is not None and [int(a) for a in axes] == [0, 1] else const.T
    return _const_array(w)


def static_shape(expr) -> tuple[int, ...] | None:
    """The static shape of a tensor expression, or None when a dimension is symbolic."""
    try:
        return tuple(int(d) for d in _ty(expr).shape)
    except (TypeError, AttributeError):
        return None


def call_bsr(builder, cand, x3, out_shape: tuple[int, ...], name: str):
    """``call_tir`` of the candidate's BSR kernel on ``x3[b, K, P]``, result ``[b, N, P]``."""
    gvar = builder.add_func(cand.kernel, name)
    data, indices, indptr = cand.bsr_args
    return relax.call_tir(
        gvar,
        [x3, relax.const(data), relax.const(indices), relax.const(indptr)],
        _tensor_type(out_shape, "float32"),
    )


class DenseToSparse(BsrRewrite):
    """``DenseToSparse(mode="auto", decide=None)(mod) -> mod``; ``.decisions`` per matmul.

    Args:
        mode: ``auto`` (ask ``decide``), ``force`` (every candidate) or ``off`` (nothing).
        decide: per-candidate decision for ``auto``; default: the cost model.
        max_density: break-even of the default cost model.
    """

    name = "DenseToSparse"
    label = "matmul"

    def _pattern(self):
        x, c = wildcard(), is_const()
        w = c | is_op("relax.permute_dims")(c)  # Gemm transB=1 imports as matmul(x, permute_dims(W))
        return is_op("relax.matmul")(x, w), x, w

    def _rewrite(self, builder, expr, x, w, label):
        why = self._check(x, w)
        if why is not None:
            self.decisions.append(Decision(label, static_shape(w) or (), False, why))
            return expr
        weight = _weight_array(w)
        (m, k), n = static_shape(x), weight.shape[1]
        decision, cand = evaluate(label, "matmul", {"m": m, "k": k, "n": n},
                                  np.ascontiguousarray(weight.T), weight.shape, self.decide)
        self.decisions.append(decision)
        if not decision.used:
            return expr
        rows, cols = cand.block
        xt = relax.op.reshape(relax.op.permute_dims(x), (1, k, m))
        yt = call_bsr(builder, cand, xt, (1, n, m), f"bsr_matmul_{rows}x{cols}")
        return relax.op.permute_dims(relax.op.reshape(yt, (n, m)))

    @staticmethod
    def _check(x, w) -> str | None:
        xs, ws = _ty(x), _ty(w)
        if ws.dtype != "float32" or xs.dtype != "float32":
            return "not float32"
        if xs.ndim != 2 or ws.ndim != 2:
            return "not a 2-D matmul (x and W must be rank 2)"
        if static_shape(x) is None:
            return "x has a dynamic shape"
        return None
