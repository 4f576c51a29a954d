"""lwc_runtime: run a model compiled by lwc from Python, with numpy only.

A thin ctypes layer over the C API in ``lwc_runtime.h`` (``liblwc_runtime.so``), so the
board and the development machine behave alike, checks included::

    import numpy as np, lwc_runtime
    m = lwc_runtime.load("det.so")          # det.json must lie beside it
    m.inputs   # [TensorInfo(name='x', dtype='float32', shape=(1, 3, 640, 640))]
               # (-1 for a dynamic dim; m.dim_ranges(0) gives each dim's (lo, hi))
    y = m(x)                                # one output -> an array; several -> a tuple
    ys = m.run(x=x)                         # always a list, inputs by name or position

Where ``liblwc_runtime.so`` is looked for, first match wins (one of the machine's own
architecture): ``$LWC_RUNTIME_LIB``; ``lib/`` beside the model; ``lib/`` beside this file
(an lwc bundle); on a development machine with lwc installed, lwc's host build of it.

Every failure raises :class:`LwcRuntimeError` carrying the C status name and message
(wrong shape or dtype, missing file, version or CPU-feature mismatch, ...).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["load", "Model", "TensorInfo", "LwcRuntimeError", "runtime_version", "library_path"]

_DTYPES = {
    1: "float16", 2: "float32", 3: "float64", 4: "int8", 5: "int16", 6: "int32", 7: "int64",
    8: "uint8", 9: "uint16", 10: "uint32", 11: "uint64", 12: "bool",
}
_DTYPE_CODES = {name: code for code, name in _DTYPES.items()}
_ELF_MACHINES = {"x86_64": 62, "aarch64": 183}
_LIB_NAME = "liblwc_runtime.so"


class LwcRuntimeError(RuntimeError):
    """A failed lwc_runtime call: ``status`` is the C status name (``LWC_ERR_...``)."""

    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class TensorInfo(NamedTuple):
    name: str
    dtype: str
    shape: tuple[int, ...]


class _CTensorInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_int),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("nbytes", ctypes.c_size_t),
    ]

    def to_info(self) -> TensorInfo:
        shape = tuple(int(self.shape[i]) for i in range(self.ndim))
        return TensorInfo(self.name.decode(), _DTYPES.get(self.dtype, "unknown"), shape)


_lib: ctypes.CDLL | None = None
_lib_path: Path | None = None


def _elf_machine(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return None
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def _candidates(model_path: Path | None) -> list[Path]:
    out = []
    if os.environ.get("LWC_RUNTIME_LIB"):
        out.append(Path(os.environ["LWC_RUNTIME_LIB"]))
    if model_path is not None:
        out.append(model_path.resolve().parent / "lib" / _LIB_NAME)
    out.append(Path(__file__).resolve().parent / "lib" / _LIB_NAME)
    return out


def _dev_machine_library() -> Path | None:
    """lwc's host build of liblwc_runtime.so, when lwc (the compiler) is installed."""
    try:
        from lwc import bundle
        from lwc.errors import LwcError
    except ImportError:
        return None
    try:
        return bundle.build_runtime_library()
    except LwcError as err:
        raise LwcRuntimeError(
            "LWC_ERR_FILE_NOT_FOUND", f"building {_LIB_NAME} failed: {err}"
        ) from None


def _find_library(model_path: Path | None) -> Path:
    want = _ELF_MACHINES.get(platform.machine())
    tried = []
    for path in _candidates(model_path):
        if path.is_file() and (want is None or _elf_machine(path) == want):
            return path
        tried.append(str(path))
    dev = _dev_machine_library()
    if dev is not None:
        return dev
    raise LwcRuntimeError(
        "LWC_ERR_FILE_NOT_FOUND",
        f"no {_LIB_NAME} for {platform.machine()} found (tried {', '.join(tried)}); "
        "set LWC_RUNTIME_LIB or run from an lwc bundle",
    )


def _declare(lib: ctypes.CDLL) -> None:
    c = ctypes
    model_p, info_p, i32_p = c.c_void_p, c.POINTER(_CTensorInfo), c.POINTER(c.c_int32)
    sigs = {
        "lwc_runtime_version": ([], c.c_char_p),
        "lwc_last_error": ([], c.c_char_p),
        "lwc_status_name": ([c.c_int], c.c_char_p),
        "lwc_model_load": ([c.c_char_p, c.POINTER(c.c_void_p)], c.c_int),
        "lwc_model_free": ([model_p], c.c_int),
        "lwc_model_num_inputs": ([model_p, i32_p], c.c_int),
        "lwc_model_num_outputs": ([model_p, i32_p], c.c_int),
        "lwc_model_input_info": ([model_p, c.c_int32, info_p], c.c_int),
        "lwc_model_output_info": ([model_p, c.c_int32, info_p], c.c_int),
        "lwc_model_set_input": (
            [model_p, c.c_int32, c.c_int, c.c_int32, c.POINTER(c.c_int64), c.c_void_p, c.c_size_t],
            c.c_int,
        ),
        "lwc_model_input_dim_range": (
            [model_p, c.c_int32, c.c_int32, c.POINTER(c.c_int64), c.POINTER(c.c_int64)], c.c_int,
        ),
        "lwc_model_run": ([model_p], c.c_int),
        "lwc_model_get_output": ([model_p, c.c_int32, c.c_void_p, c.c_size_t], c.c_int),
    }
    for name, (argtypes, restype) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype


