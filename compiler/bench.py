"""Benchmark an artifact, optionally against onnxruntime in the same process.

``lwc bench ART.so --vs-onnxruntime MODEL.onnx``: both run on the same seeded inputs
with the same number of threads, interleaved in blocks (:data:`INTERLEAVE_BLOCK` lwc runs,
then as many onnxruntime runs, ...) so that machine noise hits both alike;
p50/p90/p99/mean in ms and the ratio lwc/onnxruntime.

Threads: TVM's runtime sizes its pool from ``TVM_NUM_THREADS``, else from the logical
CPU count halved on x86 (it assumes hyper-threading): on a 2-vCPU VM it uses ONE
thread while onnxruntime uses two. :func:`set_tvm_threads` sets the variable before the
pool starts and resizes a pool that is already running.

aarch64 artifacts on an x86 machine run under qemu: their timings measure the emulator,
not the board, so they are refused with a message (run ``lwc bench`` on the board).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lwc.errors import LwcError


#: Runs per engine before switching to the other one. Both thread pools spin for a while
#: after a run; strictly alternating single runs on a 2-core machine measured mostly that
#: spinning (squeezenet: lwc p50 11.4 ms interleaved vs 5.8 ms alone).
INTERLEAVE_BLOCK = 10
#: Seconds of idle between two engines' blocks, so the previous engine's worker threads
#: have stopped spinning. A settling run alone was not enough: onnxruntime's intra-op
#: workers spin for 5-20 ms after a run; on a 2-core machine lwc's PP-OCR cls fp32 then
#: measured 0.59 ms for the whole next block (0.31 ms alone), 0.59 after a 5 ms gap and
#: 0.32 after 20 ms (Zen 5, onnxruntime 1.32).
SPIN_SETTLE_S = 0.05


def default_threads() -> int:
    """CPUs this process may run on (:func:`lwc.targets.usable_cores`)."""
    from lwc.targets import usable_cores

    return usable_cores()


def set_tvm_threads(threads: int) -> int:
    """Make TVM's runtime use ``threads`` workers; returns what the runtime reports.

    TVM reads its ceiling (``TVM_NUM_THREADS``) once, when the pool first starts: a pool
    can then be shrunk but not grown past it. ``lwc bench`` sets it before anything runs;
    library callers get the real count back (and in :class:`BenchResult`).
    """
    os.environ["TVM_NUM_THREADS"] = str(threads)
    from lwc import tvm_compat

    num_threads = tvm_compat.global_func("runtime.NumThreads")
    if int(num_threads()) != threads:  # the pool already started: resize it (mode 0: no pinning)
        tvm_compat.global_func("runtime.config_threadpool")(0, threads)
    return int(num_threads())


@dataclass
class Stats:
    """Latency statistics in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    n: int

    @classmethod
    def of(cls, times_s: list[float]) -> "Stats":
        ms = np.asarray(times_s) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(ms.mean()), float(ms.min()), len(ms))

    def to_json(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class BenchResult:
    artifact: str
    target: str
    arch: str
    threads: int
    repeat: int
    warmup: int
    lwc: Stats
    onnxruntime: Stats | None = None
    onnxruntime_version: str | None = None
    max_abs_diff: float | None = None
    tuning: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """lwc p50 / onnxruntime p50 (below 1: lwc is faster)."""
        if self.onnxruntime is None:
            return None
        return self.lwc.p50 / self.onnxruntime.p50

    def to_json(self) -> dict:
        return {
            "artifact": self.artifact,
            "target": self.target,
            "arch": self.arch,
            "threads": self.threads,
            "repeat": self.repeat,
            "warmup": self.warmup,
            "lwc_ms": self.lwc.to_json(),
            "onnxruntime_ms": self.onnxruntime.to_json() if self.onnxruntime else None,
            "onnxruntime_version": self.onnxruntime_version,
            "ratio_p50": round(self.ratio, 4) if self.ratio is not None else None,
            "max_abs_diff": self.max_abs_diff,
            "tuning": self.tuning,
        }


def _ort_session(model: str | Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _ort_feed(session, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise LwcError(
            f"onnxruntime model needs input(s) {', '.join(missing)} that the artifact does not "
            "have; is it the model the artifact was compiled from?"
        )
    return {n: inputs[n] for n in names}


def bench(
    artifact_path: str | Path,
    *,
    vs_onnxruntime: str | Path | None = None,
    repeat: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    seed: int = 0,
) -> BenchResult:
    """Time an artifact (and onnxruntime on ``vs_onnxruntime``), interleaved.

    Raises:
        LwcError: the artifact cannot run natively here (aarch64 under qemu: timings would be
            the emulator's), bad repeat/warmup, or the model's inputs do not match.
    """
    from lwc import artifact as art
    from lwc import tvm_compat

    if repeat < 1 or warmup < 0:
        raise LwcError("--repeat must be >= 1 and --warmup >= 0")
    artifact = art.load(artifact_path)
    if not artifact.runs_natively:
        how = "under qemu-aarch64" if artifact.arch == "aarch64" else "not at all"
        raise LwcError(
            f"{Path(artifact_path).name} is an artifact for {artifact.manifest['target']['preset']} "
            f"({artifact.arch}); on this {platform.machine()} machine it runs {how}, and emulated "
            "time says nothing about the board: refusing to print timings. Run `lwc bench` on "
            "the device (or `lwc verify` here to check outputs)"
        )
    threads = threads or default_threads()
    threads_used = set_tvm_threads(threads)
    inputs = artifact.full_inputs(None, seed)
    ordered = artifact.check_inputs(inputs)
    vm = artifact.vm()
    args = [tvm_compat.tensor(a) for _, a in ordered]
    main = vm["main"]

    session = feed = None
    if vs_onnxruntime is not None:
        session = _ort_session(vs_onnxruntime, threads)
        from lwc.verify import reference_feed

        feed = _ort_feed(session, reference_feed(vs_onnxruntime, artifact.manifest, dict(ordered)))

    first = main(*args)
    max_diff = None
    if session is not None:
        ref = session.run(None, feed)
        got = art._flatten(first)
        if got and ref:
            max_diff = float(np.max(np.abs(got[0].numpy().astype(np.float64) - ref[0])))
    for _ in range(warmup):
        main(*args)
        if session is not None:
            session.run(None, feed)

    def lwc_run():
        main(*args)

    def ort_run():
        session.run(None, feed)

    lwc_times: list[float] = []
    ort_times: list[float] = []
    engines = [(lwc_run, lwc_times)] + ([(ort_run, ort_times)] if session is not None else [])
    block = 0
    while len(lwc_times) < repeat:
        n = min(INTERLEAVE_BLOCK, repeat - len(lwc_times))
        # alternate who goes first so that neither always runs on a warmer cache
        for run, times in engines if block % 2 == 0 else engines[::-1]:
            time.sleep(SPIN_SETTLE_S)  # the other engine's thread pool stops spinning
            run()  # untimed settling run: caches, and the pool's threads wake up
            for _ in range(n):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
        block += 1

    ort_version = None
    if session is not None:
        import onnxruntime

        ort_version = onnxruntime.__version__
    return BenchResult(
        artifact=str(artifact_path),
        target=artifact.manifest["target"]["preset"],
        arch=artifact.arch,
        threads=threads_used,
        repeat=repeat,
        warmup=warmup,
        lwc=Stats.of(lwc_times),
        onnxruntime=Stats.of(ort_times) if ort_times else None,
        onnxruntime_version=ort_version,
        max_abs_diff=max_diff,
        tuning=artifact.manifest.get("tuning", {}),
    )


def format_result(result: BenchResult) -> str:
    """The human-readable table ``lwc bench`` prints."""
    lines = [
        f"{Path(result.artifact).name}: target {result.target} ({result.arch}), "
        f"{result.threads} thread{'s' if result.threads != 1 else ''}, "
        f"{result.repeat} runs after {result.warmup} warm-up"
        + (", interleaved with onnxruntime" if result.onnxruntime else ""),
    ]
    tuning = result.tuning or {}
    if "tasks" in tuning:
        lines.append(f"tuning: {tuning.get('tuned_tasks', 0)}/{tuning['tasks']} tasks tuned")
    lines.append(f"{'':<20} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'min ms':>9}")
    rows = [("lwc", result.lwc)]
    if result.onnxruntime:
        rows.append((f"onnxruntime {result.onnxruntime_version}", result.onnxruntime))
    for name, s in rows:
        lines.append(f"{name:<20} {s.p50:>9.3f} {s.p90:>9.3f} {s.p99:>9.3f} {s.mean:>9.3f} {s.min:>9.3f}")
    if result.ratio is not None:
        verdict = "faster" if result.ratio < 1 else "slower"
        lines.append(
            f"ratio lwc/onnxruntime (p50): {result.ratio:.2f}  (lwc is "
            f"{max(result.ratio, 1 / result.ratio):.2f}x {verdict})"
        )
        if result.max_abs_diff is not None:
            lines.append(f"first output max |lwc - onnxruntime|: {result.max_abs_diff:.3g}")
    return "\n".join(lines)
