#!/usr/bin/env python3
"""arm64 speed proxy without a board: guest instructions per inference under qemu-aarch64.

An lwc arm64 artifact (run by lwc's own ``lwc_runner``) and onnxruntime's own aarch64 build
(run by ``arm64_proxy/ort_runner.c`` against ``libonnxruntime.so`` from the aarch64 wheel of
the onnxruntime version installed here) execute the same input under
``qemu-aarch64 -cpu cortex-a76|cortex-a72``, one thread each, while a small TCG plugin
(``arm64_proxy/insn_count.c``) counts executed guest instructions, in total and by class
(scalar FMADD, vector FMLA, SDOT/UDOT, SIMD loads/stores, ...).

Instruction counts are NOT time (no caches, no pipelines, no threads); they are
deterministic (to ~0.1 %), independent of this machine's load, and a good regression and
order-of-magnitude check. See ``benchmarks/arm64_proxy.md``.

Per-inference count: both runners load the model and run one untimed warm-up inference, then
``--repeat K`` more; ``(count(K) - count(0)) / K`` cancels loading and warm-up.

Usage::

    python benchmarks/arm64_proxy.py MODEL.onnx ART.so --input-shape x:1,3,48,192 \\
        --cpu cortex-a76 [--k 1] [--json]
    python benchmarks/arm64_proxy.py run [--models cls,det,rec] [--cpus cortex-a76,cortex-a72]
        [--reuse] [--rev HEAD] [--int8-det] [--append]   # PP-OCR for arm64/rpi5 -> arm64_proxy.md/.json
    python benchmarks/arm64_proxy.py report      # rewrite arm64_proxy.md from arm64_proxy.json
    python benchmarks/arm64_proxy.py kernels ART.so MODEL.onnx --input-shape x:1,3,48,320 \\
        [--cpu cortex-a76] [--top 25] [--json]  # instructions per inference of each kernel

Host needs (Debian): qemu-user (7.2: plugin API v1), gcc, gcc/g++-aarch64-linux-gnu,
``unshare`` (util-linux) with the right to make a mount namespace (root), and network on the
first use for ``pip download`` of the aarch64 wheels. Everything built or downloaded is cached
under ``$LWC_ARM64_PROXY_CACHE`` (default ``$LWC_CACHE_DIR/arm64-proxy`` or
``~/.cache/lwc/arm64-proxy``), never in the repository.

Library use (e.g. from a test)::

    spec = importlib.util.spec_from_file_location("arm64_proxy", "benchmarks/arm64_proxy.py")
    ...; proxy.count_lwc(artifact, [("x", array)], "cortex-a76")   # -> {"insns": ..., "cls_fmla": ...}
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import datetime
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE / "arm64_proxy"
REPO = HERE.parent
QEMU = "qemu-aarch64"
SYSROOT = Path("/usr/aarch64-linux-gnu")
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
WHEEL_PYTHON = "3.11"

#: Emulated cores: qemu -cpu name -> (/proc/cpuinfo "Features", "CPU variant", "CPU part").
#: cortex-a76 = Raspberry Pi 5 (ARMv8.2-A: dotprod, fp16), cortex-a72 = Raspberry Pi 4 (ARMv8.0-A).
CPUS = {
    "cortex-a76": (
        (
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
            "lrcpc dcpop asimddp"
        ),
        "0x4",
        "0xd0b",
    ),
    "cortex-a72": ("fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid", "0x0", "0xd08"),
}
#: lwc targets whose code needs ARMv8.2-A extensions (dotprod, fp16): cortex-a76 only.
NEEDS_V82 = {"rpi5", "jetson-orin-cpu"}

#: PP-OCR models of ``python -m lwc.models`` used by ``run``.
MODELS = ("cls", "det", "rec")


class ProxyError(RuntimeError):
    """A missing tool, a failed build/download or a failed emulated run (one-line message)."""


# --------------------------------------------------------------------------- cache and tools


def cache_dir() -> Path:
    env = os.environ.get("LWC_ARM64_PROXY_CACHE")
    if env:
        return Path(env)
    root = os.environ.get("LWC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "lwc") / "arm64-proxy"


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, check=False, text=True, **kw)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ProxyError(f"{what} failed ({proc.returncode}): {tail}")
    return proc


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def missing_tools(need_ort: bool = True) -> list[str]:
    """Names of the host tools this rig lacks (empty list: all there)."""
    tools = [QEMU, "gcc"] + (["aarch64-linux-gnu-gcc", "unshare"] if need_ort else [])
    out = [t for t in tools if shutil.which(t) is None]
    if not SYSROOT.is_dir():
        out.append(str(SYSROOT))
    return out


def plugin() -> Path:
    """Build (once, cached by source hash) the qemu TCG instruction-count plugin."""
    src = SRC / "insn_count.c"
    out = cache_dir() / "bin" / f"libinsn_count-{_digest(src.read_bytes())}.so"
    if not out.is_file():
        if shutil.which("gcc") is None:
            raise ProxyError("gcc not found: apt-get install gcc")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
        _run(
            ["gcc", "-O2", "-shared", "-fPIC", str(src), "-o", str(tmp)], "building the qemu plugin"
        )
        os.replace(tmp, out)
    return out


def ort_version() -> str:
    return importlib.metadata.version("onnxruntime")


def ort_lib_dir() -> Path:
    """libonnxruntime.so.1 from the aarch64 wheel of the installed onnxruntime version."""
    ver = ort_version()
    d = cache_dir() / f"onnxruntime-{ver}-aarch64"
    if (d / "libonnxruntime.so.1").is_file():
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=d.parent, prefix=".tmp-ort-") as tmp:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                WHEEL_PLATFORM,
                "--python-version",
                WHEEL_PYTHON,
                "--disable-pip-version-check",
                "-q",
                "-d",
                tmp,
                f"onnxruntime=={ver}",
            ],
            f"pip download of the aarch64 onnxruntime=={ver} wheel",
        )
        wheels = sorted(Path(tmp).glob("onnxruntime-*aarch64*.whl"))
        if not wheels:
            raise ProxyError("pip download produced no aarch64 onnxruntime wheel")
        stage = Path(tmp) / "lib"
        stage.mkdir()
        with zipfile.ZipFile(wheels[0]) as zf:
            libs = [n for n in zf.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so")]
            if not libs:
                raise ProxyError(f"{wheels[0].name} has no onnxruntime/capi/libonnxruntime.so*")
            for n in libs:
                (stage / Path(n).name).write_bytes(zf.read(n))
        real = max(stage.iterdir(), key=lambda p: p.stat().st_size)
        if real.name != "libonnxruntime.so.1":
            (stage / "libonnxruntime.so.1").unlink(missing_ok=True)
            os.symlink(real.name, stage / "libonnxruntime.so.1")
        (stage / "wheel.txt").write_text(wheels[0].name + "\n")
        try:
            os.replace(stage, d)
        except OSError:
            if not (d / "libonnxruntime.so.1").is_file():
                raise
    return d


def ort_runner() -> Path:
    """Cross-compile ``arm64_proxy/ort_runner.c`` against the aarch64 libonnxruntime."""
    lib = ort_lib_dir()
    src = SRC / "ort_runner.c"
    key = _digest(src.read_bytes(), (SRC / "ort_min.h").read_bytes(), lib)
    out = cache_dir() / "bin" / f"ort_runner-{key}"
    if not out.is_file():
        if shutil.which("aarch64-linux-gnu-gcc") is None:
            raise ProxyError(
                "aarch64-linux-gnu-gcc not found: apt-get install gcc-aarch64-linux-gnu"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}-{threading.get_ident()}")
        _run(
            [
                "aarch64-linux-gnu-gcc",
                "-O2",
                "-std=c11",
                "-D_GNU_SOURCE",
                f"-I{SRC}",
                str(src),
                "-o",
                str(tmp),
                f"-L{lib}",
                "-l:libonnxruntime.so.1",
                f"-Wl,-rpath,{lib}",
            ],
            "cross-compiling ort_runner",
        )
        os.replace(tmp, out)
    return out


def lwc_runner() -> tuple[Path, Path]:
    """lwc's own aarch64 runner (compiler/runner/lwc_runner.cc) and its TVM runtime lib dir."""
    from lwc import cross_runtime  # lazy: the ort side needs no TVM

    return cross_runtime.build_runner(), cross_runtime.aarch64_runtime_dir() / "lib"