def _library(model_path: Path | None = None) -> ctypes.CDLL:
    """Load liblwc_runtime.so once per process (the first one found is kept)."""
    global _lib, _lib_path
    if _lib is None:
        path = _find_library(model_path)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as err:
            raise LwcRuntimeError("LWC_ERR_RUNTIME", f"cannot load {path}: {err}") from None
        _declare(lib)
        _lib, _lib_path = lib, path
    return _lib


def _check(status: int) -> None:
    if status != 0:
        lib = _library()
        raise LwcRuntimeError(lib.lwc_status_name(status).decode(), lib.lwc_last_error().decode())


def runtime_version() -> str:
    """The loaded C runtime's version line (lwc, apache-tvm and apache-tvm-ffi, arch)."""
    return _library().lwc_runtime_version().decode()


def library_path() -> Path:
    """Path of the liblwc_runtime.so in use."""
    _library()
    return _lib_path


class Model:
    """A loaded model. Call it with arrays (positional, or by input name).

    One Model may be shared by threads: a run (set inputs, run, copy outputs) holds the
    model's lock, so runs on one Model take turns; Models of their own run at once.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        self._lock = threading.Lock()
        self._lib = _library(path)
        handle = ctypes.c_void_p()
        _check(self._lib.lwc_model_load(os.fsencode(path), ctypes.byref(handle)))
        self._handle = handle
        self.path = path
        lib = self._lib
        self.inputs = [
            self._info(lib.lwc_model_input_info, i) for i in range(self._count("inputs"))
        ]
        self.outputs = [
            self._info(lib.lwc_model_output_info, i) for i in range(self._count("outputs"))
        ]

    def dim_ranges(self, index: int) -> list[tuple[int, int]]:
        """The (lo, hi) values input ``index`` accepts in each dim, both inclusive: a fixed
        dim gives (d, d), a dynamic one (shape -1: ``--input-shape x:1,3,48,96..1280``) its
        range.

        Raises:
            LwcRuntimeError: index out of range, or the model is closed.
        """
        lo, hi = ctypes.c_int64(), ctypes.c_int64()
        out = []
        for axis in range(len(self.inputs[index].shape)):
            _check(self._lib.lwc_model_input_dim_range(self._live(), index, axis, ctypes.byref(lo),
                                                       ctypes.byref(hi)))
            out.append((lo.value, hi.value))
        return out

    def _count(self, kind: str) -> int:
        n = ctypes.c_int32()
        _check(getattr(self._lib, f"lwc_model_num_{kind}")(self._live(), ctypes.byref(n)))
        return n.value

    def _info(self, fn, index: int) -> TensorInfo:
        info = _CTensorInfo()
        _check(fn(self._live(), index, ctypes.byref(info)))
        return info.to_info()

    def _live(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise LwcRuntimeError("LWC_ERR_INVALID_ARGUMENT", "model is closed")
        return self._handle

    def _ordered(self, args, kwargs) -> list:
        names = [i.name for i in self.inputs]
        if len(args) > len(names):
            raise LwcRuntimeError(
                "LWC_ERR_INVALID_ARGUMENT", f"{len(args)} inputs given, the model has {len(names)}"
            )
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise LwcRuntimeError(
                    "LWC_ERR_INVALID_ARGUMENT",
                    f"no input named {key!r}; the model's inputs: {', '.join(names)}",
                )
            if key in given:
                raise LwcRuntimeError("LWC_ERR_INVALID_ARGUMENT", f"input {key!r} given twice")
            given[key] = value
        missing = [n for n in names if n not in given]
        if missing:
            raise LwcRuntimeError("LWC_ERR_NOT_READY", f"input(s) not given: {', '.join(missing)}")
        return [given[n] for n in names]

    def run(self, *args, **kwargs) -> list[np.ndarray]:
        """Run once; returns every output (new arrays) in the model's order."""
        with self._lock:  # the C handle keeps inputs and outputs between calls
            return self._run(self._ordered(args, kwargs))

    def _run(self, values: list) -> list[np.ndarray]:
        handle = self._live()
        for index, (spec, value) in enumerate(zip(self.inputs, values)):
            array = np.asarray(value)
            want = np.dtype(spec.dtype)
            if array.dtype != want and array.dtype.kind == want.kind:
                array = array.astype(want)  # e.g. float64 -> float32, as `lwc run` does
            array = np.asarray(array, order="C")  # ascontiguousarray would make 0-d 1-d
            code = _DTYPE_CODES.get(array.dtype.name, 0)
            shape = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
            _check(self._lib.lwc_model_set_input(
                handle, index, code, array.ndim, shape, array.ctypes.data_as(ctypes.c_void_p),
                array.nbytes,
            ))
        _check(self._lib.lwc_model_run(handle))
        outputs = []
        for index in range(len(self.outputs)):
            info = self._info(self._lib.lwc_model_output_info, index)
            out = np.empty(info.shape, dtype=info.dtype)
            _check(self._lib.lwc_model_get_output(
                handle, index, out.ctypes.data_as(ctypes.c_void_p), out.nbytes
            ))
            outputs.append(out)
        return outputs

    def __call__(self, *args, **kwargs):
        """Like :meth:`run`, but a single-output model returns the array itself."""
        outputs = self.run(*args, **kwargs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def close(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ failed before the handle existed
            return
        with lock:
            if getattr(self, "_handle", None) is not None:
                self._lib.lwc_model_free(self._handle)
                self._handle = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"lwc_runtime.Model({str(self.path)!r}, inputs={self.inputs}, outputs={self.outputs})"
        )


def load(path: str | os.PathLike) -> Model:
    """Load NAME.so (with NAME.json beside it); raises LwcRuntimeError on any failure."""
    return Model(path)
