"""Everything CUDA-specific: the device-code compiler, fp16, and the structural check.

**Device code.** TVM 0.27 lowers GPU kernels to CUDA C and keeps the *source
text* in the library (CUDA module format ``cuda``); its CUDA runtime compiles it when the
library is loaded, through the Python hook ``tvm_callback_cuda_compile`` (NVRTC from the
``cuda-bindings`` package, or nvcc). A Jetson running a C++ runner has neither, so lwc
compiles ahead of time: at export (:func:`pack_imports`) the kernels go through nvcc into
a fatbin holding SASS for the preset's ``sm_XY`` plus PTX for ``compute_XY`` (so a newer
GPU or driver can still JIT the PTX), and that replaces the source in the library. nvcc is found at ``--nvcc``/``$LWC_NVCC``, ``$CUDA_PATH/bin``,
``$CUDA_HOME/bin``, ``PATH`` and ``/usr/local/cuda/bin``.

**Toolkit vs. arch.** Each CUDA release compiles for a fixed set of GPUs (``nvcc
--list-gpu-code``). CUDA 13.0 starts at sm_75 (it dropped Maxwell sm_5x, Pascal sm_6x and
Volta sm_70/72): Jetson Nano (sm_53), TX2 (sm_62) and Xavier (sm_72) need a CUDA 12.x or
11.x nvcc, or CUDA 12's NVRTC + nvFatbin from pip (``lwc[cuda]``, :mod:`lwc.nvrtc`), which
:func:`check_toolkit` picks when nvcc lacks the arch; without either it says so before any
long work. TVM's other route, LLVM's
NVPTX backend (target kind ``nvptx``), needs no nvcc but is broken in the 0.27 wheel with
its LLVM 22: every kernel with a ``__syncthreads`` fails to verify
(``llvm.nvvm.barrier.cta.sync.aligned.all`` called with the wrong number of arguments).

**Structural check** (:func:`inspect_artifact`): without a GPU an artifact can still be
checked: the shared library's ELF machine, and the device images packed into its
``__tvm_ffi__library_bin`` blob (fatbin entries, cubin ELF with ``e_machine`` EM_CUDA=190,
PTX ``.target sm_XY``) for the preset's arch.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from lwc.errors import LwcError
from lwc.nvrtc import HALF_MACRO_FLAGS
from lwc.targets import Preset

#: Install hint printed when no usable nvcc is found.
INSTALL_HINT = (
    "install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads; Debian/Ubuntu: "
    "`apt-get install nvidia-cuda-toolkit`) and put nvcc on PATH, set CUDA_PATH, or pass --nvcc PATH"
)

#: The newest CUDA release that still compiles for each Jetson GPU (NVIDIA's CUDA
#: release notes: CUDA 13.0 removed offline compilation for sm_50..sm_72).
LAST_TOOLKIT_FOR_ARCH = {"sm_53": "12.x", "sm_62": "12.x", "sm_72": "12.x"}

EM_CUDA = 190
_FATBIN_MAGIC = 0xBA55ED50


# --------------------------------------------------------------------------- toolkit


@dataclass(frozen=True)
class Toolkit:
    """A CUDA toolkit's nvcc: its path, release and the GPU codes it can emit."""

    nvcc: str  # nvcc's path, or libnvrtc.so.12's for kind "nvrtc"
    version: tuple[int, int]
    codes: frozenset[str]  # e.g. {"sm_87", "compute_87", ...}
    kind: str = "nvcc"  # or "nvrtc": CUDA 12 NVRTC + nvFatbin from pip (lwc.nvrtc)

    @property
    def release(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def supports(self, arch: str) -> bool:
        return arch in self.codes

    def sm_range(self) -> str:
        sms = sorted((int(c[3:]) for c in self.codes if c.startswith("sm_") and c[3:].isdigit()))
        return f"sm_{sms[0]}..sm_{sms[-1]}" if sms else "no sm_XX"


def _nvcc_candidates(explicit: str | None) -> list[str]:
    out = [explicit, os.environ.get("LWC_NVCC")]
    for var in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(var):
            out.append(os.path.join(os.environ[var], "bin", "nvcc"))
    out += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    return [c for c in out if c]


def find_nvcc(explicit: str | None = None) -> str | None:
    """Path of the nvcc to use, or None. ``explicit`` (``--nvcc``) must exist if given."""
    if explicit:
        found = shutil.which(explicit)
        if not found:
            raise LwcError(f"--nvcc {explicit!r} not found; {INSTALL_HINT}")
        return found
    for cand in _nvcc_candidates(None):
        found = shutil.which(cand)
        if found:
            return found
    return None


@cache
def _probe(nvcc: str) -> Toolkit:
    def run(*args: str) -> str:
        return subprocess.run([nvcc, *args], capture_output=True, text=True, timeout=60,
                              check=True).stdout

    try:
        version_text = run("--version")
        codes = frozenset(run("--list-gpu-code").split() + run("--list-gpu-arch").split())
    except (subprocess.SubprocessError, OSError) as err:
        raise LwcError(f"{nvcc} does not run ({err}); {INSTALL_HINT}") from None
    match = re.search(r"release (\d+)\.(\d+)", version_text)
    version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    return Toolkit(nvcc=nvcc, version=version, codes=codes)


def find_toolkit(nvcc: str | None = None) -> Toolkit | None:
    """The CUDA toolkit lwc would use (see module docstring for the search order)."""
    path = find_nvcc(nvcc)
    return _probe(path) if path else None


#: Install hint for the pip route (CUDA 12 NVRTC; see lwc.nvrtc).
NVRTC_HINT = "or `pip install 'lwc[cuda]'` (CUDA 12 NVRTC, sm_50..sm_90 and newer)"


def nvrtc_toolkit() -> Toolkit | None:
    """CUDA 12 NVRTC + nvFatbin from the ``cuda`` extra's wheels, or None if not installed.
    ``LWC_NVRTC=0`` turns this route off."""
    if os.environ.get("LWC_NVRTC") == "0":
        return None
    from lwc import nvrtc

    lib = nvrtc.load()
    return Toolkit(nvcc=lib.path, version=lib.version, codes=lib.archs, kind="nvrtc") if lib else None


def check_toolkit(preset: Preset, nvcc: str | None = None) -> Toolkit:
    """The toolkit that compiles device code for ``preset``'s GPU, checked up front.

    Of nvcc and CUDA 12's NVRTC from pip (:func:`nvrtc_toolkit`), those that can emit the
    arch (CUDA 13's nvcc lacks sm_53/62/72); of those, the first whose major release is
    not newer than the board's (``Preset.board_cuda``: JetPack 6 = CUDA 12.6), so that the
    stock driver loads the device code — nvcc first. Where none fits the board, the first
    usable one (:meth:`CudaBuild.notes` says what the board then needs). ``LWC_NVRTC=1``
    uses NVRTC only, ``LWC_NVRTC=0`` never; an explicit ``--nvcc`` is never replaced.

    Raises:
        LwcError: no compiler found (with the install hint), or this nvcc cannot compile
            for the preset's arch (naming the CUDA release that still can).
    """
    arch = preset.target.get("arch", "")
    if os.environ.get("LWC_NVRTC") == "1" and not nvcc:
        toolkit = nvrtc_toolkit()
        if toolkit is None:
            raise LwcError("LWC_NVRTC=1 but CUDA 12 NVRTC is not installed: pip install 'lwc[cuda]'")
        if not toolkit.supports(arch):
            raise LwcError(f"NVRTC {toolkit.release} cannot compile for {arch} ({preset.name})")
        return toolkit
    toolkit = find_toolkit(nvcc)
    fallback = None if nvcc else nvrtc_toolkit()
    usable = [t for t in (toolkit, fallback) if t is not None and t.supports(arch)]
    if usable:
        fits = [t for t in usable if loads_on_board(t, preset)]
        return (fits or usable)[0]
    if toolkit is None:
        raise LwcError(f"no CUDA compiler (nvcc) for {preset.name} ({arch}) found; {INSTALL_HINT}, "
                       f"{NVRTC_HINT}")
    older = LAST_TOOLKIT_FOR_ARCH.get(arch, "an older release")
    raise LwcError(
        f"CUDA {toolkit.release}'s nvcc ({toolkit.nvcc}) cannot compile for {arch} "
        f"({preset.name}); it supports {toolkit.sm_range()}. Install CUDA {older} and "
        f"pass --nvcc /usr/local/cuda-12.6/bin/nvcc (or set CUDA_PATH), {NVRTC_HINT}"
    )


#: What the board needs to run the artifact (read from the wheels' ELF NEEDED entries).
RUNTIME_NOTE = (
    "TVM's CUDA runtime libtvm_runtime_cuda.so beside libtvm_runtime.so; the apache-tvm 0.27 "
    "aarch64 wheel's links libcudart.so.13 (CUDA 13 runtime); on JetPack 6 (CUDA 12.6) build it "
    "from the TVM sources with USE_CUDA=ON against the board's CUDA"
)


def loads_on_board(toolkit: Toolkit, preset: Preset) -> bool:
    """True when device code from ``toolkit`` loads with the board's stock driver.

    CUDA's minor-version compatibility holds within one major release (NVIDIA, "CUDA
    Compatibility", section 2.3): a CUDA 12.9 cubin loads on a JetPack 6 (CUDA 12.6)
    driver, a CUDA 13.0 one does not. Presets without ``board_cuda`` (the local ``cuda``
    GPU) have no constraint.
    """
    if not preset.board_cuda:
        return True
    return toolkit.version[0] <= int(preset.board_cuda.split(".")[0])


# --------------------------------------------------------------------------- device code


#: nvcc flags TVM's own nvcc route uses (tvm/support/nvcc.py), so kernels compile alike.
_NVCC_FLAGS = [
    "-O3",
    *HALF_MACRO_FLAGS,
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "--use_fast_math",
]


def compile_device_code(code: str, toolkit: Toolkit, arch: str,
                        ptx_limit: tuple[int, int] | None = None) -> bytes:
    """CUDA C -> fatbin with SASS for ``arch`` (sm_XY) and PTX for compute_XY
    (nvcc, or NVRTC + nvFatbin for a ``nvrtc`` toolkit).

    Args:
        ptx_limit: the newest PTX ISA the board's driver JITs (``lwc.ptx``); NVRTC's PTX
            gets its ``.version`` lowered to it where :func:`lwc.ptx.lower_version` proves
            that safe (NVRTC 12.9 writes 8.8 for every kernel; JetPack 6.2 takes 8.5).

    Raises:
        LwcError: nvcc failed (its first error line is kept).
    """
    if toolkit.kind == "nvrtc":
        from lwc import nvrtc, ptx

        lib = nvrtc.load()
        text, cubin = lib.compile(code, arch)
        if ptx_limit:
            text, _why = ptx.lower_version(text, ptx_limit)  # kept as is: the audit refuses
        return lib.fatbin_of(text, cubin, arch)
    num = arch.removeprefix("sm_")
    gencode = f"arch=compute_{num},code=[sm_{num},compute_{num}]"
    with tempfile.TemporaryDirectory(prefix="lwc-nvcc-") as tmp:
        src, out = Path(tmp, "kernels.cu"), Path(tmp, "kernels.fatbin")
        src.write_text(code)
        cmd = [toolkit.nvcc, "--fatbin", "-gencode", gencode, *_NVCC_FLAGS, "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            errors = [ln for ln in lines if "error" in ln.lower()] or lines or ["no output"]
            raise LwcError(f"nvcc ({toolkit.release}) failed on the generated kernels: {errors[0]}")
        return out.read_bytes()


@cache
def _compile_cached(source: str, toolkit: Toolkit, arch: str,
                    ptx_limit: tuple[int, int] | None = None) -> bytes:
    """Boards with one GPU arch but different CPUs (Orin, Orin Nano) share kernels."""
    return compile_device_code(source, toolkit, arch, ptx_limit)


# --------------------------------------------------------------------------- compile step


PRECISIONS = ("fp32", "fp16")


@dataclass
class CudaBuild:
    """The CUDA part of one compile: toolkit, arch and precision (see :func:`prepare`)."""

    preset: Preset
    toolkit: Toolkit
    precision: str = "fp32"

    def apply_precision(self, mod):
        """The Relax module in the requested precision (fp16: :func:`to_mixed_precision`)."""
        return to_mixed_precision(mod) if self.precision == "fp16" else mod

    def skipped_passes(self) -> tuple[str, ...]:
        """lwc passes that must not run before ToMixedPrecision (:data:`FP16_SKIPPED_PASSES`)."""
        return FP16_SKIPPED_PASSES if self.precision == "fp16" else ()

    def compile_source(self, source: str) -> bytes:
        """CUDA C from TVM -> fatbin for the preset's arch (cached per source text)."""
        from lwc import ptx

        limit = ptx.PTX_ISA_OF_CUDA.get(self.preset.board_cuda or "")
        return _compile_cached(source, self.toolkit, self.preset.target["arch"], limit)

    def pack_imports(self):
        """The ``fpack_imports`` hook for ``export_library`` (see :func:`pack_imports`)."""
        return pack_imports(self)

    def notes(self) -> list[str]:
        """Compile-output lines: what the board's driver needs when the toolkit is newer
        than the board's CUDA (:func:`loads_on_board`)."""
        if loads_on_board(self.toolkit, self.preset):
            return []
        board = self.preset.board_cuda
        return [
            f"device code built with CUDA {self.toolkit.release} ({self.toolkit.kind}) needs a CUDA "
            f"{self.toolkit.version[0]}.x driver; {self.preset.name} boards run CUDA {board} "
            f"(newest JetPack): for a stock board pass --nvcc with a CUDA {board} nvcc "
            f"(/usr/local/cuda-{board}/bin/nvcc on the board or in NVIDIA's L4T container)"
        ]

    def describe(self) -> dict:
        """The manifest's ``cuda`` section."""
        arch = self.preset.target["arch"]
        return {
            "arch": arch,
            "precision": self.precision,
            "device_code": f"fatbin: SASS {arch} + PTX compute_{arch.removeprefix('sm_')}",
            "compiler": self.toolkit.kind,
            "nvcc": self.toolkit.nvcc,
            "cuda_release": self.toolkit.release,
            "needs_driver": f"CUDA {self.toolkit.version[0]}.x or newer",
            "board_cuda": self.preset.board_cuda,
            "loads_on_stock_board": loads_on_board(self.toolkit, self.preset),
            "runtime": RUNTIME_NOTE if self.preset.board_cuda else None,
        }


def prepare(preset: Preset, precision: str = "fp32", nvcc: str | None = None) -> CudaBuild | None:
    """Check what a CUDA compile needs before any long work; None for CPU presets.

    Raises:
        LwcError: unknown precision, fp16 on a CPU preset, or no nvcc for the arch
            (:func:`check_toolkit`).
    """
    if precision not in PRECISIONS:
        raise LwcError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if not preset.is_gpu:
        if precision != "fp32":
            raise LwcError(f"--precision {precision} is for cuda targets; {preset.name} is a CPU target")
        return None
    return CudaBuild(preset, check_toolkit(preset, nvcc), precision)


# --------------------------------------------------------------------------- packing


#: TVM 0.27 keeps the kernels as CUDA *source* in the library (module format ``cuda``)
#: and compiles them when the library is loaded (``CUDAModuleNode::JitCompileFromSource``
#: calls ``tvm_callback_cuda_compile``): that needs Python, tvm.support.nvcc and nvcc or
#: NVRTC on the board. lwc compiles ahead of time instead: at export, the packed import
#: blob's CUDA module gets format ``fatbin`` and the nvcc output as its data (the CUDA
#: runtime loads fatbin, cubin or PTX with ``cuModuleLoadData``).


def _u64(data: bytes, pos: int) -> int:
    return struct.unpack_from("<Q", data, pos)[0]


def _lpstr(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def _compiled_cuda_payload(payload: bytes, compile_source) -> bytes:
    """A ``cuda`` module payload (fmt, function map, data) with source replaced by fatbin."""
    n = _u64(payload, 0)
    if payload[8:8 + n] != b"cuda":
        return payload  # already compiled
    # The data string is last; find its length prefix by walking back over the source.
    for start in range(8 + n, len(payload) - 8):
        if _u64(payload, start) == len(payload) - start - 8 and b"__global__" in payload[start + 8:start + 400000]:
            break
    else:
        raise LwcError("cannot find the kernel source in the packed CUDA module")
    fmap = payload[8 + n:start]
    source = payload[start + 8:].decode()
    return _lpstr(b"fatbin") + fmap + _lpstr(compile_source(source))


def recompile_library_bin(blob: bytes, compile_source) -> bytes:
    """tvm-ffi's packed import blob with every CUDA source module compiled."""
    pos = 8
    for _ in range(2):
        pos += 8 + 8 * _u64(blob, pos)
    out = bytearray(blob[8:pos])
    while pos < len(blob):
        n = _u64(blob, pos)
        key = blob[pos + 8:pos + 8 + n]
        out += blob[pos:pos + 8 + n]
        pos += 8 + n
        if key == b"_lib":
            continue
        n = _u64(blob, pos)
        payload = blob[pos + 8:pos + 8 + n]
        pos += 8 + n
        out += _lpstr(_compiled_cuda_payload(payload, compile_source) if key == b"cuda" else payload)
    return struct.pack("<Q", len(out)) + bytes(out)


_ASM = """\
.section .rodata
.globl {sym}
.type {sym}, %object
.p2align 4
{sym}:
.incbin "{path}"
.size {sym}, {size}
.section .note.GNU-stack,"",%progbits
"""


def pack_imports(build: "CudaBuild"):
    """An ``fpack_imports`` hook for ``export_library`` that links compiled device code."""
    from lwc import tvm_compat

    def pack(mod, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
        blob = recompile_library_bin(
            tvm_compat.packed_imports_blob(mod, is_system_lib, prefix), build.compile_source
        )
        bin_path = Path(workspace_dir, f"{prefix}devc.bin")
        bin_path.write_bytes(blob)
        asm_path = Path(workspace_dir, f"{prefix}devc.S")
        sym = f"{prefix}__tvm_ffi__library_bin"
        asm_path.write_text(_ASM.format(sym=sym, path=bin_path, size=len(blob)))
        return str(asm_path)

    return pack


# --------------------------------------------------------------------------- fp16


#: Passes that emit ``call_tir`` kernels (NaN-safe HardSwish/HardSigmoid, matmul reading a
#: transposed operand), which TVM's
#: ToMixedPrecision cannot type ("Expected TensorType, but got R.Callable"). With fp16 they
#: are skipped; TVM's FuseOps still fuses the elementwise chain into the conv before it.
FP16_SKIPPED_PASSES = ("FuseHardSwish", "FuseHardSigmoid", "FuseTransposeIntoMatmul")

#: Ops TVM's ToMixedPrecision would run in fp16 that lwc keeps in fp32 (norm reductions).
#: softmax, mean, sum, batch_norm have no policy and already stay fp32.
KEEP_FP32 = ("relax.nn.layer_norm", "relax.nn.group_norm", "relax.nn.rms_norm")


def clip_bounds_as_tensors(mod):
    """``R.clip(x, lo, hi)`` -> ``minimum(maximum(x, lo), hi)`` with constant tensor bounds.

    ToMixedPrecision expects every call argument to be a tensor and fails on clip's
    PrimValue bounds ("Expected TensorType, but got T.float64"). Same values: clip is
    defined as min(max(x, lo), hi) (ONNX Clip-13).
    """
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    from lwc.passes._support import rewrite_functions

    x, lo, hi = wildcard(), wildcard(), wildcard()
    pattern = is_op("relax.clip")(x, lo, hi)

    def bound(expr, dtype):
        value = getattr(expr.value, "value", expr.value)
        return relax.const(float(value), dtype)

    def rewrite(expr, m):
        dtype = str(m[x].ty.dtype)
        low = relax.op.maximum(m[x], bound(m[lo], dtype))
        return relax.op.minimum(low, bound(m[hi], dtype))

    return rewrite_functions(mod, lambda func: rewrite_call(pattern, rewrite, func))


def to_mixed_precision(mod):
    """fp16 compute with fp32 accumulation; softmax and norm reductions stay fp32.

    TVM's ``ToMixedPrecision``: conv2d/matmul ("always") take fp16 inputs and accumulate
    in fp32, elementwise ops ("follow") run in the dtype of their inputs, ops without a
    policy (softmax, mean, sum, ...) run in fp32. The norms in :data:`KEEP_FP32` are
    "follow" in TVM; they are switched to "never" for this pass only.
    """
    from lwc import tvm_compat

    mod = clip_bounds_as_tensors(mod)
    with tvm_compat.mixed_precision_never(KEEP_FP32):
        try:
            return tvm_compat.to_mixed_precision(mod, accumulate="float32")
        except Exception as err:  # TVM raises InternalError with C++ context
            last = [ln for ln in str(err).splitlines() if ln.strip()][-1:] or [repr(err)]
            raise LwcError(f"--precision fp16: TVM's ToMixedPrecision failed on this model: {last[0]}") from None


# --------------------------------------------------------------------------- structural check


@dataclass
class DeviceImage:
    """One device-code image found in an artifact."""

    kind: str  # "sass" (cubin ELF), "ptx"
    arch: str  # "sm_87"
    container: str  # "fatbin", "cubin", "ptx"

    def __str__(self) -> str:
        return f"{self.kind} {self.arch} ({self.container})"


@dataclass
class StructuralReport:
    """What :func:`inspect_artifact` found."""

    path: str
    elf_machine: str
    modules: list[str] = field(default_factory=list)  # import type keys, e.g. ["relax.VMExecutable", "cuda"]
    cuda_format: str | None = None  # "fatbin", "cubin", "ptx", or "cuda" (source!)
    images: list[DeviceImage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "elf_machine": self.elf_machine,
            "modules": self.modules,
            "cuda_format": self.cuda_format,
            "device_images": [str(i) for i in self.images],
            "problems": self.problems,
            "ok": self.ok,
        }

    def lines(self) -> list[str]:
        out = [f"host ELF machine: {self.elf_machine}",
               f"packed modules: {', '.join(self.modules) or '(none)'}",
               f"CUDA module format: {self.cuda_format}",
               f"device images: {', '.join(map(str, self.images)) or '(none)'}"]
        return out + [f"problem: {p}" for p in self.problems]


_ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "arm", EM_CUDA: "cuda"}


def _elf_machine(data: bytes) -> int:
    return struct.unpack_from("<H", data, 18)[0]


def _dynamic_symbol_offset(data: bytes, name: bytes) -> int | None:
    """File offset of a dynamic symbol's data in a little-endian ELF64 shared object."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for sh in sections:
        if sh[1] != 11:  # SHT_DYNSYM
            continue
        strtab = sections[sh[6]]
        for off in range(sh[4], sh[4] + sh[5], 24):
            st_name, _info, _other, st_shndx, st_value, _size = struct.unpack_from("<IBBHQQ", data, off)
            end = data.index(b"\0", strtab[4] + st_name)
            if data[strtab[4] + st_name:end] == name and st_shndx:
                target = sections[st_shndx]  # (name, type, flags, addr, offset, ...)
                return st_value - target[3] + target[4]
    return None


def _unpack_library_bin(data: bytes, offset: int) -> list[tuple[str, bytes]]:
    """(type key, payload) of each module in tvm-ffi's packed import blob.

    Layout: u64 size, u64-vector import-tree row pointers, u64-vector child indices,
    then per module a u64-length key and (except ``_lib``) a u64-length payload.
    """
    def u64(pos: int) -> int:
        return struct.unpack_from("<Q", data, pos)[0]

    size, pos = u64(offset), offset + 8
    end = pos + size
    for _ in range(2):
        pos += 8 + 8 * u64(pos)
    modules = []
    while pos < end:
        n = u64(pos)
        key = data[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        if key == "_lib":
            modules.append((key, b""))
            continue
        n = u64(pos)
        modules.append((key, data[pos + 8:pos + 8 + n]))
        pos += 8 + n
    return modules


def _cubin_arch(elf: bytes) -> str:
    """sm_XY of a CUDA ELF (EM_CUDA): e_flags holds the SM number (bits 0-7 up to ELF ABI
    version 7, bits 8-15 from version 8, CUDA 13)."""
    flags, = struct.unpack_from("<I", elf, 0x30)
    abi = elf[8]
    sm = (flags >> 8) & 0xFF if abi >= 8 else flags & 0xFF
    return f"sm_{sm}"


def _ptx_arch(ptx: bytes) -> str:
    match = re.search(rb"\.target\s+(sm_\w+)", ptx)
    return match.group(1).decode() if match else "sm_?"


def _fatbin_images(blob: bytes, start: int) -> list[DeviceImage]:
    """Entries of a fatbin at ``blob[start:]`` (kind 1 = PTX, 2 = ELF; SM at entry offset 28)."""
    _magic, _version, header, size = struct.unpack_from("<IHHQ", blob, start)
    pos, end = start + header, start + header + size
    images = []
    while pos + 32 <= end:
        kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", blob, pos)
        sm, = struct.unpack_from("<I", blob, pos + 28)
        images.append(DeviceImage("ptx" if kind == 1 else "sass", f"sm_{sm}", "fatbin"))
        if kind == 2:
            body = blob[pos + entry_header:pos + entry_header + 64]
            if body[:4] == b"\x7fELF" and _elf_machine(body) != EM_CUDA:
                images[-1].kind = "elf?"
        pos += entry_header + payload
        if entry_header == 0:
            break
    return images


def _device_images(payload: bytes) -> list[DeviceImage]:
    images = []
    for match in re.finditer(re.escape(struct.pack("<I", _FATBIN_MAGIC)), payload):
        images += _fatbin_images(payload, match.start())
    if not images:
        for match in re.finditer(rb"\x7fELF", payload):
            elf = payload[match.start():match.start() + 64]
            if len(elf) == 64 and _elf_machine(elf) == EM_CUDA:
                images.append(DeviceImage("sass", _cubin_arch(elf), "cubin"))
        if b".target" in payload and b".version" in payload:
            images.append(DeviceImage("ptx", _ptx_arch(payload), "ptx"))
    return images


def _cuda_format(payload: bytes) -> str:
    n, = struct.unpack_from("<Q", payload, 0)
    return payload[8:8 + n].decode(errors="replace")


def inspect_artifact(path: str | os.PathLike, *, machine: str | None = None,
                     arch: str | None = None) -> StructuralReport:
    """Check an artifact without running it: host ELF machine and embedded device code.

    Args:
        machine: expected host machine (``aarch64``, ``x86_64``); None skips the check.
        arch: expected GPU arch (``sm_87``): a SASS image for it must be present.
    Raises:
        LwcError: the file is not an ELF shared object.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise LwcError(f"{Path(path).name} is not a 64-bit ELF shared object")
    report = StructuralReport(str(path), _ELF_MACHINES.get(_elf_machine(data), str(_elf_machine(data))))
    if machine and report.elf_machine != machine:
        report.problems.append(f"host code is {report.elf_machine}, expected {machine}")
    offset = _dynamic_symbol_offset(data, b"__tvm_ffi__library_bin")
    if offset is None:
        report.problems.append("no __tvm_ffi__library_bin: not a TVM-exported library")
        return report
    for key, payload in _unpack_library_bin(data, offset):
        report.modules.append(key)
        if key == "cuda":
            report.cuda_format = _cuda_format(payload)
            report.images += _device_images(payload)
    if arch:
        _check_device_code(report, arch)
    return report


def _check_device_code(report: StructuralReport, arch: str) -> None:
    if report.cuda_format is None:
        report.problems.append("no CUDA module packed in the library")
    elif report.cuda_format == "cuda":
        report.problems.append("the CUDA module holds kernel source, not compiled device code")
    sass = [i for i in report.images if i.kind == "sass"]
    if not any(i.arch == arch for i in sass):
        found = ", ".join(sorted({i.arch for i in sass})) or "none"
        report.problems.append(f"no SASS for {arch} (found: {found})")


def expected_layout(manifest: dict) -> tuple[str, str | None]:
    """(host machine, GPU arch or None) an artifact's manifest promises."""
    target = manifest["target"]
    arch = target["tvm"].get("arch") if target["tvm"].get("kind") == "cuda" else None
    return target["arch"], arch


# --------------------------------------------------------------------------- GPU presence


@cache
def gpu_available() -> bool:
    """True when a CUDA GPU is visible to TVM's runtime on this machine."""
    from lwc import tvm_compat

    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return bool(tvm_compat.cuda_device().exist)
    except Exception:  # a runtime without CUDA support raises
        return False


def runs_here(machine: str) -> bool:
    """True when a CUDA artifact with ``machine`` host code can run on this machine."""
    import platform

    return machine == platform.machine() and gpu_available()
