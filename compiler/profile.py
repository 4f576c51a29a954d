"""Per-kernel profile of a host artifact (``lwc bench --profile``).

TVM 0.27's Relax VM has no built-in profiler (``vm.profile`` is gone); it does have an
instrument hook called before and after every VM call. :func:`profile_artifact` times
each call with it over ``repeat`` runs after a warm-up run, and reports per kernel:
calls, total ms per run, share of the run, and GFLOP/s where the manifest's compile report
knows the kernel's FLOPs. VM builtins (allocation, shape checks) are summed into one
``(vm runtime)`` row. The hook itself costs a few microseconds per call, so the sum is a
little above the uninstrumented latency that ``lwc bench`` reports.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from lwc.errors import LwcError

_RUNTIME_ROW = "(vm runtime)"


@dataclass
class KernelTime:
    name: str
    calls: int
    ms: float  # per run
    share: float  # of the instrumented run, 0..1
    gflops: float | None  # GFLOP/s, None where FLOPs are unknown

    def to_json(self) -> dict:
        return {"kernel": self.name, "calls": self.calls, "ms": round(self.ms, 4),
                "percent": round(100 * self.share, 2),
                "gflops": None if self.gflops is None else round(self.gflops, 2)}


def profile_artifact(artifact, inputs=None, repeat: int = 10, seed: int = 0) -> list[KernelTime]:
    """Time every kernel of a loaded host artifact (:func:`lwc.artifact.load`), slowest first.

    Raises:
        LwcError: the artifact does not run in this process (e.g. an arm64 artifact).
    """
    from lwc import tvm_compat

    if not artifact.runs_natively:
        raise LwcError(f"--profile needs an artifact for this machine; {artifact.path.name} is "
                       f"{artifact.arch} ({artifact.manifest['target']['preset']})")
    ordered = artifact.check_inputs(artifact.full_inputs(inputs, seed))
    args = [tvm_compat.tensor(a) for _, a in ordered]
    vm = artifact.vm()
    vm["main"](*args)  # warm-up
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    started: list[float] = []

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            started.append(time.perf_counter())
        else:
            name = str(symbol)
            name = _RUNTIME_ROW if name.startswith(("vm.builtin", "vm.", "relax.")) else name
            totals[name] += time.perf_counter() - started.pop()
            calls[name] += 1
        return 0

    vm.set_instrument(instrument)
    for _ in range(repeat):
        vm["main"](*args)
    flops = {k["name"]: k["flops"] for k in artifact.manifest.get("report", {}).get("kernels", [])}
    whole = sum(totals.values()) or 1.0
    rows = []
    for name, seconds in totals.items():
        ms = seconds * 1e3 / repeat
        per_run = calls[name] / repeat
        gflops = flops[name] * per_run / (ms * 1e-3) / 1e9 if flops.get(name) and ms > 0 else None
        rows.append(KernelTime(name, round(per_run), ms, seconds / whole, gflops))
    return sorted(rows, key=lambda r: -r.ms)


def format_profile(rows: list[KernelTime], limit: int | None = None) -> str:
    """A text table: kernel, calls, ms, %, GFLOP/s (slowest first)."""
    lines = [f"{'kernel':<56} {'calls':>5} {'ms':>9} {'%':>6} {'GFLOP/s':>9}"]
    for r in rows[:limit] if limit else rows:
        g = f"{r.gflops:9.2f}" if r.gflops is not None else f"{'-':>9}"
        lines.append(f"{r.name[:56]:<56} {r.calls:>5} {r.ms:9.3f} {100 * r.share:6.1f} {g}")
    total = sum(r.ms for r in rows)
    lines.append(f"{'total (instrumented)':<56} {sum(r.calls for r in rows):>5} {total:9.3f} {100.0:6.1f}")
    return "\n".join(lines)
