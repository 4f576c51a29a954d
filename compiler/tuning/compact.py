"""Tuning logs that fit a repository: the best record per workload, workloads xz-compressed.

MetaSchedule's JSON database keeps every trial (a det log: 6,507 records for 113
workloads) and writes each workload as base64 of pretty-printed JSON (140 KB per kernel
on average). Compiling reads only the best record of each workload
(``JSONDatabase.query_tuning_record`` takes the top-1 by mean run time), so
:func:`compact` keeps exactly that one per (workload, target) and stores the workloads
as ``database_workload.json.xz`` (LZMA: ~50x smaller, their text is very repetitive).
The kernels a compile picks are the same before and after (``tests/test_tuning.py``).

A compacted folder is read through :func:`workload_file`, which decompresses once into
lwc's cache (``~/.cache/lwc/tuning/<sha256>/``) and never writes into the log; ``lwc
tune`` calls :func:`expand` first (a plain workload file again), since MetaSchedule
appends to it. Trials counted before compaction stay in ``manifest.json`` (``tasks``,
``compacted``), so a rerun of ``lwc tune`` does not tune those tasks again.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
from dataclasses import dataclass
from pathlib import Path

from lwc.tuning.logs import MANIFEST, _write_json_atomic, read_manifest

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
WORKLOAD_XZ = WORKLOAD_FILE + ".xz"
_INVALID_SECS = 1e9  # MetaSchedule records failed runs as 1e10 s


@dataclass
class CompactStats:
    """What :func:`compact` did to one log folder (sizes in bytes)."""

    folder: Path
    records_before: int
    records_after: int
    workloads_before: int
    workloads_after: int
    bytes_before: int
    bytes_after: int

    def to_json(self) -> dict:
        return {**self.__dict__, "folder": str(self.folder)}


def _cache_root() -> Path:
    return Path(os.environ.get("LWC_CACHE_DIR") or Path.home() / ".cache" / "lwc") / "tuning"


def workload_file(folder: Path) -> Path:
    """The plain ``database_workload.json`` of a log folder, compacted or not.

    For a compacted folder it is the decompressed copy in lwc's cache (keyed by the .xz
    file's sha256, written atomically once); for any other folder, the folder's own
    file (which may not exist yet: MetaSchedule creates it).
    """
    folder = Path(folder)
    xz = folder / WORKLOAD_XZ
    if (folder / WORKLOAD_FILE).exists() or not xz.is_file():
        return folder / WORKLOAD_FILE
    packed = xz.read_bytes()
    cached = _cache_root() / hashlib.sha256(packed).hexdigest()[:24] / WORKLOAD_FILE
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{WORKLOAD_FILE}.{os.getpid()}.tmp")
        tmp.write_bytes(lzma.decompress(packed))
        os.replace(tmp, cached)
    return cached


def expand(folder: Path) -> bool:
    """Turn a compacted folder back into a plain MetaSchedule database (for ``lwc tune``,
    which appends workloads). Returns whether there was anything to expand."""
    folder = Path(folder)
    xz = folder / WORKLOAD_XZ
    if not xz.is_file() or (folder / WORKLOAD_FILE).exists():
        return False
    tmp = folder / f".{WORKLOAD_FILE}.tmp"
    tmp.write_bytes(lzma.decompress(xz.read_bytes()))
    os.replace(tmp, folder / WORKLOAD_FILE)
    xz.unlink()
    return True


def _mean_secs(record: list) -> float:
    secs = record[1] or []
    return sum(secs) / len(secs) if secs else math.inf


def compact(folder: Path) -> CompactStats:
    """Keep the best valid record per (workload, target) and xz-compress the workloads.

    Records that never ran (MetaSchedule's 1e10 s) are dropped, so are workloads no kept
    record refers to; the kept records are renumbered. Per-task trial counts are kept in
    the manifest (its ``tasks``), and ``manifest["compacted"]`` says what was removed.
    Every file is replaced atomically; running it on a compacted folder keeps it as is.

    Raises:
        FileNotFoundError: ``folder`` holds no tuning database.
    """
    folder = Path(folder)
    plain, records_path = folder / WORKLOAD_FILE, folder / RECORD_FILE
    source = workload_file(folder)
    if not source.is_file() or not records_path.is_file():
        raise FileNotFoundError(f"{folder}: no {WORKLOAD_FILE} and {RECORD_FILE} (not a tuning log)")
    bytes_before = sum(p.stat().st_size for p in (plain, folder / WORKLOAD_XZ, records_path) if p.is_file())
    workloads = [line for line in source.read_text().splitlines() if line.strip()]
    records = []
    for line in records_path.read_text().splitlines():
        try:
            index, record = json.loads(line)
        except (ValueError, TypeError):
            continue  # a torn line from an interrupted run
        records.append((index, record))
    best: dict[tuple[int, str], tuple[float, list]] = {}
    for index, record in records:
        secs = _mean_secs(record)
        if secs >= _INVALID_SECS or not 0 <= index < len(workloads):
            continue
        key = (index, json.dumps(record[2], sort_keys=True))
        if key not in best or secs < best[key][0]:
            best[key] = (secs, record)
    used = sorted({index for index, _ in best})
    renumber = {old: new for new, old in enumerate(used)}
    kept = sorted(((renumber[i], secs, rec) for (i, _), (secs, rec) in best.items()),
                  key=lambda item: (item[0], item[1]))
    text = "".join(json.dumps([i, rec]) + "\n" for i, _, rec in kept)
    packed = lzma.compress("".join(workloads[i] + "\n" for i in used).encode(), preset=9)

    tmp_records, tmp_xz = folder / f".{RECORD_FILE}.tmp", folder / f".{WORKLOAD_XZ}.tmp"
    tmp_records.write_text(text)
    tmp_xz.write_bytes(packed)
    manifest = read_manifest(folder)
    if manifest is not None:
        previous = manifest.get("compacted", {})
        manifest["compacted"] = {
            "records_dropped": previous.get("records_dropped", 0) + len(records) - len(kept),
            "rule": "best valid record per (workload, target); workloads xz-compressed",
        }
        _write_json_atomic(folder / MANIFEST, manifest)
    os.replace(tmp_records, records_path)
    os.replace(tmp_xz, folder / WORKLOAD_XZ)
    if plain.exists():
        plain.unlink()
    return CompactStats(folder, len(records), len(kept), len(workloads), len(used), bytes_before,
                        len(text.encode()) + len(packed))
