"""Run aarch64 TVM Relax artifacts on an x86 host under qemu-aarch64.

An artifact is the ``.so`` written by ``tvm.compile(mod, target=<aarch64 llvm target>)
.export_library(path, fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))``.
To run it here we need the aarch64 TVM runtime (taken from the manylinux aarch64 wheels
of exactly the installed ``apache-tvm`` / ``apache-tvm-ffi`` versions) and a small C++
program, ``runner/lwc_runner.cc``, cross-compiled against it. Both are cached under
``$LWC_CACHE_DIR`` (default ``~/.cache/lwc``) and built once:

- ``runtime/aarch64-tvm<ver>-ffi<ver>/``: ``lib/libtvm_runtime.so``, ``lib/libtvm_ffi.so``,
  ``include/`` (tvm_ffi + dlpack headers) and ``runtime.json`` (versions, wheel names).
- ``runner/lwc_runner-<hash>``: the aarch64 runner, keyed by source, versions and compiler.

Host requirements (Debian/Ubuntu): ``apt-get install qemu-user g++-aarch64-linux-gnu``.
Every failure is raised as :class:`lwc.errors.LwcError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

from .errors import LwcError

#: Root of the aarch64 Debian cross sysroot, given to qemu as ``-L``.
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")
#: qemu user-mode emulator executable.
QEMU = "qemu-aarch64"
#: Default cross C++ compiler.
DEFAULT_CXX = "aarch64-linux-gnu-g++"
#: Wheel platform tag used for ``pip download``.
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
#: Python version used for ``pip download`` (the tvm-ffi wheel is CPython-specific,
#: but we only take its shared library and headers, which do not depend on Python).
WHEEL_PYTHON = "3.11"

_PACKAGES = ("apache-tvm", "apache-tvm-ffi")
_CXXFLAGS = ("-std=c++17", "-O2")
# numpy dtype name -> accepted by the runner (TVM dtype strings use the same names).
_DTYPES = frozenset(
    {
        "float16", "float32", "float64",
        "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64",
        "bool",
    }
)


def runtime_versions() -> dict[str, str]:
    """Return the installed versions, ``{"apache-tvm": ..., "apache-tvm-ffi": ...}``.

    Raises:
        LwcError: one of the packages is not installed.
    """
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            raise LwcError(f"{pkg} is not installed: pip install {pkg}") from None
    return versions


def qemu_available() -> bool:
    """True if ``qemu-aarch64`` is on PATH."""
    return shutil.which(QEMU) is not None


def cross_compiler_available(cxx: str = DEFAULT_CXX) -> bool:
    """True if the C++ compiler ``cxx`` (a name on PATH or a path) can be found."""
    return shutil.which(cxx) is not None


def _cache_root(cache_root: Path | None) -> Path:
    if cache_root is not None:
        return Path(cache_root)
    env = os.environ.get("LWC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "lwc"


def _last_line(text: str, prefer: str | None = None) -> str:
    """The last non-empty line of ``text`` (the last one starting with ``prefer`` if any)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if prefer:
        preferred = [ln for ln in lines if ln.startswith(prefer)]
        if preferred:
            return preferred[-1]
    return lines[-1] if lines else ""


def _runtime_complete(path: Path) -> bool:
    return (
        (path / "lib" / "libtvm_runtime.so").is_file()
        and (path / "lib" / "libtvm_ffi.so").is_file()
        and (path / "include" / "tvm" / "ffi" / "function.h").is_file()
        and (path / "include" / "dlpack" / "dlpack.h").is_file()
    )


