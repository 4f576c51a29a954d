"""lwc's own x86 int8 tensor intrinsics (not a pass): ``lwc_dot_16x4_vnni``,
``lwc_dot_16x4_vnni_pixels``, ``lwc_dot_8x2_avx2``, and the byte interleave
``lwc_interleave_4x16_u8`` of the pixel-lane kernel's activation copy.

TVM 0.27's ``dot_16x4_vnni`` (tvm.s_tir.tensor_intrin.x86) calls
``llvm.x86.avx512.vpdpbusd.512`` with ``<16 x i32>`` operands, the signature of LLVM up
to 20. The LLVM 22 bundled with the apache-tvm 0.27 wheel declares the two byte operands
as ``<64 x i8>`` (LLVM changed the VNNI intrinsics to byte vectors), so every module
using TVM's intrinsic fails LLVM verification ("Call parameter type does not match
function signature!"); MetaSchedule then discards every tensorized candidate. This
intrinsic has TVM's description (u8 x s8 -> s32, 16 lanes x 4 bytes) and passes the
operands as byte vectors:

    C[i] += sum_k int32(A[k]) * int32(B[i, k])      i < 16, k < 4     (one vpdpbusd)

``lwc_dot_16x4_vnni_pixels`` is the same instruction with the roles of the operands
swapped: 16 lanes are 16 output pixels of one output channel, each reading its own 4 input
channels, and the 4 weights are broadcast (PackInt8Conv2d's pixel-lane kernel)::

    C[i] += sum_k int32(A[i, k]) * int32(B[k])      i < 16, k < 4     (one vpdpbusd)
    A: uint8 activations [pixel, channel], B: int8 weights, C: int32

x86 CPUs with AVX2 but no VNNI (Zen 2/3, Haswell..Skylake client) have no exact byte dot
product: ``vpmaddubsw`` (TVM's ``dot_16x4_avx512`` and onnxruntime's u8s8 kernels) adds two
uint8 x int8 products into a *saturating* int16 (255 * 127 * 2 > 32767). ``lwc_dot_8x2_avx2``
multiplies int16 pairs instead (``vpmaddwd``: int16 x int16 products summed pairwise into
int32, exact for any int16 input; Intel SDM vol. 2, PMADDWD), with the activations already
widened to int16 by the kernel's activation block and the int8 weights sign-extended in the
intrinsic::

    C[i] += sum_k int32(A[k]) * int32(B[i, k])      i < 8, k < 2      (one vpmaddwd + vpaddd)
    A: int16 (a uint8 activation widened), B: int8 weights, C: int32

Measured on a Zen 3 (2 threads, the 3136x64x576 im2col matmul of a 56x56 3x3 conv 64->64,
hand-tiled): 260 GOP/s vs 191 GFLOP/s for the best fp32 FMA tiling of the same matmul, 1.36x.

``lwc_interleave_4x16_u8`` copies 16 columns of 4 channel planes into 16 groups of 4
channels (``B[j, k] = A[k, j]``, 64 bytes: one ``vpdpbusd`` operand of the pixel-lane
kernel) as four 16-byte loads and one shuffle (LLVM: byte unpacks); TVM's vectorizer would
read the 64 bytes one by one (a gather: ``vpinsrb`` per byte).

``lwc_interleave_rows_4x16_u8`` is the same copy of 4 consecutive rows of one plane
(``B[j, k] = A[k, j]``): the row quads of the int8 depthwise kernel on VNNI
(:func:`lwc.kernels.int8_depthwise.depthwise_quad_kernel`).

``lwc_dot_16x4_vnni_window`` is ``vpdpbusd`` over a sliding window: 16 outputs of a row,
lane ``i`` over bytes ``i .. i + 3`` of a 19-byte window, permuted in a register from one
32-byte load (``vpermb`` on AVX512-VBMI CPUs); the int8 depthwise kernel's 4 kernel
columns per instruction (:func:`lwc.kernels.int8_depthwise.depthwise_window_kernel`)::

    C[i] += sum_k int32(A[i + k]) * int32(B[k])      i < 16, k < 4     (one vpdpbusd)

Registered once, on import; :func:`register` is idempotent.
"""

from __future__ import annotations

VNNI_INTRIN = "lwc_dot_16x4_vnni"
VNNI_PIXELS_INTRIN = "lwc_dot_16x4_vnni_pixels"
AVX2_INTRIN = "lwc_dot_8x2_avx2"
INTERLEAVE_INTRIN = "lwc_interleave_4x16_u8"
INTERLEAVE_ROWS_INTRIN = "lwc_interleave_rows_4x16_u8"
VNNI_WINDOW_INTRIN = "lwc_dot_16x4_vnni_window"


def register() -> str:
    """Register :data:`VNNI_INTRIN`, :data:`VNNI_PIXELS_INTRIN`, :data:`AVX2_INTRIN`,
    :data:`INTERLEAVE_INTRIN` and :data:`INTERLEAVE_ROWS_INTRIN` with TVM (once).

    Returns:
        :data:`VNNI_INTRIN`.
    """
    from tvm.s_tir import TensorIntrin

    for name, make in ((VNNI_INTRIN, _vnni_funcs), (VNNI_PIXELS_INTRIN, _vnni_pixels_funcs),
                       (AVX2_INTRIN, _avx2_funcs), (INTERLEAVE_INTRIN, _interleave_funcs),
                       (INTERLEAVE_ROWS_INTRIN, _interleave_rows_funcs),
                       (VNNI_WINDOW_INTRIN, _vnni_window_funcs)):
        if TensorIntrin.get(name, allow_missing=True) is None:
            TensorIntrin.register(name, *make())
    return VNNI_INTRIN


