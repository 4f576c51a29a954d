"""AffineSymbolicReshape: reshapes of symbolic shapes as kernels with affine indices.

Why: LegalizeOps makes TOPI's reshape of every ``relax.reshape``. With a symbolic dim (a
dynamic-dims compile, ``--input-shape x:1,3,48,96..1280``) its indices keep a
``floormod`` by the symbolic dim that TVM cannot simplify, so AnnotateTIROpPattern calls
the kernel opaque and FuseOps fuses nothing with it: PP-OCRv4 rec at a dynamic width ran
18 more kernels than its fixed build (transposes, adds and SiLUs left alone).
:func:`lwc.kernels.reshape.reshape_compute` writes the same reshape with indices affine in
the output's: an injective kernel, fused as with fixed shapes.

Declines (left to LegalizeOps): reshapes with only static dims (TOPI's indices simplify
there); a shape the matching cannot group (the kernel is then TOPI's reshape anyway).

Before::  lv475 = reshape(lv474, R.shape([(x_3 - 5) // 8 + 1, 120]))   # legalized: opaque
After::   lv475 = call_tir(reshape, (lv474, x_3))                      # injective
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from lwc.kernels.cache import KernelCache
from lwc.kernels.reshape import dim_groups, has_symbolic_dim, reshape_compute
from lwc.passes._support import Bindings, PassStats, rewrite_functions


#: TVM's OpPatternKind::kInjective (relax/op_attr_types.h).
OP_PATTERN_INJECTIVE = 2


def _shape(expr):
    ty = getattr(expr, "ty", None)
    shape = getattr(ty, "shape", None)
    return list(shape.values) if shape is not None and hasattr(shape, "values") else None


@tvm.transform.module_pass(opt_level=0, name="AffineSymbolicReshape")
class AffineSymbolicReshape:
    """Replace reshapes of symbolic shapes by :mod:`lwc.kernels.reshape` kernels."""

    def __init__(self):
        self.stats = PassStats()

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        cache = KernelCache(mod, "reshape")
        mod = rewrite_functions(mod, lambda f: self._rewrite(f, cache))
        return cache.add_to(mod)

    def _rewrite(self, func: relax.Function, cache: KernelCache) -> relax.Function:
        from tvm.relax.utils import gen_call_tir_inputs

        data = wildcard()
        root = is_op("relax.reshape")(data, wildcard())
        bindings = Bindings(func)

        def replace(expr, m):
            src, dst = _shape(m[data]), _shape(expr)
            if src is None or dst is None or not (has_symbolic_dim(src) or has_symbolic_dim(dst)):
                return expr
            if dim_groups(src, dst) is None:
                self.stats.declined.append((bindings.name(expr), "dims cannot be grouped"))
                return expr
            prim, args, out_ty = gen_call_tir_inputs(reshape_compute, m[data], relax.ShapeExpr(dst))
            key = (str(src), str(dst), str(expr.ty.dtype))
            # kInjective, as TOPI's reshape is with static shapes: AnnotateTIROpPattern would
            # call a reshape that only drops unit dims kBroadcast, and FuseOps would then fold
            # it into a matmul's epilogue (rec's 6625-class head: 1.04 vs 0.62 ms on AVX2)
            gvar = cache.get(key, lambda: prim.with_attr("op_pattern", OP_PATTERN_INJECTIVE))
            self.stats.changed["symbolic reshape made affine"] += 1
            return relax.call_tir(gvar, args, out_ty)

        return rewrite_call(root, replace, func)

