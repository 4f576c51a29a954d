"""Target presets: what lwc compiles for, kept as data.

A :class:`Preset` is a frozen record: the TVM target dict (JSON form, with ``host`` for
GPU targets), the CPU core, lwc's ISA feature names and the C++ compiler that links the
artifact. Passes ask a preset for features (``preset.has("dotprod")``), never for its name.

The static presets live in ``presets.json`` beside this file. Two are computed on the
machine that runs lwc: ``host`` (the native CPU, as LLVM names it) and ``cuda`` (the
local GPU's compute capability, x86-64 host side).

:func:`resolve` also accepts what users paste from TVM tutorials: old-style target
strings (``"llvm -mtriple=aarch64-linux-gnu -mattr=+neon"``, ``"cuda -arch=sm_87"``)
which TVM >= 0.20 rejects, and JSON target dicts.
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from lwc.errors import LwcError
from lwc.machine import usable_cores  # noqa: F401  (re-exported: lwc.targets.usable_cores)

_PRESETS_FILE = Path(__file__).with_name("presets.json")

# TVM target attributes whose values are lists or integers in the dict form.
_LIST_ATTRS = {"mattr", "keys", "libs", "cl-opt"}
_INT_ATTRS = {
    "num-cores",
    "max_num_threads",
    "max_shared_memory_per_block",
    "thread_warp_size",
    "max_threads_per_block",
    "opt-level",
    "vector-width",
}


@dataclass(frozen=True)
class Preset:
    """One compilation target.

    Attributes:
        name: preset name as given to ``--target`` (``"custom"`` for translated strings).
        description: one line for ``lwc targets``.
        target: TVM target in dict (JSON) form; GPU targets carry their CPU in ``host``.
        cpu: CPU core of the (host side of the) device, as LLVM's ``mcpu`` names it.
        features: lwc ISA feature names (neon, dotprod, i8mm, fp16, avx2, avx512, vnni,
            cuda, tensorcore).
        cross_compiler: C++ compiler that links the exported shared library.
        board_cuda: for Jetson presets, the CUDA release of the newest JetPack for the
            board (e.g. ``"12.6"``): device code from a newer CUDA major needs a driver the
            stock board does not have (NVIDIA CUDA Compatibility guide: minor-version
            compatibility holds within one major release only). None: no constraint.
        isa: the board CPU's ISA for :mod:`lwc.audit`: ``level`` (``"armv8.2-a"``),
            ``extensions`` beyond Armv8.0-A's fp/asimd (lwc.audit's names: lse, dotprod,
            fp16, ...) and ``qemu_cpu`` (the qemu-aarch64 ``-cpu`` that runs the audit).
            None: not audited (x86-64, custom targets).
        board_os: the board's OS and its ``glibc`` / ``glibcxx`` / ``cxxabi`` versions,
            the newest symbol versions a shared library for it may need. None: no check.
    """

    name: str
    description: str
    target: dict
    cpu: str
    features: tuple[str, ...] = field(default_factory=tuple)
    cross_compiler: str = "g++"
    board_cuda: str | None = None
    isa: dict | None = None
    board_os: dict | None = None

    @property
    def host_target(self) -> dict:
        """The CPU-side TVM target dict (the target itself for CPU presets)."""
        return self.target.get("host", self.target)

    @property
    def triple(self) -> str:
        """LLVM target triple of the CPU side, e.g. ``aarch64-linux-gnu``."""
        return self.host_target.get("mtriple") or _system_triple()

    @property
    def arch(self) -> str:
        """Machine architecture of the artifact's CPU code: ``aarch64`` or ``x86_64``."""
        return self.triple.split("-")[0]

    @property
    def is_gpu(self) -> bool:
        return self.target.get("kind") == "cuda"

    @property
    def is_native(self) -> bool:
        """True when artifacts for this preset run in-process on this machine."""
        return self.arch == platform.machine() and not self.is_gpu

    def has(self, feature: str) -> bool:
        return feature in self.features

    def tvm_target(self):
        """The ``tvm.target.Target`` for this preset.

        Raises:
            LwcError: TVM rejects the target dict.
        """
        import tvm

        try:
            return tvm.target.Target(self.target)
        except Exception as err:  # TVM raises ValueError/TVMError with C++ context
            raise LwcError(
                f"TVM rejects target {json.dumps(self.target)}: {_first_line(err)}"
            ) from None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "triple": self.triple,
            "cpu": self.cpu,
            "features": list(self.features),
            "cross_compiler": self.cross_compiler,
            "tvm_target": self.target,
            **({"isa": self.isa} if self.isa else {}),
            **({"board_os": self.board_os} if self.board_os else {}),
            **({"board_cuda": self.board_cuda} if self.board_cuda else {}),
        }


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


