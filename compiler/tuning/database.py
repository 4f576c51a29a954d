"""MetaSchedule's JSON database in a tuning log folder.

Opening it (:func:`open_database`: torn lines dropped, records that no longer replay moved
aside), the records valid for a target (:func:`valid_records_for`), copying records from
other logs (:func:`import_records`, renaming blocks by :func:`_rebind`), and registering
the tensor intrinsics its records replay (:func:`fast_tensor_intrin`). Records are matched
to tasks by TVM's structural equality of the fused TIR function, so a pass change that
alters some tasks leaves exactly those untuned.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
import types
import warnings
from pathlib import Path

from lwc.errors import LwcError
from lwc.tuning.compact import RECORD_FILE, WORKLOAD_FILE, expand, workload_file
from lwc.tuning.keys import _target_dict, target_identity
from lwc.tuning.logs import MANIFEST, cpu_substitute, manifest_mismatch, read_manifest

#: records moved out of RECORD_FILE because their trace does not replay (drop_unreplayable)
STALE_FILE = "stale_tuning_record.json"
_INVALID_SECS = 1e9  # MetaSchedule records failed runs as 1e10 s


def _ms():
    """``tvm.s_tir.meta_schedule`` (tensor intrinsics are registered separately)."""
    from tvm.s_tir import meta_schedule as ms

    return ms


_INTRIN_MODULES = {"x86_64": "x86", "aarch64": "arm_cpu"}


def builder_worker(arch: str, llvm: bool) -> None:
    """Initializer of MetaSchedule's builder workers (processes that only build this
    target's candidates): the target's tensor intrinsics (:func:`fast_tensor_intrin`), and
    on LLVM targets a vector ``isnan`` as :func:`lwc.tvm_compat.build` has
    (:func:`lwc.tvm_compat.vectorizable_isnan`), so candidates are timed as the compile
    will build them."""
    fast_tensor_intrin(arch)
    if llvm:
        from lwc import tvm_compat

        tvm_compat.vectorizable_isnan().__enter__()  # for the worker's lifetime


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


def _arch(tvm_target) -> str:
    return _triple_arch(tvm_target.attrs.get("mtriple"))


def _triple_arch(triple) -> str:
    """``x86_64-linux-gnu`` -> ``x86_64``; this machine's arch when there is no triple."""
    triple = str(triple or "")
    return triple.split("-")[0] if triple else platform.machine()


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
    from lwc.kernels.dot_intrin import register

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
    records, workloads = folder / RECORD_FILE, workload_file(folder)
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


def open_database(folder: Path, *, writable: bool = False):
    """MetaSchedule's JSON database in ``folder`` (created if missing).

    A compacted folder (:mod:`lwc.tuning.compact`) is read from its decompressed copy in
    lwc's cache; ``writable=True`` (``lwc tune``) expands it in place first.

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
    if writable:
        expand(folder)
    repair_database(folder)

    def load():
        return ms.database.JSONDatabase(
            path_workload=str(workload_file(folder)),
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


def record_json(record) -> list:
    """A TuningRecord as plain JSON-able Python (lists, dicts, str, int, float).

    TVM's ``TuningRecord.as_json`` raises TypeError on a trace holding a
    ``TransformLayout`` (its IndexMap operand stays an object); TVM's JSON database writes
    that operand as the IndexMap's JSON graph in a string, which ``from_json`` parses
    back. This writes it the same way (``tvm.ir.save_json``).
    """
    from tvm.s_tir.meta_schedule import _ffi_api
    from tvm.tirx import IndexMap

    def plain(obj):
        if isinstance(obj, IndexMap):
            import tvm

            return tvm.ir.save_json(obj)
        if isinstance(obj, (str, bool, int, float)) or obj is None:
            return obj
        if hasattr(obj, "items"):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)) or hasattr(obj, "__len__"):
            return [plain(v) for v in obj]
        if hasattr(obj, "value"):  # IntImm / FloatImm
            return obj.value
        return obj

    return plain(_ffi_api.TuningRecordAsJSON(record))


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
    trace, *rest = record_json(record)
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
