"""Facts of the machine lwc runs on that do not need TVM: the cores this process may use.

Kept apart from :mod:`lwc.targets` and :mod:`lwc.tvm_compat` so that both can read it
without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def _cpuset_size(text: str) -> int:
    count = 0
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            count += int(hi) - int(lo) + 1
        elif part:
            count += 1
    return count


def usable_cores() -> int:
    """CPU cores this process may use: os.cpu_count() bounded by the cgroup v2 cpuset and
    CPU quota (containers). Not the thread affinity: TVM's thread pool pins the calling
    thread to one core once a VM has run, which would make the answer order-dependent."""
    cores = os.cpu_count() or 1
    cgroup = Path("/sys/fs/cgroup")
    try:
        cores = min(cores, _cpuset_size((cgroup / "cpuset.cpus.effective").read_text()) or cores)
    except (OSError, ValueError):
        pass
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores
