"""DenseToSparse: ``matmul(x, W)`` with a block-sparse constant ``W`` -> a BSR TIR kernel.

Math: with the weight viewed as ``Wt[N, K]`` (``Wt = W.T`` for ``matmul(x[M, K], W[K, N])``)
and stored in block compressed sparse row form with ``R x C`` blocks (``indptr[N/R + 1]``,
``indices[nnzb]`` = block column, ``data[nnzb, R, C]``; scipy's ``bsr_matrix`` layout):

    y[m, i*R + r] = sum_{j = indptr[i]}^{indptr[i+1]-1} sum_c data[j, r, c] * x[m, indices[j]*C + c]

The kernel computes ``yT[N, M]`` from ``xT[K, M]`` so the innermost loop runs over the
batch rows ``m`` with unit stride (vectorisable); two transposes wrap it.

Preconditions (the check declines otherwise, with the reason in :attr:`DenseToSparse.decisions`):
``x`` is a static 2-D float32 tensor, ``W`` a float32 constant ``[K, N]`` with ``N % R == 0``
and ``K % C == 0``, and -- in ``auto`` mode -- the block density is at most
``max_density`` (the measured break-even of this kernel against TVM's untuned dense
matmul, see scripts/bench_sparsity.py); ``force`` converts any constant weight with a
zero block.

Before / after::

    lv = R.matmul(x, W)                                   # W: const [768, 3072], 90% zero 1x4 blocks
    xt = R.permute_dims(x); yt = R.call_tir(bsr_matmul_1x4, (xt, data, indices, indptr))
    lv = R.permute_dims(yt)
"""

# no `from __future__ import annotations`: TVMScript needs real annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard
from tvm.script import tirx as T

#: Block shapes tried per layer, in order of preference at equal storage.
BLOCKS: tuple[tuple[int, int], ...] = ((1, 4), (4, 1), (1, 1))
#: auto: use BSR at block density at or below this (measured break-even vs untuned dense).
DEFAULT_MAX_DENSITY = 0.5