def _extract(zf: zipfile.ZipFile, member: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    if dest.suffix == ".so":
        dest.chmod(0o755)


def _extract_tree(zf: zipfile.ZipFile, prefix: str, dest: Path) -> int:
    count = 0
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            _extract(zf, name, dest / name[len(prefix):])
            count += 1
    return count


def aarch64_runtime_dir(cache_root: Path | None = None) -> Path:
    """Return the cached aarch64 TVM runtime for the installed TVM versions.

    The directory ``<cache>/runtime/aarch64-tvm<ver>-ffi<ver>/`` holds
    ``lib/libtvm_runtime.so``, ``lib/libtvm_ffi.so`` and ``include/`` (tvm_ffi and dlpack
    headers). On first use the two manylinux aarch64 wheels are fetched with
    ``pip download`` (about 100 MB, network needed) and unpacked into a temporary
    directory that is then renamed into place, so a half-written runtime is never seen;
    later calls only check that the files are there.

    Args:
        cache_root: cache directory; default ``$LWC_CACHE_DIR`` or ``~/.cache/lwc``.

    Raises:
        LwcError: TVM not installed, ``pip download`` failed, or a wheel lacks a file.
    """
    versions = runtime_versions()
    tvm_ver, ffi_ver = versions["apache-tvm"], versions["apache-tvm-ffi"]
    parent = _cache_root(cache_root) / "runtime"
    target = parent / f"aarch64-tvm{tvm_ver}-ffi{ffi_ver}"
    if _runtime_complete(target):
        return target

    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    try:
        wheels = tmp / "wheels"
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--platform", WHEEL_PLATFORM, "--python-version", WHEEL_PYTHON,
            "--disable-pip-version-check", "-q", "-d", str(wheels),
            f"apache-tvm=={tvm_ver}", f"apache-tvm-ffi=={ffi_ver}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            detail = _last_line(proc.stderr, prefer="ERROR") or f"exit code {proc.returncode}"
            raise LwcError(
                f"pip download of the aarch64 wheels apache-tvm=={tvm_ver} "
                f"apache-tvm-ffi=={ffi_ver} failed: {detail}"
            )
        tvm_whl = sorted(wheels.glob("apache_tvm-*.whl"))
        ffi_whl = sorted(wheels.glob("apache_tvm_ffi-*.whl"))
        if not tvm_whl or not ffi_whl:
            raise LwcError(f"pip download did not produce both aarch64 wheels in {wheels}")

        stage = tmp / "runtime"
        try:
            with zipfile.ZipFile(tvm_whl[0]) as zf:
                _extract(zf, "tvm/lib/libtvm_runtime.so", stage / "lib" / "libtvm_runtime.so")
            with zipfile.ZipFile(ffi_whl[0]) as zf:
                _extract(zf, "tvm_ffi/lib/libtvm_ffi.so", stage / "lib" / "libtvm_ffi.so")
                _extract_tree(zf, "tvm_ffi/3rdparty/dlpack/include/", stage / "include")
                _extract_tree(zf, "tvm_ffi/include/", stage / "include")
        except (KeyError, zipfile.BadZipFile) as exc:
            raise LwcError(f"unexpected aarch64 wheel contents: {exc}") from None
        if not _runtime_complete(stage):
            raise LwcError("aarch64 wheels lack libtvm_runtime.so, libtvm_ffi.so or headers")
        manifest = dict(versions, wheels=[tvm_whl[0].name, ffi_whl[0].name])
        (stage / "runtime.json").write_text(json.dumps(manifest, indent=2) + "\n")

        try:
            os.replace(stage, target)
        except OSError:
            # Another process installed it first (target is a non-empty directory).
            if not _runtime_complete(target):
                raise LwcError(f"cannot install the aarch64 runtime into {target}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _runner_source() -> Path:
    return Path(__file__).resolve().parent / "runner" / "lwc_runner.cc"


def build_runner(cxx: str = DEFAULT_CXX, cache_root: Path | None = None) -> Path:
    """Cross-compile ``runner/lwc_runner.cc`` for aarch64 and return the executable's path.

    The binary is cached as ``<cache>/runner/lwc_runner-<hash>``, where the hash covers
    the source, the TVM versions, the compiler and its flags; it links the cached aarch64
    runtime with ``-Wl,--no-as-needed -ltvm_runtime -ltvm_ffi`` and an rpath to its
    ``lib/``. Takes a few seconds the first time (plus :func:`aarch64_runtime_dir`).

    Args:
        cxx: aarch64 C++ compiler (name on PATH or path).
        cache_root: cache directory; default ``$LWC_CACHE_DIR`` or ``~/.cache/lwc``.

    Raises:
        LwcError: compiler missing, runtime download failed, or compilation failed.
    """
    if not cross_compiler_available(cxx):
        raise LwcError(
            f"aarch64 cross compiler '{cxx}' not found: apt-get install g++-aarch64-linux-gnu"
        )
    runtime = aarch64_runtime_dir(cache_root)
    source = _runner_source()
    try:
        src_bytes = source.read_bytes()
    except OSError as exc:
        raise LwcError(f"cannot read runner source {source}: {exc.strerror}") from None

    h = hashlib.sha256(src_bytes)
    h.update(json.dumps([runtime_versions(), cxx, _CXXFLAGS, str(runtime)]).encode())
    out_dir = _cache_root(cache_root) / "runner"
    exe = out_dir / f"lwc_runner-{h.hexdigest()[:16]}"
    if exe.is_file():
        return exe

    out_dir.mkdir(parents=True, exist_ok=True)
    lib = runtime / "lib"
    tmp_exe = out_dir / f".tmp-{exe.name}-{os.getpid()}-{threading.get_ident()}"
    cmd = [
        cxx, *_CXXFLAGS, "-I", str(runtime / "include"), str(source), "-o", str(tmp_exe),
        "-L", str(lib), "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi",
        "-Wl,--as-needed", f"-Wl,-rpath,{lib}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            detail = _last_line(proc.stderr, prefer=str(source)) or f"exit code {proc.returncode}"
            raise LwcError(f"building lwc_runner with {cxx} failed: {detail}")
        os.replace(tmp_exe, exe)
    finally:
        tmp_exe.unlink(missing_ok=True)
    return exe


_EM_AARCH64 = 183
_MACHINE_NAMES = {3: "x86", 40: "arm (32-bit)", 62: "x86-64", 183: "aarch64", 243: "riscv"}


def _check_aarch64_elf(artifact: Path) -> None:
    """Raise LwcError unless ``artifact`` is a little-endian 64-bit AArch64 ELF file."""
    try:
        with open(artifact, "rb") as f:
            header = f.read(20)
    except OSError as exc:
        raise LwcError(f"cannot read artifact {artifact}: {exc.strerror}") from None
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise LwcError(f"artifact {artifact} is not an ELF shared library")
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    if machine != _EM_AARCH64:
        name = _MACHINE_NAMES.get(machine, f"e_machine {machine}")
        raise LwcError(
            f"artifact {artifact.name} is built for {name}, not aarch64: "
            "compile with an aarch64 target and export with the cross compiler"
        )


def _read_outputs(out_dir: Path) -> list[np.ndarray]:
    listing = out_dir / "outputs.txt"
    if not listing.is_file():
        raise LwcError("lwc_runner wrote no outputs.txt")
    outputs = []
    for line in listing.read_text().splitlines():
        if not line.strip():
            continue
        fields = line.split()
        try:
            dtype, ndim = fields[1], int(fields[2])
            shape = tuple(int(d) for d in fields[3:3 + ndim])
            fname = fields[3 + ndim]
            arr = np.fromfile(out_dir / fname, dtype=np.dtype(dtype).newbyteorder("<"))
            outputs.append(arr.reshape(shape).astype(np.dtype(dtype), copy=False))
        except (IndexError, ValueError, TypeError, OSError) as exc:
            raise LwcError(f"bad line in lwc_runner outputs.txt: {line!r} ({exc})") from None
    return outputs


def run_aarch64(
    artifact: Path,
    inputs: list[tuple[str, np.ndarray]],
    *,
    repeat: int = 0,
    cxx: str = DEFAULT_CXX,
    timeout_s: float | None = None,
    cache_root: Path | None = None,
    qemu_cpu: str | None = None,
) -> tuple[list[np.ndarray], float | None]:
    """Run an aarch64 Relax artifact's ``main`` under qemu and return its outputs.

    Args:
        artifact: the exported aarch64 ``.so``.
        inputs: ``(name, array)`` pairs in the order of ``main``'s parameters; the names
            are informational only. Arrays are sent as C-order little-endian bytes.
        repeat: if > 0, run ``main`` that many extra times and report the mean.
        cxx: aarch64 C++ compiler used to build the runner.
        timeout_s: wall-clock limit in seconds for the emulated run (None: no limit).
        cache_root: cache directory; default ``$LWC_CACHE_DIR`` or ``~/.cache/lwc``.
        qemu_cpu: emulate this CPU (``qemu-aarch64 -cpu cortex-a72``; lwc.audit); default
            qemu's own (all features).

    Returns:
        ``(outputs, mean_ms)``: the outputs of ``main`` in order (a tuple result is
        flattened one level), and the mean time of one call in milliseconds under
        emulation when ``repeat > 0`` (else None). Emulated time is not board time.

    Raises:
        LwcError: qemu or the cross toolchain missing, an unsupported input dtype, the
            artifact missing or not an aarch64 ELF, the runner failing (its
            ``lwc_runner: ...`` line is in the message), or timeout.
    """
    if not qemu_available():
        raise LwcError(f"{QEMU} not found: apt-get install qemu-user")
    if not AARCH64_SYSROOT.is_dir():
        raise LwcError(f"aarch64 sysroot {AARCH64_SYSROOT} missing: apt-get install g++-aarch64-linux-gnu")
    artifact = Path(artifact)
    if not artifact.is_file():
        raise LwcError(f"artifact not found: {artifact}")
    _check_aarch64_elf(artifact)
    if repeat < 0:
        raise LwcError(f"repeat must be >= 0, got {repeat}")
    runner = build_runner(cxx, cache_root)
    lib = aarch64_runtime_dir(cache_root) / "lib"

    with tempfile.TemporaryDirectory(prefix="lwc-run-") as tmp:
        in_dir, out_dir = Path(tmp) / "in", Path(tmp) / "out"
        in_dir.mkdir()
        out_dir.mkdir()
        lines = []
        for i, (name, value) in enumerate(inputs):
            arr = np.asarray(value)
            if arr.dtype.name not in _DTYPES:
                raise LwcError(f"input '{name}' has unsupported dtype {arr.dtype}")
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            fname = f"input_{i}.bin"
            arr.tofile(in_dir / fname)
            safe_name = "_".join(str(name).split()) or f"input_{i}"
            fields = [safe_name, arr.dtype.name, str(arr.ndim), *map(str, arr.shape), fname]
            lines.append(" ".join(fields))
        (in_dir / "inputs.txt").write_text("".join(ln + "\n" for ln in lines))

        cmd = [QEMU, *(["-cpu", qemu_cpu] if qemu_cpu else []), "-L", str(AARCH64_SYSROOT), str(runner)]
        if repeat > 0:
            cmd += ["--repeat", str(repeat)]
        cmd += [str(artifact.resolve()), str(in_dir), str(out_dir)]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = str(lib) + (
            os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""
        )
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LwcError(f"aarch64 run of {artifact.name} timed out after {timeout_s} s") from None
        if proc.returncode != 0:
            detail = _last_line(proc.stderr, prefer="lwc_runner:")
            if not detail:
                detail = f"lwc_runner exited with code {proc.returncode}"
            raise LwcError(f"aarch64 run of {artifact.name} failed: {detail}")
        outputs = _read_outputs(out_dir)

    mean_ms = None
    if repeat > 0:
        for line in proc.stdout.splitlines():
            if line.startswith("time_ms "):
                mean_ms = float(line.split()[1])
        if mean_ms is None:
            raise LwcError("lwc_runner printed no time_ms line")
    return outputs, mean_ms