@cache
def _system_triple() -> str:
    machine = platform.machine()
    if platform.system() == "Linux":
        return f"{machine}-linux-gnu"
    from lwc import tvm_compat

    return tvm_compat.system_triple()


@cache
def _static_presets() -> dict[str, Preset]:
    raw = json.loads(_PRESETS_FILE.read_text())
    return {
        name: Preset(name=name, **{**entry, "features": tuple(entry["features"])})
        for name, entry in raw.items()
        if not name.startswith("_")
    }


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features"):
            return set(line.split(":", 1)[1].split())
    return set()


def host_features(flags: set[str] | None = None) -> tuple[str, ...]:
    """lwc feature names of this machine's CPU, read from /proc/cpuinfo flags.

    x86: avx2, fma, avx512 (avx512f), vnni (avx512_vnni or avx_vnni).
    AArch64: neon (asimd), dotprod (asimddp), fp16 (asimdhp), i8mm.
    """
    flags = _cpu_flags() if flags is None else flags
    table = {
        "avx2": {"avx2"},
        "fma": {"fma"},
        "avx512": {"avx512f"},
        "vnni": {"avx512_vnni", "avx_vnni"},
        "neon": {"asimd"},
        "dotprod": {"asimddp"},
        "fp16": {"asimdhp"},
        "i8mm": {"i8mm"},
    }
    return tuple(name for name, keys in table.items() if flags & keys)


@cache
def host_preset() -> Preset:
    """The native CPU of this machine (LLVM's name for it as ``mcpu``)."""
    from lwc import tvm_compat

    cpu = tvm_compat.system_cpu()
    cores = usable_cores()
    target = {"kind": "llvm", "mtriple": _system_triple(), "mcpu": cpu, "num-cores": cores}
    return Preset(
        name="host",
        description=f"This machine's CPU ({cpu}, {cores} cores)",
        target=target,
        cpu=cpu,
        features=host_features(),
        cross_compiler="g++",
    )


