"""Weights pre-packed at compile time: a contraction's constant operands in its loop order.

A register-tiled conv or dense reads its weight in the order of its loops (output-channel
tile, input channel, kernel window, then the channels of the tile), which is not the
ONNX layout ``[F, C, R, S]``. Copying a weight tile per call (:func:`common.pack_operand`)
costs a pass over every weight per inference (light_resnet50: ~90 MB per run for its
14x14 and 7x7 stages). When the weight is a constant of the Relax graph, the layout is
rewritten once at compile time instead, with TVM's own machinery for MetaSchedule's
``cpu_weight_prepack`` (``relax.pipeline.static_shape_tuning_pipeline``):

1. :func:`layout_free_params`: which PrimFunc parameters are Relax constants at every call
   site (TVM's ``AttachAttrLayoutFreeBuffers`` does the same, but renames the functions);
2. :func:`rewrite_weight_layout`: after a rule's schedule, MetaSchedule's ``RewriteLayout``
   postprocessor gives each such buffer the layout its loop nest reads it in
   (``SuggestIndexMap``) behind a ``layout_rewrite_preproc`` block;
3. :func:`fold_prepacks`: ``relax.transform.SplitLayoutRewritePreproc`` moves those blocks into
   their own PrimFuncs and ``FoldConstant`` runs them on the constants (on the build
   machine, LLVM host: layout copies only, so a cross-compile gets the same bytes).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

#: PrimFunc attribute naming the parameters whose layout the schedule may choose (TVM's
#: ``s_tir.attr.layout_free_buffers``, read by MetaSchedule's ``RewriteLayout``).
LAYOUT_FREE_ATTR = "layout_free_buffers"


def layout_free_params(mod: tvm.IRModule) -> dict[str, list[int]]:
    """Parameter indices of each called PrimFunc that receive a constant (``tvm.ir.GenericConst``) at every
    ``call_tir`` site, by function name (functions with none are left out)."""
    sites: dict[str, list[set[int]]] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
            args = expr.args[1].fields if isinstance(expr.args[1], relax.Tuple) else []
            consts = {i for i, a in enumerate(args) if isinstance(a, tvm.ir.GenericConst)}
            sites.setdefault(expr.args[0].name_hint, []).append(consts)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    out = {}
    for name, per_site in sites.items():
        common = set.intersection(*per_site)
        if common:
            out[name] = sorted(common)
    return out


class PrepackFailed(RuntimeError):
    """``RewriteLayout`` could not re-lay out a kernel's constants (the rule then packs
    them per call: :func:`lwc.schedules.schedule_func` retries it without
    :data:`LAYOUT_FREE_ATTR`)."""


def rewrite_weight_layout(sch, required: dict | None = None) -> None:
    """Give the layout-free buffers of ``sch``'s function (attribute :data:`LAYOUT_FREE_ATTR`)
    the layout their consumer's loops read them in, behind a preproc block (MetaSchedule's
    ``RewriteLayout`` postprocessor). No-op without the attribute.

    Args:
        required: the operand the schedule left unpacked, counting on this rewrite
            (:func:`lwc.schedules.common.register_tile`'s ``prepacked``: its reading block's
            name, the buffer, its dim held in vectors and the tile's lanes ``tile``), or
            None. Where ``RewriteLayout`` skips it (it cannot invert an access through fused
            loops over a symbolic dim), it is laid out here as the per-call pack would:
            ``[d // tile, other dims..., d % tile]``.
    Raises:
        PrepackFailed: the postprocessor declined.
    """
    from tvm.s_tir import meta_schedule as ms

    func = sch.mod["main"]
    if func.attrs is None or LAYOUT_FREE_ATTR not in func.attrs:
        return
    if not ms.postproc.RewriteLayout().apply(sch):
        raise PrepackFailed("RewriteLayout declined the kernel's constant operands")
    if required is None:
        return
    done = [r.block.reads[0].source for r in _block_realizes(sch.mod["main"].body) if PREPROC in r.block.annotations]
    if not any(b.same_as(required["buffer"]) for b in done):
        _rewrite_tiled(sch, required)


def _rewrite_tiled(sch, required: dict) -> None:
    """Lay ``required``'s operand out as ``[d // tile, other dims..., d % tile]`` behind a
    preproc block (as ``RewriteLayout`` does with its suggested map)."""
    from tvm.tirx import IndexMap

    block = sch.get_sblock(required["block"])
    reads = [r.source for r in sch.get(block).reads]
    cache = sch.cache_read(block, next(i for i, b in enumerate(reads) if b.same_as(required["buffer"])), "global")
    sch.annotate(cache, PREPROC, True)
    dim, tile = required["dim"], required["tile"]
    rank = len(required["buffer"].shape)
    rest = [a for a in range(rank) if a != dim]
    sch.transform_layout(cache, ("write", 0), IndexMap.from_func(
        lambda *ax: [ax[dim] // tile, *[ax[a] for a in rest], ax[dim] % tile], ndim=rank))


def fold_prepacks(mod: tvm.IRModule) -> tvm.IRModule:
    """Split every ``layout_rewrite_preproc`` block into its own PrimFunc
    (``SplitLayoutRewritePreproc``) and replace its calls by the re-laid-out constants,
    dropping the functions left uncalled. A module without such blocks comes back unchanged.

    The copies are evaluated with numpy (:func:`_run_copy`): ``FoldConstant`` would build
    each preproc function with LLVM, ~4 s for PP-OCRv4 det's 48 convs. A copy numpy cannot
    evaluate is left to ``FoldConstant``.
    """
    if not any(_has_preproc(f) for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)):
        return mod
    # the split pass requires every PrimFunc's body to be a root block over blocks: kernels
    # without blocks (lwc's BSR kernels) sit it out as a stub under the same GlobalVar
    blockless = {gv: f for gv, f in mod.functions_items()
                 if isinstance(f, tvm.tirx.PrimFunc) and not _block_realizes(f.body)}
    if blockless:
        mod = mod.clone()
        for gv in blockless:
            mod[gv] = _stub()
    try:
        split = relax.transform.SplitLayoutRewritePreproc()(mod)
    except RuntimeError:  # TVM's InternalError: a kernel the split cannot read: the copies stay in the kernels
        split = mod  # (correct, one copy of each weight per call, as before this stage)
    for gv, func in blockless.items():
        split[gv] = func
    mod = _FoldCopies(split).run()
    seq = tvm.transform.Sequential([
        relax.transform.FoldConstant(),  # TupleGetItem of the folded tuples (and any copy left)
        relax.transform.DeadCodeElimination(),
    ])
    return seq(mod)


def _stub():
    """A PrimFunc of one block (stands in for a blockless kernel during the split)."""
    from tvm import te

    return te.create_prim_func([te.compute((1,), lambda i: tvm.tirx.const(0, "int32"), name="stub")])


def _has_preproc(func) -> bool:
    return any(PREPROC in r.block.annotations for r in _block_realizes(func.body))


#: Block annotation of a layout rewrite (TVM's ``s_tir.attr.meta_schedule_layout_rewrite_preproc``).
PREPROC = "meta_schedule.layout_rewrite_preproc"


#: Name suffixes SplitLayoutRewritePreproc gives the compute and the preproc PrimFunc.
_COMPUTE, _PREPROC = "_prepacked", "_weight_prepack"


@relax.expr_functor.mutator
class _FoldCopies(relax.PyExprMutator):
    """``call_tir(*_weight_prepack, constants)`` -> the constant(s) it computes."""

    def __init__(self, mod: tvm.IRModule):
        # the builder starts without the split's compute functions: they are added back
        # under the kernels' own names (a structurally equal one would be reused instead)
        kept = tvm.IRModule({gv: f for gv, f in mod.functions_items() if not gv.name_hint.endswith(_COMPUTE)},
                            attrs=mod.attrs)
        super().__init__(kept)
        self.mod_ = mod
        self.renamed: dict[str, object] = {}  # original kernel name -> its GlobalVar

    def visit_tuple_getitem_(self, op):
        op = super().visit_tuple_getitem_(op)
        tup = op.tuple_value
        bound = self.lookup_binding(tup) if isinstance(tup, relax.Var) else None
        if isinstance(bound, relax.Tuple) and all(isinstance(f, tvm.ir.GenericConst) for f in bound.fields):
            return bound.fields[op.index]  # an item of the folded copies of a kernel's constants
        return op

    def run(self) -> tvm.IRModule:
        for gv, func in self.mod_.functions_items():
            if isinstance(func, relax.Function):
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir"):
            return call
        callee = self.mod_[call.args[0]]
        name = call.args[0].name_hint
        if name.endswith(_COMPUTE):
            # the kernel keeps its name (profiles, reports, `lwc tune --only`); the split
            # dropped the original function, whose every call had constants to split off
            base = name[: -len(_COMPUTE)]
            if base not in self.renamed:
                if callee.attrs is not None and "global_symbol" in callee.attrs:
                    callee = callee.with_attr("global_symbol", base)
                self.renamed[base] = self.builder_.add_func(callee, base)
            return relax.Call(call.op, [self.renamed[base], call.args[1]], call.attrs, call.ty_args, call.span)
        args = call.args[1].fields
        if not isinstance(callee, tvm.tirx.PrimFunc) or not all(isinstance(a, tvm.ir.GenericConst) for a in args):
            return call
        if not name.endswith(_PREPROC):
            return call
        outs = _run_copy(callee, [a.value.numpy() for a in args])
        if outs is None:
            return call
        consts = [relax.const(o, str(o.dtype)) for o in outs]
        return consts[0] if len(consts) == 1 else relax.Tuple(consts)


def _run_copy(func, inputs: list[np.ndarray]) -> list[np.ndarray] | None:
    """Evaluate a preproc PrimFunc (one ``out[f(v)] = in[g(v)]`` block per output, its
    iter vars bound to whole loops) on ``inputs``; None if it has any other form."""
    n_in = len(inputs)
    params = list(func.params)
    outs: list = [None] * (len(params) - n_in)
    for realize in _block_realizes(func.body):
        block = realize.block
        store = block.body
        if not isinstance(store, tvm.tirx.BufferStore) or not isinstance(store.value, tvm.ir.expr.TensorLoad):
            return None
        src = next((i for i in range(n_in) if params[i].same_as(store.value.source)), None)
        dst = next((i for i in range(n_in, len(params)) if params[i].same_as(store.buffer)), None)
        if src is None or dst is None:
            return None
        env = {}
        grid = np.indices([int(iv.dom.extent) for iv in block.iter_vars], sparse=True)
        for iv, axis in zip(block.iter_vars, grid):
            env[iv.var] = axis + int(iv.dom.min)
        try:
            load = tuple(_eval(e, env) for e in store.value.indices)
            put = tuple(_eval(e, env) for e in store.indices)
        except (TypeError, KeyError):
            return None
        shape = [int(d) for d in params[dst].shape]
        out = np.zeros(shape, dtype=inputs[src].dtype)
        out[put] = inputs[src][load]
        outs[dst - n_in] = out
    return outs if all(o is not None for o in outs) else None


def _block_realizes(stmt) -> list:
    """The SBlockRealizes under ``stmt`` (the root block's own excluded), in order."""
    found = []
    todo = [stmt]
    while todo:  # TVM 0.27 has no Python TIR visitor; loops, sequences and blocks suffice here
        node = todo.pop()
        if isinstance(node, tvm.s_tir.SBlockRealize):
            if node.block.name_hint != "root":
                found.append(node)
            todo.append(node.block.body)
        elif isinstance(node, tvm.tirx.SeqStmt):
            todo.extend(reversed(list(node.seq)))
        elif isinstance(node, tvm.tirx.For):
            todo.append(node.body)
    return found


def _eval(expr, env: dict):
    """An index expression over block iter vars as a numpy array (``env``: var -> array)."""
    t = tvm.tirx
    if isinstance(expr, t.IntImm):
        return int(expr.value)
    if isinstance(expr, t.Var):
        for var, value in env.items():
            if var.same_as(expr):
                return value
        raise KeyError(expr)
    if isinstance(expr, t.Cast):
        return _eval(expr.value, env)
    ops = {t.Add: np.add, t.Sub: np.subtract, t.Mul: np.multiply, t.FloorDiv: np.floor_divide,
           t.FloorMod: np.mod}
    for kind, fn in ops.items():
        if isinstance(expr, kind):
            return fn(_eval(expr.a, env), _eval(expr.b, env))
    raise TypeError(f"index expression {type(expr).__name__}")
