"""lwc's own x86 VNNI tensor intrinsic (not a pass): ``lwc_dot_16x4_vnni``.

TVM 0.27's ``dot_16x4_vnni`` (tvm.s_tir.tensor_intrin.x86) calls
``llvm.x86.avx512.vpdpbusd.512`` with ``<16 x i32>`` operands, the signature of LLVM up
to 20. The LLVM 22 bundled with the apache-tvm 0.27 wheel declares the two byte operands
as ``<64 x i8>`` (LLVM changed the VNNI intrinsics to byte vectors), so every module
using TVM's intrinsic fails LLVM verification ("Call parameter type does not match
function signature!"); MetaSchedule then discards every tensorized candidate. This
intrinsic has TVM's description (u8 x s8 -> s32, 16 lanes x 4 bytes) and passes the
operands as byte vectors:

    C[i] += sum_k int32(A[k]) * int32(B[i, k])      i < 16, k < 4     (one vpdpbusd)

Registered once, on import; :func:`register` is idempotent.
"""

from __future__ import annotations

VNNI_INTRIN = "lwc_dot_16x4_vnni"


def register() -> str:
    """Register :data:`VNNI_INTRIN` with TVM (once); returns its name."""
    from tvm.s_tir import TensorIntrin

    if TensorIntrin.get(VNNI_INTRIN, allow_missing=True) is None:
        desc, impl = _vnni_funcs()
        TensorIntrin.register(VNNI_INTRIN, desc, impl)
    return VNNI_INTRIN


def _vnni_funcs():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            a_u8x64 = T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64")
            b_i8x64 = B.vload([0, 0], dtype="int8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                a_u8x64,
                b_i8x64,
                dtype="int32x16",
            )

    return desc, impl