def fake_cpuinfo(cpu: str) -> Path:
    """An aarch64 /proc/cpuinfo for ``cpu`` (2 cores). qemu-user 7.2 shows the guest the host's
    x86 file; the cpuinfo library inside libonnxruntime then dereferences NULL at load."""
    feat, var, part = CPUS[cpu]
    blk = (
        f"processor\t: {{i}}\nBogoMIPS\t: 108.00\nFeatures\t: {feat}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: {var}\nCPU part\t: {part}\nCPU revision\t: 1\n\n"
    )
    text = "".join(blk.format(i=i) for i in range(2))
    path = cache_dir() / f"cpuinfo-{cpu}"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


_NS_OK: bool | None = None


def mount_namespace_ok() -> bool:
    """True if ``unshare -m`` + a bind mount over /proc/cpuinfo works here (needs root)."""
    global _NS_OK
    if _NS_OK is None:
        if shutil.which("unshare") is None:
            _NS_OK = False
        else:
            probe = fake_cpuinfo("cortex-a76")
            p = subprocess.run(
                [
                    "unshare",
                    "-m",
                    "/bin/sh",
                    "-c",
                    'mount --bind "$0" /proc/cpuinfo && grep -q "CPU part" /proc/cpuinfo',
                    str(probe),
                ],
                capture_output=True,
                check=False,
            )
            _NS_OK = p.returncode == 0
    return _NS_OK


# --------------------------------------------------------------------------- running


def _qemu_cmd(cpu: str, plugin_out: Path | None, program: list[str], fake: bool) -> list[str]:
    if cpu not in CPUS:
        raise ProxyError(f"unknown cpu {cpu!r}; choose from {', '.join(CPUS)}")
    q = [QEMU, "-cpu", cpu, "-L", str(SYSROOT)]
    if plugin_out is not None:
        q += ["-plugin", f"{plugin()},outfile={plugin_out}"]
    q += program
    if shutil.which("setarch"):
        # no address-space randomisation: pointer-keyed hashing and alignment-dependent copies in
        # the guest then see the same addresses every run (counts repeat more exactly)
        q = ["setarch", "-R", *q]
    if not fake:
        return q
    # private mount namespace: only this process tree sees the fake /proc/cpuinfo
    return [
        "unshare",
        "-m",
        "/bin/sh",
        "-c",
        'mount --bind "$0" /proc/cpuinfo && exec "$@"',
        str(fake_cpuinfo(cpu)),
        *q,
    ]