def to_bsr(wt: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Wt[N, K]`` -> (data[nnzb, R, C], indices[nnzb] int32, indptr[N/R + 1] int32)."""
    n, k = wt.shape
    blocks = wt.reshape(n // rows, rows, k // cols, cols).transpose(0, 2, 1, 3)
    nz = (blocks != 0).any(axis=(2, 3))
    rows_idx, cols_idx = np.nonzero(nz)
    indptr = np.zeros(n // rows + 1, dtype=np.int32)
    np.cumsum(nz.sum(axis=1), out=indptr[1:])
    data = np.ascontiguousarray(blocks[rows_idx, cols_idx]).astype(np.float32)
    if data.shape[0] == 0:  # keep one (zero) block so buffers are non-empty
        data = np.zeros((1, rows, cols), np.float32)
        cols_idx = np.zeros(1, np.int64)
    return data, cols_idx.astype(np.int32), indptr


def bsr_kernel(m: int, k: int, n: int, nnzb: int, rows: int, cols: int):
    """The TIR BSR matmul ``yT[N, M] = Wt_bsr[N, K] @ xT[K, M]``."""
    nb = n // rows

    @T.prim_func(private=True)
    def bsr_matmul(
        xt: T.Buffer((k, m), "float32"),
        data: T.Buffer((max(nnzb, 1), rows, cols), "float32"),
        indices: T.Buffer((max(nnzb, 1),), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        yt: T.Buffer((n, m), "float32"),
    ):
        T.func_attr({"tir.noalias": True})
        for i in T.parallel(nb):
            for r, mm in T.grid(rows, m):
                yt[i * rows + r, mm] = T.float32(0)
            for j in T.serial(indptr[i], indptr[i + 1]):
                for r, c in T.grid(rows, cols):
                    for mm in T.vectorized(m) if m in (4, 8, 16) else T.serial(m):
                        yt[i * rows + r, mm] = yt[i * rows + r, mm] + data[j, r, c] * xt[
                            indices[j] * cols + c, mm
                        ]

    return bsr_matmul


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


@dataclass
class Decision:
    """Per matmul: chosen or not, block shape, density, bytes, and why."""

    layer: str
    shape: tuple[int, int]
    used: bool
    reason: str
    block: str = ""
    density: float = 1.0
    bytes_dense: int = 0
    bytes_sparse: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__, shape=list(self.shape))


def choose_block(wt: np.ndarray) -> tuple[tuple[int, int], float]:
    """The block shape storing the fewest values + indices, and its block density."""
    best = None
    n, k = wt.shape
    for rows, cols in BLOCKS:
        if n % rows or k % cols:
            continue
        nz = (wt.reshape(n // rows, rows, k // cols, cols) != 0).any(axis=(1, 3))
        cost = nz.sum() * (rows * cols + 1)
        if best is None or cost < best[0]:
            best = (cost, (rows, cols), float(nz.mean()))
    return (best[1], best[2]) if best else ((1, 1), 1.0)


class DenseToSparse:
    """``DenseToSparse(mode="auto", max_density=0.5)(mod) -> mod``; ``.decisions`` per matmul."""

    name = "DenseToSparse"

    def __init__(self, mode: str = "auto", max_density: float = DEFAULT_MAX_DENSITY) -> None:
        self.mode = mode
        self.max_density = max_density
        self.decisions: list[Decision] = []

    def __call__(self, mod: tvm.IRModule) -> tvm.IRModule:
        self.decisions = []
        if self.mode == "off":
            return mod
        builder = relax.BlockBuilder(mod)
        x, w = wildcard(), is_const()
        pattern = is_op("relax.matmul")(x, w)
        counter = [0]

        def rewrite(expr, matches):
            counter[0] += 1
            return self._rewrite(builder, expr, matches[x], matches[w], f"matmul#{counter[0]}")

        out = mod
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                new_func = relax.dpl.rewrite_call(pattern, rewrite, func)
                builder.update_func(gv, new_func)
        out = builder.finalize()
        return out if any(d.used for d in self.decisions) else mod

    def _rewrite(self, builder, expr, x, w, label):
        why = self._check(x, w)
        weight = _const_array(w) if why is None else None
        shape = tuple(int(d) for d in _ty(w).shape) if why is None else (0, 0)
        if why is not None:
            self.decisions.append(Decision(label, shape, False, why))
            return expr
        wt = np.ascontiguousarray(weight.T)
        (rows, cols), density = choose_block(wt)
        data, indices, indptr = to_bsr(wt, rows, cols)
        decision = Decision(
            label, shape, False, "", f"{rows}x{cols}", density, weight.nbytes,
            data.nbytes + indices.nbytes + indptr.nbytes,
        )
        self.decisions.append(decision)
        if density >= 1.0:
            decision.reason = "no all-zero block"
            return expr
        if self.mode == "auto" and density > self.max_density:
            decision.reason = f"block density {density:.2f} > {self.max_density:.2f}: dense is faster"
            return expr
        decision.used = True
        decision.reason = f"{self.mode}: block density {density:.2f}"
        m, k = (int(d) for d in _ty(x).shape)
        n = wt.shape[0]
        kernel = bsr_kernel(m, k, n, data.shape[0], rows, cols)
        gvar = builder.add_func(kernel, f"bsr_matmul_{rows}x{cols}")
        xt = relax.op.permute_dims(x)
        yt = relax.call_tir(
            gvar,
            [xt, relax.const(data), relax.const(indices), relax.const(indptr)],
            _tensor_type((n, m), "float32"),
        )
        return relax.op.permute_dims(yt)

    @staticmethod
    def _check(x, w) -> str | None:
        xs, ws = _ty(x), _ty(w)
        if ws.dtype != "float32" or xs.dtype != "float32":
            return "not float32"
        if xs.ndim != 2 or ws.ndim != 2:
            return "not a 2-D matmul (x and W must be rank 2)"
        try:
            [int(d) for d in xs.shape]
        except (TypeError, AttributeError):
            return "x has a dynamic shape"
        return None
