"""Shared plumbing for lwc's passes: statistics, constants, use counts, op counting.

Not a pass. Every pass in this package records what it did in a :class:`PassStats`
(``pass_obj.stats`` after it ran): counts of rewrites by kind and the matches it
declined, each with a reason, so the compile report can say "conv lv17 not folded: bias
is not constant".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant, GenericConst  # TVM 0.27: tensor / prim constants


@dataclass
class PassStats:
    """What one run of a pass did.

    Attributes:
        changed: rewrite kind -> count (e.g. ``{"batch_norm folded": 35}``).
        declined: ``(where, reason)`` per match the check refused; ``where`` is the Relax
            variable bound to the matched expression (mapped to ONNX names by the report).
    """

    changed: Counter = field(default_factory=Counter)
    declined: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "changed": dict(self.changed),
            "declined": [{"where": w, "reason": r} for w, r in self.declined],
        }

    def summary(self) -> str:
        parts = [f"{n} {kind}" for kind, n in self.changed.items() if n]
        if self.declined:
            first = self.declined[0]
            parts.append(f"{len(self.declined)} declined (e.g. {first[0]}: {first[1]})")
        return "; ".join(parts) or "nothing to do"


class Bindings:
    """Bound value -> variable, and variable use counts, for one Relax function.

    dpl's ``rewrite_call`` hands callbacks the matched *values*; this answers "which
    variable is that, and who else reads it" (a conv whose output has other readers must
    not have its weights changed).
    """

    def __init__(self, func: relax.Function):
        self.var_of: dict = {}
        self.uses: Counter = Counter()  # number of bindings (and the result) reading a var
        for block in func.body.blocks:
            for binding in block.bindings:
                self.var_of[binding.value] = binding.var
                for var in relax.analysis.free_vars(binding.value):
                    self.uses[var] += 1
        for var in relax.analysis.free_vars(func.body.body):
            self.uses[var] += 1

    def name(self, value) -> str:
        var = self.var_of.get(value)
        return var.name if var is not None else "?"

    def single_use(self, value) -> bool:
        var = self.var_of.get(value)
        return var is not None and self.uses[var] <= 1


def ints(values) -> list[int]:
    """A Relax attribute's integer array (strides, padding, ...) as Python ints."""
    return [int(v) for v in values]


def out_dtype(attrs) -> str | None:
    """A conv's ``out_dtype``, or None (the input's) where it is unset (``""``/``void``)."""
    dtype = str(attrs.out_dtype or "")
    return None if dtype in ("", "void") else dtype


def const_value(expr) -> np.ndarray | None:
    """The numpy value of a Relax constant (None for anything else)."""
    if isinstance(expr, GenericConst):
        return expr.value.numpy()
    return None


def prim_value(expr) -> float | None:
    """The number in a ``R.prim_value`` / scalar constant, or None."""
    if isinstance(expr, Constant) and not isinstance(expr, GenericConst):
        return float(expr.value)  # IntImm / FloatImm (Relax prim values in TVM 0.27)
    array = const_value(expr)
    if array is not None and array.size == 1:
        return float(array.reshape(()))
    return None


def scalar_is(expr, want: float, rtol: float = 1e-6) -> bool:
    value = prim_value(expr)
    return value is not None and abs(value - want) <= rtol * max(1.0, abs(want))


def constant_derived(expr, values: dict, depth: int = 0) -> bool:
    """True for a constant or a value computed only from constants (no function inputs).

    ``values`` maps bound variables to their values (e.g. ``{v: k for k, v in
    Bindings(func).var_of.items()}``); chains deeper than 16 bindings count as not constant.
    Such values fold at build time (TVM's FoldConstant after LegalizeOps).
    """
    if isinstance(expr, Constant | relax.ShapeExpr):  # tensor, prim and shape constants
        return True
    if isinstance(expr, relax.Var):
        bound = values.get(expr)
        return bound is not None and depth < 16 and constant_derived(bound, values, depth + 1)
    if isinstance(expr, relax.Call):
        return all(constant_derived(arg, values, depth) for arg in expr.args)
    if isinstance(expr, relax.Tuple):
        return all(constant_derived(f, values, depth) for f in expr.fields)
    return False


def const(array: np.ndarray) -> relax.Constant:
    return relax.const(np.ascontiguousarray(array))


def rewrite_functions(mod: tvm.IRModule, rewrite) -> tvm.IRModule:
    """A new module with ``rewrite(func) -> func`` applied to every Relax function."""
    updates = {}
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            new = rewrite(func)
            if not new.same_as(func):
                updates[gvar] = new
    if not updates:
        return mod
    new_mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gvar, func in updates.items():
        new_mod[gvar] = func
    return new_mod


def count_ops(mod_or_func, op_name: str) -> int:
    """Number of calls to the Relax operator ``op_name`` (e.g. ``"relax.nn.conv2d"``)."""
    funcs = (
        [f for f in mod_or_func.functions.values() if isinstance(f, relax.Function)]
        if isinstance(mod_or_func, tvm.IRModule)
        else [mod_or_func]
    )
    count = 0

    def visit(expr):
        nonlocal count
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == op_name:
            count += 1

    for func in funcs:
        relax.analysis.post_order_visit(func, visit)
    return count


def op_counts(mod) -> Counter:
    """Relax operator name -> number of calls, over all Relax functions of ``mod``."""
    counts: Counter = Counter()

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            counts[expr.op.name] += 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


def tensor_shape(expr) -> tuple[int, ...] | None:
    """Static shape of a tensor expression, or None."""
    ty = getattr(expr, "ty", None) or getattr(expr, "struct_info", None)
    shape = getattr(ty, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape.values)
    except (TypeError, AttributeError):
        return None


def tensor_dims(expr) -> tuple | None:
    """Shape of a tensor expression with None for each symbolic dim (a dynamic-dims
    compile), or None when the rank is unknown."""
    ty = getattr(expr, "ty", None) or getattr(expr, "struct_info", None)
    shape = getattr(ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    dims = []
    for d in shape.values:
        try:
            dims.append(int(d))
        except (TypeError, AttributeError):
            dims.append(None)
    return tuple(dims)


def tensor_dtype(expr) -> str | None:
    ty = getattr(expr, "ty", None) or getattr(expr, "struct_info", None)
    return str(ty.dtype) if ty is not None and hasattr(ty, "dtype") else None


class FunctionRewrite:
    """Base of lwc's Relax passes that rewrite each Relax function independently.

    A subclass (decorated with ``@tvm.transform.module_pass(name=...)``) implements
    ``_rewrite(func) -> func`` and records what it did in ``self.stats``, which is reset
    at each run and read afterwards by the pipeline and the compile report.
    """

    def __init__(self):
        self.stats = PassStats()

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        return rewrite_functions(mod, self._rewrite)

    def _rewrite(self, func: relax.Function) -> relax.Function:
        raise NotImplementedError