def write_inputs(folder: Path, inputs: list[tuple[str, np.ndarray]]) -> Path:
    """Write ``inputs.txt`` + raw files in the format both runners read."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (name, arr) in enumerate(inputs):
        arr = np.ascontiguousarray(arr, dtype=np.asarray(arr).dtype.newbyteorder("<"))
        arr.tofile(folder / f"input_{i}.bin")
        lines.append(
            f"{name} {arr.dtype.name} {arr.ndim} {' '.join(map(str, arr.shape))} input_{i}.bin"
        )
    (folder / "inputs.txt").write_text("\n".join(lines) + "\n")
    return folder


def read_outputs(folder: Path) -> list[np.ndarray]:
    outs = []
    for line in (folder / "outputs.txt").read_text().splitlines():
        f = line.split()
        if not f:
            continue
        nd = int(f[2])
        shape = tuple(int(x) for x in f[3 : 3 + nd])
        outs.append(
            np.fromfile(folder / f[3 + nd], dtype=np.dtype(f[1]).newbyteorder("<")).reshape(shape)
        )
    return outs


def _count_once(
    kind: str, model: Path, in_dir: Path, cpu: str, repeat: int, work: Path, timeout: float | None
) -> tuple[dict[str, int], float]:
    env = dict(os.environ, TVM_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if kind == "lwc":
        runner, lib = lwc_runner()
        env["LD_LIBRARY_PATH"] = str(lib) + (
            os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""
        )
        fake = mount_namespace_ok()  # harmless for lwc, used when available for equal conditions
    elif kind == "ort":
        runner = ort_runner()
        if not mount_namespace_ok():
            raise ProxyError(
                "onnxruntime under qemu needs a fake /proc/cpuinfo: `unshare -m` + "
                "mount --bind failed here (run as root)"
            )
        fake = True
    else:
        raise ValueError(kind)
    out_dir = work / f"out-{kind}-{cpu}-{repeat}"
    out_dir.mkdir(parents=True, exist_ok=True)
    counts_file = work / f"counts-{kind}-{cpu}-{repeat}.txt"
    counts_file.unlink(missing_ok=True)
    prog = [str(runner)] + (["--threads", "1"] if kind == "ort" else [])
    prog += ["--repeat", str(repeat), str(Path(model).resolve()), str(in_dir), str(out_dir)]
    t0 = time.time()
    try:
        p = subprocess.run(
            _qemu_cmd(cpu, counts_file, prog, fake),
            capture_output=True,
            check=False,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ProxyError(
            f"{kind} run of {Path(model).name} on {cpu} timed out after {timeout} s"
        ) from None
    if p.returncode != 0:
        tail = " | ".join(p.stderr.strip().splitlines()[-3:]) or f"exit code {p.returncode}"
        if p.returncode in (-4, 132):
            tail += " (SIGILL: the artifact uses instructions this -cpu lacks)"
        raise ProxyError(f"{kind} run of {Path(model).name} on {cpu} failed: {tail}")
    if not counts_file.is_file():
        raise ProxyError("the qemu plugin wrote no counts (qemu without TCG plugin support?)")
    counts = {
        k: int(v)
        for k, v in (ln.split() for ln in counts_file.read_text().splitlines() if ln.strip())
    }
    return counts, time.time() - t0


def count_per_inference(
    kind: str,
    model: Path,
    inputs: list[tuple[str, np.ndarray]],
    cpu: str,
    k: int = 1,
    timeout: float | None = None,
    keep: Path | None = None,
    parallel: bool = True,
) -> dict:
    """Guest instructions per inference of ``model`` (``kind`` "lwc": an aarch64 artifact;
    "ort": an ONNX file run by onnxruntime's aarch64 build) under ``qemu-aarch64 -cpu cpu``.

    Returns ``{"insns": per-inference count, "cls_<class>": ..., "setup_insns": count of the
    repeat-0 run (load + warm-up), "emulated_s": wall seconds of both runs, "outputs": [...]}``.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    with tempfile.TemporaryDirectory(prefix="arm64-proxy-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        in_dir = write_inputs(work / "in", inputs)
        # the two runs are independent: run them side by side (counts do not depend on load)
        with concurrent.futures.ThreadPoolExecutor(max_workers=2 if parallel else 1) as pool:
            f0 = pool.submit(_count_once, kind, model, in_dir, cpu, 0, work, timeout)
            fk = pool.submit(_count_once, kind, model, in_dir, cpu, k, work, timeout)
            (c0, s0), (ck, sk) = f0.result(), fk.result()
        outputs = read_outputs(work / f"out-{kind}-{cpu}-{k}")
    per = {key: (ck[key] - c0[key]) / k for key in c0 if key != "tbs"}
    per.update(setup_insns=c0["insns"], emulated_s=round(s0 + sk, 1), outputs=outputs)
    return per


def _symbols(lib: Path, dynamic: bool = False) -> list[tuple[int, str]]:
    """(address, name) of the text symbols of an aarch64 ELF, sorted by address
    (``dynamic``: its dynamic symbol table, for stripped shared libraries)."""
    nm = shutil.which("aarch64-linux-gnu-nm") or shutil.which("llvm-nm") or "nm"
    flags = ["-n", "--defined-only"] + (["-D"] if dynamic else [])
    out = _run([nm, *flags, str(lib)], f"nm {lib.name}").stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16), parts[2]))
    return syms


