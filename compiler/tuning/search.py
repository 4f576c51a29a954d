"""``lwc tune``: MetaSchedule's search over a model's tasks, stored in a tuning log folder.

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

import datetime as _dt
import functools
import logging
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lwc import tvm_compat
from lwc.errors import LwcError
from lwc.tuning.apply import _fixed_rule_funcs, prepare, schedule_fixed, space_generator
from lwc.tuning.database import (
    _INVALID_SECS, _arch, _existing, _ms, _with_stored_names, _workload_key, builder_worker,
    fast_tensor_intrin, import_records, open_database,
)
from lwc.tuning.keys import target_name
from lwc.tuning.logs import (
    MANIFEST, _manifest, _write_json_atomic, default_log_root, machine_cpu, manifest_mismatch,
    read_manifest, runs_here,
)
from lwc.tuning.seed import RULE_SEEDS, restore, seed_from_rules
from lwc.tuning.finish import measure_after_tuning

_MS_LOGGER = "tvm.s_tir.meta_schedule"


@dataclass
class TaskStat:
    """One tuning task: name, FLOPs, weight (uses in the model), best latency, trials, rule's latency."""

    name: str
    flops: float
    weight: int
    trials: int = 0
    best_us: float | None = None
    rule_us: float | None = None  # lwc's rule schedule, measured before the search
    rule: str | None = None  # the rule's name (conv2d, matmul, ...)
    rule_note: str | None = None  # why no rule schedule was measured (declined, no replay)

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
    #: kernels timed on one thread and on all (:mod:`lwc.tuning.threads`), and how many run on one
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
    options=None,
    reuse_records: tuple[str | os.PathLike, ...] = (),
    only_tasks: str | None = None,
    input_values: dict | None = None,
    **option_fields,
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
        options: the :class:`lwc.options.CompileOptions` (``--quantize int8 --calib ...``,
            ``--sparsity``, ``--disable-pass``, ``--conv-layout``), as
            :func:`lwc.driver.compile` takes them, or their fields as keywords; the graph
            tuned is the one compile prepares with them (:func:`lwc.prepare.prepare`), and
            the log folder's key names them (:meth:`~lwc.options.CompileOptions.variant`).
        reuse_records: other tuning log folders (same target) whose records seed this
            model's tasks that have none yet (:func:`import_records`); those tasks then
            count as having that many trials.
        only_tasks: a regular expression; tune only the tasks whose name matches
            (``--only-tasks``, names as in ``lwc bench --profile``), ``trials`` more
            whatever they already have (several matches: :func:`_plan_only`) -- for a hot
            kernel the even spread left behind.
        input_values: inputs bound to constants (``--input-value``), as
            :func:`lwc.driver.compile` takes them; the log folder's key names them.

    Returns:
        a :class:`TuneResult`.
    Raises:
        LwcError: bad model/target, GPU target, a range in ``input_shapes``, no tunable
            task, or a ``reuse_records`` folder that is missing or was tuned for another
            target; ``only_tasks`` matching no task.
    """
    from lwc import prepare as prepare_stage
    from lwc.frontend import model_sha256
    from lwc.input_shapes import refuse_ranges
    from lwc.options import options_from
    from lwc.targets import Preset, resolve

    started = time.perf_counter()
    refuse_ranges(input_shapes)
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
    options = options_from(options, option_fields, "tune")
    prepared = prepare_stage.prepare(model, preset, input_shapes, options,
                                     tuning_log=prepare_stage.log_lookup(preset), tuning_run=True,
                                     input_values=input_values)
    mod, tvm_target, key = prepared.mod, prepared.tvm_target, prepared.model_key
    folder = Path(log_root or default_log_root()) / f"{key}-{target_name(preset)}"

    def build(use_log: bool):  # the model as `lwc compile` builds it, with or without the log
        from lwc import driver

        return driver.compile(model, preset, input_shapes, options, use_tuning_logs=use_log,
                              tuning_log=str(folder) if use_log else None,
                              input_values=input_values).executable

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
    database = open_database(folder, writable=True)
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
    seeds = dict((old_manifest or {}).get(RULE_SEEDS, {}))
    # a compacted log (lwc.tuning.compact) keeps one record per task: its trials are in the manifest
    compacted = {t["name"]: t.get("trials", 0) for t in (old_manifest or {}).get("tasks", [])
                 } if (old_manifest or {}).get("compacted") else {}
    for stat, ctx, (count, best) in zip(stats, contexts, _existing(database, contexts)):
        stat.trials = count
        stat.best_us = best * 1e6 if best else None
        restore(stat, seeds.get(str(_workload_key(ctx.mod))))
        if count:
            stat.trials = max(stat.trials, compacted.get(stat.name, 0))
    resumed = sum(s.trials for s in stats)
    per_task, todo = _plan_only(stats, trials, only_tasks) if only_tasks else _plan(stats, trials)
    source = {"file": Path(model).name, "sha256": model_sha256(model)} if isinstance(
        model, (str, os.PathLike)) else {"file": None, "sha256": None}
    manifest = _manifest(preset, tvm_target, source, input_shapes, key, old_manifest)
    variant = options.variant()
    if variant:
        manifest["variant"] = variant
    if prepared.model.bound:
        manifest["bound_inputs"] = prepared.model.bound
    merged = dict((old_manifest or {}).get("reused_records", {}))
    for other, count in reused.items():
        merged[other] = merged.get(other, 0) + count
    if merged:  # records copied from other logs count as trials of their tasks; say how many
        manifest["reused_records"] = merged
    if seeds:
        manifest[RULE_SEEDS] = seeds
    _write_json_atomic(folder / MANIFEST, {**manifest, "tasks": [s.to_json() for s in stats]})
    if not todo:
        threads_info = measure_after_tuning(mod, fused, preset, tvm_target, folder, database, rpc, build)
        return TuneResult(folder, stats, 0, time.perf_counter() - started, "every task already has "
                          f"{per_task} trials (raise --trials to tune more)", resumed, manifest, threads_info)

    builder = ms.builder.LocalBuilder(
        max_workers=_num_cores(tvm_target),
        timeout_sec=60,
        initializer=functools.partial(builder_worker, _arch(tvm_target),
                                      tvm_target.kind.name == "llvm"),
        f_export=None if preset.is_native else _partial_export(preset.cross_compiler),
    )
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=runner_min_repeat_ms)
    runner = _runner(ms, rpc, evaluator)
    if trials > 0 and seed_from_rules(ms, preset, rpc is not None or runs_here(tvm_target), contexts,
                                      stats, todo, database, builder, runner, seeds, started, time_budget_s):
        manifest[RULE_SEEDS] = seeds  # the rules' schedules first, once per task (lwc.tuning.seed)
        _write_json_atomic(folder / MANIFEST, {**manifest, "tasks": [s.to_json() for s in stats]})

    planned = sum(per_task - stats[i].trials for i in todo)
    callback_state = _CallbackState(stats, todo, planned, started, time_budget_s, on_progress, per_task)
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
    threads_info = {} if reason.startswith("interrupted") else measure_after_tuning(
        mod, fused, preset, tvm_target, folder, database, rpc, build)
    return TuneResult(folder, stats, callback_state.trials_done, time.perf_counter() - started, reason,
                      resumed, manifest, threads_info)


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
