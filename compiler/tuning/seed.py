"""Tuning starts from the rules: each task's :mod:`lwc.schedules` schedule as a measured record.

Before the search, :func:`seed_tasks` schedules each task's kernel with lwc's CPU rules
(:data:`lwc.schedules.RULES`, first rule that does not decline), replays the rule's trace on
the task's workload (MetaSchedule re-applies traces: a trace that does not replay, or
replays to another kernel, is skipped and the reason kept), builds and times it with the
search's own MetaSchedule builder and runner, and commits it to the tuning database as a
``TuningRecord`` unless the database already holds a record of that workload at least as
fast. Then:

- EvolutionarySearch draws ``init_measured_ratio`` (0.2) of its initial population from the
  database's best records (``PickBestFromDatabase``), so the search starts from the rule;
- MetaScheduleApplyDatabase (compile) picks the best record per workload, so a tuned kernel
  is never slower than the rule's as measured.

The result per task (:class:`Seed`) is stored in the log's manifest (``rule_seeds``, keyed
by the workload hash) so a task is seeded once; the rule record is not a search trial.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from lwc.tuning.database import _INVALID_SECS, _workload_key, record_json

#: Manifest key: {workload hash: :meth:`Seed.to_json`} of the tasks seeded with their rule
#: schedule (each once; the rule's record is in the database when ``committed``).
RULE_SEEDS = "rule_seeds"


@dataclass
class Seed:
    """The rule's schedule of one task, as seeding found it.

    Attributes:
        rule: the rule's name (None: no rule schedule was measured).
        rule_us: its measured latency in microseconds.
        committed: its record went into the database (False: the database already had a
            record at least as fast, or nothing was measured).
        note: why there is no measured rule schedule (a rule declined, its trace does not
            replay, the build or run failed), else None.
        final: False when the build or run failed (a timeout on a busy machine): not
            stored, so a later run tries again.
    """

    rule: str | None = None
    rule_us: float | None = None
    committed: bool = False
    note: str | None = None
    final: bool = True

    def to_json(self) -> dict:
        return {"rule": self.rule, "rule_us": self.rule_us, "committed": self.committed, "note": self.note}

    @classmethod
    def from_json(cls, data: dict) -> Seed:
        return cls(data.get("rule"), data.get("rule_us"), bool(data.get("committed")), data.get("note"))


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(err).__name__)[:160]


def rule_schedule(func, facts, rules=None):
    """(Schedule or None, rule name or why none): the first rule of ``rules`` (default
    :data:`lwc.schedules.RULES`) that schedules ``func``. Kernels that compile leaves to
    other schedules (a block with a ``schedule_rule`` annotation, no blocks) get none, as
    in :func:`lwc.schedules.schedule_func`; a rule that raises counts as a decline."""
    from lwc import schedules
    from tvm import s_tir

    try:
        from lwc.schedules.analysis import classify

        kind, _ = classify(s_tir.Schedule(func))
    except ImportError:  # the analysis moved: let the rules decide
        kind = None
    except Exception as err:  # noqa: BLE001 - analysis bug: no rule schedule
        return None, f"analysis: {_first_line(err)}"
    if kind == "annotated":
        return None, "a block has a schedule_rule annotation"
    if kind == "blockless":
        return None, "no blocks"
    errors = []
    for rule in rules if rules is not None else schedules.RULES:
        name = getattr(rule, "name", type(rule).__name__)
        try:
            sch = rule.apply(func, facts)
        except Exception as err:  # noqa: BLE001 - a rule bug declines
            errors.append(f"{name}: {_first_line(err)}")
            continue
        if sch is not None:
            return sch, name
    return None, "; ".join(errors) or "every rule declines"


def replay(ms, sch, workload, target, args_info):
    """The rule schedule ``sch`` as MetaSchedule will re-apply it to ``workload``.

    The record is serialized to JSON and parsed back against the workload (what the JSON
    database does when a log is opened), and the replayed kernel must be the rule's.

    Returns:
        (replayed Schedule or None, why not).
    """
    import tvm_ffi
    from tvm import s_tir

    record = ms.database.TuningRecord(sch.trace, workload, [1.0], target, args_info)
    try:
        text = json.dumps(record_json(record))
        parsed = ms.database.TuningRecord.from_json(json.loads(text), workload)
        again = s_tir.Schedule(workload.mod)
        parsed.trace.apply_to_schedule(again, remove_postproc=False)
    except Exception as err:  # noqa: BLE001 - TVM ScheduleError and friends
        return None, f"its trace does not replay on the workload ({_first_line(err)})"
    if not tvm_ffi.structural_equal(again.mod, sch.mod):
        return None, "its trace replays to another kernel"
    return again, None


def _device_type(target) -> str:
    """The runner's device name of ``target`` (``llvm`` kernels run on ``cpu``)."""
    kind = str(target.kind.name)
    return "cpu" if kind in ("llvm", "c") else kind


def _secs(run_secs) -> float:
    secs = [float(s) for s in run_secs or []]
    return sum(secs) / len(secs) if secs else math.inf


