"""CUDA 12 NVRTC + nvFatbin from pip wheels: device code for GPUs CUDA 13's nvcc dropped.

CUDA 13 compiles only for sm_75 and newer; Jetson Nano (sm_53), TX2 (sm_62) and Xavier
(sm_72) need CUDA 12. NVIDIA publishes CUDA 12's runtime compiler and fatbin library as
wheels (``pip install lwc[cuda]``: ``nvidia-cuda-nvrtc-cu12``, ``nvidia-nvfatbin-cu12``,
``nvidia-cuda-cccl-cu12`` for the ``<cuda/std/...>`` headers TVM's kernels include under
NVRTC, ``nvidia-cuda-runtime-cu12`` for ``cuda_fp16.h``, which fp16 kernels include). No GPU is needed: NVRTC emits PTX and SASS (cubin) for any arch it supports
(12.9: sm_50..sm_120) and nvFatbin packs both into one fatbin, the same container nvcc
produces. The libraries are loaded with ctypes; nothing else is imported.
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import cache
from pathlib import Path

from lwc.errors import LwcError

#: Enable the half/bfloat16 operators TVM's generated kernels use; shared by the nvcc
#: route (lwc.cuda) and NVRTC, as in TVM's own tvm/support/nvcc.py.
HALF_MACRO_FLAGS = [
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
]

#: Flags matching cuda.py's nvcc flags (NVRTC spells some differently, drops host-only ones).
NVRTC_FLAGS = [
    "-std=c++17",
    *HALF_MACRO_FLAGS,
    "--use_fast_math",
    "-w",  # sm < 75 "deprecated" and __shfl_* deprecation warnings on every kernel
]


def _package_dir(name: str) -> Path | None:
    """Directory of a namespace package such as ``nvidia.cuda_nvrtc`` (None if absent)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


class Nvrtc:
    """ctypes bindings to libnvrtc.so.12 and libnvfatbin.so.12 from the pip wheels."""

    def __init__(self, nvrtc_dir: Path, fatbin_dir: Path, includes: list[Path]):
        self.path = str(nvrtc_dir / "lib" / "libnvrtc.so.12")
        self.lib = ctypes.CDLL(self.path)
        self.fatbin = ctypes.CDLL(str(fatbin_dir / "lib" / "libnvfatbin.so.12"))
        self.includes = includes
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        self.fatbin.nvFatbinGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "version")
        self.version = (major.value, minor.value)
        count = ctypes.c_int()
        self._check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)), "archs")
        archs = (ctypes.c_int * count.value)()
        self._check(self.lib.nvrtcGetSupportedArchs(archs), "archs")
        self.archs = frozenset(f"sm_{a}" for a in archs)

    def _check(self, status: int, what: str) -> None:
        if status:
            raise LwcError(f"NVRTC {what}: {self.lib.nvrtcGetErrorString(status).decode()}")

    def _check_fatbin(self, status: int, what: str) -> None:
        if status:
            raise LwcError(f"nvFatbin {what}: {self.fatbin.nvFatbinGetErrorString(status).decode()}")

    def _output(self, prog, kind: str) -> bytes:
        size = ctypes.c_size_t()
        self._check(getattr(self.lib, f"nvrtcGet{kind}Size")(prog, ctypes.byref(size)), kind)
        buf = ctypes.create_string_buffer(size.value)
        self._check(getattr(self.lib, f"nvrtcGet{kind}")(prog, buf), kind)
        return buf.raw

    def compile(self, code: str, arch: str) -> tuple[bytes, bytes]:
        """CUDA C -> (PTX, cubin) for ``arch`` (sm_XY)."""
        prog = ctypes.c_void_p()
        self._check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), code.encode(), b"kernels.cu",
                                                0, None, None), "create")
        try:
            opts = [f"-arch={arch}", *(f"-I{d}" for d in self.includes), *NVRTC_FLAGS]
            argv = (ctypes.c_char_p * len(opts))(*(o.encode() for o in opts))
            status = self.lib.nvrtcCompileProgram(prog, len(opts), argv)
            if status:
                size = ctypes.c_size_t()
                self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
                log = ctypes.create_string_buffer(size.value)
                self.lib.nvrtcGetProgramLog(prog, log)
                lines = [ln for ln in log.value.decode(errors="replace").splitlines() if ln.strip()]
                errors = [ln for ln in lines if "error" in ln.lower()] or lines or ["no log"]
                raise LwcError(f"NVRTC {self.release} failed on the generated kernels: {errors[0]}")
            ptx = self._output(prog, "PTX").rstrip(b"\0") + b"\0"
            return ptx, self._output(prog, "CUBIN")
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def fatbin_of(self, ptx: bytes, cubin: bytes, arch: str) -> bytes:
        """A fatbin holding SASS (cubin) and PTX for ``arch``."""
        num = arch.removeprefix("sm_").encode()
        handle = ctypes.c_void_p()
        self._check_fatbin(self.fatbin.nvFatbinCreate(ctypes.byref(handle), None, ctypes.c_size_t(0)),
                           "create")
        try:
            self._check_fatbin(self.fatbin.nvFatbinAddCubin(
                handle, cubin, ctypes.c_size_t(len(cubin)), num, b"kernels"), "add cubin")
            self._check_fatbin(self.fatbin.nvFatbinAddPTX(
                handle, ptx, ctypes.c_size_t(len(ptx)), num, b"kernels", None), "add PTX")
            size = ctypes.c_size_t()
            self._check_fatbin(self.fatbin.nvFatbinSize(handle, ctypes.byref(size)), "size")
            buf = ctypes.create_string_buffer(size.value)
            self._check_fatbin(self.fatbin.nvFatbinGet(handle, buf), "get")
            return buf.raw
        finally:
            self.fatbin.nvFatbinDestroy(ctypes.byref(handle))

    @property
    def release(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


@cache
def load() -> Nvrtc | None:
    """CUDA 12 NVRTC + nvFatbin + CCCL headers from the pip wheels, or None if any is missing."""
    nvrtc_dir = _package_dir("nvidia.cuda_nvrtc")
    fatbin_dir = _package_dir("nvidia.nvfatbin")
    cccl_dir = _package_dir("nvidia.cuda_cccl")
    if not (nvrtc_dir and fatbin_dir and cccl_dir):
        return None
    if not (nvrtc_dir / "lib" / "libnvrtc.so.12").is_file() or not (cccl_dir / "include").is_dir():
        return None
    includes = [cccl_dir / "include"]
    runtime_dir = _package_dir("nvidia.cuda_runtime")  # cuda_fp16.h for fp16 kernels
    if runtime_dir and (runtime_dir / "include" / "cuda_fp16.h").is_file():
        includes.append(runtime_dir / "include")
    try:
        return Nvrtc(nvrtc_dir, fatbin_dir, includes)
    except OSError:
        return None
