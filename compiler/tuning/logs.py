"""Tuning log folders: where they are, their manifests, and which one a compile uses.

A tuning log is a folder ``tuning_logs/<model-key>-<target-name>/`` (names:
:mod:`lwc.tuning.keys`) holding MetaSchedule's JSON database (``database_workload.json``,
``database_tuning_record.json``; :mod:`lwc.tuning.database`) and ``manifest.json``
(apache-tvm and tvm-ffi versions, target dict, input shapes, trials, date, machine CPU,
per-task results). ``logs/`` beside them holds MetaSchedule's own logs (not committed).

A folder whose manifest names another target or apache-tvm version is reported ("no
tuning records for arm64; 12 tasks untuned"), never applied -- except a ``host`` log tuned
on a CPU whose ISA this one includes (:func:`cpu_substitute`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from lwc.errors import LwcError
from lwc.tuning.keys import _target_dict, target_identity, target_name

MANIFEST = "manifest.json"


def search_roots() -> list[Path]:
    """Where ``lwc compile`` looks for tuning logs: $LWC_TUNING_LOGS, ./tuning_logs, the repo's."""
    roots = []
    if os.environ.get("LWC_TUNING_LOGS"):
        roots += [Path(p) for p in os.environ["LWC_TUNING_LOGS"].split(os.pathsep) if p]
    roots.append(Path.cwd() / "tuning_logs")
    roots.append(Path(__file__).resolve().parents[2] / "tuning_logs")
    seen, out = set(), []
    for root in roots:
        key = str(root.resolve()) if root.exists() else str(root)
        if key not in seen:
            seen.add(key)
            out.append(root)
    return out


def default_log_root() -> Path:
    """Where ``lwc tune`` writes: $LWC_TUNING_LOGS (first entry) or ./tuning_logs."""
    env = os.environ.get("LWC_TUNING_LOGS")
    return Path(env.split(os.pathsep)[0]) if env else Path.cwd() / "tuning_logs"


def machine_cpu() -> str:
    """The machine's CPU model name (/proc/cpuinfo) plus LLVM's name for it."""
    from lwc import tvm_compat

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} (LLVM {tvm_compat.system_cpu()}, {os.cpu_count()} cpus)"


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def manifest_mismatch(manifest: dict, preset, tvm_target) -> str | None:
    """Why records in a folder with ``manifest`` must not be applied to this target (or None)."""
    from lwc import tvm_compat

    have = tvm_compat.versions().get("apache-tvm")
    want = manifest.get("versions", {}).get("apache-tvm")
    if want != have:
        return f"tuned with apache-tvm {want}, this is {have}"
    mine = target_identity(_target_dict(tvm_target))
    theirs = target_identity(manifest.get("target", {}).get("tvm", {}))
    if mine != theirs:
        return f"tuned for {json.dumps(theirs)}, not {json.dumps(mine)}"
    return None


def cpu_substitute(manifest: dict, preset, tvm_target) -> str | None:
    """The CPU a ``host`` log was tuned on, when its records may serve this machine's CPU.

    A log tuned on another CPU of the same triple, core count and TVM version is usable
    when every ISA feature LLVM enables for the tuned CPU is enabled for this one (e.g.
    ``znver4`` records on a ``znver5`` machine: same code runs, schedules not re-tuned).
    Only for the ``host`` preset: named presets and custom targets stay exact (case T1).

    Returns:
        the tuned CPU's LLVM name, or None (same CPU, other target, or not a subset).
    """
    from lwc import tvm_compat

    if preset.name != "host":
        return None
    theirs = target_identity(manifest.get("target", {}).get("tvm", {}))
    mine = target_identity(_target_dict(tvm_target))
    their_cpu, my_cpu = theirs.pop("mcpu", None), mine.pop("mcpu", None)
    if theirs != mine or not their_cpu or not my_cpu or their_cpu == my_cpu:
        return None
    if manifest.get("versions", {}).get("apache-tvm") != tvm_compat.versions().get("apache-tvm"):
        return None
    triple = mine.get("mtriple") or tvm_compat.system_triple()
    try:
        subset = tvm_compat.llvm_cpu_features(their_cpu, triple) <= tvm_compat.llvm_cpu_features(my_cpu, triple)
    except Exception:  # an mcpu this LLVM cannot build a target for
        return None
    return their_cpu if subset else None


def _closest_substitute(folders, preset, tvm_target) -> tuple[Path | None, str | None]:
    """Of the host logs tuned on CPUs whose ISA this one includes, the closest one.

    Closest = the tuned CPU with the most LLVM ISA features (on a ``znver5`` machine,
    ``znver4`` records -- AVX-512 VNNI kernels -- before ``znver3``'s AVX2 ones: int8
    workloads differ per ISA, so the nearer CPU's records also match more tasks).
    Ties go to the first folder name.

    Returns:
        (folder, tuned CPU's LLVM name), or (None, None) when no folder qualifies.
    """
    from lwc import tvm_compat

    best = (None, None, -1)
    for folder in sorted(folders):
        manifest = read_manifest(folder) or {}
        cpu = cpu_substitute(manifest, preset, tvm_target)
        if not cpu:
            continue
        triple = manifest["target"]["tvm"].get("mtriple") or tvm_compat.system_triple()
        size = len(tvm_compat.llvm_cpu_features(cpu, triple))
        if size > best[2]:
            best = (folder, cpu, size)
    return best[0], best[1]


