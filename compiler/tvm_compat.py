"""The one place that knows where TVM 0.27 keeps things.

TVM's Python API moves between releases (``tvm.tir`` -> ``tvm.tirx``,
``tvm.meta_schedule`` -> ``tvm.s_tir.meta_schedule``, ``tvm.contrib.cc`` ->
``tvm.support.cc``, ``tvm.nd.array`` -> ``tvm.runtime.tensor``). What this module owns:
building (:func:`build`), the VM, runtime tensors, the cross compiler hook, versions and
the host CPU's name. Passes, kernels and schedule rules import ``tvm.relax``,
``tvm.tirx`` and ``tvm.s_tir`` directly (their IR *is* those APIs; wrapping each node
type here would be a second, worse copy of TVM): a rename there is a search-and-replace
over ``passes/``, ``compiler/kernels/`` and ``compiler/schedules/``, not a one-file change.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import threading
from functools import cache

from lwc.machine import usable_cores

# TVM sizes its thread pool from TVM_NUM_THREADS when the pool first starts, else from the
# logical CPU count halved on x86 (it assumes hyper-threading): one thread on a 2-vCPU
# machine. lwc runs use every usable core unless the user says otherwise.
os.environ.setdefault("TVM_NUM_THREADS", str(usable_cores()))

import tvm  # noqa: E402
import tvm_ffi  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.relax.frontend.onnx import from_onnx  # noqa: F401  (re-exported)
from tvm.support import cc  # noqa: F401  (re-exported)

Target = tvm.target.Target
IRModule = tvm.IRModule


def global_func(name: str):
    """A registered TVM global function (``tvm`` is imported first so all are registered)."""
    return tvm_ffi.get_global_func(name)


def system_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. ``znver4``); gives AVX-512 when used as mcpu."""
    return str(global_func("target.llvm_get_system_cpu")())


def system_triple() -> str:
    """LLVM's target triple of this machine (e.g. ``x86_64-pc-linux-gnu``)."""
    return str(global_func("target.llvm_get_system_triple")())


def llvm_is_valid_cpu(cpu: str, triple: str) -> bool:
    """True when the bundled LLVM knows ``cpu`` for ``triple``."""
    return bool(global_func("target.llvm_is_valid_cpu")(cpu, triple))


@cache
def llvm_cpu_features(cpu: str, triple: str) -> frozenset[str]:
    """The ISA features LLVM enables for ``-mcpu=cpu`` on ``triple`` (e.g. ``avx512vnni``).

    Raises:
        ValueError: TVM cannot build an llvm target from them.
    """
    target = tvm.target.Target({"kind": "llvm", "mtriple": triple, "mcpu": cpu})
    return frozenset(str(f) for f in global_func("target.llvm_get_cpu_features")(target))


