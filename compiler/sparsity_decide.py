"""``--sparsity auto``: decide per layer whether the BSR kernel beats the dense kernel.

On targets this machine runs natively (``preset.is_native``) the decision is measured:
for each candidate layer (:class:`lwc.passes._bsr_rewrite.Candidate`) both kernels are built for
the target and timed in this process on random data of the layer's shapes:

- sparse: the layer's BSR kernel with its real ``data/indices/indptr``;
- dense: the tuned kernel of that shape when the model's tuning log has one (a
  MetaSchedule record whose workload is a matmul / 1x1 conv of the same shapes, possibly
  fused with its bias or activation, replayed from its trace), else the kernel TVM's
  default lowering makes (``LegalizeOps``, unscheduled) -- which is what the layer would
  run as dense in this build.

BSR is used when its time is lower (where a kernel fails to build or run here, the cost
model decides and the reason says why). The reason, both times (ms) and which dense schedule
was timed go in the compile manifest's ``sparsity`` section. Each kernel runs for about
:data:`TARGET_MS` ms (two single calls if a call takes longer); dense timings are
shared by layers of the same shape within one compile; nothing is cached across runs.
Timings are taken at compile time: on a busy machine a layer near break-even can be
decided differently by two compiles.

While ``lwc tune`` builds the graph it tunes, a layer whose dense kernel has no record yet
takes the cost model instead: its dense kernel is about to be tuned, and timing it untuned
would hand the layer to BSR for good (a BSR layer's dense kernel is never tuned).

Cross targets (arm64 on x86, run under qemu: emulated time means nothing) fall back to
the cost model of :mod:`lwc.passes._bsr_rewrite` (block density at most
:data:`lwc.passes._bsr_rewrite.DEFAULT_MAX_DENSITY`), and the reason says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lwc.passes._bsr_rewrite import Candidate, Decide, Verdict, cost_model

#: Layers above this block density stay dense unmeasured: BSR then saves under 20% of the
#: multiply-adds and pays an index load per block, so it can only beat a dense kernel that
#: is unscheduled (TVM's default), i.e. stand in for tuning, while growing the stored
#: weights by the indices and adding kernel builds to every compile.
MEASURE_MAX_DENSITY = 0.8
#: BSR replaces the dense kernel only when at least this much faster (fraction of the dense
#: time). Repeated timings of one small kernel on a 2-core machine differ by up to ~10%;
#: without a margin, layers where both kernels take microseconds flip between runs (a
#: 4x4 conv went to BSR in some CI runs and not in others).
MIN_GAIN = 0.10
#: Kernel time per measurement (ms): a few ms per layer and kernel.
TARGET_MS = 3.0
#: Runs per measurement; the fastest counts.
REPEAT = 3


def decider(preset, tvm_target, tuning_log=None, tuning_run: bool = False) -> Decide:
    """The ``decide`` for ``--sparsity auto`` on ``preset``.

    Args:
        tvm_target: ``preset.tvm_target()``.
        tuning_log: the model's :class:`lwc.tuning.logs.LogChoice` (``lwc.tuning.logs.locate_log``),
            or None (then dense is timed with TVM's default schedule).
        tuning_run: the graph is being built for ``lwc tune``: a layer whose dense kernel
            has no tuning record yet is about to get one, so timing it untuned would
            favour BSR wrongly; such layers take the cost model.
    """
    if not preset.is_native:
        return cost_model(why=f"{preset.name} is a cross target: emulated timings mean nothing")
    return MeasuredDecider(tvm_target, tuning_log, tuning_run)


class MeasuredDecider:
    """``decide`` by timing the BSR kernel against the dense kernel (see module docstring)."""

    def __init__(self, tvm_target, tuning_log=None, tuning_run: bool = False) -> None:
        self.target = tvm_target
        self.folder = Path(tuning_log.folder) if tuning_log is not None else None
        # a host log tuned on an ISA-subset CPU carries that CPU's target in its records
        self.records_target = tuning_log.records_target if tuning_log is not None else tvm_target
        self.tuning_run = tuning_run
        self._tuned: dict | None = None
        self._dense: dict[tuple, tuple[float, str]] = {}

    def __call__(self, cand: Candidate) -> Verdict:
        if cand.density > MEASURE_MAX_DENSITY:
            return Verdict(False, f"block density {cand.density:.2f} > {MEASURE_MAX_DENSITY}: dense "
                                  "(BSR would save under 20% of the work; not measured)")
        if self.tuning_run and shape_key(cand.kind, cand.dims) not in self._tuned_index():
            return cost_model(why="lwc tune: the dense kernel is not tuned yet, untuned timings "
                                  "would mislead")(cand)
        try:
            sparse_ms = time_prim_func(cand.kernel, self.target, _bsr_inputs(cand))
            dense_ms, schedule = self._dense_time(cand)
        except Exception as err:  # a kernel that does not build or run here: no measurement
            lines = [ln for ln in str(err).splitlines() if ln.strip()]
            why = f"timing failed: {lines[-1][:120] if lines else type(err).__name__}"
            return cost_model(why=why)(cand)
        used = sparse_ms < (1.0 - MIN_GAIN) * dense_ms
        if used:
            verdict = "BSR is faster"
        elif sparse_ms < dense_ms:
            verdict = f"BSR faster by under {MIN_GAIN:.0%} (within timing noise): dense kept"
        else:
            verdict = "dense is faster"
        reason = (f"measured: BSR {sparse_ms:.4f} ms vs dense {dense_ms:.4f} ms ({schedule}) "
                  f"at block density {cand.density:.2f}: {verdict}")
        return Verdict(used, reason, round(sparse_ms, 5), round(dense_ms, 5), schedule)

    def _dense_time(self, cand: Candidate) -> tuple[float, str]:
        key = shape_key(cand.kind, cand.dims)
        if key not in self._dense:
            tuned = self._tuned_index().get(key)
            if tuned is not None:
                func, where = tuned
                self._dense[key] = (time_prim_func(func, self.target), f"tuned, {where}")
            else:
                self._dense[key] = (time_prim_func(default_dense(cand), self.target), "TVM default schedule")
        return self._dense[key]

    def _tuned_index(self) -> dict:
        if self._tuned is None:
            self._tuned = tuned_dense_kernels(self.folder, self.records_target) if self.folder else {}
        return self._tuned


def shape_key(kind: str, dims: dict) -> tuple:
    """``("matmul", M, K, N)`` or ``("conv1x1", B, K, N, H, W)``."""
    if kind == "matmul":
        return ("matmul", dims["m"], dims["k"], dims["n"])
    return ("conv1x1", dims["b"], dims["k"], dims["n"], dims["h"], dims["w"])


def default_dense(cand: Candidate):
    """The dense PrimFunc TVM's ``LegalizeOps`` makes for the candidate's layer (weight as a parameter)."""
    import tvm
    from tvm import relax

    d = cand.dims
    if cand.kind == "matmul":
        shapes = [(d["m"], d["k"]), (d["k"], d["n"])]
        op = relax.op.matmul
    else:
        shapes = [(d["b"], d["k"], d["h"], d["w"]), (d["n"], d["k"], 1, 1)]
        op = relax.op.nn.conv2d
    builder = relax.BlockBuilder()
    params = [relax.Var(name, relax.TensorType(s, "float32")) for name, s in zip(("x", "w"), shapes)]
    with builder.function("main", params):
        builder.emit_func_output(builder.emit(op(*params)))
    legal = relax.transform.LegalizeOps()(builder.get())
    return next(f for f in legal.functions.values() if isinstance(f, tvm.tirx.PrimFunc))


def tuned_dense_kernels(folder: Path, tvm_target) -> dict[tuple, tuple[object, str]]:
    """Tuned matmul / 1x1-conv kernels in a tuning log, by :func:`shape_key`.

    A workload counts when its output and two of its inputs have the shapes of a matmul
    ``[M, K] @ [K, N] -> [M, N]`` or of a 1x1 conv ``[B, K, H, W] * [N, K, 1, 1] -> [B, N, H, W]``
    and it has a ``matmul`` / ``conv2d`` block; the fastest valid record for this target
    is replayed on it. Only those records are parsed (loading a whole JSON database
    parses every trace: seconds per thousand records).

    Returns:
        key -> (scheduled PrimFunc, "LOGFOLDER record RUN_MS ms").
    """
    import json

    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    from lwc.tuning.compact import RECORD_FILE, workload_file
    from lwc.tuning.database import fast_tensor_intrin
    from lwc.tuning.keys import target_identity

    folder = Path(folder)
    records_file = folder / RECORD_FILE
    workloads_file = workload_file(folder)
    if not workloads_file.is_file() or not records_file.is_file():
        return {}
    workloads, keys = [], {}
    for line in workloads_file.read_text().splitlines():
        if line.strip():
            workloads.append(ms.database.Workload.from_json(json.loads(line)))
            key = _workload_key(workloads[-1].mod["main"])
            if key is not None:
                keys[len(workloads) - 1] = key
    mine = target_identity(json.loads(json.dumps(dict(tvm_target.export()), default=list)))
    best: dict[tuple, tuple[float, int, list]] = {}
    text = records_file.read_text(errors="replace")
    for line in text.splitlines():
        try:
            index, record = json.loads(line)
            secs = sum(record[1]) / len(record[1])
        except (ValueError, TypeError, ZeroDivisionError):
            continue  # a torn line from an interrupted run
        key = keys.get(index)
        if key is None or secs >= 1e9 or target_identity(record[2]) != mine:
            continue
        if key not in best or secs < best[key][0]:
            best[key] = (secs, index, record)
    if best and "tensorize" in text.lower():
        fast_tensor_intrin(str(tvm_target.attrs.get("mtriple", "x86_64")).split("-")[0])
    out = {}
    for key, (secs, index, record) in best.items():
        parsed = ms.database.TuningRecord.from_json(record, workloads[index])
        sch = Schedule(workloads[index].mod)
        parsed.trace.apply_to_schedule(sch, remove_postproc=False)
        out[key] = (sch.mod["main"], f"{folder.name} record {secs * 1e3:.4f} ms")
    return out


def _workload_key(func) -> tuple | None:
    from tvm.s_tir import meta_schedule as ms

    infos = ms.arg_info.ArgInfo.from_prim_func(func)
    shapes = [tuple(int(d) for d in i.shape) for i in infos]
    if len(shapes) < 3 or any(str(i.dtype) != "float32" for i in infos):
        return None
    out, ins = shapes[-1], shapes[:-1]
    key = None
    if len(out) == 2:
        m, n = out
        for s in ins:
            if len(s) == 2 and s[0] == m and (s[1], n) in ins:
                key, block = ("matmul", m, s[1], n), "matmul"
    elif len(out) == 4:
        b, n, h, w = out
        for s in ins:
            if len(s) == 4 and s[0] == b and s[2:] == (h, w) and (n, s[1], 1, 1) in ins:
                key, block = ("conv1x1", b, s[1], n, h, w), "conv2d"
    if key is None or f'"{block}' not in func.script():
        return None
    return key


def _bsr_inputs(cand: Candidate) -> list[np.ndarray]:
    x = np.random.default_rng(0).standard_normal(cand.x_shape).astype(np.float32)
    return [x, *cand.bsr_args]


def time_prim_func(func, tvm_target, inputs: list[np.ndarray] | None = None) -> float:
    """Milliseconds per call of one PrimFunc built for ``tvm_target`` and run here.

    Args:
        inputs: the leading arguments (the rest, outputs included, get seeded random data).
    Returns:
        the fastest of :data:`REPEAT` runs of about :data:`TARGET_MS` ms, per call; the
        faster of two single calls when one call takes longer than that.
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from lwc import tvm_compat

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    runtime = tvm.compile(mod, target=tvm_target)
    runtime = getattr(runtime, "mod", runtime)
    rng = np.random.default_rng(1)
    arrays = list(inputs or [])
    for info in ms.arg_info.ArgInfo.from_prim_func(func)[len(arrays):]:
        shape = [int(d) for d in info.shape]
        arrays.append(rng.standard_normal(shape).astype(str(info.dtype)))
    dev = tvm.cpu()
    args = [tvm_compat.tensor(a, dev) for a in arrays]
    start = time.perf_counter()
    runtime["main"](*args)  # warm-up, and the size of one call
    once_ms = (time.perf_counter() - start) * 1e3
    if once_ms > TARGET_MS:  # slow (e.g. untuned) kernels: the faster of two more calls
        times = []
        for _ in range(2):
            start = time.perf_counter()
            runtime["main"](*args)
            times.append((time.perf_counter() - start) * 1e3)
        return min(times)
    number = max(1, int(TARGET_MS / max(once_ms, 1e-3)))
    evaluator = runtime.time_evaluator("main", dev, number=number, repeat=REPEAT)
    return min(evaluator(*args).results) * 1e3