def _kernel_run(artifact: Path, in_dir: Path, cpu: str, repeat: int, work: Path, timeout) -> tuple[dict, dict]:
    """One lwc_runner run with per-block counts: ({library: (base, size)}, {vaddr: insns executed})."""
    runner, lib = lwc_runner()
    env = dict(os.environ, TVM_NUM_THREADS="1", OMP_NUM_THREADS="1", LD_DEBUG="files",
               LD_LIBRARY_PATH=str(lib))
    counts_file, tb_file = work / f"k-counts-{repeat}.txt", work / f"k-tbs-{repeat}.txt"
    out_dir = work / f"k-out-{repeat}"
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["setarch", "-R", QEMU, "-cpu", cpu, "-L", str(SYSROOT),
           "-plugin", f"{plugin()},outfile={counts_file},tbfile={tb_file},classify=off",
           str(runner), "--repeat", str(repeat), str(Path(artifact).resolve()), str(in_dir), str(out_dir)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if p.returncode != 0 or not tb_file.is_file():
        raise ProxyError(f"kernel profile run failed: {p.stderr.strip().splitlines()[-1:]}")
    libs, current = {}, None
    for line in p.stderr.splitlines():  # glibc's LD_DEBUG=files: "file=PATH [0]; ..." then "base: 0x..."
        m = re.search(r"file=(\S+) \[\d+\];\s+generating link map", line)
        if m:
            current = m.group(1)
        m = re.search(r"base: (0x[0-9a-f]+)\s+size: (0x[0-9a-f]+)", line)
        if m and current:
            libs[current] = (int(m.group(1), 16), int(m.group(2), 16))
            current = None
    executed: dict[int, int] = {}
    for line in tb_file.read_text().splitlines():
        vaddr, n, count = line.split()
        executed[int(vaddr, 16)] = executed.get(int(vaddr, 16), 0) + int(n) * int(count)
    return libs, executed


def _find_lib(name: str) -> Path:
    """The file of a library as ld.so named it (a bare DT_NEEDED name: the runner's
    library folder, then the sysroot's)."""
    if Path(name).is_absolute() and Path(name).is_file():
        return Path(name)
    for folder in (lwc_runner()[1], SYSROOT / "lib" / "aarch64-linux-gnu", SYSROOT / "lib"):
        if (Path(folder) / Path(name).name).is_file():
            return Path(folder) / Path(name).name
    raise ProxyError(f"cannot find {name} for its symbols")


def kernel_counts(artifact: Path, inputs, cpu: str, k: int = 1, timeout: float | None = None,
                  split_libs: tuple[str, ...] = ()) -> dict[str, float]:
    """Guest instructions per inference of each function of an lwc aarch64 artifact
    (its kernels by name; everything outside the model library by library name), under
    ``qemu-aarch64 -cpu cpu``: per translated block counts (the plugin's ``tbfile``), block
    addresses mapped to ``nm`` symbols of the library ``ld.so`` loaded there
    (``LD_DEBUG=files``), (repeat K - repeat 0) / K as :func:`count_per_inference`.

    ``split_libs``: library file names (e.g. ``libtvm_runtime.so``) whose instructions are
    attributed to their dynamic symbols too (``LIB:symbol``; the nearest exported symbol
    below the address, so a static helper counts under the exported function before it).

    Returns:
        {function or library: instructions per inference}, largest first.
    """
    artifact = Path(artifact).resolve()
    syms = _symbols(artifact)
    addrs = [a for a, _ in syms]
    lib_syms: dict[str, tuple[list[int], list[tuple[int, str]]]] = {}
    with tempfile.TemporaryDirectory(prefix="arm64-kernels-") as tmp:
        work = Path(tmp)
        in_dir = write_inputs(work / "in", inputs)
        totals = []
        for repeat in (0, k):
            libs, executed = _kernel_run(artifact, in_dir, cpu, repeat, work, timeout)
            per: dict[str, int] = {}
            for vaddr, insns in executed.items():
                name = "(other)"
                for path, (base, size) in libs.items():
                    if base <= vaddr < base + size:
                        if Path(path).name == artifact.name or Path(path).resolve() == artifact:
                            i = bisect.bisect_right(addrs, vaddr - base) - 1
                            name = syms[i][1] if i >= 0 else artifact.name
                        else:
                            name = Path(path).name
                            if name in split_libs:
                                if path not in lib_syms:
                                    ls = _symbols(_find_lib(path), dynamic=True)
                                    lib_syms[path] = ([a for a, _ in ls], ls)
                                la, ls = lib_syms[path]
                                i = bisect.bisect_right(la, vaddr - base) - 1
                                name += ":" + (ls[i][1] if i >= 0 else "?")
                        break
                per[name] = per.get(name, 0) + insns
            totals.append(per)
    base, run = totals
    out = {n: (run.get(n, 0) - base.get(n, 0)) / k for n in set(run) | set(base)}
    return dict(sorted(((n, v) for n, v in out.items() if v > 0), key=lambda kv: -kv[1]))


def count_lwc(artifact: Path, inputs, cpu: str, k: int = 1, **kw) -> dict:
    return count_per_inference("lwc", artifact, inputs, cpu, k, **kw)


def count_ort(model: Path, inputs, cpu: str, k: int = 1, **kw) -> dict:
    return count_per_inference("ort", model, inputs, cpu, k, **kw)


# --------------------------------------------------------------------------- comparing


def parse_shapes(specs: list[str]) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for s in specs:
        name, _, dims = s.rpartition(":")
        if not name:
            raise SystemExit(f"--input-shape wants NAME:D0,D1,..., got {s!r}")
        out.append((name, tuple(int(d) for d in dims.split(","))))
    return out


def onnx_input_dtypes(model: Path) -> dict[str, np.dtype]:
    import onnx
    from onnx import helper

    m = onnx.load(str(model), load_external_data=False)
    init = {i.name for i in m.graph.initializer}
    return {
        i.name: np.dtype(helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
        for i in m.graph.input
        if i.name not in init
    }


def make_inputs(model: Path, shapes: list[tuple[str, tuple[int, ...]]], seed: int = 0):
    """Fixed inputs: uniform [-1, 1) floats (ints: 0..9), seed 0, in ``shapes`` order."""
    dtypes = onnx_input_dtypes(model)
    rng = np.random.default_rng(seed)
    out = []
    for name, shape in shapes:
        dt = dtypes.get(name, np.dtype(np.float32))
        if np.issubdtype(dt, np.floating):
            arr = rng.uniform(-1, 1, shape).astype(dt)
        else:
            arr = rng.integers(0, 10, shape).astype(dt)
        out.append((name, arr))
    return out


def _mix(per: dict) -> dict:
    return {k[4:]: round(v / 1e6, 3) for k, v in per.items() if k.startswith("cls_") and v}


def compare(
    model: Path,
    artifact: Path,
    shapes,
    cpu: str,
    k: int = 1,
    timeout: float | None = None,
    log=print,
    ort_memo: dict | None = None,
) -> dict:
    """lwc artifact vs onnxruntime aarch64 on ``model``: M instructions per inference + ratio.
    ``ort_memo``: a dict that keeps onnxruntime's counts per (model, shapes, cpu, k) between calls."""
    inputs = make_inputs(model, shapes)
    log(f"  {cpu}: lwc {Path(artifact).name} ...")
    lw = count_lwc(artifact, inputs, cpu, k, timeout=timeout)
    key = (str(model), tuple(shapes), cpu, k)
    if ort_memo is not None and key in ort_memo:
        ort = ort_memo[key]
    else:
        log(f"  {cpu}: onnxruntime {ort_version()} ...")
        ort = count_ort(model, inputs, cpu, k, timeout=timeout)
        if ort_memo is not None:
            ort_memo[key] = ort
    diffs = [
        float(np.max(np.abs(a.astype(np.float64) - b))) if a.shape == b.shape else None
        for a, b in zip(lw["outputs"], ort["outputs"])
    ]
    return {
        "model": str(model),
        "artifact": str(artifact),
        "cpu": cpu,
        "k": k,
        "input_shapes": {n: list(s) for n, s in shapes},
        "lwc_minsn": round(lw["insns"] / 1e6, 3),
        "ort_minsn": round(ort["insns"] / 1e6, 3),
        "ratio": round(lw["insns"] / ort["insns"], 3),
        "lwc_setup_minsn": round(lw["setup_insns"] / 1e6, 1),
        "ort_setup_minsn": round(ort["setup_insns"] / 1e6, 1),
        "lwc_mix_m": _mix(lw),
        "ort_mix_m": _mix(ort),
        "max_abs_diff_vs_ort": diffs,
        "onnxruntime": ort_version(),
        "emulated_s": {"lwc": lw["emulated_s"], "ort": ort["emulated_s"]},
    }


def _print_row(r: dict) -> None:
    print(
        f"{Path(r['artifact']).name:28s} {r['cpu']:11s} lwc {r['lwc_minsn']:12,.1f} M   "
        f"onnxruntime {r['ort_minsn']:10,.1f} M   ratio {r['ratio']:.2f}   "
        f"max|lwc-ort| {r['max_abs_diff_vs_ort']}"
    )


# --------------------------------------------------------------------------- run: PP-OCR table


def _lwc_models() -> dict[str, tuple[Path, str]]:
    """name -> (onnx path, "x:1,3,H,W") from ``python -m lwc.models``."""
    p = _run([sys.executable, "-m", "lwc.models"], "python -m lwc.models")
    out = {}
    for line in p.stdout.splitlines():
        f = line.split()
        if len(f) >= 4 and f[1] == "--input-shape":
            out[f[0]] = (Path(f[3]), f[2])
    return out


def _calib_folder(shape: tuple[int, ...], n: int = 8) -> Path:
    """Synthetic text-page-like calibration samples (.npy, PP-OCR det normalisation)."""
    d = cache_dir() / "calib" / ("x".join(map(str, shape)) + f"-{n}")
    if d.is_dir() and len(list(d.glob("*.npy"))) == n:
        return d
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    _, c, h, w = shape
    mean, std = np.array([0.485, 0.456, 0.406])[:c], np.array([0.229, 0.224, 0.225])[:c]
    for i in range(n):
        page = np.full((h, w), 235.0) + rng.normal(0, 6, (h, w))
        for top in range(16, h - 24, 32):
            x = int(rng.integers(8, 40))
            while x < w - 24:
                gw, gh = int(rng.integers(6, 14)), int(rng.integers(10, 18))
                page[top : top + gh, x : x + gw] = np.where(
                    rng.random((gh, gw)) < 0.45, rng.uniform(0, 70), 235
                )
                x += gw + int(rng.integers(2, 30))
        img = np.clip(page, 0, 255) / 255.0
        x = ((img[None] - mean[:, None, None]) / std[:, None, None])[None].astype(np.float32)
        np.save(d / f"sample_{i}.npy", x)
    return d


def snapshot(rev: str) -> tuple[str, Path]:
    """A clean copy of lwc at git ``rev`` (``git archive``; the work tree is not touched), laid
    out as an importable ``lwc`` package like the editable install maps it (lwc = compiler/,
    lwc.passes = passes/, lwc.targets = targets/). Returns (full sha, folder for PYTHONPATH)."""
    sha = _run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        f"git rev-parse {rev}",
    ).stdout.strip()
    pkg = cache_dir() / "src" / sha[:12]
    if (pkg / "lwc" / "__main__.py").is_file():
        return sha, pkg
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".tmp-src-") as tmp:
        arch = Path(tmp) / "src.tar"
        _run(
            [
                "git",
                "-C",
                str(REPO),
                "archive",
                "-o",
                str(arch),
                sha,
                "compiler",
                "passes",
                "targets",
            ],
            "git archive",
        )
        _run(["tar", "-xf", str(arch), "-C", tmp], "tar")
        stage = Path(tmp) / "pkg"
        stage.mkdir()
        os.replace(Path(tmp) / "compiler", stage / "lwc")
        os.replace(Path(tmp) / "passes", stage / "lwc" / "passes")
        os.replace(Path(tmp) / "targets", stage / "lwc" / "targets")
        pkg.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(stage, pkg)
        except OSError:
            if not (pkg / "lwc" / "__main__.py").is_file():
                raise
    return sha, pkg


