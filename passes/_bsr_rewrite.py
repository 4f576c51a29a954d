"""The shared driver of DenseToSparse and Conv1x1ToSparse: match, decide, rewrite.

Not a pass. A candidate layer's weight is blocked and its BSR kernel built
(:mod:`lwc.kernels.bsr`); whether it is used is up to a ``decide`` callable
(:class:`Candidate` -> :class:`Verdict`): :func:`cost_model` is the default,
:func:`force` is ``--sparsity force`` and ``lwc.sparsity_decide`` measures. Each candidate
leaves a :class:`Decision` for the compile report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lwc.kernels.bsr import bsr_kernel, choose_block, to_bsr

#: Cost model: use BSR at block density at or below this (measured break-even of these
#: kernels against TVM's untuned dense kernels on x86 host, scripts/bench_sparsity.py).
DEFAULT_MAX_DENSITY = 0.5


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
