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

Which layers get a BSR kernel is not decided here: each pass takes a ``decide``
callable (:class:`Candidate` -> :class:`Verdict`); :func:`cost_model` is the default and
``lwc.sparse_decide`` measures.
"""

# no `from __future__ import annotations`: TVMScript needs real annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from tvm.script import tirx as T

#: Block shapes tried per layer, in order of preference at equal storage.
BLOCKS: tuple[tuple[int, int], ...] = ((1, 4), (4, 1), (1, 1))
#: Cost model: use BSR at block density at or below this (measured break-even of these
#: kernels against TVM's untuned dense kernels on x86 host, scripts/bench_sparsity.py).
DEFAULT_MAX_DENSITY = 0.5
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


@dataclass
class Candidate:
    """One layer that could run on the BSR kernel.

    Attributes:
        label: ``matmul#3`` / ``conv1x1#2`` (order of appearance).
        kind: ``matmul`` (``x[M, K] @ W[K, N]``) or ``conv1x1`` (NCHW ``x[B, K, H, W]``,
            ``W[N, K, 1, 1]``).
        dims: ``{"m", "k", "n"}`` or ``{"b", "k", "n", "h", "w"}``.
        block: (rows, cols) of the BSR blocks.
        density: fraction of blocks holding a non-zero (0..1).
        kernel: the BSR PrimFunc; ``bsr_args`` its constant arguments (data, indices, indptr).
    """

    label: str
    kind: str
    dims: dict
    block: tuple[int, int]
    density: float
    kernel: object = None
    bsr_args: tuple = ()

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of the BSR kernel's activation input ``x[b, K, P]``."""
        d = self.dims
        if self.kind == "matmul":
            return (1, d["k"], d["m"])
        return (d["b"], d["k"], d["h"] * d["w"])


@dataclass
class Verdict:
    """A decision: use BSR or not, why, and the measured times (ms) where measured."""

    used: bool
    reason: str
    sparse_ms: float | None = None
    dense_ms: float | None = None
    dense_schedule: str | None = None  # "tuned (LOG)" / "TVM default" when measured


Decide = Callable[[Candidate], Verdict]


def cost_model(max_density: float = DEFAULT_MAX_DENSITY, why: str = "") -> Decide:
    """A ``decide`` that uses BSR where the block density is at most ``max_density``.

    Args:
        why: prefix for the reason (e.g. why no measurement was possible).
    """
    prefix = f"cost model{f' ({why})' if why else ''}"

    def decide(cand: Candidate) -> Verdict:
        if cand.density <= max_density:
            return Verdict(True, f"{prefix}: block density {cand.density:.2f} <= break-even "
                                 f"{max_density:.2f}")
        return Verdict(False, f"{prefix}: block density {cand.density:.2f} > break-even "
                              f"{max_density:.2f}: dense is faster")

    return decide


def force(cand: Candidate) -> Verdict:
    """``--sparsity force``: BSR wherever a zero block exists."""
    return Verdict(True, f"force: block density {cand.density:.2f}")


@dataclass
class Decision:
    """Per candidate layer, for the report: chosen or not, block, density, bytes, why, times."""

    layer: str
    shape: tuple[int, ...]  # the weight's shape
    used: bool
    reason: str
    dims: dict | None = None  # matmul m, k, n / conv1x1 b, k (in), n (out), h, w
    block: str = ""
    density: float = 1.0
    bytes_dense: int = 0
    bytes_sparse: int = 0
    sparse_ms: float | None = None
    dense_ms: float | None = None
    dense_schedule: str | None = None

    def to_json(self) -> dict:
        out = dict(self.__dict__, shape=list(self.shape))
        return {k: v for k, v in out.items() if v is not None and v != ""
                and not (k == "bytes_sparse" and not v)}


def evaluate(label: str, kind: str, dims: dict, wt: np.ndarray, weight_shape: tuple[int, ...],
             decide: Decide) -> tuple[Decision, Candidate]:
    """Block a weight ``Wt[N, K]``, build its BSR kernel and ask ``decide``.

    ``weight_shape`` is the layer's own weight shape, for the report.

    Returns:
        (the report's :class:`Decision`, the :class:`Candidate`); ``decision.used`` says
        whether the caller should rewrite the layer to ``candidate.kernel``.
    """
    (rows, cols), density = choose_block(wt)
    decision = Decision(label, weight_shape, False, "", dict(dims), f"{rows}x{cols}", round(density, 4),
                        wt.nbytes)
    cand = Candidate(label, kind, dims, (rows, cols), density)
    if density >= 1.0:
        decision.reason = "no all-zero block"
        return decision, cand
    data, indices, indptr = to_bsr(wt, rows, cols)
    decision.bytes_sparse = data.nbytes + indices.nbytes + indptr.nbytes
    batch, p = (1, dims["m"]) if kind == "matmul" else (dims["b"], dims["h"] * dims["w"])
    cand.kernel = bsr_kernel(batch, dims["k"], dims["n"], p, data.shape[0], rows, cols)
    cand.bsr_args = (data, indices, indptr)
    verdict = decide(cand)
    decision.used, decision.reason = verdict.used, verdict.reason
    decision.sparse_ms, decision.dense_ms = verdict.sparse_ms, verdict.dense_ms
    decision.dense_schedule = verdict.dense_schedule
    return decision, cand


class BsrRewrite:
    """The shared driver of DenseToSparse and Conv1x1ToSparse: match, decide, rewrite.

    ``Pass(mode="auto", max_density=..., decide=None)(mod) -> mod``; ``.decisions`` holds a
    :class:`Decision` per candidate, labelled ``{label}#N``. Subclasses give ``name``,
    ``label``, :meth:`_pattern` and :meth:`_rewrite`.

    Args:
        mode: ``auto`` (ask ``decide``), ``force`` (every candidate) or ``off`` (nothing).
        max_density: break-even of the default cost model (:func:`cost_model`).
        decide: per-candidate decision for ``auto``; default :func:`cost_model`.
    """

    name = ""
    label = ""

    def __init__(self, mode: str = "auto", max_density: float = DEFAULT_MAX_DENSITY,
                 decide: Decide | None = None) -> None:
        self.mode = mode
        self.decide = force if mode == "force" else (decide or cost_model(max_density))
        self.decisions: list[Decision] = []

    def _pattern(self):
        """(pattern, data wildcard, weight pattern) to match."""
        raise NotImplementedError

    def _rewrite(self, builder, call, x, w, label: str):
        """The replacement of ``call`` (or ``call`` itself when declined); appends a Decision."""
        raise NotImplementedError

    def __call__(self, mod):
        from tvm import relax

        self.decisions = []
        if self.mode == "off":
            return mod
        builder = relax.BlockBuilder(mod)
        pattern, x, w = self._pattern()
        seen: dict = {}  # rewrite_call re-visits declined matches until nothing changes

        def rewrite(expr, matches):
            if expr not in seen:
                label = f"{self.label}#{len(seen) + 1}"
                seen[expr] = self._rewrite(builder, expr, matches[x], matches[w], label)
            return seen[expr]

        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                builder.update_func(gv, relax.dpl.rewrite_call(pattern, rewrite, func))
        out = builder.finalize()
        return out if any(d.used for d in self.decisions) else mod
