"""ConvertConvLayout: run a conv model in NHWC, with the transposes between ops cancelled.

What: TVM's ``relax.transform.ConvertLayout`` rewrites every ``conv2d`` to the desired data
/ kernel layout (NHWC / OHWI) and propagates the layout through the ops that have a layout
rule (elementwise, broadcast, pooling, reductions, concat, ...), putting ``permute_dims`` at
the borders. It cannot see through a ``call_tir``, and lwc's activation passes turn
HardSwish / HardSigmoid into ``call_tir`` kernels, so ConvertLayout alone leaves a
transpose pair around each of them (cls: 114 transposes left). This pass therefore

1. hides each elementwise ``call_tir`` (one input, output of the same shape,
   AnnotateTIROpPattern kind 0) as ``x + marker`` (a fresh 0-d constant), an op that
   ConvertLayout propagates NHWC through;
2. runs ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]});
3. puts each kernel back: unchanged where its tensor kept its shape (an elementwise kernel
   does not look at indices, so the layout does not matter), else re-laid out to NHWC
   (TIR ``transform_layout`` of both buffers, loops reordered to the new memory order).
   Exact: the same scalar function on the same elements.

Weight transposes are on constants and fold at build time (FoldConstant). Runs before
PreserveNaN (ConvertLayout has no rule for ``where``). cls ends with 2 data transposes
(input, output) for 53 convs.

The data layout is a per-target choice made by measurement (docs/kernel_counts.md, "layout"):
:data:`MEASURED` maps an lwc ISA feature to the layout measured to be faster there; a target
with none of those features keeps NCHW and the pass declines with the measurement as its
reason. ``--conv-layout NHWC`` (or ``NCHW``; ``CompileOptions.conv_layout``) overrides the table.

Declines, with reasons: target keeps NCHW (not measured to pay), no NCHW conv2d in the
model, TVM's ConvertLayout fails (it aborts on squeezenet, vgg19, alexnet, inception_v1 of
the light zoo: "Expected nested to match tuple"), a module whose conversion leaves too many transposes inside it (see
:data:`MAX_TRANSPOSES_PER_CONV`).

Before::  lv1 = conv2d(x, W, data_layout="NCHW"); lv2 = call_tir(hard_swish, (lv1,)); lv3 = conv2d(lv2, W2)
After::   lv0 = permute_dims(x, [0,2,3,1]); lv1 = conv2d(lv0, W', data_layout="NHWC", kernel_layout="OHWI")
          lv2 = call_tir(hard_swish_nhwc, (lv1,)); lv3 = conv2d(lv2, W2', "NHWC"); ... permute back at the end
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from lwc.passes._support import Bindings, PassStats, const_value, constant_derived, tensor_shape

#: lwc ISA feature -> conv data layout measured to be faster with it (docs/kernel_counts.md).
#: Empty: on x86 (avx512, untuned, PP-OCR cls) NHWC measured slower, arm64 not measured yet.
MEASURED: dict[str, str] = {}

#: Why targets without a MEASURED feature keep NCHW (shown as the decline reason).
NOT_MEASURED_REASON = (
    "NCHW kept: NHWC not measured to pay on this target (x86 host, cls untuned: NHWC "
    "6.5 ms vs NCHW 3.6 ms, docs/kernel_counts.md); --conv-layout NHWC to try it"
)

#: After conversion, more data transposes than the model's input/output ones (2) plus this
#: many per conv: decline (the conversion would add more kernels than it can pay back).
MAX_TRANSPOSES_PER_CONV = 0.5

_TO_NHWC = [0, 2, 3, 1]  # NCHW -> NHWC axis order

#: ConvertLayout's targets. conv2d_transpose stays NCHW: TVM 0.27 legalizes it for NCHW only
#: (an NHWC one reaches VM codegen unlowered; seen on PP-OCRv4 det).
DESIRED_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}


def layout_for(features, override: str | None = None) -> str:
    """The conv data layout to use for a target with lwc ISA ``features``.

    Args:
        override: ``"NHWC"`` or ``"NCHW"`` (``--conv-layout``), or None for the table.
    Returns ``"NHWC"`` or ``"NCHW"``: ``override`` when given, else the first feature
    found in :data:`MEASURED`, else ``"NCHW"``.
    Raises:
        ValueError: ``override`` is something else.
    """
    if override:
        layout = override.strip().upper()
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"conv layout {override!r}: use NHWC or NCHW")
        return layout
    for feature in features:
        if feature in MEASURED:
            return MEASURED[feature]
    return "NCHW"


def relayout_elementwise(func: tirx.PrimFunc, perm: list[int]) -> tirx.PrimFunc:
    """An elementwise 1-in/1-out PrimFunc re-laid out so both buffers are stored permuted.

    Args:
        func: PrimFunc whose single spatial block reads ``x[i...]`` and writes ``y[i...]``.
        perm: new axis order (``new_shape[d] = old_shape[perm[d]]``), e.g. [0, 2, 3, 1].
    Returns:
        the PrimFunc taking and returning tensors of the permuted shape, loops in the new
        memory order.
    Raises:
        RuntimeError (tvm.error.InternalError from TIR scheduling) when it is not of that form.
    """
    from tvm.s_tir import Schedule

    sch = Schedule(func)
    (block,) = sch.get_child_blocks(sch.get_sblock("root"))
    index_map = lambda *idx: tuple(idx[p] for p in perm)  # noqa: E731
    sch.transform_layout(block, ("read", 0), index_map)
    sch.transform_layout(block, ("write", 0), index_map)
    loops = sch.get_loops(block)
    if len(loops) == len(perm):
        sch.reorder(*[loops[p] for p in perm])
    return sch.mod["main"]


@tvm.transform.module_pass(opt_level=0, name="ConvertConvLayout")
class ConvertConvLayout:
    """Convert NCHW conv models to ``layout`` (NHWC) and cancel the transposes; see module doc."""

    def __init__(self, layout: str = "NHWC", reason: str = NOT_MEASURED_REASON):
        """Args: layout: ``"NHWC"`` converts, ``"NCHW"`` declines with ``reason``."""
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout {layout!r}: use NHWC or NCHW")
        self.layout = layout
        self.reason = reason
        self.stats = PassStats()

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        convs = self._nchw_convs(mod)
        if convs == 0:
            return mod
        if self.layout == "NCHW":
            self.stats.declined.append(("model", self.reason))
            return mod
        try:
            new = self._convert(mod)
        except RuntimeError as err:  # tvm.error.InternalError: ConvertLayout aborts on some tuples
            lines = [ln for ln in str(err).splitlines() if ln.strip()]
            self.stats.declined.append(("model", f"NCHW kept: TVM ConvertLayout failed: {lines[-1] if lines else err!r}"))
            return mod
        left = self._data_transposes(new)
        if left > 2 + MAX_TRANSPOSES_PER_CONV * convs:
            self.stats.declined.append(
                ("model", f"NCHW kept: {left} transposes would remain for {convs} convs"))
            return mod
        self.stats.changed["conv2d converted to NHWC"] += convs
        self.stats.changed["transposes left"] += left
        return new

    @staticmethod
    def _nchw_convs(mod) -> int:
        count = 0

        def visit(expr):
            nonlocal count
            if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
                count += str(expr.attrs.data_layout) == "NCHW"

        for func in mod.functions.values():
            if isinstance(func, relax.Function):
                relax.analysis.post_order_visit(func, visit)
        return count

    @staticmethod
    def _data_transposes(mod) -> int:
        """Transposes of non-constant tensors (constant-derived ones fold at build time)."""
        count = 0
        for func in mod.functions.values():
            if not isinstance(func, relax.Function):
                continue
            bindings = Bindings(func)
            values = {var: value for value, var in bindings.var_of.items()}
            for value in bindings.var_of:
                if (isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.permute_dims"
                        and not constant_derived(value.args[0], values)):
                    count += 1
        return count

    def _convert(self, mod: tvm.IRModule) -> tvm.IRModule:
        """ConvertLayout with lwc's elementwise call_tir kernels made visible to it."""
        hidden, markers = self._hide_elementwise_kernels(_scalar_constants_0d(mod))
        converted = relax.transform.ConvertLayout(DESIRED_LAYOUTS)(hidden)
        return relax.transform.DeadCodeElimination()(self._restore(converted, markers))

    @staticmethod
    def _hide_elementwise_kernels(mod: tvm.IRModule):
        """Replace ``call_tir(k, (x,))`` (k elementwise, 1 in / 1 out) by ``x + marker``.

        ConvertLayout has a layout rule for ``add`` and none for ``call_tir``; the marker is
        a fresh 0-d constant per call, found again by identity in :meth:`_restore`.
        """
        patterns = relax.transform.AnnotateTIROpPattern()(mod)
        elementwise = {
            gv.name_hint for gv, f in patterns.functions.items()
            if isinstance(f, tirx.PrimFunc) and f.attrs is not None and "op_pattern" in f.attrs
            and int(f.attrs["op_pattern"]) == 0 and len(f.params) == 2
        }
        x, gv = wildcard(), wildcard()
        root = is_op("relax.call_tir")(gv, relax.dpl.is_tuple([x]))
        markers: list[tuple[relax.Expr, relax.GlobalVar, tuple]] = []

        def replace(expr, m):
            callee, shape = m[gv], tensor_shape(expr)
            if (not isinstance(callee, relax.GlobalVar) or callee.name_hint not in elementwise
                    or shape is None or tensor_shape(m[x]) != shape):
                return expr
            marker = relax.const(0.0, str(expr.ty.dtype))
            markers.append((marker, callee, shape))
            return relax.op.add(m[x], marker)

        return _rewrite_all(mod, root, replace), markers

    @staticmethod
    def _restore(mod: tvm.IRModule, markers) -> tvm.IRModule:
        """Put the kernels back, re-laid out to NHWC where the tensor now is NHWC."""
        x, k = wildcard(), relax.dpl.is_const()
        root = is_op("relax.add")(x, k)
        relaid: dict[str, relax.GlobalVar] = {}
        added: dict[relax.GlobalVar, tirx.PrimFunc] = {}
        taken = {g.name_hint for g in mod.get_global_vars()}

        def replace(expr, m):
            found = [(c, s) for marker, c, s in markers if marker.same_as(m[k])]
            if not found:
                return expr
            callee, old_shape = found[0]
            shape = tensor_shape(m[x])
            if shape != old_shape:  # now NHWC (same shape: layout does not matter elementwise)
                if callee.name_hint not in relaid:
                    name, i = f"{callee.name_hint}_nhwc", 0
                    while name in taken:
                        i += 1
                        name = f"{callee.name_hint}_nhwc{i}"
                    taken.add(name)
                    prim = relayout_elementwise(mod[callee], _TO_NHWC).with_attr("global_symbol", name)
                    new_gv = relax.BlockBuilder().add_func(prim, name)
                    relaid[callee.name_hint], added[new_gv] = new_gv, prim
                callee = relaid[callee.name_hint]
            return relax.call_tir(callee, relax.Tuple([m[x]]), relax.TensorType(shape, str(expr.ty.dtype)))

        mod = _rewrite_all(mod, root, replace)
        if added:
            mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
            for g, f in added.items():
                mod[g] = f
        return mod