def local_gpu_arch() -> str | None:
    """Compute capability of GPU 0 as ``sm_XY``, or None when no GPU is visible."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.split()
    except (subprocess.SubprocessError, OSError):
        return None
    return "sm_" + out[0].replace(".", "") if out else None


def cuda_preset() -> Preset:
    """The local GPU with an x86-64 (native) host side.

    Raises:
        LwcError: no GPU is visible (a bare cuda target would silently mean sm_50).
    """
    arch = local_gpu_arch()
    if arch is None:
        raise LwcError(
            "target 'cuda' means the local GPU, but nvidia-smi shows none; "
            "name the board instead (e.g. --target jetson-orin) or give the arch "
            "(--target 'cuda -arch=sm_87')"
        )
    return _cuda_custom(arch)


def _cuda_custom(arch: str, host: dict | None = None) -> Preset:
    host = host or host_preset().target
    return Preset(
        name="cuda",
        description=f"CUDA GPU {arch}",
        target={"kind": "cuda", "arch": arch, "host": host},
        cpu=host.get("mcpu", "generic"),
        features=("cuda",),
        cross_compiler=_compiler_for_triple(host.get("mtriple")),
    )


def preset_names() -> list[str]:
    """All preset names, ``host`` and ``cuda`` included."""
    return ["host", *_static_presets(), "cuda"]


def all_presets(include_cuda: bool = False) -> list[Preset]:
    """The presets in :func:`preset_names` order.

    Args:
        include_cuda: add ``cuda`` (the local GPU). Without a visible GPU it is listed
            all the same, without an ``arch`` and with a description that says so
            (``resolve("cuda")`` then fails with the same advice).
    """
    presets = [host_preset(), *_static_presets().values()]
    if include_cuda:
        presets.append(cuda_preset() if local_gpu_arch() else _cuda_unavailable())
    return presets


def _cuda_unavailable() -> Preset:
    """The ``cuda`` entry of ``lwc targets`` on a machine where nvidia-smi shows no GPU."""
    host = host_preset().target
    return Preset(
        name="cuda",
        description="The local NVIDIA GPU (no GPU visible here: use a jetson-* preset or "
        "'cuda -arch=sm_XY')",
        target={"kind": "cuda", "host": host},
        cpu=host.get("mcpu", "generic"),
        features=("cuda",),
        cross_compiler=_compiler_for_triple(host.get("mtriple")),
    )


def _compiler_for_triple(triple: str | None) -> str:
    if not triple or triple.split("-")[0] == platform.machine():
        return "g++"
    arch = triple.split("-")[0]
    if arch in ("aarch64", "arm64"):
        return "aarch64-linux-gnu-g++"
    if arch.startswith("arm"):
        return "arm-linux-gnueabihf-g++"
    return f"{arch}-linux-gnu-g++"


def parse_target_string(spec: str) -> dict:
    """Translate an old-style TVM target string into the dict form TVM 0.27 accepts.

    ``"llvm -mtriple=aarch64-linux-gnu -mattr=+neon,+dotprod"`` ->
    ``{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]}``.
    Boolean flags without a value (``-foo``) become ``True``.

    Raises:
        LwcError: the string is empty or a token is not ``-key[=value]``.
    """
    tokens = shlex.split(spec)
    if not tokens or tokens[0].startswith("-"):
        raise LwcError(f"target string {spec!r} must start with a target kind (llvm, cuda)")
    target: dict = {"kind": tokens[0]}
    for token in tokens[1:]:
        if not token.startswith("-") or token in ("-", "--"):
            raise LwcError(f"target string {spec!r}: expected -key=value, got {token!r}")
        key, sep, value = token.lstrip("-").partition("=")
        if not sep:
            target[key] = True
        elif key in _LIST_ATTRS:
            target[key] = [v for v in value.split(",") if v]
        elif key in _INT_ATTRS:
            target[key] = int(value)
        else:
            target[key] = value
    return target


def _preset_from_dict(target: dict, spec: str) -> Preset:
    kind = target.get("kind")
    if kind == "cuda":
        if "arch" not in target:
            raise LwcError(
                f"target {spec!r} has no arch; a cuda target must name it, e.g. "
                "'cuda -arch=sm_87' or --target jetson-orin"
            )
        host = target.get("host")
        if isinstance(host, str):
            host = parse_target_string(host)
        preset = _cuda_custom(target["arch"], host)
        return Preset(**{**preset.__dict__, "target": {**target, "host": preset.host_target}})
    if kind != "llvm":
        raise LwcError(f"target kind {kind!r} is not supported by lwc (use llvm or cuda)")
    triple = target.get("mtriple")
    mattr = set(target.get("mattr", []))
    native = (not triple or triple == _system_triple()) and target.get("mcpu") == host_preset().cpu
    features = host_features() if native else ()
    if triple and triple.startswith("aarch64"):
        names = {"+neon": "neon", "+dotprod": "dotprod", "+fullfp16": "fp16", "+i8mm": "i8mm"}
        features = tuple(dict.fromkeys(["neon", *(f for a, f in names.items() if a in mattr)]))
    return Preset(
        name="custom",
        description=f"translated from {spec!r}",
        target=target,
        cpu=target.get("mcpu", "generic"),
        features=tuple(features),
        cross_compiler=_compiler_for_triple(triple),
    )


def resolve(spec: str) -> Preset:
    """The preset for ``--target SPEC``.

    SPEC is a preset name (see :func:`preset_names`), an old-style TVM target string
    (``"llvm -mtriple=aarch64-linux-gnu -mattr=+neon"``) or a JSON target dict.

    Raises:
        LwcError: unknown preset name (the message lists the presets), malformed string
            or JSON, or a target TVM rejects.
    """
    spec = spec.strip()
    if spec == "host":
        return host_preset()
    if spec == "cuda":
        return cuda_preset()
    presets = _static_presets()
    if spec in presets:
        return presets[spec]
    if spec.startswith("{"):
        try:
            target = json.loads(spec)
        except json.JSONDecodeError as err:
            raise LwcError(f"target {spec!r} is not valid JSON: {err}") from None
    elif " " in spec or spec in ("llvm",):
        target = parse_target_string(spec)
    else:
        raise LwcError(f"unknown target {spec!r}; presets: {', '.join(preset_names())}")
    preset = _preset_from_dict(target, spec)
    _check_cpu(preset, spec)
    preset.tvm_target()  # validate early
    return _equivalent_preset(preset) or preset


def _check_cpu(preset: Preset, spec: str) -> None:
    """Refuse an ``mcpu`` the bundled LLVM does not know for the triple.

    TVM only logs a C++ warning for one and silently compiles for ``generic``.
    """
    cpu = preset.host_target.get("mcpu")
    if cpu is None:
        return
    from lwc import tvm_compat

    if not tvm_compat.llvm_is_valid_cpu(cpu, preset.triple):
        raise LwcError(
            f"target {spec!r}: LLVM does not know CPU {cpu!r} for {preset.triple}; use an "
            f"LLVM CPU name (e.g. cortex-a72, x86-64-v3) or a preset: {', '.join(preset_names())}"
        )


def _cpu_key(target: dict) -> tuple:
    return (
        target.get("kind"),
        target.get("mtriple"),
        target.get("mcpu", "generic"),
        tuple(sorted(target.get("mattr", []))),
    )


def _equivalent_preset(preset: Preset) -> Preset | None:
    """The static CPU preset that a translated target string means, if any."""
    if preset.is_gpu:
        return None
    for candidate in _static_presets().values():
        if not candidate.is_gpu and _cpu_key(candidate.target) == _cpu_key(preset.target):
            return candidate
    return None