def _records_target(manifest: dict):
    """The TVM target a log's records were tuned for (from its manifest)."""
    import tvm

    return tvm.target.Target(manifest["target"]["tvm"])


def _manifest(preset, tvm_target, source, input_shapes, key, old) -> dict:
    from lwc import tvm_compat

    return {
        "format": 1,
        "model_key": key,
        "model": source,
        "input_shapes": input_shapes or {},
        "target": {"name": target_name(preset), "preset": preset.name, "tvm": _target_dict(tvm_target)},
        "versions": tvm_compat.versions(),
        "machine_cpu": machine_cpu(),
        "created": (old or {}).get("created")
        or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "trials": (old or {}).get("trials", 0),
        "tuning_time_s": (old or {}).get("tuning_time_s", 0),
        "search": "MetaSchedule evolutionary search, XGBoost cost model, round-robin task scheduler",
    }


def find_log(model_key_: str | None, preset, roots: list[Path] | None = None):
    """The tuning log folder for (model, target), and the folders of other targets.

    Returns:
        (matching folder or None, other folders with the same model key).
    """
    if model_key_ is None:
        return None, []
    name = f"{model_key_}-{target_name(preset)}"
    match, others = None, []
    for root in roots or search_roots():
        if not root.is_dir():
            continue
        if match is None and (root / name / MANIFEST).is_file():
            match = root / name
        others += [p for p in root.glob(f"{model_key_}-*") if p.name != name and p.is_dir()]
    return match, others


@dataclass
class LogChoice:
    """The tuning log a compile uses for (model, target) -- :func:`locate_log`'s answer.

    Attributes:
        folder: the log folder, or None.
        substitute: the CPU a host log was tuned on when it is not this machine's (its
            ISA a subset of this CPU's, :func:`cpu_substitute`), else None.
        records_target: the TVM target the folder's records carry (this target, or the
            substitute CPU's).
        why_not: why no records apply (one line; then ``folder`` may still name the log
            that was refused), or None.
    """

    folder: Path | None
    substitute: str | None = None
    records_target: object = None
    why_not: str | None = None


def locate_log(preset, tvm_target, *, tuning_log=None, model_key=None) -> LogChoice:
    """Find the tuning log for a model on a target: ``--tuning-log`` when given, else
    ``tuning_logs/<model_key>-<target>/`` in :func:`search_roots`, else a host log tuned
    on a CPU whose ISA this one includes (the closest such CPU, :func:`_closest_substitute`).

    The one lookup both :func:`apply_records` and ``--sparsity auto`` (which times the
    tuned dense kernels against BSR) use, so they never disagree about the log.

    Raises:
        LwcError: ``tuning_log`` has no manifest, or was tuned for another target/TVM.
    """
    target = target_name(preset)
    if tuning_log is not None:
        folder = Path(tuning_log)
        manifest = read_manifest(folder)
        if manifest is None:
            raise LwcError(f"--tuning-log {tuning_log}: no {MANIFEST} there (not a tuning log)")
        why = manifest_mismatch(manifest, preset, tvm_target)
        substitute = cpu_substitute(manifest, preset, tvm_target) if why else None
        if why and not substitute:
            raise LwcError(f"--tuning-log {tuning_log} cannot be used for {target}: {why}")
        return LogChoice(folder, substitute, _records_target(manifest) if substitute else tvm_target)
    folder, others = find_log(model_key, preset)
    substitute = None
    if folder is None:
        folder, substitute = _closest_substitute(others, preset, tvm_target)
    if folder is None:
        extra = ""
        if others:
            extra = f" (tuning_logs has {', '.join(sorted(p.name.split('-', 1)[1] for p in others))})"
        return LogChoice(None, why_not=f"no tuning records for {target}{extra}")
    manifest = read_manifest(folder) or {}
    why = None if substitute else manifest_mismatch(manifest, preset, tvm_target)
    if why:
        return LogChoice(folder, why_not=f"tuning log {folder.name} not applied ({why})")
    return LogChoice(folder, substitute, _records_target(manifest) if substitute else tvm_target)


def runs_here(tvm_target) -> bool:
    """Whether kernels built for ``tvm_target`` (a native preset) run on this CPU: its
    ``mcpu`` is this machine's (LLVM's name), a generic level (``x86-64-v3``, ``generic``)
    or absent. A named CPU other than this one may use instructions this one lacks."""
    from lwc import tvm_compat

    mcpu = str(tvm_target.attrs.get("mcpu") or "")
    return mcpu in ("", "generic", tvm_compat.system_cpu()) or mcpu.startswith("x86-64")
