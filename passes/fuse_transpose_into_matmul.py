"""FuseTransposeIntoMatmul: a matmul that reads a transposed operand reads it in place.

Math: matmul(permute_dims(A, swap last two), B)[..., i, j] = sum_k A[..., k, i] * B[..., k, j]
(and likewise for B: sum_k A[..., i, k] * B[..., j, k]); batch axes broadcast as in
ONNX/numpy MatMul (numpy.matmul semantics, which ``relax.matmul`` follows). The sum is
the same sum in the same order of k, so the result is bit-for-bit the matmul TVM would
have computed after materialising the transpose.

Why: FuseOps puts a transpose (injective) and the matmul that consumes it in separate
kernels (a reduction does not absorb its producers), so ``q @ k^T`` in attention costs a
transpose kernel plus a matmul kernel and one extra tensor round trip. This pass emits one
``call_tir`` of a TE matmul that indexes the operand transposed; FuseOps still fuses the
bias/activation after it (AnnotateTIROpPattern sees an output-fusable reduction).

Preconditions (declines with the reason otherwise):
- the permute swaps exactly the last two axes of a tensor with >= 2 dims;
- the transposed operand is not constant-derived (a constant, or built only from
  constants, e.g. the light zoo's ConstantOfShape weights): FoldConstant transposes it at
  build time for free, and leaving it keeps the dense kernels that tuning logs know;
- the transposed tensor has no other reader (else the transpose kernel stays anyway);
- the operand is not made by a data-movement op (reshape, slice, split item, ...): FuseOps
  already puts the transpose into that op's kernel, so no kernel would be saved (PP-OCRv4
  rec's attention: slice + squeeze + transpose is one kernel);
- static shapes, both operands >= 2-D, one float dtype, no out_dtype change.

Before::  lv1 = permute_dims(k, [0, 1, 3, 2]); lv2 = matmul(q, lv1)
After::   lv2 = call_tir(matmul_nt, (q, k))      # out[b,h,i,j] = sum_k q[b,h,i,k] * k[b,h,j,k]
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from lwc.passes._support import (
    Bindings,
    FunctionRewrite,
    constant_derived,
    rewrite_functions,
    tensor_dtype,
    tensor_shape,
)


#: Producers that FuseOps merges a following transpose into (one injective kernel already).
DATA_MOVEMENT = frozenset({
    "relax.reshape", "relax.strided_slice", "relax.squeeze", "relax.expand_dims",
    "relax.permute_dims", "relax.concat", "relax.split", "relax.take", "relax.flatten",
})


def _swaps_last_two(permute, ndim: int) -> bool:
    axes = permute.attrs.axes
    want = list(range(ndim))
    want[-1], want[-2] = want[-2], want[-1]
    if axes is None:  # numpy default: reverse all axes
        return ndim == 2
    return [int(a) % ndim for a in axes] == want


def matmul_te(a_shape, b_shape, trans_a: bool, trans_b: bool, dtype: str):
    """TE placeholders and output of ``matmul(A^T?, B^T?)`` with numpy batch broadcasting.

    Args:
        a_shape, b_shape: static shapes of the *stored* operands (>= 2-D each).
        trans_a, trans_b: whether the operand is read with its last two axes swapped.
        dtype: element type of operands and result.
    Returns:
        (a placeholder, b placeholder, output tensor).
    Raises:
        ValueError: the contraction lengths differ or the batch axes do not broadcast.
    """
    a = te.placeholder([tirx.IntImm("int64", d) for d in a_shape], dtype, name="A")
    b = te.placeholder([tirx.IntImm("int64", d) for d in b_shape], dtype, name="B")
    m, ka = (a_shape[-1], a_shape[-2]) if trans_a else (a_shape[-2], a_shape[-1])
    kb, n = (b_shape[-1], b_shape[-2]) if trans_b else (b_shape[-2], b_shape[-1])
    if ka != kb:
        raise ValueError(f"contraction lengths differ: {ka} vs {kb}")
    batch_a, batch_b = list(a_shape[:-2]), list(b_shape[:-2])
    rank = max(len(batch_a), len(batch_b))
    batch_a, batch_b = [1] * (rank - len(batch_a)) + batch_a, [1] * (rank - len(batch_b)) + batch_b
    batch = []
    for da, db in zip(batch_a, batch_b):
        if da != db and 1 not in (da, db):
            raise ValueError(f"batch axes do not broadcast: {a_shape} vs {b_shape}")
        batch.append(max(da, db))
    na, nb = len(a_shape) - 2, len(b_shape) - 2
    k = te.reduce_axis((0, tirx.IntImm("int64", ka)), name="k")

    def index(bidx, dims, skip, i, j, trans):
        lead = [tirx.IntImm("int64", 0) if d == 1 else v for v, d in zip(bidx[skip:], dims[skip:])]
        return (*lead, j, i) if trans else (*lead, i, j)

    def compute(*idx):
        bidx, i, j = idx[:-2], idx[-2], idx[-1]
        ai = index(bidx, batch_a, rank - na, i, k, trans_a)
        bi = index(bidx, batch_b, rank - nb, k, j, trans_b)
        return te.sum(a(*ai) * b(*bi), axis=k)

    out_shape = [tirx.IntImm("int64", d) for d in (*batch, m, n)]
    return a, b, te.compute(out_shape, compute, name="matmul")


@tvm.transform.module_pass(opt_level=0, name="FuseTransposeIntoMatmul")
class FuseTransposeIntoMatmul(FunctionRewrite):
    """Replace matmul(permute_dims(x), y) / matmul(x, permute_dims(y)) with one transposed-read kernel."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        from lwc.passes._support import PassStats

        self.stats = PassStats()
        self._kernels: dict[tuple, relax.GlobalVar] = {}
        self._funcs: dict[relax.GlobalVar, tirx.PrimFunc] = {}
        self._taken = {gv.name_hint for gv in mod.get_global_vars()}
        mod = rewrite_functions(mod, self._rewrite)
        if self._funcs:
            mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
            for gvar, func in self._funcs.items():
                mod[gvar] = func
        return mod

    def _rewrite(self, func: relax.Function) -> relax.Function:
        root = is_op("relax.matmul")(wildcard(), wildcard())
        bindings = Bindings(func)
        values = {var: value for value, var in bindings.var_of.items()}

        def permute_of(arg):
            value = values.get(arg) if isinstance(arg, relax.Var) else arg
            is_permute = isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.permute_dims"
            return value if is_permute else None

        def replace(expr, _m):
            where = bindings.name(expr)
            stored, kept = list(expr.args), [False, False]
            for side, arg in enumerate(expr.args):
                permute = permute_of(arg)
                if permute is None:
                    continue
                reason = self._check(arg, permute, bindings, values)
                if reason:
                    self.stats.declined.append((where, reason))
                    continue
                stored[side], kept[side] = permute.args[0], True
            if not any(kept):
                return expr
            reason = self._check_matmul(expr, stored)
            if reason:
                self.stats.declined.append((where, reason))
                return expr
            self.stats.changed["transpose fused into matmul"] += sum(kept)
            return self._call(stored, kept, expr)

        return rewrite_call(root, replace, func)

    @staticmethod
    def _check(transposed, permute, bindings, values) -> str | None:
        operand = permute.args[0]
        shape = tensor_shape(operand)
        if shape is None or len(shape) < 2:
            return "transposed operand has no static shape of rank >= 2"
        if not _swaps_last_two(permute, len(shape)):
            return f"permute {list(permute.attrs.axes or [])} is not a swap of the last two axes"
        if constant_derived(operand, values):
            return "transposed operand is constant-derived (FoldConstant transposes it at build)"
        producer = values.get(operand) if isinstance(operand, relax.Var) else None
        if isinstance(producer, relax.TupleGetItem) or getattr(getattr(producer, "op", None), "name", "") in DATA_MOVEMENT:
            return "transpose already fuses into its data-movement producer (no kernel saved)"
        if not isinstance(transposed, relax.Var) or bindings.uses[transposed] > 1:
            return "transposed tensor has other readers"
        return None

    @staticmethod
    def _check_matmul(expr, stored) -> str | None:
        shapes = [tensor_shape(s) for s in stored]
        if any(s is None or len(s) < 2 for s in shapes):
            return "operand is not a static tensor of rank >= 2"
        dtypes = {tensor_dtype(s) for s in stored} | {tensor_dtype(expr)}
        if len(dtypes) != 1 or not next(iter(dtypes)).startswith("float"):
            return f"mixed or non-float dtypes {sorted(dtypes)}"
        return None

    def _call(self, stored, trans, expr) -> relax.Call:
        shapes = tuple(tensor_shape(s) for s in stored)
        dtype = tensor_dtype(expr)
        key = (shapes, tuple(trans), dtype)
        if key not in self._kernels:
            a, b, out = matmul_te(shapes[0], shapes[1], trans[0], trans[1], dtype)
            stem = "matmul_" + "".join("t" if t else "n" for t in trans)
            name, index = stem, 0
            while name in self._taken:
                index += 1
                name = f"{stem}{index}"
            self._taken.add(name)
            prim = te.create_prim_func([a, b, out]).with_attr("global_symbol", name)
            gvar = relax.BlockBuilder().add_func(prim, name)
            self._kernels[key] = gvar
            self._funcs[gvar] = prim
        out_shape = tensor_shape(expr)
        return relax.call_tir(self._kernels[key], relax.Tuple(list(stored)), relax.TensorType(out_shape, dtype))