def seed_tasks(ms, contexts, database, builder, runner, facts, existing_best, should_stop=None) -> list:
    """Measure each task's rule schedule and commit it to ``database`` where it is the fastest.

    Args:
        ms: ``tvm.s_tir.meta_schedule``.
        contexts: the TuneContexts to seed (their ``mod``, ``target``, ``task_name``).
        database: the tuning database (a record goes to ``database.commit_workload(mod)``).
        builder, runner: MetaSchedule's builder and runner, as the search measures with.
        facts: :class:`lwc.schedules.CpuFacts` of the target.
        existing_best: per context, the best seconds the database already holds (None: none).
        should_stop: called between steps; True leaves the remaining tasks unseeded (None
            in the result) for a later run.
    Returns:
        one :class:`Seed` per context, or None for a task left for later.
    """
    seeds: list = [None] * len(contexts)
    pending = []  # (index, rule name, replayed schedule, workload, args_info)
    for i, ctx in enumerate(contexts):
        if should_stop and should_stop():
            return seeds
        sch, rule = rule_schedule(ctx.mod["main"], facts)  # rule: its name, or why none
        if sch is None:
            seeds[i] = Seed(note=f"no rule schedule ({rule})")
            continue
        workload = database.commit_workload(ctx.mod)
        args_info = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        replayed, why_not = replay(ms, sch, workload, ctx.target, args_info)
        if replayed is None:
            seeds[i] = Seed(rule=rule, note=f"{rule} rule not seeded: {why_not}")
            continue
        pending.append((i, rule, replayed, workload, args_info))
    if not pending or (should_stop and should_stop()):
        return seeds
    # one batch: the builder compiles in parallel, the runner times one after another
    built = builder.build([ms.builder.BuilderInput(sch.mod, contexts[i].target) for i, _, sch, _, _ in pending])
    inputs, ran = [], []
    for (i, rule, sch, workload, args_info), result in zip(pending, built):
        if result.error_msg is not None or not result.artifact_path:
            why = _first_line(Exception(result.error_msg or "no artifact"))
            seeds[i] = Seed(rule=rule, note=f"{rule} rule not seeded: build failed ({why})", final=False)
            continue
        inputs.append(ms.runner.RunnerInput(result.artifact_path, _device_type(contexts[i].target), args_info))
        ran.append((i, rule, sch, workload, args_info, result.artifact_path))
    futures = runner.run(inputs) if inputs else []
    for (i, rule, sch, workload, args_info, artifact), future in zip(ran, futures):
        result = future.result()
        try:
            ms.utils.remove_build_dir(artifact)
        except OSError:
            pass
        secs = _secs(result.run_secs) if result.error_msg is None else math.inf
        if secs >= _INVALID_SECS:
            why = _first_line(Exception(result.error_msg or "no time"))
            seeds[i] = Seed(rule=rule, note=f"{rule} rule not seeded: run failed ({why})", final=False)
            continue
        best = existing_best[i]
        committed = best is None or secs < best
        if committed:
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, workload, [float(s) for s in result.run_secs], contexts[i].target, args_info))
        seeds[i] = Seed(rule=rule, rule_us=secs * 1e6, committed=committed)
    return seeds


def restore(stat, seeded: dict | None) -> None:
    """Put a manifest's seed of a task (:data:`RULE_SEEDS`) on its
    :class:`~lwc.tuning.search.TaskStat`, whose ``trials`` counted the database's records:
    the rule's committed record is the search's start, not one of its trials."""
    if not seeded:
        return
    stat.rule, stat.rule_us, stat.rule_note = seeded.get("rule"), seeded.get("rule_us"), seeded.get("note")
    if seeded.get("committed"):
        stat.trials = max(0, stat.trials - 1)


def seed_from_rules(ms, preset, runs_here: bool, contexts, stats, todo, database, builder, runner,
                    seeds: dict, started: float, time_budget_s: float | None) -> bool:
    """Seed the tasks about to be searched (indices ``todo``) that have no entry in ``seeds``
    (the manifest's :data:`RULE_SEEDS`, updated) with :func:`seed_tasks`, measured with the
    search's ``builder`` and ``runner``; ``stats`` (TaskStat per context) get ``rule_us``
    and a best latency no worse than the rule's. Tasks the time budget leaves unseeded, or
    whose kernels do not run here (``runs_here`` False, no RPC), are seeded by a later run.

    Returns:
        whether ``seeds`` changed.
    """
    import time

    from lwc.schedules import CpuFacts

    keys = {i: str(_workload_key(contexts[i].mod)) for i in todo}
    fresh = [i for i in todo if keys[i] not in seeds]
    if not fresh:
        return False
    if not runs_here:
        for i in fresh:
            stats[i].rule_note = "rule schedule not measured: these kernels do not run on this CPU"
        return False
    existing = [stats[i].best_us / 1e6 if stats[i].best_us else None for i in fresh]

    def should_stop() -> bool:
        return time_budget_s is not None and time.perf_counter() - started >= time_budget_s

    results = seed_tasks(ms, [contexts[i] for i in fresh], database, builder, runner,
                         CpuFacts.from_preset(preset), existing, should_stop)
    changed = False
    for i, result in zip(fresh, results):
        if result is None:  # the time budget ran out first
            continue
        stats[i].rule, stats[i].rule_us, stats[i].rule_note = result.rule, result.rule_us, result.note
        if not result.final:  # tried again by the next run
            continue
        seeds[keys[i]] = result.to_json()
        if result.committed and result.rule_us is not None:
            stats[i].best_us = min(stats[i].best_us or math.inf, result.rule_us)
        changed = True
    return changed