def compile_artifact(
    model: Path,
    shape_spec: str,
    target: str,
    out: Path,
    int8_calib: Path | None = None,
    pythonpath: Path | None = None,
) -> float:
    """``lwc compile MODEL --target T --input-shape ... -o OUT -q`` (default options, no tuning
    records unless lwc finds some for the target). ``pythonpath``: a :func:`snapshot`. Seconds."""
    cmd = [
        sys.executable,
        "-m",
        "lwc",
        "compile",
        str(model),
        "--target",
        target,
        "--input-shape",
        shape_spec,
        "-o",
        str(out),
        "-q",
    ]
    if int8_calib is not None:
        cmd += ["--quantize", "int8", "--calib", str(int8_calib)]
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _run(cmd, f"lwc compile {model.name} --target {target}", env=env)
    return time.time() - t0


def _git_rev() -> str:
    p = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        check=False,
        text=True,
    )
    rev = p.stdout.strip() or "unknown"
    d = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "compiler",
            "passes",
            "targets",
        ],
        capture_output=True,
        check=False,
        text=True,
    )
    return rev + (" + uncommitted changes" if d.stdout.strip() else "")


def cmd_run(a) -> int:
    pythonpath = None
    if a.rev:  # every lwc use below (compile, lwc.models, the runner) comes from the snapshot
        sha, pythonpath = snapshot(a.rev)
        sys.path.insert(0, str(pythonpath))
        os.environ["PYTHONPATH"] = str(pythonpath) + (
            os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
        )
    models = _lwc_models()
    ort_memo: dict = {}
    results = []
    json_path, md_path = Path(a.json_out), Path(a.md_out)
    old = json.loads(json_path.read_text()) if (a.append and json_path.is_file()) else {}
    if old:
        results = [r for r in old.get("results", [])]
    if a.rev:
        rev = f"{sha[:7]} (clean `git archive` snapshot)"
        art_dir = cache_dir() / "art" / sha[:12]
        print(f"compiling with lwc at {sha[:12]} from {pythonpath}", flush=True)
    else:
        rev = _git_rev() + " (work tree)"
        art_dir = cache_dir() / "art" / "worktree"
    meta = {
        "date": datetime.date.today().isoformat(),
        "lwc_commit": rev,
        "onnxruntime": ort_version(),
        "qemu": _qemu_version(),
        "k": a.k,
        "tuning": "none (no arm64 tuning records exist; lwc compile applies none)",
    }
    for name in a.models:
        onnx_path, spec = models[name]
        shapes = parse_shapes([spec])
        variants = [(t, None) for t in a.targets if t]  # --targets '' with --int8-det: int8 only
        if name == "det" and a.int8_det:
            variants.append(("rpi5", "int8"))
        for target, quant in variants:
            tag = f"{name}_{target}" + (f"_{quant}" if quant else "")
            art = art_dir / f"{tag}.so"
            if not (a.reuse and art.is_file()):
                calib = _calib_folder(shapes[0][1]) if quant else None
                print(f"compiling {tag} ...", flush=True)
                secs = compile_artifact(onnx_path, spec, target, art, calib)
                print(f"  {secs:.0f} s", flush=True)
            for cpu in a.cpus:
                if target in NEEDS_V82 and cpu != "cortex-a76":
                    continue
                print(f"{tag} on {cpu}", flush=True)
                r = compare(onnx_path, art, shapes, cpu, a.k, timeout=a.timeout, ort_memo=ort_memo)
                r.update(
                    name=name,
                    target=target,
                    precision=quant or "fp32",
                    lwc_tuning=_tuning_status(art),
                )
                del r["artifact"]
                _print_row(dict(r, artifact=tag))
                results = [
                    x
                    for x in results
                    if (x["name"], x["target"], x["precision"], x["cpu"])
                    != (name, target, r["precision"], cpu)
                ]
                results.append(r)
                json_path.write_text(
                    json.dumps({"meta": meta, "results": results}, indent=1) + "\n"
                )
    md_path.write_text(render_md(meta, results))
    print(f"wrote {md_path} and {json_path}")
    return 0