def _scalar_constants_0d(mod: tvm.IRModule) -> tvm.IRModule:
    """Size-1 constants in binary elementwise ops as 0-d scalars (same broadcast result).

    ConvertLayout's broadcast rule falls back to the original layout when an operand has a
    different rank, e.g. PP-OCRv4 det's ``multiply(scale[1], x) + shift[1]`` after each
    hard_swish; a 0-d operand broadcasts in any layout.
    """
    a, b = wildcard(), wildcard()
    root = (is_op("relax.add")(a, b) | is_op("relax.multiply")(a, b)
            | is_op("relax.subtract")(a, b) | is_op("relax.divide")(a, b))

    def replace(expr, _m):
        args = []
        for arg in expr.args:
            value = const_value(arg)
            scalar = value is not None and value.size == 1 and value.ndim
            args.append(relax.const(value.reshape(()).item(), str(value.dtype)) if scalar else arg)
        if all(x.same_as(y) for x, y in zip(args, expr.args)):
            return expr
        return relax.Call(expr.op, args, expr.attrs)

    return _rewrite_all(mod, root, replace)


def _rewrite_all(mod: tvm.IRModule, pattern, replace) -> tvm.IRModule:
    updates = {g: rewrite_call(pattern, replace, f) for g, f in mod.functions.items()
               if isinstance(f, relax.Function)}
    new = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for g, f in updates.items():
        new[g] = f
    return new
