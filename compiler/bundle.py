"""Deployable bundles: the model plus everything needed to run it on the board.

``lwc compile det.onnx --target arm64 --bundle -o deploy/det`` writes::

    deploy/det/
      det.so, det.json          the artifact and its manifest
      lib/                      libtvm_runtime.so, libtvm_ffi.so (the target's, same pinned
                                versions: from the apache-tvm wheels for that architecture)
                                and liblwc_runtime.so (lwc's C API, built here for the target)
      include/lwc_runtime.h     the C API (C99)
      example/                  run_model.c + Makefile + CMakeLists.txt
      lwc_runtime.py            Python loader (numpy + ctypes over liblwc_runtime.so)
      README.md                 how to build and run, with the model's inputs and outputs

Every shared library carries an ``$ORIGIN``-relative rpath, so the example and the
Python loader run without ``LD_LIBRARY_PATH``. The folder is assembled beside the
destination and renamed into place, so a half-written bundle is never seen.

:func:`build_runtime_library` builds ``liblwc_runtime.so`` from ``runtime/lwc_runtime.cc``
for the target (cached under ``$LWC_CACHE_DIR``); the Python loader on the development
machine uses the host build of it.

Static linking (one executable, no dynamic loader): not offered, because TVM 0.27 cannot
give it from its wheels. The model half works: ``relax.build(mod, target,
system_lib=True).export_library("m.tar")`` yields ``lib0.o`` (kernels) and ``devc.o`` (the
VM bytecode, registered from a static constructor through
``TVMFFIEnvModRegisterSystemLibSymbol`` and found again with the global ``ffi.SystemLib``),
which link into an executable. But the Relax VM, its builtins and the FFI exist only as
``libtvm_runtime.so`` / ``libtvm_ffi.so``: the apache-tvm and apache-tvm-ffi wheels (x86-64
and aarch64) ship no static archives, so such an executable still needs the dynamic
loader and those two libraries. A fully static build needs TVM's runtime built from
source for the board (``BUILD_STATIC_RUNTIME=ON``), which lwc does not fetch or build.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lwc.errors import LwcError

RUNTIME_SOURCE_DIR = Path(__file__).resolve().parent / "runtime"
_CXXFLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden")
#: Only the lwc_* C API is exported (runtime/lwc_runtime.map): with the definitions at the
#: end of lwc_runtime.cc the library then needs no GLIBCXX_x newer than 3.4.21, where the
#: cross g++ 12 would ask for GLIBCXX_3.4.29, which Ubuntu 18.04/20.04 and Raspberry Pi OS
#: bullseye lack (lwc.audit checks it). -static-libstdc++ is no way out: the Debian 12
#: libstdc++.a needs glibc 2.36.
_LDFLAGS = (f"-Wl,--version-script={RUNTIME_SOURCE_DIR / 'lwc_runtime.map'}",)
_EXAMPLE_FILES = ("run_model.c", "Makefile", "CMakeLists.txt")
_RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")


@dataclass(frozen=True)
class RuntimeDir:
    """Where a target architecture's TVM runtime libraries and tvm-ffi headers are."""

    lib_dirs: tuple[Path, ...]  # holding libtvm_runtime.so and libtvm_ffi.so
    include: Path  # tvm/ffi/*.h and dlpack/dlpack.h

    def library(self, name: str) -> Path:
        for d in self.lib_dirs:
            if (d / name).is_file():
                return d / name
        raise LwcError(f"{name} not found in {', '.join(map(str, self.lib_dirs))}")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LwcError(f"Python package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def runtime_dir(arch: str) -> RuntimeDir:
    """The TVM runtime for ``arch``: the installed wheels natively, else the fetched ones.

    Raises:
        LwcError: an architecture lwc has no runtime for, or the fetch failed.
    """
    if arch == platform.machine():
        tvm_dir, ffi_dir = _package_dir("tvm"), _package_dir("tvm_ffi")
        return RuntimeDir((tvm_dir / "lib", ffi_dir / "lib"), ffi_dir / "include")
    if arch == "aarch64":
        from lwc import cross_runtime

        root = cross_runtime.aarch64_runtime_dir()
        return RuntimeDir((root / "lib",), root / "include")
    raise LwcError(
        f"no TVM runtime for {arch}: bundles are made for aarch64 and this machine "
        f"({platform.machine()})"
    )


def _cache_root() -> Path:
    env = os.environ.get("LWC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "lwc"


def _default_cxx(arch: str) -> str:
    return "g++" if arch == platform.machine() else f"{arch}-linux-gnu-g++"


def build_runtime_library(arch: str | None = None, cxx: str | None = None) -> Path:
    """Build (once, cached) ``liblwc_runtime.so`` for ``arch`` and return its path.

    The library links ``-Wl,--no-as-needed -ltvm_runtime -ltvm_ffi`` and has the rpath
    ``$ORIGIN`` (plus the wheel folders for a native build, so the development machine's
    Python loader finds the installed runtime). The versions it was built for are
    compiled in and checked against each manifest at load time.

    Args:
        arch: ``aarch64`` or this machine's architecture (default).
        cxx: C++ compiler (default ``g++`` natively, ``<arch>-linux-gnu-g++`` otherwise).

    Raises:
        LwcError: compiler missing, runtime fetch failed, or compilation failed.
    """
    from lwc import tvm_compat

    arch = arch or platform.machine()
    cxx = cxx or _default_cxx(arch)
    if shutil.which(cxx) is None:
        raise LwcError(
            f"C++ compiler {cxx!r} for {arch} not found (apt-get install g++-{arch}-linux-gnu)"
        )
    rt = runtime_dir(arch)
    versions = tvm_compat.versions()
    defines = [
        f'-DLWC_VERSION="{versions["lwc"]}"',
        f'-DLWC_TVM_VERSION="{versions["apache-tvm"]}"',
        f'-DLWC_TVM_FFI_VERSION="{versions["apache-tvm-ffi"]}"',
    ]
    rpath = ["$ORIGIN"] + ([str(d) for d in rt.lib_dirs] if arch == platform.machine() else [])
    sources = [RUNTIME_SOURCE_DIR / "lwc_runtime.cc", RUNTIME_SOURCE_DIR / "lwc_runtime.h",
               RUNTIME_SOURCE_DIR / "lwc_runtime.map"]
    h = hashlib.sha256()
    for src in sources:
        h.update(src.read_bytes())
    h.update(json.dumps([arch, cxx, _CXXFLAGS, _LDFLAGS, defines, rpath, str(rt)]).encode())
    out_dir = _cache_root() / "lwc_runtime" / f"{arch}-{h.hexdigest()[:16]}"
    lib = out_dir / "liblwc_runtime.so"
    if lib.is_file():
        return lib

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".tmp-{os.getpid()}-liblwc_runtime.so"
    cmd = [
        cxx, *_CXXFLAGS, *defines, "-I", str(RUNTIME_SOURCE_DIR), "-I", str(rt.include),
        str(sources[0]), "-o", str(tmp), *_LDFLAGS,
        *[f"-L{d}" for d in rt.lib_dirs],
        "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed",
        f"-Wl,-rpath,{':'.join(rpath)}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
            lines = errors or proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
            detail = lines[0]
            raise LwcError(f"building liblwc_runtime.so for {arch} with {cxx} failed: {detail}")
        os.replace(tmp, lib)
    finally:
        tmp.unlink(missing_ok=True)
    return lib


@dataclass(frozen=True)
class Bundle:
    """A written bundle: its folder, the artifact inside, and its total size in bytes."""

    path: Path
    artifact: Path
    size_bytes: int
    files: tuple[str, ...]


def check_bundle_target(preset) -> None:
    """Raise LwcError before compiling when ``preset`` cannot be bundled (GPU targets)."""
    if preset.is_gpu:
        raise LwcError(
            f"--bundle makes CPU bundles; {preset.name} is a GPU target (its CPU side is "
            "the *-cpu preset, e.g. --target jetson-orin-cpu)"
        )
    if preset.arch not in ("aarch64", platform.machine()):
        raise LwcError(
            f"--bundle supports aarch64 and {platform.machine()} targets, not {preset.arch}"
        )


def bundle_dir_for(output: str | os.PathLike | None, model: str | os.PathLike) -> Path:
    """``-o deploy/det`` (or ``deploy/det.so``) -> ``deploy/det``; default: the model's stem."""
    if output is None:
        return Path(Path(model).stem)
    out = Path(output)
    return out.with_suffix("") if out.suffix == ".so" else out


def write_bundle(result, out_dir: str | os.PathLike) -> Bundle:
    """Write the bundle for a :class:`lwc.driver.CompileResult` into ``out_dir``.

    The model is named after the folder (``deploy/det`` -> ``det.so``). An existing
    folder is replaced only if it is an earlier bundle (it has ``include/lwc_runtime.h``).

    Raises:
        LwcError: GPU target, missing toolchain, runtime fetch or build failure,
            ``out_dir`` is a non-empty folder that is not a bundle, or a file the board
            could not load (:mod:`lwc.audit`; nothing is written then).
    """
    check_bundle_target(result.preset)
    out = Path(out_dir)
    name = out.name
    if out.exists() and not (out / "include" / "lwc_runtime.h").is_file():
        if not out.is_dir() or any(out.iterdir()):
            raise LwcError(f"{out} exists and is not an lwc bundle; choose another -o folder")
    arch = result.preset.arch
    cxx = result.cross_compiler if arch != platform.machine() else "g++"
    runtime_lib = build_runtime_library(arch, cxx)
    rt = runtime_dir(arch)

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out.parent))
    try:
        artifact = result.export(stage / f"{name}.so")
        (stage / "lib").mkdir()
        for lib in _RUNTIME_LIBS:
            shutil.copy2(rt.library(lib), stage / "lib" / lib)
        shutil.copy2(runtime_lib, stage / "lib" / "liblwc_runtime.so")
        (stage / "include").mkdir()
        shutil.copy2(RUNTIME_SOURCE_DIR / "lwc_runtime.h", stage / "include" / "lwc_runtime.h")
        (stage / "example").mkdir()
        for f in _EXAMPLE_FILES:
            shutil.copy2(RUNTIME_SOURCE_DIR / "example" / f, stage / "example" / f)
        shutil.copy2(RUNTIME_SOURCE_DIR / "lwc_runtime.py", stage / "lwc_runtime.py")
        (stage / "README.md").write_text(_readme(name, result))
        stage.chmod(0o755)
        _audit(stage, name, result.preset)
        _replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    files = tuple(sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()))
    size = sum((out / f).stat().st_size for f in files)
    return Bundle(out, out / artifact.name, size, files)


