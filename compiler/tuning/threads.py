"""Per-kernel choices timed by ``lwc tune`` on the tuning machine: tuned kernels that run
faster on one thread than on all, and tuned kernels that lwc's rule schedule beats.

Why: every ``T.parallel`` loop of a kernel is one fork/join of TVM's thread pool, and
MetaSchedule's design space parallelizes every kernel (``ParallelVectorizeUnroll`` puts
``max_jobs_per_core x cores`` on the root block; no space runs on one thread). For small
kernels the fork/join costs more than the work: PP-OCR cls int8 on a Zen 5 (2 cores),
each kernel alone, tuned: a packed 1x1 conv 32->8 at 6x96 took 14.3 us with its three
parallel regions (activation copy, matmul, requantize) and 2.7 us on one thread; an SE
conv on a 1x1 input 1.44 us vs 0.10 us. Its 73 distinct kernels sum to 482 us as tuned
and 316 us taking the faster variant of each; its fp32 kernels (mostly one region each)
177 vs 168 us. The depthwise convs and the larger kernels stay parallel.

How: ``lwc tune`` ends by timing every tuned kernel of the model both ways on the
tuning machine (:func:`measure`, with the timer lwc's sparsity decisions use)
and writes the result into the tuning log folder (:data:`DECISIONS`, keyed by the
kernel's workload hash, so it is reused with the records). ``lwc compile`` runs the
kernels listed there as faster on one thread with their parallel loops made serial
(:func:`apply`); a log without the file changes nothing. A kernel is listed when one
thread is at least :data:`MARGIN` faster.

The rule's schedule (:func:`lwc.schedules.schedule_func`) is timed beside the record
(``rule_us``): a record found by a short or noisy search, or tuned before the rules got
better, can be slower than the rule, and a tuned build must never be slower than an
untuned one. Where the rule is faster than the record's best variant, compile uses the rule
(:func:`rule_wins`). On a shared 2-core VM, PP-OCRv4 det with a 10-minute log measured 1.09x
the untuned build's time before this, and the committed log tuned days earlier 1.67x.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

#: File in a tuning log folder: {"version": 1, "kernels": {workload hash: {...}}}.
DECISIONS = "single_thread.json"
#: One thread must be at least this much faster (serial_us <= (1 - MARGIN) * parallel_us).
MARGIN = 0.1


def kernel_key(func) -> str:
    """The workload hash of an unscheduled kernel (the name-independent key of its decision)."""
    import tvm
    import tvm_ffi

    return str(int(tvm_ffi.structural_hash(tvm.IRModule({"main": func.without_attr("global_symbol")}))))


#: ``ForKind`` values in TVM's JSON serialization (include/tvm/tirx/stmt.h: kSerial = 0,
#: kParallel = 1, kVectorized = 2, kUnrolled = 3, kThreadBinding = 4).
_FOR_SERIAL, _FOR_PARALLEL = 0, 1


def serial(func):
    """``func`` with every parallel loop made serial, or None if it has no parallel loop.

    Done on TVM's JSON serialization of the function (each ``tirx.For`` node's ``kind``):
    the IR is otherwise unchanged, and it is ~8x faster than a TVMScript print and parse
    (PP-OCR cls int8's 47 kernels: 0.8 s instead of 6.3 s of ``lwc compile``).
    """
    import json

    import tvm

    graph = json.loads(tvm.ir.save_json(func))
    loops = [node["data"] for node in graph["nodes"] if node.get("type") == "tirx.For"]
    parallel = [data for data in loops if data.get("kind") == _FOR_PARALLEL]
    if not parallel:
        return None
    for data in parallel:
        data["kind"] = _FOR_SERIAL
    return tvm.ir.load_json(json.dumps(graph))


def time_kernel(func, tvm_target) -> float:
    """One call of ``func`` on this machine, in microseconds
    (:func:`lwc.sparsity_decide.time_prim_func`: best of 3 runs, seeded random inputs)."""
    from lwc.sparsity_decide import time_prim_func

    return time_prim_func(func, tvm_target) * 1e3


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


def rule_schedule(func, facts):
    """lwc's rule schedule of the unscheduled kernel ``func`` for the CPU ``facts``
    (:func:`lwc.schedules.schedule_func`), or None where every rule declines."""
    from lwc import schedules

    if facts is None:
        return None
    try:
        sched, _ = schedules.schedule_func(func, facts)
    except Exception:  # noqa: BLE001  (a rule bug: keep the record)
        return None
    return sched


def measure(fused, applied, tvm_target, on_kernel: Callable[[str, dict], None] | None = None,
            facts=None) -> dict:
    """Time every scheduled kernel of ``applied`` on all threads, on one thread (those with
    a parallel loop) and, given ``facts``, lwc's rule schedule of the same kernel.

    Args:
        fused: the module before scheduling (its functions give the workload keys).
        applied: the same module with the tuning records (and fixed schedules) applied.
        tvm_target: the host target (kernels run on this machine).
        on_kernel: called with (name, entry) after each kernel.
        facts: the CPU's :class:`lwc.schedules.CpuFacts` (None: no rule timing).
    Returns:
        {workload hash: {"name", "parallel_us", "serial_us"?, "rule_us"?}} (microseconds,
        one entry per workload).
    """
    import tvm

    out: dict[str, dict] = {}
    called = called_functions(applied)
    for gvar, func in applied.functions.items():
        name = gvar.name_hint
        if (name not in called or not isinstance(func, tvm.tirx.PrimFunc) or name not in fused
                or not (func.attrs and func.attrs.get("tirx.is_scheduled"))):
            continue
        key = kernel_key(fused[name])
        one = serial(func)
        rule = rule_schedule(fused[name], facts)
        if key in out or (one is None and rule is None):
            continue
        try:
            entry = {"name": name, "parallel_us": round(time_kernel(func, tvm_target), 3)}
            if one is not None:
                entry["serial_us"] = round(time_kernel(one, tvm_target), 3)
            if rule is not None:
                entry["rule_us"] = round(time_kernel(rule, tvm_target), 3)
        except Exception:  # noqa: BLE001  (a kernel that fails to build or run keeps its threads)
            continue
        out[key] = entry
        if on_kernel is not None:
            on_kernel(name, entry)
    return out


def single_thread(entry: dict) -> bool:
    """Whether a measured kernel runs on one thread (:data:`MARGIN` faster there)."""
    return "serial_us" in entry and entry["serial_us"] <= (1 - MARGIN) * entry["parallel_us"]


def record_us(entry: dict) -> float:
    """The tuned kernel's time as compile runs it (one thread where that won), in us."""
    return entry["serial_us"] if single_thread(entry) else entry["parallel_us"]


def rule_wins(entry: dict) -> bool:
    """Whether lwc's rule schedule ran faster than the tuned record (as compile runs it)."""
    return "rule_us" in entry and entry["rule_us"] < record_us(entry)


def summary(decisions: dict) -> dict:
    """Counts and sums of :func:`measure`'s decisions for ``lwc tune``'s last line: kernels
    timed, how many run on one thread, how many the rule beat, the kernels' summed time as
    tuned and taking the faster choice of each (us)."""
    entries = decisions.values()
    return {"kernels_timed": len(decisions),
            "single_thread": sum(1 for d in entries if single_thread(d)),
            "rule_faster": sum(1 for d in entries if rule_wins(d)),
            "parallel_us": round(sum(d["parallel_us"] for d in entries), 1),
            "best_us": round(sum(min(d.get("rule_us", 1e30), record_us(d)) for d in entries), 1)}


def write(folder: Path, decisions: dict, machine: str) -> Path:
    """Write ``decisions`` (from :func:`measure`) into a tuning log folder, atomically."""
    from lwc.tuning.logs import _write_json_atomic

    path = Path(folder) / DECISIONS
    _write_json_atomic(path, {"version": 1, "measured_on": machine, "margin": MARGIN,
                              "kernels": decisions})
    return path


def read(folder: Path | None) -> dict:
    """The decisions in a tuning log folder ({} without the file or with an unreadable one)."""
    if folder is None or not (Path(folder) / DECISIONS).is_file():
        return {}
    try:
        data = json.loads((Path(folder) / DECISIONS).read_text())
        return data.get("kernels", {}) if data.get("version") == 1 else {}
    except (OSError, ValueError, AttributeError):
        return {}


def apply(fused, applied, decisions: dict, facts=None) -> tuple[object, int, int]:
    """``applied`` with the kernels ``decisions`` lists as faster on one thread made serial,
    and those the rule beat (:func:`rule_wins`) put back unscheduled (given ``facts``), for
    :func:`lwc.schedules.apply_rules` to schedule.

    Returns:
        (module, number of functions made serial, number given the rule's schedule).
    """
    import tvm

    if not decisions:
        return applied, 0, 0
    out = tvm.IRModule(dict(applied.functions), attrs=applied.attrs)
    done = ruled = 0
    for gvar, func in applied.functions.items():
        name = gvar.name_hint
        if not isinstance(func, tvm.tirx.PrimFunc) or name not in fused:
            continue
        entry = decisions.get(kernel_key(fused[name]))
        if entry is None:
            continue
        rule = rule_schedule(fused[name], facts) if rule_wins(entry) else None
        if rule is not None:
            # left unscheduled: the compile's next step, lwc.schedules.apply_rules, gives it
            # the rule's schedule with its constant weights pre-packed (lwc.schedules.prepack)
            out[gvar] = fused[name]
            ruled += 1
            continue
        if not single_thread(entry):
            continue
        one = serial(func)
        if one is not None:
            out[gvar] = one
            done += 1
    return out, done, ruled

