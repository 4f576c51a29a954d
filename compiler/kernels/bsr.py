"""Block compressed sparse row (BSR) weights and kernels shared by DenseToSparse and Conv1x1ToSparse.

Not a pass. A weight viewed as ``Wt[N, K]`` (output rows, reduction columns) is stored in
scipy's ``bsr_matrix`` layout with ``R x C`` blocks: ``indptr[N/R + 1]`` (int32),
``indices[nnzb]`` (int32, block column) and ``data[nnzb, R, C]`` (float32). Both kernels
compute

    out[b, i*R + r, p] = sum_{j = indptr[i]}^{indptr[i+1]-1} sum_c data[j, r, c] * x[b, indices[j]*C + c, p]

with the innermost loop over ``p`` at unit stride (vectorised in lanes of 16 where
``p`` allows it); for ``p == 1`` (one matmul row) a GEMV variant vectorises over a
block's columns instead. For ``matmul(x[M, K], W[K, N])`` that is ``b = 1``, ``x = xT[K, M]``,
``p = m``; for a 1x1 convolution ``y[co, p] = sum_ci W[co, ci] x[ci, p]`` it is ``b``
the batch and ``p = h*W + w``.

Which layers get a BSR kernel is not decided here: the passes' shared driver
(:mod:`lwc.passes._bsr_rewrite`) asks a ``decide`` callable; its cost model is the
default and ``lwc.sparsity_decide`` measures.
"""

# no `from __future__ import annotations`: TVMScript needs real annotations

import numpy as np
from tvm.script import tirx as T

#: Block shapes tried per layer, in order of preference at equal storage.
BLOCKS: tuple[tuple[int, int], ...] = ((1, 4), (4, 1), (1, 1))
#: Vector lanes of the innermost loop.
LANES = 16
#: Multiply-adds below which the kernel runs on one thread (a parallel launch costs more).
PARALLEL_MIN_WORK = 1 << 15