def _audit(stage: Path, name: str, preset) -> None:
    """Refuse (LwcError) a bundle with an ELF the board cannot load: lwc.audit's ISA and
    glibc/GLIBCXX checks of the model and every library in lib/."""
    from lwc import audit

    libs = {lib: stage / "lib" / lib for lib in (*_RUNTIME_LIBS, "liblwc_runtime.so")}
    audit.check_files({f"{name}.so": stage / f"{name}.so", **libs}, preset)


def _replace_dir(stage: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(stage, out)
    except OSError as err:
        if old is not None:
            os.replace(old, out)
        raise LwcError(f"cannot move the bundle into {out}: {err.strerror}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _spec_line(spec) -> str:
    ranges = "".join(f", {sym} in {lo}..{hi}" for sym, lo, hi in getattr(spec, "ranges", ()))
    return f"- `{spec.name}`: {spec.dtype} {list(spec.shape)}{ranges}"


def _example_shape(spec) -> tuple:
    """A shape the input accepts: symbolic dims at the low end of their range."""
    low = {sym: lo for sym, lo, _ in getattr(spec, "ranges", ())}
    return tuple(low.get(d, d) if isinstance(d, str) else d for d in spec.shape)


def _readme(name: str, result) -> str:
    preset = result.preset
    ins = "\n".join(_spec_line(s) for s in result.model.inputs)
    outs = "\n".join(_spec_line(s) for s in result.model.outputs)
    in_files = " ".join(f"{_file_stem(s.name)}.bin" for s in result.model.inputs)
    arrays = ", ".join(f"np.zeros({_example_shape(s)}, np.{s.dtype})" for s in result.model.inputs)
    first = result.model.inputs[0]
    cross = (
        f"    # or cross-compile on a PC: make CC={preset.arch}-linux-gnu-gcc\n"
        if preset.arch != platform.machine() else ""
    )
    return f"""# {name}: an lwc bundle for {preset.name} ({preset.arch})

Inputs, in this order (C-order, native-endian raw bytes in files; numpy arrays in Python):
{ins}

Outputs (output i > 0 of run_model goes to OUTPUT.<i>):
{outs}

## C
    cd example && make && ./run_model ../{name}.so {in_files} output.bin
{cross}    # or with CMake: cmake -S . -B build && cmake --build build

`include/lwc_runtime.h` documents the API; `example/run_model.c` uses all of it. The
example finds `lib/` through its rpath (`$ORIGIN/../lib`), no LD_LIBRARY_PATH needed.
Make an input file with numpy: `x.astype(np.{first.dtype}).tofile("{_file_stem(first.name)}.bin")`.

## Python (numpy only)
    import numpy as np, lwc_runtime
    m = lwc_runtime.load("{name}.so")
    print(m.inputs, m.outputs)
    y = m({arrays})

## Checks at load time
The runtime refuses, with a message, a model built for other apache-tvm /
apache-tvm-ffi versions than the libraries in `lib/`, for another architecture, or
using ISA features this CPU lacks (model features: {', '.join(preset.features) or 'none'}).
`LWC_CPU_FEATURES=neon,dotprod` overrides the CPU detection. Threads: `TVM_NUM_THREADS`.
"""


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name) or "input"