def _tuning_status(art: Path) -> str:
    """The artifact manifest's tuning status ("untuned", ...), or "?"."""
    try:
        return str(json.loads(art.with_suffix(".json").read_text())["tuning"]["status"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def cmd_report(a) -> int:
    data = json.loads(Path(a.json_out).read_text())
    Path(a.md_out).write_text(render_md(data["meta"], data["results"]))
    print(f"wrote {a.md_out}")
    return 0


def _qemu_version() -> str:
    p = subprocess.run([QEMU, "--version"], capture_output=True, check=False, text=True)
    return (
        p.stdout.split("\n")[0].replace("qemu-aarch64 version ", "") if p.returncode == 0 else "?"
    )


def render_md(meta: dict, results: list[dict]) -> str:
    order = {m: i for i, m in enumerate(MODELS)}
    rows = sorted(
        results,
        key=lambda r: (
            order.get(r["name"], 9),
            r["cpu"] != "cortex-a76",
            r["cpu"],
            r["target"],
            r["precision"],
        ),
    )
    shape = {r["name"]: "x".join(map(str, next(iter(r["input_shapes"].values())))) for r in results}
    lines = [
        "| model | cpu | lwc variant | lwc M instr | onnxruntime M instr | lwc / ort | lwc FMADD (scalar) M | lwc FMLA (vector) M | lwc SDOT/UDOT M | ort FMLA M |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lm, om = r.get("lwc_mix_m", {}), r.get("ort_mix_m", {})
        lines.append(
            f"| {r['name']} {shape[r['name']]} | {r['cpu']} | {r['target']} {r['precision']} | "
            f"{r['lwc_minsn']:,.1f} | {r['ort_minsn']:,.1f} | {r['ratio']:.2f} | "
            f"{lm.get('fp_fmadd', 0):,.1f} | {lm.get('fmla', 0):,.1f} | {lm.get('dot', 0):,.1f} | "
            f"{om.get('fmla', 0):,.1f} |"
        )
    return MD_TEMPLATE.format(table="\n".join(lines), **meta)


MD_TEMPLATE = """# arm64 speed proxy: instructions per inference under qemu (no board)

`benchmarks/arm64_proxy.py` runs an lwc arm64 artifact (lwc's own `lwc_runner`) and
onnxruntime's own aarch64 build (`libonnxruntime.so` from the aarch64 wheel of the
onnxruntime version installed in the venv, driven by `arm64_proxy/ort_runner.c`) on the same
fixed input under `qemu-aarch64 -cpu cortex-a76` (Raspberry Pi 5) or `-cpu cortex-a72`
(Raspberry Pi 4), one thread each, and counts executed guest instructions with a small qemu TCG
plugin (`arm64_proxy/insn_count.c`), in total and by class.

**Instruction counts are not time.** They ignore caches, memory bandwidth, pipelines and
dependency chains, and both sides run on one thread (a board runs onnxruntime on all its
cores). What they are: deterministic, independent of this machine's load, and cheap to get
without a board, so use them as a regression check and an order-of-magnitude comparison.
lwc's counts repeat to ~0.02 % (`tests/test_arm64_proxy.py` checks 0.1 %). onnxruntime's
per-inference count occasionally comes out up to ~4 % higher on cls (~0.5-0.7 M extra
integer/branch instructions in one run out of a few, load and setup unchanged), so treat
its column as ±4 % on small models. The class counts say *why*: scalar `FMADD` where the
vendor library uses 4-lane `FMLA` means the kernels are not vectorized. Emulated wall time is
*not* a usable proxy (qemu spends ~20 ns on a vector FMLA and <1 ns on an integer op).

Per inference = (count with `--repeat K` − count with `--repeat 0`) / K: both runners load the
model and run one warm-up inference in either case, so loading and warm-up cancel out.
Inputs: uniform [-1, 1), seed 0.

## Baseline ({date}, lwc {lwc_commit}, untuned; onnxruntime {onnxruntime}; qemu {qemu}; K={k})

Tuning: {tuning}. `rpi5` code uses ARMv8.2-A dotprod/fp16, so it is only run on cortex-a76.
The same binary gives the same count on cortex-a72 and cortex-a76 (qemu executes the same
instructions; `-cpu` decides which ISA extensions exist, hence which artifacts run and which
kernels onnxruntime dispatches to). Columns on the right: lwc's scalar `FMADD`, vector
`FMLA` and `SDOT/UDOT` per inference, and onnxruntime's `FMLA` (M); all classes are in the JSON
(`lwc_mix_m`, `ort_mix_m`). onnxruntime runs the fp32 model in every row, int8 rows included.

{table}

The shared reference rig (lwc ceae139, cortex-a76) measured cls lwc 42.9 M vs onnxruntime
20.2 M and det lwc 10,016 M vs onnxruntime 1,416 M (det on a synthetic text page instead of
uniform noise); this script reproduces them.

## Reproduce

Needs qemu-user (7.2), gcc, gcc/g++-aarch64-linux-gnu, root (for `unshare -m`, see below)
and network on first use (`pip download` of the aarch64 onnxruntime and TVM wheels; the
versions are the ones installed in the venv). Builds and downloads are cached in
`~/.cache/lwc/arm64-proxy` (`$LWC_ARM64_PROXY_CACHE`), artifacts in its `art/`.

    # the baseline above (about 40 min on 2 busy cores; det is ~5 min per emulated pair)
    .venv/bin/python benchmarks/arm64_proxy.py run --rev HEAD --int8-det
    # one model, into the existing table; `report` rewrites this file from the JSON
    .venv/bin/python benchmarks/arm64_proxy.py run --models cls --cpus cortex-a76 --append --reuse
    .venv/bin/python benchmarks/arm64_proxy.py report
    # any model + artifact
    .venv/bin/python benchmarks/arm64_proxy.py MODEL.onnx ART.so --input-shape x:1,3,48,192 --cpu cortex-a76 [--json]

`run` compiles with `lwc compile MODEL --target arm64|rpi5 --input-shape ... -o ART.so -q`
(default options; `--int8-det` adds `--target rpi5 --quantize int8 --calib DIR` for det, with
8 synthetic text pages as calibration set). `--rev REV` compiles with a clean
`git archive` copy of lwc at REV (the baseline used HEAD, so concurrent edits in the work tree
do not leak in); without it, the installed (editable) lwc. `--reuse` keeps artifacts already
in the cache. onnxruntime always runs the fp32 ONNX model, int8 rows included.

## How it works

- `arm64_proxy/insn_count.c`: qemu 7.2 TCG plugin (API v1). Debian's qemu-user ships no
  `qemu-plugin.h`; the few declarations it uses are vendored in the file. Built with
  `gcc -O2 -shared -fPIC`, loaded with `-plugin PATH,outfile=FILE`.
- onnxruntime segfaults at load under qemu-user 7.2 because the guest sees the host's x86
  `/proc/cpuinfo`. Every run happens inside `unshare -m` with a fake Cortex-A76/A72
  `/proc/cpuinfo` bind-mounted over the real one (only that process tree sees it).
- `TVM_NUM_THREADS=1`, onnxruntime intra-op threads 1.
- Under `-cpu max` onnxruntime would pick SVE/SME kernels; cortex-a76/a72 are the realistic
  settings for the Pi boards.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        ap = argparse.ArgumentParser(
            prog="arm64_proxy.py report", description="rewrite the .md from the .json"
        )
        ap.add_argument("--md-out", default=str(HERE / "arm64_proxy.md"))
        ap.add_argument("--json-out", default=str(HERE / "arm64_proxy.json"))
        return cmd_report(ap.parse_args(argv[1:]))
    if argv and argv[0] == "kernels":
        ap = argparse.ArgumentParser(
            prog="arm64_proxy.py kernels",
            description="instructions per inference of each kernel of an lwc aarch64 artifact "
            "(and of each library outside it), largest first",
        )
        ap.add_argument("artifact")
        ap.add_argument("model", help="the ONNX model (its input dtypes)")
        ap.add_argument("--input-shape", action="append", required=True, metavar="NAME:D0,D1,...")
        ap.add_argument("--cpu", default="cortex-a76", choices=sorted(CPUS))
        ap.add_argument("--top", type=int, default=25)
        ap.add_argument("--split-lib", action="append", default=[], metavar="LIB",
                        help="attribute this library's instructions to its exported symbols "
                        "(e.g. libtvm_runtime.so)")
        ap.add_argument("--json", action="store_true")
        a = ap.parse_args(argv[1:])
        try:
            inputs = make_inputs(Path(a.model), parse_shapes(a.input_shape))
            counts = kernel_counts(Path(a.artifact), inputs, a.cpu, split_libs=tuple(a.split_lib))
        except ProxyError as exc:
            print(f"arm64_proxy: {exc}", file=sys.stderr)
            return 1
        if a.json:
            print(json.dumps(counts, indent=1))
            return 0
        total = sum(counts.values())
        print(f"{total / 1e6:12.2f} M instructions / inference ({a.cpu}, 1 thread)")
        for name, n in list(counts.items())[: a.top]:
            print(f"{n / 1e6:12.2f} M {100 * n / total:5.1f} %  {name}")
        return 0
    if argv and argv[0] == "run":
        ap = argparse.ArgumentParser(
            prog="arm64_proxy.py run",
            description="compile PP-OCR cls/det/rec for arm64 + rpi5 and "
            "write benchmarks/arm64_proxy.md/.json",
        )
        ap.add_argument("--models", default=",".join(MODELS), type=lambda s: s.split(","))
        ap.add_argument("--targets", default="arm64,rpi5", type=lambda s: s.split(","))
        ap.add_argument("--cpus", default="cortex-a76,cortex-a72", type=lambda s: s.split(","))
        ap.add_argument("--int8-det", action="store_true", help="also rpi5 int8 det")
        ap.add_argument(
            "--reuse", action="store_true", help="reuse artifacts already compiled in the cache"
        )
        ap.add_argument(
            "--rev",
            default=None,
            help="compile with lwc at this git revision (a clean `git archive` copy in the cache; "
            "e.g. HEAD while the work tree is being edited); default: the installed lwc",
        )
        ap.add_argument(
            "--append",
            action="store_true",
            help="merge into the existing JSON instead of replacing it",
        )
        ap.add_argument(
            "--k", type=int, default=1, help="timed inferences per measured run (default 1)"
        )
        ap.add_argument("--timeout", type=float, default=3600)
        ap.add_argument("--md-out", default=str(HERE / "arm64_proxy.md"))
        ap.add_argument("--json-out", default=str(HERE / "arm64_proxy.json"))
        a = ap.parse_args(argv[1:])
        for c in a.cpus:
            if c not in CPUS:
                ap.error(f"unknown cpu {c}")
        if missing_tools():
            ap.error("missing: " + ", ".join(missing_tools()))
        return cmd_run(a)

    ap = argparse.ArgumentParser(
        description="guest instructions per inference of an lwc arm64 artifact vs onnxruntime's "
        "aarch64 build under qemu-aarch64 (not time: a deterministic regression proxy). "
        "`arm64_proxy.py run -h` for the PP-OCR table."
    )
    ap.add_argument("model", type=Path, help="the ONNX model (run by onnxruntime)")
    ap.add_argument("artifact", type=Path, help="the lwc aarch64 artifact compiled from it")
    ap.add_argument("--input-shape", action="append", required=True, metavar="NAME:D0,D1,...")
    ap.add_argument("--cpu", default="cortex-a76", choices=list(CPUS))
    ap.add_argument(
        "--k", type=int, default=1, help="timed inferences per measured run (default 1)"
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per emulated run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    if missing_tools():
        ap.error("missing: " + ", ".join(missing_tools()))
    try:
        r = compare(
            a.model,
            a.artifact,
            parse_shapes(a.input_shape),
            a.cpu,
            a.k,
            a.timeout,
            log=(lambda *_: None) if a.json else (lambda m: print(m, file=sys.stderr, flush=True)),
        )
    except ProxyError as exc:
        print(f"arm64_proxy: {exc}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"lwc          {r['lwc_minsn']:14,.2f} M instructions / inference")
        print(
            f"onnxruntime  {r['ort_minsn']:14,.2f} M instructions / inference  ({r['onnxruntime']})"
        )
        print(
            f"ratio        {r['ratio']:14.2f}  (lwc / onnxruntime, {a.cpu}, 1 thread; instructions, not time)"
        )
        print(f"lwc mix (M): {r['lwc_mix_m']}")
        print(f"ort mix (M): {r['ort_mix_m']}")
        print(f"max |lwc - onnxruntime| per output: {r['max_abs_diff_vs_ort']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
