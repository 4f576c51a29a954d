"""Elementwise TIR kernels that lwc's activation passes call as single ops.

Relax has no HardSwish or HardSigmoid operator, so FuseHardSwish / FuseHardSigmoid
replace the importer's elementwise chains with one ``call_tir`` to a kernel built here
with TE. Each kernel is NaN-preserving (a NaN input gives a NaN output, as onnxruntime
does). TVM's AnnotateTIROpPattern marks them elementwise, so FuseOps still fuses them
into the producing conv.
"""

from __future__ import annotations

from typing import Callable

import tvm
from tvm import relax, te, tirx

from lwc.kernels.cache import KernelCache


def _float(value: float, dtype: str):
    return tirx.const(value, dtype)


def hard_swish_body(x, dtype: str):
    """x * min(max(x + 3, 0), 6) * (1/6) (ONNX HardSwish; NaN in -> NaN out).

    The ``/ 6`` of the ONNX definition is a multiply by ``1/6``, within one ulp of the
    quotient: a vector division costs 5-7 multiplies' throughput (Zen 4 ``vdivps``, the
    Cortex-A76's ``fdiv``), and it sat in every conv epilogue ending in hard_swish (with
    the next quantize's division, most of PP-OCR cls's int8 1x1 conv 32->200).
    """
    inner = tirx.Min(tirx.Max(x + _float(3.0, dtype), _float(0.0, dtype)), _float(6.0, dtype))
    return x * inner * _float(1.0 / 6.0, dtype)


def hard_sigmoid_body(alpha: float, beta: float):
    """max(0, min(1, alpha * x + beta)) (ONNX HardSigmoid); NaN passes through."""

    def body(x, dtype: str):
        y = x * _float(alpha, dtype) + _float(beta, dtype)
        clipped = tirx.Min(tirx.Max(y, _float(0.0, dtype)), _float(1.0, dtype))
        return tirx.Select(tirx.isnan(y), y, clipped)

    return body


class KernelTable:
    """Kernels created during one pass run, added to the module at the end
    (:class:`lwc.kernels.cache.KernelCache`, one elementwise kernel per key/shape/dtype)."""

    def __init__(self, prefix: str, mod: tvm.IRModule):
        self._cache = KernelCache(mod, prefix)

    def call(self, key: str, body: Callable, x, shape: tuple[int, ...] | None, dtype: str):
        """``call_tir`` of the kernel ``body`` on ``x`` (one kernel per key/shape/dtype).

        ``shape`` None: ``x``'s shape has symbolic dims (a dynamic-dims compile); the kernel
        takes them from ``x`` (TVM's ``gen_call_tir_inputs``, as ``BlockBuilder.call_te``).
        """
        prefix = self._cache.prefix
        if shape is None:
            return self._call_symbolic(key, body, x, dtype)

        def make():
            dims = [tirx.IntImm("int64", d) for d in shape]
            data = te.placeholder(dims, dtype, name="x")
            out = te.compute(dims, lambda *i: body(data(*i), dtype), name=prefix)
            return te.create_prim_func([data, out])

        gvar = self._cache.get((key, shape, dtype), make)
        return relax.call_tir(gvar, relax.Tuple([x]), relax.TensorType(shape, dtype))

    def _call_symbolic(self, key: str, body: Callable, x, dtype: str):
        from tvm.relax.utils import gen_call_tir_inputs

        def compute(data):
            return te.compute(data.shape, lambda *i: body(data(*i), dtype), name=self._cache.prefix)

        func, args, out_ty = gen_call_tir_inputs(compute, x)
        shape = x.ty.shape
        gvar = self._cache.get((key, str(shape), dtype), lambda: func)
        return relax.call_tir(gvar, args, out_ty)

    def add_to(self, mod: tvm.IRModule) -> tvm.IRModule:
        return self._cache.add_to(mod)