@cache
def versions() -> dict[str, str]:
    """Installed versions of the packages an artifact depends on at run time."""
    out = {}
    for dist in ("lwc", "apache-tvm", "apache-tvm-ffi"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def tensor(array, device=None):
    """numpy array -> TVM runtime tensor on ``device`` (CPU by default)."""
    return tvm.runtime.tensor(array, device or tvm.cpu())


def default_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """TVM's default Relax lowering pipeline for ``target``."""
    return relax.pipeline.get_default_pipeline(target)


def load_module(path: str):
    return tvm.runtime.load_module(path)


def virtual_machine(executable, device=None):
    return relax.VirtualMachine(executable, device or tvm.cpu())


def return_tensor_types(func) -> list[tuple[tuple | None, str]]:
    """(shape or None, dtype) of each tensor a Relax function returns, flattened.

    A shape holds ints, and the printed expression (str) of a symbolic dim
    (``"(W - 5) // 8 + 1"``); None where the rank is unknown.

    TVM 0.27 calls struct info ``ty`` (``relax.TensorType``/``relax.TupleType``).
    """
    out: list[tuple[tuple | None, str]] = []

    def visit(ty):
        if hasattr(ty, "fields"):
            for f in ty.fields:
                visit(f)
            return
        shape = None
        if getattr(ty, "shape", None) is not None and hasattr(ty.shape, "values"):
            shape = shape_dims(ty.shape)
        out.append((shape, str(ty.dtype)))

    visit(func.ret_ty)
    return out


def shape_var(name: str):
    """A symbolic dim for a Relax shape: ``tir.Var(name, "int64")``."""
    return tvm.tirx.Var(name, "int64")


def with_dim_bounds(mod, ranges: dict[str, tuple[int, int]]):
    """``mod`` with ``main`` annotated with the inclusive ranges of its symbolic dims
    (``tir_var_lower_bound`` / ``tir_var_upper_bound``, read by Relax's memory planning)."""
    func = mod["main"]
    func = func.with_attr("tir_var_lower_bound", {k: lo for k, (lo, _) in ranges.items()})
    func = func.with_attr("tir_var_upper_bound", {k: hi for k, (_, hi) in ranges.items()})
    out = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
    out["main"] = func
    return out


def shape_dims(shape) -> tuple:
    """A Relax shape's dims: ints, and the printed expression (str) of a symbolic one."""
    import re

    out = []
    for d in shape.values:
        try:
            out.append(int(d))
        except (TypeError, AttributeError):
            out.append(re.sub(r"T\.int64\((-?\d+)\)", r"\1", str(d)))
    return tuple(out)


def build(mod, target: tvm.target.Target):
    """Lower and code-generate a Relax module with TVM's default pipeline for ``target``
    (LLVM targets: with :func:`vectorizable_isnan`)."""
    with target, (vectorizable_isnan() if target.kind.name == "llvm" else contextlib.nullcontext()):
        return tvm.compile(mod, target=target, relax_pipeline=default_pipeline(target))


@contextlib.contextmanager
def vectorizable_isnan():
    """Within the block, TVM's VectorizeLoop keeps ``tirx.isnan`` a vector operation.

    TVM 0.27 registers no ``TVectorizable`` attribute for ``tirx.isnan``
    (src/tirx/op/builtin.cc), so a vectorized loop whose body calls it is lowered as a
    scalar loop, and LLVM re-vectorizes only the simplest of those. Every ReLU and Clip
    epilogue carries such a call (lwc's PreserveNaN and TVM's importer keep NaN as
    onnxruntime does: ``where(isnan(x), x, relu(x))``): a conv's fused epilogue with a
    residual add or an int8 requantization then ran one element at a time. LLVM's code
    generator emits a vector ``fcmp uno`` for it (CodeGenLLVM, ``builtin::isnan``);
    C-source targets (CUDA) print ``x != x``, which vector types do not support there, so
    the attribute is set only around LLVM builds. ``x != x`` in the TIR itself is no
    way out: TVM's simplifier folds it to false.
    """
    op = tvm.ir.Op.get("tirx.isnan")
    with _ISNAN["lock"]:  # builds in other threads share the attribute: count them
        _ISNAN["users"] += 1
        if _ISNAN["users"] == 1:
            _ISNAN["ours"] = not op.get_attr("TVectorizable")  # (has_attr: True for any key)
            if _ISNAN["ours"]:
                op.set_attr("TVectorizable", True)
    try:
        yield
    finally:
        with _ISNAN["lock"]:
            _ISNAN["users"] -= 1
            if _ISNAN["users"] == 0 and _ISNAN["ours"]:
                op.reset_attr("TVectorizable")


_ISNAN = {"lock": threading.Lock(), "users": 0, "ours": False}


# --------------------------------------------------------------------------- CUDA


def cuda_device(index: int = 0):
    """TVM's CUDA device ``index`` (``.exist`` is False without a GPU)."""
    return tvm.cuda(index)


def onnx_convert_map() -> dict:
    """TVM's ONNX importer's op converters, ``{op type: OnnxOpConverter subclass}``."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return onnx_frontend._get_convert_map()


@contextlib.contextmanager
def onnx_converters(extra: dict):
    """Within the block, TVM's ONNX importer also uses (and prefers) ``extra`` converters.

    TVM 0.27 has no registration API: the importer calls the module-level
    ``_get_convert_map()`` for every node, so it is swapped for the duration.
    """
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map
    onnx_frontend._get_convert_map = lambda: {**original(), **extra}
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original


def failing_op(mod, target) -> str | None:
    """``relax.OP on (types)`` for the first call of ``mod["main"]`` that TVM cannot legalize
    alone, or None. Used to name the op behind a lowering failure."""
    for binding in _bindings(mod["main"]):
        call = binding.value
        if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
            continue
        params = [relax.Var(f"a{i}", a.ty) for i, a in enumerate(call.args) if isinstance(a, relax.Var)]
        it = iter(params)
        args = [next(it) if isinstance(a, relax.Var) else a for a in call.args]
        bb = relax.BlockBuilder()
        try:
            with bb.function("f", params):
                bb.emit_func_output(bb.emit(relax.Call(call.op, args, call.attrs, call.sinfo_args)))
            with target:
                relax.transform.LegalizeOps()(bb.get())
        except Exception:  # noqa: BLE001  (this is the probe)
            types = ", ".join(str(a.ty).replace("R.", "") for a in call.args if hasattr(a, "ty"))
            return f"{call.op.name} on ({types})"
    return None


def _bindings(func):
    body = func.body
    for block in getattr(body, "blocks", []):
        yield from block.bindings


@contextlib.contextmanager
def mixed_precision_never(op_names):
    """Within the block, ToMixedPrecision keeps these Relax ops in fp32 (policy kNever)."""
    key, never = "TMixedPrecisionPolicy", 2
    saved = []
    for name in op_names:
        op = tvm.ir.Op.get(name)
        saved.append((op, op.get_attr(key)))
        op.set_attr(key, never, plevel=100)
    try:
        yield
    finally:
        for op, value in saved:
            op.reset_attr(key)
            if value is not None:
                op.set_attr(key, value)


def to_mixed_precision(mod, accumulate: str = "float32"):
    """TVM's automatic mixed precision (fp16) on a Relax module's dataflow blocks."""
    seq = tvm.transform.Sequential(
        [relax.transform.ConvertToDataflow(), relax.transform.ToMixedPrecision(out_dtype=accumulate)]
    )
    return seq(mod)


def packed_imports_blob(mod, is_system_lib: bool, prefix: str) -> bytes:
    """The ``__tvm_ffi__library_bin`` blob ``export_library`` would link into a library.

    TVM 0.27 only hands it out as C source (``ModulePackImportsToC``); the array is parsed back.
    """
    from tvm.runtime import _ffi_api

    src = str(_ffi_api.ModulePackImportsToC(mod, is_system_lib, prefix))
    body = src[src.index("= {") + 3:src.rindex("};")]
    return bytes(int(tok, 16) for tok in body.replace("\n", "").split(",") if tok.strip())