def to_bsr(wt: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Wt[N, K]`` float32 -> (data[nnzb, R, C] float32, indices[nnzb] int32, indptr[N/R + 1] int32).

    ``N % rows == 0`` and ``K % cols == 0`` are required (ValueError from numpy otherwise).
    A weight with no non-zero block keeps one zero block so buffers are non-empty.
    """
    n, k = wt.shape
    blocks = wt.reshape(n // rows, rows, k // cols, cols).transpose(0, 2, 1, 3)
    nz = (blocks != 0).any(axis=(2, 3))
    rows_idx, cols_idx = np.nonzero(nz)
    indptr = np.zeros(n // rows + 1, dtype=np.int32)
    np.cumsum(nz.sum(axis=1), out=indptr[1:])
    data = np.ascontiguousarray(blocks[rows_idx, cols_idx]).astype(np.float32)
    if data.shape[0] == 0:
        data = np.zeros((1, rows, cols), np.float32)
        cols_idx = np.zeros(1, np.int64)
    return data, cols_idx.astype(np.int32), indptr


def choose_block(wt: np.ndarray) -> tuple[tuple[int, int], float]:
    """The block shape of :data:`BLOCKS` storing the fewest values + indices, and its block density.

    Args:
        wt: ``[N, K]`` weight.
    Returns:
        ((rows, cols), fraction of blocks with a non-zero, 0..1); ((1, 1), 1.0) if no
        block shape divides the weight.
    """
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


def tile_width(p: int) -> int:
    """Lanes of the innermost (unit-stride) loop: the largest of 16, 8, 4, 2, 1 dividing ``p``."""
    return next(t for t in (LANES, 8, 4, 2, 1) if p % t == 0)


def bsr_kernel(batch: int, k: int, n: int, p: int, nnzb: int, rows: int, cols: int):
    """The TIR BSR kernel ``out[b, N, P] = Wt_bsr[N, K] @ x[b, K, P]`` (see module docstring).

    Schedule: parallel over block rows (serial below :data:`PARALLEL_MIN_WORK`
    multiply-adds per image); the ``p`` axis in tiles of
    :func:`tile_width` lanes; a local accumulator per (row, column of the block, lane), so
    the ``cols`` products of a block are independent FMA chains, summed once per tile.

    Args:
        batch, k, n, p: static extents (``n % rows == 0``, ``k % cols == 0``).
        nnzb: number of stored blocks (>= 1).
    Returns:
        a private ``tirx.PrimFunc`` with params ``(x[b, K, P], data, indices, indptr, out[b, N, P])``.
    """
    nb = n // rows
    tw = tile_width(p)
    tiles = p // tw
    nnzb = max(nnzb, 1)
    parallel = nnzb * rows * cols * p >= PARALLEL_MIN_WORK
    if p == 1:
        return _bsr_gemv(batch, k, n, nnzb, rows, cols, nnzb * rows * cols >= GEMV_PARALLEL_MIN_WORK)

    @T.prim_func(private=True)
    def bsr(
        x: T.Buffer((batch, k, p), "float32"),
        data: T.Buffer((nnzb, rows, cols), "float32"),
        indices: T.Buffer((nnzb,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        out: T.Buffer((batch, n, p), "float32"),
    ):
        T.func_attr({"tir.noalias": True})
        for b in T.serial(batch):
            for i in T.parallel(nb) if parallel else T.serial(nb):
                acc = T.alloc_buffer((rows, cols, tw), "float32", scope="local")
                for po in T.serial(tiles):
                    for r, c in T.grid(rows, cols):
                        for t in T.vectorized(tw):
                            acc[r, c, t] = T.float32(0)
                    for j in T.serial(indptr[i], indptr[i + 1]):
                        for r in T.unroll(rows):
                            for c in T.unroll(cols):
                                for t in T.vectorized(tw):
                                    acc[r, c, t] = acc[r, c, t] + data[j, r, c] * x[
                                        b, indices[j] * cols + c, po * tw + t
                                    ]
                    for r in T.serial(rows):
                        for t in T.vectorized(tw):
                            out[b, i * rows + r, po * tw + t] = acc[r, 0, t]
                        for c in T.serial(1, cols):
                            for t in T.vectorized(tw):
                                out[b, i * rows + r, po * tw + t] = (
                                    out[b, i * rows + r, po * tw + t] + acc[r, c, t]
                                )

    return bsr


#: Independent partial sums per output row in the one-column kernel: hides the FMA
#: latency (4 cycles on current x86 and Arm cores) behind 4 chains.
GEMV_CHAINS = 4
#: Multiply-adds below which the one-column kernel runs on one thread. Measured on the
#: 2-core host (90% 1x4-sparse 3072x768 / 768x3072, ~235k multiply-adds each): serial
#: 0.077 / 0.060 ms, TVM's parallel loop 0.124-0.215 / 0.060-0.082 ms -- a GEMV that
#: small is done before the second thread is up.
GEMV_PARALLEL_MIN_WORK = 1 << 21


def _bsr_gemv(batch: int, k: int, n: int, nnzb: int, rows: int, cols: int, parallel: bool):
    """:func:`bsr_kernel` for ``p == 1`` (one matmul row, a 1x1 conv on a 1x1 image).

    The generic kernel vectorises over ``p`` and runs scalar here; this one vectorises
    over a block's ``cols`` (data and x both contiguous there) and keeps
    :data:`GEMV_CHAINS` partial sums per block row, added as vectors at the end.
    """
    nb = n // rows
    u = GEMV_CHAINS

    @T.prim_func(private=True)
    def bsr_gemv(
        x: T.Buffer((batch, k, 1), "float32"),
        data: T.Buffer((nnzb, rows, cols), "float32"),
        indices: T.Buffer((nnzb,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        out: T.Buffer((batch, n, 1), "float32"),
    ):
        T.func_attr({"tir.noalias": True})
        for b in T.serial(batch):
            for i in T.parallel(nb) if parallel else T.serial(nb):
                acc = T.alloc_buffer((u, rows, cols), "float32", scope="local")
                for q, r in T.grid(u, rows):
                    for c in T.vectorized(cols):
                        acc[q, r, c] = T.float32(0)
                full = (indptr[i + 1] - indptr[i]) // u
                for jo in T.serial(full):
                    for q in T.unroll(u):
                        for r in T.unroll(rows):
                            for c in T.vectorized(cols):
                                acc[q, r, c] = acc[q, r, c] + data[indptr[i] + jo * u + q, r, c] * x[
                                    b, indices[indptr[i] + jo * u + q] * cols + c, 0
                                ]
                for j in T.serial(indptr[i] + full * u, indptr[i + 1]):
                    for r in T.unroll(rows):
                        for c in T.vectorized(cols):
                            acc[0, r, c] = acc[0, r, c] + data[j, r, c] * x[b, indices[j] * cols + c, 0]
                for r in T.unroll(rows):
                    for q in T.unroll(1, u):
                        for c in T.vectorized(cols):
                            acc[0, r, c] = acc[0, r, c] + acc[q, r, c]
                    out[b, i * rows + r, 0] = T.float32(0)
                    for c in T.unroll(cols):
                        out[b, i * rows + r, 0] = out[b, i * rows + r, 0] + acc[0, r, c]

    return bsr_gemv
