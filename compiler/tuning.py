"""Tuning records: MetaSchedule tuning (``lwc tune``) and applying its records at compile.

A tuning log is a folder ``tuning_logs/<model-key>-<target-name>/`` holding MetaSchedule's
JSON database (``database_workload.json``, ``database_tuning_record.json``) and
``manifest.json`` (apache-tvm and tvm-ffi versions, target dict, input shapes, trials,
date, machine CPU, per-task results). ``logs/`` beside them holds MetaSchedule's own
logs (not committed).

Keys (case T1): the folder is found by model key (sha256 of the ONNX file plus the input
shapes) and target name; its manifest must name the same target (kind, triple, CPU,
attributes) and apache-tvm version, and each record's own target is checked again when
it is loaded. Records are then matched to tasks by TVM's structural equality of the
fused TIR function, so a pass change that alters some tasks leaves exactly those untuned.
A mismatch is reported ("no tuning records for arm64; 12 tasks untuned"), never applied.

Tuning (:func:`tune`): the module is prepared the way compile prepares it (lwc passes,
then TVM's zero pipeline: legalize + fuse), tasks are extracted and tuned with
evolutionary search and the XGBoost cost model. Trials are spread so every task gets
some (``max_trials_per_task = ceil(trials / tasks)``; TVM's gradient scheduler otherwise
starves later tasks). A measure callback reports progress, enforces the time budget and
a first Ctrl-C by terminating the remaining tasks after the current batch; records are
appended to the JSON database as they are measured, so an interrupted run leaves a valid
database and a rerun resumes from it (tasks that already have their trials are skipped).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import signal
import sys
import time
import types
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lwc.errors import LwcError

MANIFEST = "manifest.json"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
#: records moved out of RECORD_FILE because their trace does not replay (drop_unreplayable)
STALE_FILE = "stale_tuning_record.json"
_INVALID_SECS = 1e9  # MetaSchedule records failed runs as 1e10 s
_TARGET_KEYS = ("kind", "mtriple", "mcpu", "mattr", "arch")
_MS_LOGGER = "tvm.s_tir.meta_schedule"


# --------------------------------------------------------------------------- TVM access


def _ms():
    """``tvm.s_tir.meta_schedule`` (tensor intrinsics are registered separately)."""
    from tvm.s_tir import meta_schedule as ms

    return ms


_INTRIN_MODULES = {"x86_64": "x86", "aarch64": "arm_cpu"}


def fast_tensor_intrin(arch: str) -> None:
    """Register only the tensor intrinsics of ``arch`` (x86_64, aarch64).

    ``import tvm.s_tir.tensor_intrin`` (which MetaSchedule's TuneContext and builder do)
    parses hundreds of TVMScript functions for every backend; each parse calls
    ``inspect.stack()``, which is slow with many modules loaded: 35-90 s on a 2-core
    machine (TVM 0.27), so builder workers time out. The other backends' modules are
    stubbed out first. Also the builder workers' initializer.
    """
    keep = _INTRIN_MODULES.get(arch)
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        # another arch came first: its stub of this arch's module is replaced by the real one
        full = f"tvm.s_tir.tensor_intrin.{keep}"
        if keep and getattr(sys.modules.get(full), "__file__", None) is None:
            import importlib

            sys.modules.pop(full, None)
            importlib.import_module(full)
        return
    import tvm  # noqa: F401

    for name in ("cuda", "rocm", "hexagon", "riscv_cpu", "arm_cpu", "x86", "metal"):
        if name != keep:
            full = f"tvm.s_tir.tensor_intrin.{name}"
            sys.modules.setdefault(full, types.ModuleType(full))
    import tvm.s_tir.tensor_intrin  # noqa: F401


# --------------------------------------------------------------------------- keys


def model_key(sha256: str, input_shapes: dict[str, list[int]] | list, variant: str = "") -> str:
    """12 hex digits naming (model bytes, input shapes, graph variant): the workload part of a log name.

    ``variant`` is :func:`graph_variant` of the compile options; it is empty for the
    default options and then leaves the key what it was before variants existed, so
    fp32 tuning logs keep their folder names.
    """
    if isinstance(input_shapes, list):  # TensorSpec list
        input_shapes = {s.name: list(s.shape) for s in input_shapes}
    data = {"sha256": sha256, "shapes": input_shapes}
    if variant:
        data["variant"] = variant
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def variant_options(quantize=None, sparsity: str = "auto", disabled_passes=()) -> dict:
    """The compile options that change the graph compile builds (JSON data; {} for defaults).

    Args:
        quantize: :class:`lwc.quantize.QuantizeOptions` or None (its
            :meth:`~lwc.quantize.QuantizeOptions.fingerprint`, calibration data by digest).
        sparsity: ``--sparsity`` mode; ``auto`` is the default.
        disabled_passes: ``--disable-pass`` names (order does not matter).

    ``LWC_CONV_LAYOUT`` (ConvertConvLayout's override) is read from the environment and
    counts too: an NHWC build has other conv kernels than the NCHW one.
    Raises:
        LwcError: the calibration folder does not exist.
    """
    options = {}
    if quantize is not None:
        options["quantize"] = {"scheme": "int8", **quantize.fingerprint()}
    if sparsity != "auto":
        options["sparsity"] = sparsity
    if disabled_passes:
        options["disabled_passes"] = sorted(set(disabled_passes))
    layout = os.environ.get("LWC_CONV_LAYOUT", "").strip().upper()
    if layout:  # ConvertConvLayout's override changes every conv kernel
        options["conv_layout"] = layout
    return options


def graph_variant(quantize=None, sparsity: str = "auto", disabled_passes=()) -> str:
    """8 hex digits naming the graph-changing compile options, "" for the defaults.

    The same options give the same variant in ``lwc tune`` and ``lwc compile``, so
    both name the same tuning log folder (see :func:`variant_options`).
    """
    options = variant_options(quantize, sparsity, disabled_passes)
    if not options:
        return ""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]


def target_name(preset) -> str:
    """Folder-safe target name: preset name, with the CPU for ``host``, a hash for custom."""
    if preset.name == "host":
        return f"host-{preset.cpu}"
    if preset.name in ("custom", "cuda"):
        digest = hashlib.sha256(json.dumps(preset.target, sort_keys=True).encode()).hexdigest()
        return f"{preset.name}-{digest[:8]}"
    return preset.name


def target_identity(target: dict) -> dict:
    """The parts of a TVM target dict that decide whether a record is valid for it."""
    out = {}
    for key in _TARGET_KEYS:
        value = target.get(key)
        if value in (None, "", [], ()):
            continue
        out[key] = sorted(value) if isinstance(value, (list, tuple)) else value
    if "host" in target and isinstance(target["host"], dict):
        out["host"] = target_identity(target["host"])
    return out


def _target_dict(tvm_target) -> dict:
    """``tvm.target.Target`` -> plain JSON dict (lists for tuples)."""
    return json.loads(json.dumps(dict(tvm_target.export()), default=list))


def search_roots() -> list[Path]:
    """Where ``lwc compile`` looks for tuning logs: $LWC_TUNING_LOGS, ./tuning_logs, the repo's."""
    roots = []
    if os.environ.get("LWC_TUNING_LOGS"):
        roots += [Path(p) for p in os.environ["LWC_TUNING_LOGS"].split(os.pathsep) if p]
    roots.append(Path.cwd() / "tuning_logs")
    roots.append(Path(__file__).resolve().parent.parent / "tuning_logs")
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


# --------------------------------------------------------------------------- manifest


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


# --------------------------------------------------------------------------- database


def repair_database(folder: Path) -> int:
    """Drop unparseable lines (an interrupted write) from the JSON database; returns how many."""
    dropped = 0
    for name in (WORKLOAD_FILE, RECORD_FILE):
        path = Path(folder) / name
        if not path.is_file():
            continue
        lines = path.read_text().splitlines()
        good = []
        for line in lines:
            if not line.strip():
                continue
            try:
                json.loads(line)
                good.append(line)
            except json.JSONDecodeError:
                dropped += 1
        if len(good) != len([ln for ln in lines if ln.strip()]):
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text("".join(ln + "\n" for ln in good))
            os.replace(tmp, path)
    return dropped


def _register_intrinsics(folder: Path) -> None:
    """Register the tensor intrinsics a log's records may replay (TVM's and lwc's own)."""
    manifest = read_manifest(folder) or {}
    fast_tensor_intrin(_triple_arch(manifest.get("target", {}).get("tvm", {}).get("mtriple")))
    from lwc.passes._dot_intrin import register

    register()


def drop_unreplayable(folder: Path) -> int:
    """Move records whose trace does not replay on their workload to ``STALE_FILE``.

    Such a record names blocks its workload does not have: MetaSchedule's JSON database
    keys workloads by structural equality, which ignores names, so a record committed for
    a structurally equal kernel with other buffer names (``lv458_red`` vs ``lv547_red``)
    points at the first one's TIR. One such line makes TVM's JSONDatabase refuse the whole
    log; here the rest stays usable and the stale lines are kept aside, not deleted.

    Returns:
        how many records were moved.
    """
    ms = _ms()
    folder = Path(folder)
    records, workloads = folder / RECORD_FILE, folder / WORKLOAD_FILE
    if not records.is_file() or not workloads.is_file():
        return 0
    _register_intrinsics(folder)
    parsed = [ms.database.Workload.from_json(json.loads(line))
              for line in workloads.read_text().splitlines() if line.strip()]
    good, stale = [], []
    for line in records.read_text().splitlines():
        if not line.strip():
            continue
        index, record = json.loads(line)
        try:
            ms.database.TuningRecord.from_json(record, parsed[index])
            good.append(line)
        except Exception:  # TVM ScheduleError: a block or loop the trace names is not there
            stale.append(line)
    if stale:
        with open(folder / STALE_FILE, "a") as out:
            out.writelines(line + "\n" for line in stale)
        tmp = records.with_name(f".{RECORD_FILE}.tmp")
        tmp.write_text("".join(line + "\n" for line in good))
        os.replace(tmp, records)
    return len(stale)


def open_database(folder: Path):
    """MetaSchedule's JSON database in ``folder`` (created if missing).

    A truncated line (:func:`repair_database`) is dropped, and records that no longer
    replay on their workload are moved aside (:func:`drop_unreplayable`, with a warning)
    instead of failing the whole log.

    Raises:
        LwcError: TVM cannot load the log for another reason (a workload line it cannot
            parse, say).
    """
    ms = _ms()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    repair_database(folder)

    def load():
        return ms.database.JSONDatabase(
            path_workload=str(folder / WORKLOAD_FILE),
            path_tuning_record=str(folder / RECORD_FILE),
            module_equality="structural",
        )

    _register_intrinsics(folder)
    try:
        return load()
    except Exception as error:  # TVM parses every record in parallel and reports none by name
        try:
            moved = drop_unreplayable(folder)
        except Exception:  # a workload line TVM cannot parse: nothing to keep apart from
            moved = 0
        if not moved:
            first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            raise LwcError(f"tuning log {folder}: TVM cannot load it ({first}); move it away "
                           "or tune again") from None
        message = (f"tuning log {folder}: {moved} records no longer replay on their workload "
                   f"(block names changed; moved to {STALE_FILE})")
        warnings.warn(message, stacklevel=2)
        print(f"lwc: WARNING: {message}", file=sys.stderr, flush=True)
        return load()


def _record_secs(record) -> float:
    secs = [float(s) for s in (record.run_secs or [])]
    return sum(secs) / len(secs) if secs else math.inf


def valid_records_for(folder: Path, tvm_target):
    """An in-memory database of the records in ``folder`` that ran and match the target.

    Returns:
        (database, number of records kept, number dropped for another target).
    """
    ms = _ms()
    source = open_database(folder)  # registers the tensor intrinsics the records replay
    mine = target_identity(_target_dict(tvm_target))
    memory = ms.database.MemoryDatabase(module_equality="structural")
    kept = foreign = 0
    for record in source.get_all_tuning_records():
        if _record_secs(record) >= _INVALID_SECS:
            continue
        if target_identity(_target_dict(record.target)) != mine:
            foreign += 1
            continue
        memory.commit_tuning_record(
            ms.database.TuningRecord(
                record.trace,
                memory.commit_workload(record.workload.mod),
                record.run_secs,
                record.target,
                record.args_info,
            )
        )
        kept += 1
    return memory, kept, foreign


# --------------------------------------------------------------------------- compile side


def prepare(mod, tvm_target, database=None):
    """TVM's zero pipeline (legalize, fuse), applying ``database`` when given.

    This is how both ``lwc tune`` (task extraction) and ``lwc compile`` see the module, so
    the tasks tuned are exactly the functions compile looks up.
    """
    from tvm import relax

    ms = _ms() if database is not None else None
    with tvm_target:
        if database is None:
            return relax.get_pipeline("zero")(mod)
        with database:
            assert ms.Database.current() is not None
            return relax.get_pipeline("zero")(mod)


def _prim_funcs(mod) -> dict:
    import tvm

    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def task_workloads(fused, tvm_target) -> list:
    """The tuning tasks of a prepared module, as MetaSchedule extracts them.

    Structurally equal functions (the same conv at the same shape used twice) are one
    task, so this is the count ``lwc tune`` shows, not the number of functions. Kernels
    with a fixed schedule (:func:`schedule_fixed`) are not tasks.
    """
    ms = _ms()
    return [task.dispatched[0] for task in ms.relax_integration.extract_tasks(fused, tvm_target)
            if not _fixed_rule_funcs(task.mod)]


def _tasks_word(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


def _tuned_names(before, after) -> list[str]:
    """Functions that MetaScheduleApplyDatabase replaced by a tuned schedule."""
    import tvm_ffi

    old, new = _prim_funcs(before), _prim_funcs(after)
    out = []
    for name, func in new.items():
        if name in old and not tvm_ffi.structural_equal(old[name], func):
            out.append(name)
    return out


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


def apply_records(mod, preset, tvm_target, *, tuning_log=None, enabled=True, model_key=None):
    """Prepare ``mod`` for lowering with the matching tuning records applied.

    Runs TVM's zero pipeline (legalize + fuse) and MetaScheduleApplyDatabase with the
    records that match this target; the default lowering that follows keeps the tuned
    schedules (it re-runs legalize/fuse, which leave the fused functions alone).

    Args:
        tuning_log: a tuning log folder to use (``--tuning-log``); its manifest must match
            the target and apache-tvm version.
        enabled: False skips records (``--no-tuning-log``).
        model_key: :func:`model_key` of the model, to find its folder under tuning_logs/.
    Returns:
        (module, info): info has ``status`` (tuned/untuned), ``tasks``, ``tuned_tasks``,
        ``untuned_tasks``, ``log`` (folder or None) and ``message`` (one line for the
        compile output).
    Raises:
        LwcError: ``tuning_log`` does not exist or was tuned for another target/TVM.
    """
    if _CAPTURE.get():
        raise _Prepared(mod, preset, tvm_target, model_key)
    if preset.is_gpu:
        return mod, _info(None, 0, 0, "tuning records are not applied to GPU targets yet")
    fused = prepare(mod, tvm_target)
    workloads = task_workloads(fused, tvm_target)
    total = len(workloads)
    if not enabled:
        return _with_fixed(fused, preset, tvm_target,
                           _info(None, total, 0, f"tuning records disabled; {_tasks_word(total)} untuned"))
    choice = locate_log(preset, tvm_target, tuning_log=tuning_log, model_key=model_key)
    if choice.folder is None or choice.why_not:
        return _with_fixed(fused, preset, tvm_target,
                           _info(choice.folder, total, 0, f"{choice.why_not}; {_tasks_word(total)} untuned"))
    folder, substitute, records_target = choice.folder, choice.substitute, choice.records_target
    database, kept, foreign = valid_records_for(folder, records_target)
    if kept == 0:
        note = f" ({foreign} records for other targets ignored)" if foreign else ""
        return _with_fixed(fused, preset, tvm_target, _info(
            folder, total, 0, f"no usable records in {folder}{note}; {_tasks_word(total)} untuned"))
    applied = prepare(mod, tvm_target, database)
    tuned = sum(1 for w in workloads if database.has_workload(w))
    message = f"tuning: {tuned}/{total} tasks from {_short(folder)}; {total - tuned} untuned"
    if substitute:
        message += (f" (records tuned on {substitute}, applied to this {preset.cpu}: its ISA includes "
                    f"{substitute}'s; `lwc tune` here re-tunes for it)")
    info = _info(folder, total, tuned, message)
    info["tuned_on_cpu"] = substitute
    info["functions_scheduled"] = len(_tuned_names(fused, applied))
    applied, info = _with_fixed(applied, preset, tvm_target, info)
    return _with_single_thread(fused, applied, folder, info)


def _with_single_thread(fused, applied, folder, info: dict) -> tuple[object, dict]:
    from lwc import threads

    applied, serial = threads.apply(fused, applied, threads.read(folder))
    info["single_thread_kernels"] = serial
    if serial:
        info["message"] += f"; {serial} on one thread (timed by lwc tune: {threads.DECISIONS})"
    return applied, info


#: Block annotations (``schedule_rule``) of lwc kernels whose MetaSchedule rule is one
#: fixed schedule (no sampled decision worth a search): applied even without a record.
FIXED_SCHEDULE_RULES = ("lwc_int8_depthwise",)


def called_functions(mod) -> set[str]:
    """Names of the functions the module's Relax functions call."""
    from tvm import relax

    names = set()

    def visit(expr):
        if isinstance(expr, relax.GlobalVar):
            names.add(expr.name_hint)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return names


def _fixed_rule_funcs(mod) -> list:
    """Names of the unscheduled PrimFuncs holding a block with a fixed-schedule rule (of
    those a Relax function calls, where the module has any)."""
    from tvm import relax, s_tir

    graphs = any(isinstance(f, relax.Function) for f in mod.functions.values())
    called = called_functions(mod)  # FuseTIR leaves the unfused kernels in the module, uncalled
    names = []
    for name, func in _prim_funcs(mod).items():
        if (graphs and name not in called) or (func.attrs is not None and func.attrs.get("tirx.is_scheduled")):
            continue
        try:
            sch = s_tir.Schedule(func)
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
        except Exception:  # noqa: BLE001  (hand-written TIR without blocks, e.g. lwc's BSR kernels)
            continue
        rules = {str(sch.get(b).annotations.get("schedule_rule", "")) for b in blocks}
        if rules & set(FIXED_SCHEDULE_RULES):
            names.append(name)
    return names


def schedule_fixed(mod, preset, tvm_target) -> tuple[object, int]:
    """Schedule the functions no record scheduled whose kernel has a fixed schedule
    (:data:`FIXED_SCHEDULE_RULES`, e.g. lwc's int8 depthwise conv) with MetaSchedule's
    design space for ``preset`` (one space; the root's sampled unroll depth is drawn with
    a fixed seed) and its postprocessors, as one tuning trial would, without measuring.

    Untuned, such a function would be lowered as written: one thread, nothing vectorized.
    With it, logs tuned before the kernel existed (or on another CPU) need no new records.

    Returns:
        (module, number of functions scheduled). A function whose space or
        postprocessors fail is left unscheduled.
    """
    import tvm

    names = _fixed_rule_funcs(mod)
    if not names:
        return mod, 0
    ms = _ms()
    fast_tensor_intrin(_arch(tvm_target))  # the target's default rules name its dot-product intrinsics
    target = _with_num_cores(tvm_target)
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    done = 0
    for name in names:
        gvar = mod.get_global_var(name)
        func = mod[gvar]
        ctx = ms.TuneContext(mod=tvm.IRModule({"main": func}), target=target,
                             space_generator=space_generator(ms, preset), task_name=name, rand_state=0)
        try:
            sch = ctx.generate_design_space()[0]
            if not all(post.apply(sch) for post in ctx.space_generator.postprocs):
                continue
        except tvm.TVMError:
            continue
        scheduled = sch.mod["main"]
        for key, value in (func.attrs or {}).items():
            scheduled = scheduled.with_attr(key, value)
        out[gvar] = scheduled.with_attr("tirx.is_scheduled", True)
        done += 1
    return out, done


#: Cores assumed for a board target that does not name them (MetaSchedule requires the
#: attribute; in a fixed schedule it only bounds the root's parallel extent).
BOARD_CORES = 4


def _with_num_cores(tvm_target):
    """``tvm_target`` with ``num-cores`` (:data:`BOARD_CORES` where it has none)."""
    import tvm

    if tvm_target.attrs.get("num-cores"):
        return tvm_target
    config = dict(tvm_target.export())
    config["num-cores"] = BOARD_CORES
    return tvm.target.Target(config)


def _with_fixed(mod, preset, tvm_target, info: dict) -> tuple[object, dict]:
    mod, fixed = schedule_fixed(mod, preset, tvm_target)
    info["fixed_schedules"] = fixed
    if fixed:
        info["message"] += f"; {fixed} with lwc's fixed schedule (int8 depthwise)"
    return mod, info


def _short(folder: Path) -> str:
    try:
        return str(Path(folder).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(folder)


def _info(folder, total: int, tuned: int, message: str) -> dict:
    return {
        "status": "tuned" if tuned else "untuned",
        "log": str(folder) if folder else None,
        "tasks": total,
        "tuned_tasks": tuned,
        "untuned_tasks": total - tuned,
        "message": message,
    }


# --------------------------------------------------------------------------- tuning

_CAPTURE: contextvars.ContextVar[bool] = contextvars.ContextVar("lwc_tuning_capture", default=False)


class _Prepared(Exception):
    """Raised by :func:`apply_records` while :func:`prepared_module` captures its input."""

    def __init__(self, mod, preset, tvm_target, model_key_):
        super().__init__("prepared")
        self.mod, self.preset, self.tvm_target, self.model_key = mod, preset, tvm_target, model_key_


def prepared_module(model, target, input_shapes=None, **compile_options) -> _Prepared:
    """The Relax module exactly as ``lwc compile`` hands it to :func:`apply_records`.

    Runs :func:`lwc.driver.compile` up to the tuning step (import, lwc passes,
    quantization lowering, ...) and stops there, so the tasks tuned are the ones compile
    will look up whatever passes the driver runs.
    """
    from lwc import driver

    token = _CAPTURE.set(True)
    try:
        driver.compile(model, target, input_shapes, **compile_options)
    except _Prepared as prepared:
        return prepared
    finally:
        _CAPTURE.reset(token)
    raise LwcError("internal: lwc compile did not reach the tuning step")



@dataclass
class TaskStat:
    """One tuning task: name, FLOPs, weight (uses in the model), best latency, trials."""

    name: str
    flops: float
    weight: int
    trials: int = 0
    best_us: float | None = None

    @property
    def gflops(self) -> float | None:
        if not self.best_us or not self.flops:
            return None
        return self.flops / (self.best_us * 1e3)

    def to_json(self) -> dict:
        return {**asdict(self), "gflops": self.gflops}


@dataclass
class TuneProgress:
    """What a progress display needs; passed to the ``on_progress`` callback."""

    tasks: list[TaskStat]
    trials_done: int
    trials_planned: int
    tasks_done: int
    elapsed_s: float
    time_budget_s: float | None
    stop_reason: str | None = None

    @property
    def estimated_ms(self) -> float | None:
        """Sum over tuned tasks of weight x best latency (untuned tasks not counted)."""
        vals = [t.best_us * t.weight for t in self.tasks if t.best_us]
        return sum(vals) / 1e3 if vals else None


@dataclass
class TuneResult:
    """Outcome of :func:`tune`: the log folder, per-task results and why it stopped."""

    log_dir: Path
    tasks: list[TaskStat]
    trials_run: int
    elapsed_s: float
    stop_reason: str
    resumed_trials: int = 0
    manifest: dict = field(default_factory=dict)
    #: kernels timed on one thread and on all (:mod:`lwc.threads`), and how many run on one
    single_thread: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "log_dir": str(self.log_dir),
            "trials_run": self.trials_run,
            "resumed_trials": self.resumed_trials,
            "elapsed_s": round(self.elapsed_s, 1),
            "stop_reason": self.stop_reason,
            "tasks": [t.to_json() for t in self.tasks],
            "tuned_tasks": sum(1 for t in self.tasks if t.best_us),
            "single_thread": self.single_thread,
        }


@dataclass(frozen=True)
class RpcSettings:
    """A TVM RPC tracker and device key to measure on (``--rpc-tracker host:port --rpc-key``)."""

    tracker: str
    key: str
    session_timeout_s: int = 60

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.tracker.rpartition(":")
        if not host or not port.isdigit():
            raise LwcError(f"--rpc-tracker {self.tracker!r}: expected HOST:PORT")
        return host, int(port)


def _export_with(cxx: str, rt_mod) -> str:
    """Builder export for cross targets: link with ``cxx`` (runs in the builder worker)."""
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="lwc-ms-"), "tvm_tmp_mod.so")
    rt_mod.export_library(path, fcompile=cc.cross_compiler(cxx))
    return path


class _Interrupt:
    """Ctrl-C (SIGINT) or SIGTERM (a job scheduler, ``kill``, ``timeout``) asks for a clean
    stop after the current batch, keeping the database valid; a second signal aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.name = "Ctrl-C"  # the signal that asked, for the stop reason
        self._old: dict = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\nlwc: {self.name}: stopping after the current batch (again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _heaviness(task: TaskStat) -> float:
    """Sort key, heaviest task first: -(FLOPs x uses in the model)."""
    return -task.flops * max(1, task.weight)


def _plan(tasks: list[TaskStat], trials: int) -> tuple[int, list[int]]:
    """Per-task cap and the indices of tasks still below it, heaviest (FLOPs x weight) first.

    The round-robin scheduler visits tasks in this order, so when a time budget cuts the
    run short, the tasks left untuned are the cheap ones (reshapes, means).
    """
    per_task = max(1, math.ceil(trials / max(1, len(tasks))))
    todo = [i for i, t in enumerate(tasks) if t.trials < per_task]
    todo.sort(key=lambda i: _heaviness(tasks[i]))
    return per_task, todo


def _only_tasks_regex(pattern: str):
    """``re.compile(pattern)``; LwcError naming ``--only-tasks`` when it is not a regex."""
    import re

    try:
        return re.compile(pattern)
    except re.error as exc:
        raise LwcError(f"--only-tasks {pattern!r}: not a regular expression ({exc})") from None


def _plan_only(tasks: list[TaskStat], trials: int, pattern: str) -> tuple[int, list[int]]:
    """:func:`_plan` for ``--only-tasks``: the tasks whose name matches ``pattern``
    (``re.search``) are tuned up to the most-tuned match's trials plus ``ceil(trials / N)``
    (N matches), heaviest first. One match gets exactly ``trials`` more; with several,
    a match that had fewer trials catches up first, so the run may exceed ``trials``.

    Raises:
        LwcError: the pattern is not a regular expression or matches no task (the message
            lists the heaviest task names).
    """
    regex = _only_tasks_regex(pattern)
    chosen = [i for i, t in enumerate(tasks) if regex.search(t.name)]
    if not chosen:
        heavy = sorted(tasks, key=_heaviness)[:5]
        raise LwcError(f"--only-tasks {pattern!r} matches none of the {len(tasks)} tasks "
                       f"(heaviest: {', '.join(t.name for t in heavy)})")
    per_task = max(tasks[i].trials for i in chosen) + max(1, math.ceil(trials / len(chosen)))
    chosen.sort(key=lambda i: _heaviness(tasks[i]))
    return per_task, chosen


#: Seconds one trial takes on a 2-core x86 host (build + measure; 1.5-2.5 s measured while
#: tuning PP-OCR cls/det here), and evolutionary-search seconds per population member per
#: visit (50 s for 512 on PP-OCRv4 det's convs here); used only to plan under a time budget.
SECONDS_PER_TRIAL_ESTIMATE = 2.0
SEARCH_SECONDS_PER_CANDIDATE = 0.1
#: (population, trials per visit), most thorough first; MetaSchedule's defaults are (512, 64).
_SEARCH_PLANS = ((512, 64), (512, 32), (256, 16), (128, 8))


def _search_plan(per_task: int, tasks: int, time_budget_s: float | None,
                 population: int = 512) -> tuple[int, int]:
    """(evolutionary-search population, trials per task per round-robin visit).

    Without a time budget: ``population`` and 64 trials per visit (MetaSchedule's
    defaults). With ``--time-budget``: the most thorough plan of :data:`_SEARCH_PLANS`
    whose estimated visit time (search + trials, see the constants above) lets every task
    be visited twice, else the cheapest. Without this, 45 minutes on PP-OCRv4 det at
    (512, 64) measured 12 of its 62 tasks. Never above ``population`` or ``per_task``.
    """
    per_iter = max(1, min(64, per_task))
    if not time_budget_s:
        return population, per_iter
    for pop, trials in _SEARCH_PLANS:
        pop, trials = min(pop, population), min(trials, per_iter)
        visit_s = pop * SEARCH_SECONDS_PER_CANDIDATE + trials * SECONDS_PER_TRIAL_ESTIMATE
        if 2 * tasks * visit_s <= time_budget_s:
            return pop, trials
    return min(128, population), min(8, per_iter)


def _workload_key(mod) -> int:
    import tvm_ffi

    return int(tvm_ffi.structural_hash(mod))


def _existing(database, contexts) -> list[tuple[int, float | None]]:
    """(records, best seconds) already in the database for each task context."""
    by_key: dict[int, list] = {}
    for record in database.get_all_tuning_records():
        by_key.setdefault(_workload_key(record.workload.mod), []).append(_record_secs(record))
    out = []
    for ctx in contexts:
        secs = by_key.get(_workload_key(ctx.mod), [])
        valid = [s for s in secs if s < _INVALID_SECS]
        out.append((len(secs), min(valid) if valid else None))
    return out


def import_records(database, contexts, folder: Path, preset, tvm_target) -> int:
    """Copy ``folder``'s tuning records into ``database`` for the tasks that have none yet.

    Records are keyed by workload (the kernel's TIR, structurally hashed), so a variant of
    a tuned model (``--disable-pass``, pruned channels elsewhere) reuses every kernel the
    two graphs share and tunes only the rest. Tasks that already have records are left
    alone, so running again does not duplicate them.

    A ``host`` log tuned on a CPU whose ISA this one includes (:func:`cpu_substitute`: a
    ``znver4`` log when tuning on ``znver5``) seeds the search too: its records are
    re-targeted to ``tvm_target`` (the same schedules run here) and keep their measured
    times from the other CPU until tuning here finds better.

    Returns:
        the number of records copied.
    Raises:
        LwcError: ``folder`` has no manifest, or its records are for another target that
            is not an ISA subset of this host.
    """
    ms = _ms()
    manifest = read_manifest(Path(folder))
    if manifest is None:
        raise LwcError(f"--reuse-records {folder}: not a tuning log folder (no {MANIFEST})")
    why = manifest_mismatch(manifest, preset, tvm_target)
    if why and not cpu_substitute(manifest, preset, tvm_target):
        raise LwcError(f"--reuse-records {folder}: {why}")
    wanted = {}
    for ctx, (count, _) in zip(contexts, _existing(database, contexts)):
        if count == 0:
            wanted[_workload_key(ctx.mod)] = ctx.mod
    copied = 0
    for record in open_database(Path(folder)).get_all_tuning_records():
        mod = wanted.get(_workload_key(record.workload.mod))
        if mod is None:
            continue
        rebound = _rebind(record, database.commit_workload(mod), tvm_target if why else record.target)
        if rebound is not None:
            database.commit_tuning_record(rebound)
            copied += 1
    return copied


def _with_stored_names(task, database):
    """``task`` with the database's copy of its kernel when the two differ only in names.

    MetaSchedule files a new record under the stored, structurally equal workload but
    records the trace of the task's own TIR; when a graph change renamed the kernel's
    buffers since the log was written, that record would name blocks the stored workload
    lacks (:func:`drop_unreplayable`). Tuning the stored copy keeps trace and workload in
    step; the compiled kernel is the same.
    """
    if not database.has_workload(task.mod):
        return task
    stored = database.commit_workload(task.mod).mod
    if _SBLOCK.findall(stored.script()) == _SBLOCK.findall(task.mod.script()):
        return task
    return _ms().ExtractedTask(task.task_name, stored, task.target, list(task.dispatched), task.weight)


_SBLOCK = re.compile(r'T\.sblock\("([^"]+)"')


def _rebind(record, workload, target):
    """``record`` (tuned on a structurally equal kernel) as a record of ``workload``.

    Structural equality ignores names, but a trace finds blocks by name (``GetSBlock``):
    the same kernel extracted from another graph has other buffer names (``lv458_red``
    there, ``lv547_red`` here). The names are mapped block by block, in program order
    (blocks the schedule creates, ``lv458_red_rf``, by their prefix), and the result is
    replayed on ``workload`` to check it.

    Returns:
        a TuningRecord of ``workload`` for ``target``, or None when the trace does not replay.
    """
    ms = _ms()
    theirs = _SBLOCK.findall(record.workload.mod.script())
    mine = _SBLOCK.findall(workload.mod.script())
    trace, *rest = record.as_json()
    if theirs != mine and len(theirs) == len(mine):
        names = {a: b for a, b in zip(theirs, mine) if a != b}
        prefixes = sorted(names, key=len, reverse=True)

        def rename(name):
            if name in names:
                return names[name]
            old = next((p for p in prefixes if name.startswith(p)), None)
            return names[old] + name[len(old):] if old else name

        insts, decisions = trace
        insts = [[kind, inputs, [rename(attrs[0]), *attrs[1:]], outputs] if kind == "GetSBlock"
                 else [kind, inputs, attrs, outputs] for kind, inputs, attrs, outputs in insts]
        trace = [insts, decisions]
    try:
        replayed = ms.database.TuningRecord.from_json([trace, *rest], workload)
    except Exception:  # TVM ScheduleError: a block the trace names is not in this kernel
        return None
    return ms.database.TuningRecord(replayed.trace, workload, record.run_secs, target, record.args_info)


def _quiet_metaschedule_console() -> None:
    """MetaSchedule logs every trial to stdout; keep only its log files."""
    for name in [_MS_LOGGER, *logging.root.manager.loggerDict]:
        if not name.startswith(_MS_LOGGER):
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)


def tune(
    model,
    target="host",
    input_shapes: dict[str, list[int]] | None = None,
    *,
    trials: int = 1000,
    time_budget_s: float | None = None,
    log_root: str | os.PathLike | None = None,
    rpc: RpcSettings | None = None,
    on_progress: Callable[[TuneProgress], None] | None = None,
    runner_min_repeat_ms: int = 100,
    population_size: int = 512,
    seed: int | None = 0,
    quantize=None,
    sparsity: str = "auto",
    disabled_passes: tuple[str, ...] = (),
    reuse_records: tuple[str | os.PathLike, ...] = (),
    only_tasks: str | None = None,
) -> TuneResult:
    """Tune a model's tasks with MetaSchedule and store records in a tuning log folder.

    Args:
        model: ONNX path or ModelProto.
        target: preset name, target string or :class:`lwc.targets.Preset`.
        trials: total trials this run (spread over the tasks still short of their share).
        time_budget_s: stop cleanly after this many seconds (checked after each batch).
        log_root: tuning_logs root (default :func:`default_log_root`).
        rpc: measure on a device through a TVM RPC tracker instead of locally.
        on_progress: called after each measured batch.
        runner_min_repeat_ms: each measurement repeats for at least this long.
        population_size: evolutionary search population (smaller is faster, for tests).
        quantize, sparsity, disabled_passes: the compile options that change the graph
            (``--quantize int8 --calib ...``, ``--sparsity``, ``--disable-pass``), as
            :func:`lwc.driver.compile` takes them; the graph tuned is the one compile
            builds with them, and the log folder's key names them (:func:`graph_variant`).
        reuse_records: other tuning log folders (same target) whose records seed this
            model's tasks that have none yet (:func:`import_records`); those tasks then
            count as having that many trials.
        only_tasks: a regular expression; tune only the tasks whose name matches
            (``--only-tasks``, names as in ``lwc bench --profile``), ``trials`` more
            whatever they already have (several matches: :func:`_plan_only`) -- for a hot
            kernel the even spread left behind.

    Returns:
        a :class:`TuneResult`.
    Raises:
        LwcError: bad model/target, GPU target, no tunable task, or a ``reuse_records``
            folder that is missing or was tuned for another target; ``only_tasks``
            matching no task.
    """
    from lwc.frontend import model_sha256
    from lwc.targets import Preset, resolve

    started = time.perf_counter()
    if only_tasks:
        _only_tasks_regex(only_tasks)  # a bad pattern fails before any work
    preset = target if isinstance(target, Preset) else resolve(target)
    if preset.is_gpu:
        raise LwcError("lwc tune supports CPU targets only for now")
    if rpc is None and not preset.is_native:
        raise LwcError(
            f"target {preset.name} ({preset.arch}) cannot be measured on this machine; tune on "
            "the board with --rpc-tracker HOST:PORT --rpc-key KEY"
        )
    prepared = prepared_module(model, preset, input_shapes, quantize=quantize, sparsity=sparsity,
                               disabled_passes=tuple(disabled_passes))
    mod, tvm_target, key = prepared.mod, prepared.tvm_target, prepared.model_key
    folder = Path(log_root or default_log_root()) / f"{key}-{target_name(preset)}"
    folder.mkdir(parents=True, exist_ok=True)
    old_manifest = read_manifest(folder)
    if old_manifest:
        why = manifest_mismatch(old_manifest, preset, tvm_target)
        if why:
            raise LwcError(f"{folder} holds records that do not match ({why}); move it away first")

    ms = _ms()
    fast_tensor_intrin(_arch(tvm_target))
    fused = prepare(mod, tvm_target)
    # kernels with a fixed schedule (one design space) get it at compile time: no search
    extracted = [task for task in ms.relax_integration.extract_tasks(fused, tvm_target)
                 if not _fixed_rule_funcs(task.mod)]
    if not extracted:
        raise LwcError("the model has no tunable tasks")
    database = open_database(folder)
    extracted = [_with_stored_names(task, database) for task in extracted]
    # TVM's runtime halves the CPU count on x86 (assumes hyper-threading); measure with
    # the cores the target is scheduled for (runner workers inherit the variable)
    os.environ.setdefault("TVM_NUM_THREADS", str(_num_cores(tvm_target)))
    population_size, _ = _search_plan(math.ceil(trials / len(extracted)), len(extracted),
                                      time_budget_s, population_size)
    strategy = ms.search_strategy.EvolutionarySearch(population_size=population_size)
    # MetaSchedule (re)configures its loggers per run from the handlers present and
    # gives its console handler the logger's level: start clean, at WARNING, so its
    # INFO chatter (every trial) goes to the log files only
    ms_logger = logging.getLogger(_MS_LOGGER)
    for handler in list(ms_logger.handlers):
        ms_logger.removeHandler(handler)
        handler.close()
    ms_logger.setLevel(logging.WARNING)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted, work_dir=str(folder), space=space_generator(ms, preset), strategy=strategy,
        num_threads=_num_cores(tvm_target), seed=seed,
    )
    _quiet_metaschedule_console()
    reused = {str(other): import_records(database, contexts, Path(other), preset, tvm_target)
              for other in reuse_records}
    stats = [
        TaskStat(name=c.task_name, flops=_flops(c.mod), weight=int(w))
        for c, w in zip(contexts, weights)
    ]
    for stat, (count, best) in zip(stats, _existing(database, contexts)):
        stat.trials = count
        stat.best_us = best * 1e6 if best else None
    resumed = sum(s.trials for s in stats)
    per_task, todo = _plan_only(stats, trials, only_tasks) if only_tasks else _plan(stats, trials)
    source = {"file": Path(model).name, "sha256": model_sha256(model)} if isinstance(
        model, (str, os.PathLike)) else {"file": None, "sha256": None}
    manifest = _manifest(preset, tvm_target, source, input_shapes, key, old_manifest)
    variant = variant_options(quantize, sparsity, disabled_passes)
    if variant:
        manifest["variant"] = variant
    merged = dict((old_manifest or {}).get("reused_records", {}))
    for other, count in reused.items():
        merged[other] = merged.get(other, 0) + count
    if merged:  # records copied from other logs count as trials of their tasks; say how many
        manifest["reused_records"] = merged
    _write_json_atomic(folder / MANIFEST, {**manifest, "tasks": [s.to_json() for s in stats]})
    if not todo:
        threads_info = _measure_threads(mod, fused, preset, tvm_target, folder, database, rpc)
        return TuneResult(folder, stats, 0, time.perf_counter() - started, "every task already has "
                          f"{per_task} trials (raise --trials to tune more)", resumed, manifest, threads_info)

    planned = sum(per_task - stats[i].trials for i in todo)
    callback_state = _CallbackState(stats, todo, planned, started, time_budget_s, on_progress, per_task)
    builder = ms.builder.LocalBuilder(
        max_workers=_num_cores(tvm_target),
        timeout_sec=60,
        initializer=functools.partial(fast_tensor_intrin, _arch(tvm_target)),
        f_export=None if preset.is_native else _partial_export(preset.cross_compiler),
    )
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=runner_min_repeat_ms)
    runner = _runner(ms, rpc, evaluator)
    callbacks = [*ms.measure_callback.MeasureCallback.create("default"), _progress_callback(ms, callback_state)]
    _, per_iter = _search_plan(per_task, len(todo), time_budget_s, population_size)
    with _Interrupt() as interrupt:
        callback_state.interrupt = interrupt
        try:
            ms.tune_tasks(
                tasks=[contexts[i] for i in todo],
                task_weights=[weights[i] for i in todo],
                work_dir=str(folder),
                max_trials_global=planned,
                max_trials_per_task=per_task - min(stats[i].trials for i in todo),
                num_trials_per_iter=per_iter,
                builder=builder,
                runner=runner,
                database=database,
                cost_model=ms.cost_model.XGBModel(num_tuning_cores=_num_cores(tvm_target)),
                measure_callbacks=callbacks,
                # round-robin joins finished measurements at every step, so progress,
                # the time budget and Ctrl-C act within one batch; "gradient" joins
                # nothing until every task had its first batch (a 55-task model: an hour)
                task_scheduler="round-robin",
            )
        finally:
            elapsed = time.perf_counter() - started
            manifest["trials"] = sum(s.trials for s in stats)
            manifest["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            manifest["tuning_time_s"] = round((old_manifest or {}).get("tuning_time_s", 0) + elapsed, 1)
            _write_json_atomic(folder / MANIFEST, {**manifest, "tasks": [s.to_json() for s in stats]})
    reason = callback_state.stop_reason or "all planned trials done"
    threads_info = {} if reason.startswith("interrupted") else _measure_threads(
        mod, fused, preset, tvm_target, folder, database, rpc)
    return TuneResult(folder, stats, callback_state.trials_done, time.perf_counter() - started, reason,
                      resumed, manifest, threads_info)


def _measure_threads(mod, fused, preset, tvm_target, folder: Path, database, rpc) -> dict:
    """Time the tuned kernels of ``mod`` (``fused``: :func:`prepare` of it, unscheduled) on
    one thread and on all and store the decisions (:mod:`lwc.threads`) in ``folder``; only
    where the kernels run on this machine."""
    from lwc import threads

    if rpc is not None or not preset.is_native:
        return {}
    applied, _ = schedule_fixed(prepare(mod, tvm_target, database), preset, tvm_target)
    decisions = threads.measure(fused, applied, tvm_target)
    threads.write(folder, decisions, machine_cpu())
    serial = [d for d in decisions.values() if threads.single_thread(d)]
    return {"kernels_timed": len(decisions), "single_thread": len(serial),
            "parallel_us": round(sum(d["parallel_us"] for d in decisions.values()), 1),
            "best_us": round(sum(min(d["parallel_us"], d["serial_us"]) if threads.single_thread(d)
                                 else d["parallel_us"] for d in decisions.values()), 1)}


def space_generator(ms, preset):
    """MetaSchedule's design-space generator for ``preset``'s tasks.

    TVM picks postprocessors from the LLVM target: RewriteTensorize (which tensorizes the
    blocks lwc's packed int8 rule annotates with ``meta_schedule.auto_tensorize``) only
    for targets with VNNI, AVX-512 or Arm dotprod (apache/tvm space_generator.cc,
    GetRuleKindFromTarget). On x86 with only AVX2, PackInt8Conv2d's kernels use lwc's
    ``vpmaddwd`` intrinsic, so TVM's LLVM postprocessors are taken with RewriteTensorize
    added after RewriteReductionBlock (TVM's ``Postproc::DefaultCPUTensorization``
    order); schedule rules and mutators stay TVM's. Elsewhere: TVM's default.
    """
    from lwc.passes.pack_int8_conv2d import AVX2, dot_product_for

    if dot_product_for(preset.arch, preset.features) != AVX2:
        return "post-order-apply"
    postprocs = [ms.postproc.DisallowDynamicLoop(), ms.postproc.RewriteParallelVectorizeUnroll(),
                 ms.postproc.RewriteReductionBlock(),
                 ms.postproc.RewriteTensorize(vectorize_init_loop=True), ms.postproc.RewriteLayout()]
    return ms.space_generator.PostOrderApply(postprocs=postprocs)


def _partial_export(cxx: str):
    import functools

    return functools.partial(_export_with, cxx)


def _runner(ms, rpc: RpcSettings | None, evaluator):
    if rpc is None:
        return ms.runner.LocalRunner(timeout_sec=30, evaluator_config=evaluator)
    host, port = rpc.host_port
    config = ms.runner.RPCConfig(
        tracker_host=host, tracker_port=port, tracker_key=rpc.key,
        session_timeout_sec=rpc.session_timeout_s,
    )
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=1)


def _arch(tvm_target) -> str:
    return _triple_arch(tvm_target.attrs.get("mtriple"))


def _triple_arch(triple) -> str:
    """``x86_64-linux-gnu`` -> ``x86_64``; this machine's arch when there is no triple."""
    triple = str(triple or "")
    return triple.split("-")[0] if triple else platform.machine()


def _num_cores(tvm_target) -> int:
    cores = tvm_target.attrs.get("num-cores") if hasattr(tvm_target, "attrs") else None
    return int(cores) if cores else (os.cpu_count() or 1)


def _flops(mod) -> float:
    try:
        from tvm.s_tir.analysis import estimate_tir_flops
    except ImportError:  # moved in another release
        from tvm.tirx.analysis import estimate_tir_flops
    try:
        return float(estimate_tir_flops(mod))
    except Exception:  # noqa: BLE001  (unsupported construct: FLOPs unknown)
        return 0.0


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


class _CallbackState:
    def __init__(self, stats, todo, planned, started, budget, on_progress, per_task=None):
        self.stats, self.todo, self.planned = stats, todo, planned
        self.per_task = per_task or planned
        self.started, self.budget, self.on_progress = started, budget, on_progress
        self.trials_done = 0
        self.stop_reason: str | None = None
        self.interrupt: _Interrupt | None = None

    def progress(self, scheduler) -> TuneProgress:
        # TVM terminates a task only when it is picked again after reaching its cap
        done = sum(
            1 for k, i in enumerate(self.todo)
            if scheduler.tasks_[k].is_terminated or self.stats[i].trials >= self.per_task
        )
        done += len(self.stats) - len(self.todo)  # finished in an earlier run
        return TuneProgress(self.stats, self.trials_done, self.planned, done,
                            time.perf_counter() - self.started, self.budget, self.stop_reason)

    def update(self, scheduler, task_id: int, runner_results) -> None:
        stat = self.stats[self.todo[task_id]]
        for result in runner_results:
            stat.trials += 1
            self.trials_done += 1
            if result.error_msg is None and result.run_secs:
                secs = sum(float(s) for s in result.run_secs) / len(result.run_secs)
                if secs < _INVALID_SECS and (stat.best_us is None or secs * 1e6 < stat.best_us):
                    stat.best_us = secs * 1e6
        elapsed = time.perf_counter() - self.started
        if self.stop_reason is None:
            if self.budget is not None and elapsed >= self.budget:
                self.stop_reason = f"time budget of {_fmt_s(self.budget)} reached"
            elif self.interrupt is not None and self.interrupt.requested:
                self.stop_reason = f"interrupted ({self.interrupt.name})"
        if self.stop_reason:
            for i, task in enumerate(scheduler.tasks_):
                if not task.is_terminated:
                    scheduler.terminate_task(i)
        if self.on_progress:
            self.on_progress(self.progress(scheduler))


def _progress_callback(ms, state: _CallbackState):
    from tvm.ir.utils import derived_object

    @derived_object
    class _Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            state.update(task_scheduler, task_id, runner_results)

    return _Progress()


def _fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def parse_duration(text: str) -> float:
    """``40m``, ``1h30m``, ``90s``, ``2h``, or plain seconds -> seconds.

    Raises:
        LwcError: not a duration.
    """
    import re

    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text):
        raise LwcError(f"--time-budget {text!r}: expected a duration like 40m, 1h30m or 90s")
    scale = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * scale[u] for n, u in parts)