def _dot_desc(lanes: int, width: int, act_dtype: str):
    """The description both intrinsics share: ``C[i] += int32(A[k]) * int32(B[i, k])``,
    i < lanes, k < width (A: act_dtype, B: int8, C: int32)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((width,), act_dtype, offset_factor=1),
        B: T.Buffer((lanes, width), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:width], B[0:lanes, 0:width])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, width):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _vnni_funcs():
    from tvm.script import tirx as T

    desc = _dot_desc(16, 4, "uint8")

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


def _vnni_pixels_funcs():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((16, 4), "uint8", offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:16, 0:4], B[0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((16, 4), "uint8", offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:16, 0:4], B[0:4])
            T.writes(C[0:16])
            b_i32 = T.reinterpret(B.vload([0], "int8x4"), dtype="int32")
            b_i8x64 = T.reinterpret(T.broadcast(b_i32, 16), dtype="int8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                A.vload([0, 0], dtype="uint8x64"),
                b_i8x64,
                dtype="int32x16",
            )

    return desc, impl


def _avx2_funcs():
    from tvm.script import tirx as T

    desc = _dot_desc(8, 2, "int16")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((2,), "int16", offset_factor=1),
        B: T.Buffer((8, 2), "int8", offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            a_pair = T.reinterpret(A.vload([0], "int16x2"), dtype="int32")  # A[0], A[1]: 32 bits
            a_i16x16 = T.reinterpret(T.broadcast(a_pair, 8), dtype="int16x16")
            b_i16x16 = T.cast(B.vload([0, 0], dtype="int8x16"), "int16x16")  # vpmovsxbw
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                a_i16x16,
                b_i16x16,
                dtype="int32x8",
            )

    return desc, impl


def _interleave_funcs():
    """``B[j, k] = A[k, 0, j]``, j < 16, k < 4 (uint8): A is 4 channel rows of an NCHW
    tensor (any strides, the middle unit dim is the row), B 16 pixels x 4 channels."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle) -> None:
        s0 = T.int32()
        s1 = T.int32()
        A = T.match_buffer(a, (4, 1, 16), "uint8", strides=[s0, s1, 1], offset_factor=1)
        B = T.match_buffer(b, (16, 4), "uint8", offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:4, 0:1, 0:16])
            T.writes(B[0:16, 0:4])
            for j, k in T.grid(16, 4):
                with T.sblock("copy"):
                    vj, vk = T.axis.remap("SS", [j, k])
                    B[vj, vk] = A[vk, 0, vj]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle) -> None:
        s0 = T.int32()
        s1 = T.int32()
        A = T.match_buffer(a, (4, 1, 16), "uint8", strides=[s0, s1, 1], offset_factor=1)
        B = T.match_buffer(b, (16, 4), "uint8", offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:4, 0:1, 0:16])
            T.writes(B[0:16, 0:4])
            rows = [A.vload([k, 0, 0], "uint8x16") for k in range(4)]
            B.vstore([0, 0], T.Shuffle(rows, [16 * k + j for j in range(16) for k in range(4)]))

    return desc, impl


def _interleave_rows_funcs():
    """``B[j, k] = A[k, j]``, j < 16, k < 4 (uint8): A is 4 consecutive rows of one plane
    (any row stride), B 16 columns x 4 rows."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle) -> None:
        s0 = T.int32()
        A = T.match_buffer(a, (4, 16), "uint8", strides=[s0, 1], offset_factor=1)
        B = T.match_buffer(b, (16, 4), "uint8", offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:4, 0:16])
            T.writes(B[0:16, 0:4])
            for j, k in T.grid(16, 4):
                with T.sblock("copy"):
                    vj, vk = T.axis.remap("SS", [j, k])
                    B[vj, vk] = A[vk, vj]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle) -> None:
        s0 = T.int32()
        A = T.match_buffer(a, (4, 16), "uint8", strides=[s0, 1], offset_factor=1)
        B = T.match_buffer(b, (16, 4), "uint8", offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:4, 0:16])
            T.writes(B[0:16, 0:4])
            rows = [A.vload([k, 0], "uint8x16") for k in range(4)]
            B.vstore([0, 0], T.Shuffle(rows, [16 * k + j for j in range(16) for k in range(4)]))

    return desc, impl


def _vnni_window_funcs():
    """``C[i] += sum_k int32(A[i + k]) * int32(B[k])``, i < 16, k < 4: 16 outputs of a row
    conv, each over 4 consecutive bytes of a 19-byte window (uint8), with 4 int8 weights.
    One 32-byte load, one byte permute (``vpermb`` with AVX512-VBMI) into 16 overlapping
    4-byte groups, one ``vpdpbusd``. The load reads 13 bytes past the window: the caller's
    buffer must have them."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((19,), "uint8", offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:19], B[0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vi + vk], "int32") * T.cast(B[vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((19,), "uint8", offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:19], B[0:4])
            T.writes(C[0:16])
            row = A.vload([0], "uint8x32")
            window = T.Shuffle([row, row], [i + k for i in range(16) for k in range(4)])
            b_i32 = T.reinterpret(B.vload([0], "int8x4"), dtype="int32")
            b_i8x64 = T.reinterpret(T.broadcast(b_i32, 16), dtype="int8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                window,
                b_i8x64,
                dtype="int32x16",
            )

    return desc, impl
