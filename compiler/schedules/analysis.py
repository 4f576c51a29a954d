"""Classify a PrimFunc by its block and loop structure (never by its name).

Kinds (:func:`classify`):

- ``"annotated"``: some block carries a ``schedule_rule`` annotation (lwc's int8 kernels
  schedule themselves); every rule declines.
- ``"blockless"``: no SBlock below the root (lwc's BSR kernels); every rule declines.
- ``"contraction"``: exactly one reduction block with two read operands (conv2d,
  matmul, batch_matmul), optionally with injective blocks before and after it.
- ``"window"``: exactly one reduction block with one read operand whose innermost output
  axis is also the innermost index of that operand (pooling).
- ``"reduction"``: any other function with reduction blocks (mean, softmax, layer norm).
- ``"injective"``: no reduction at all (elementwise, broadcast, transpose, concat, resize).

:class:`Nest` describes the loop nest of one block: for each loop, which block iter var
it drives (loops must bind iter vars one-to-one, as TE-generated blocks do) and its kind.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis.common_analysis import get_sblockrealize as _get_sblock_realize
from tvm.tirx.analysis import undefined_vars

SPATIAL = tirx.IterVar.DataPar  # 0
REDUCE = tirx.IterVar.CommReduce  # 2

#: The extent the rules plan with for a loop over a symbolic dim (a dynamic-dims compile,
#: ``--input-shape x:1,3,48,96..1280``) whose symbols have no planning value
#: (:func:`symbolic_loops`): work and parallel estimates. A contraction's symbolic innermost
#: output axis is split by one vector with a partitioned tail (``register_tile``); other
#: symbolic loops are not split.
SYMBOLIC_EXTENT = 512

_SYMBOLIC_LOOPS = contextvars.ContextVar("lwc_symbolic_loops", default=None)
_SYMBOLIC_BOUNDS = contextvars.ContextVar("lwc_symbolic_bounds", default=None)


@contextlib.contextmanager
def symbolic_loops(plan: dict[str, int] | None = None,
                   bounds: dict[str, tuple[int, int]] | None = None):
    """Within the block, :func:`nest` describes loops over symbolic dims (a dynamic-dims
    compile) instead of returning None for them. Off by default (``plan`` None), so a
    fixed-shape compile's data-dependent kernels (NonZero's outputs) are declined as before.

    Args:
        plan: the value to plan each symbol with, by name (a PrimFunc's symbolic params are
            named like the Relax function's dims): a loop over ``(W - 5) // 8 + 1`` plans
            with that expression at ``plan["W"]``.
        bounds: each symbol's accepted range ``(lo, hi)`` (:func:`extent_range`), by name.
    """
    token = _SYMBOLIC_LOOPS.set(plan)
    bounds_token = _SYMBOLIC_BOUNDS.set(bounds)
    try:
        yield
    finally:
        _SYMBOLIC_BOUNDS.reset(bounds_token)
        _SYMBOLIC_LOOPS.reset(token)


def symbolic_loops_enabled() -> bool:
    """Inside :func:`symbolic_loops`."""
    return _SYMBOLIC_LOOPS.get() is not None


def planned_extent(extent) -> int:
    """A loop extent as an int: a constant as it is; a symbolic one at the planning values
    of :func:`symbolic_loops` (:data:`SYMBOLIC_EXTENT` where they do not make it constant).

    Raises:
        TypeError: a symbolic extent outside :func:`symbolic_loops` (the rule declines).
    """
    value = const_extent(extent)
    if value is not None:
        return value
    if not symbolic_loops_enabled():  # a fixed-shape compile: decline, as int() did
        raise TypeError(f"symbolic loop extent {extent} outside a dynamic-dims compile")
    plan = _SYMBOLIC_LOOPS.get()
    from tvm.sym.analyzer import Analyzer
    from tvm.tirx.analysis import undefined_vars

    free = undefined_vars(extent)
    if free and all(v.name in plan for v in free):
        analyzer = Analyzer()
        for v in free:
            analyzer.bind(v, tirx.const(plan[v.name], "int64"))
        value = const_extent(analyzer.simplify(extent))
        if value is not None and value >= 1:
            return value
    return SYMBOLIC_EXTENT


def extent_range(extent) -> tuple[int, int] | None:
    """A symbolic loop extent at the smallest and at the largest accepted value of each
    of its symbols (the ``bounds`` of :func:`symbolic_loops`), None where they do not make
    it constant. Taken as the extent's range: lwc's kernels' extents grow with their
    symbols (an output width ``(W - 5) // 8 + 1``)."""
    value = const_extent(extent)
    if value is not None:
        return value, value
    bounds = _SYMBOLIC_BOUNDS.get()
    free = undefined_vars(extent)
    if not bounds or not free or not all(v.name in bounds for v in free):
        return None
    from tvm.sym.analyzer import Analyzer

    ends = []
    for end in (0, 1):
        analyzer = Analyzer()
        for v in free:
            analyzer.bind(v, tirx.const(bounds[v.name][end], "int64"))
        ends.append(const_extent(analyzer.simplify(extent)))
    return None if None in ends else (ends[0], ends[1])


def const_extent(extent) -> int | None:
    """The extent as an int, or None when it is symbolic."""
    return int(extent) if isinstance(extent, (int, tirx.IntImm)) else None


def sblocks(sch: s_tir.Schedule) -> list:
    """All SBlock RVs of the function, in program order (root excluded).

    Raises:
        Exception: the function has no root block (TVM's error).
    """
    root = sch.get_sblock("root")
    out = []

    def visit(block_rv):
        for child in sch.get_child_blocks(block_rv):
            out.append(child)
            visit(child)

    visit(root)
    return out


#: ``schedule_rule`` values that TVM's TOPI puts on its generic ops (pooling:
#: topi/include/tvm/topi/nn/pooling.h, "meta_schedule.pool_max"/"pool_avg"). They are hints
#: for MetaSchedule, not a kernel that schedules itself, so they do not make a rule decline.
#: lwc's own kernels are named "lwc_..." (passes/int8_depthwise_conv2d.py,
#: passes/pack_int8_conv2d.py).
TOPI_HINT_PREFIX = "meta_schedule."


def has_schedule_rule(sch: s_tir.Schedule, blocks) -> bool:
    """True when any block carries a ``schedule_rule`` annotation other than a TOPI hint."""
    for b in blocks:
        rule = sch.get(b).annotations.get("schedule_rule")
        if rule is not None and not str(rule).startswith(TOPI_HINT_PREFIX):
            return True
    return False


def is_reduction(sch: s_tir.Schedule, block_rv) -> bool:
    """True when the block has a reduction (CommReduce) iter var."""
    return any(iv.iter_type == REDUCE for iv in sch.get(block_rv).iter_vars)


@dataclass
class Loop:
    """One loop around a block: its RV, the block iter var it binds, extent and kind."""

    rv: object
    var: tirx.Var  # the block's iter var (v_nn, v_rc, ...)
    extent: int  # for a symbolic one, its planned value (planned_extent)
    reduce: bool
    symbolic: bool = False  # the extent is an expression of a dynamic dim


@dataclass
class Nest:
    """A block's loop nest with what the rules ask of it.

    Attributes:
        block: the block RV.
        loops: outermost first.
        out_index: the block iter vars indexing the written buffer, in buffer dim order
            (None for a dim indexed by anything but a bare iter var).
        reads: per read buffer, the list of index expressions.
    """

    block: object
    loops: list[Loop]
    out_index: list
    reads: list[tuple[tirx.Buffer, list]]

    @property
    def spatial(self) -> list[Loop]:
        return [lp for lp in self.loops if not lp.reduce]

    @property
    def reduction(self) -> list[Loop]:
        return [lp for lp in self.loops if lp.reduce]

    def loop_of(self, var) -> Loop | None:
        return next((lp for lp in self.loops if lp.var.same_as(var)), None)

    @property
    def out_elems(self) -> int:
        return _prod(lp.extent for lp in self.spatial)

    @property
    def work(self) -> int:
        """Iterations of the block body (MACs for a conv/matmul)."""
        return _prod(lp.extent for lp in self.loops)


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def uses(expr, var) -> bool:
    """True when ``var`` occurs in ``expr``."""
    return any(v.same_as(var) for v in undefined_vars(expr))


def nest(sch: s_tir.Schedule, block_rv) -> Nest | None:
    """The :class:`Nest` of a block, or None when its loops do not bind iter vars 1:1.

    Within :func:`symbolic_loops`, a loop over a symbolic dim gets ``extent``
    :func:`planned_extent` and ``symbolic`` True; outside it such a nest is None.
    """
    block = sch.get(block_rv)
    loop_rvs = sch.get_loops(block_rv)
    loop_vars = [sch.get(rv).loop_var for rv in loop_rvs]
    bindings = _bindings(sch, block_rv)
    loops = []
    for rv, lvar in zip(loop_rvs, loop_vars):
        loop = sch.get(rv)
        extent = const_extent(loop.extent)
        if extent is None and not symbolic_loops_enabled():
            return None
        bound = [(iv, val) for iv, val in bindings if isinstance(val, tirx.Var) and val.same_as(lvar)]
        if len(bound) != 1:
            return None
        iv = bound[0][0]
        loops.append(Loop(rv, iv.var, planned_extent(loop.extent) if extent is None else extent,
                          iv.iter_type == REDUCE, symbolic=extent is None))
    if len(loops) != len(block.iter_vars):
        return None
    if len(block.writes) != 1:
        return None
    out_index = []
    for r in block.writes[0].region:
        ok = isinstance(r.extent, tirx.IntImm) and int(r.extent) == 1
        out_index.append(r.min if ok and isinstance(r.min, tirx.Var) else None)
    reads = []
    for region in block.reads:
        reads.append((region.source, [r.min for r in region.region]))
    return Nest(block_rv, loops, out_index, reads)


def _bindings(sch: s_tir.Schedule, block_rv):
    """(iter var, bound value) pairs of the block's SBlockRealize."""
    realize = _realize_of(sch, block_rv)
    return list(zip(realize.block.iter_vars, realize.iter_values))


def _realize_of(sch: s_tir.Schedule, block_rv):
    return _get_sblock_realize(sch, block_rv)


def classify(sch: s_tir.Schedule) -> tuple[str, list]:
    """(kind, blocks) of the function in ``sch``; see the module docstring for kinds."""
    try:
        blocks = sblocks(sch)
    except Exception:  # noqa: BLE001 - no root block: a blockless function
        return "blockless", []
    if not blocks:
        return "blockless", []
    if has_schedule_rule(sch, blocks):
        return "annotated", blocks
    reductions = [b for b in blocks if is_reduction(sch, b)]
    if not reductions:
        return "injective", blocks
    if len(reductions) == 1:
        nreads = len(sch.get(reductions[0]).reads)
        if nreads == 2:
            return "contraction", blocks
        if nreads == 1 and _window_like(sch, reductions[0]):
            return "window", blocks
    return "reduction", blocks


def _window_like(sch: s_tir.Schedule, block_rv) -> bool:
    n = nest(sch, block_rv)
    if n is None or not n.out_index or n.out_index[-1] is None:
        return False
    _, idx = n.reads[0]
    return uses(idx[-1], n.out_index[-1]) and n.loop_of(n.out_index[-1]).extent > 1
