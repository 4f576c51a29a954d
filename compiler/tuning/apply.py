"""The compile side of tuning: the module prepared, its records applied, fixed schedules.

:func:`prepare` is how both ``lwc tune`` (task extraction) and ``lwc compile`` see the
module (TVM's zero pipeline: legalize + fuse); :func:`apply_records` applies the records
of the log :func:`lwc.tuning.logs.locate_log` picks, then lwc's fixed schedules
(:func:`schedule_fixed`) and the single-thread decisions (:mod:`lwc.tuning.threads`).
"""

from __future__ import annotations

from pathlib import Path

from lwc.tuning.database import _arch, _ms, fast_tensor_intrin, valid_records_for
from lwc.tuning.logs import locate_log
from lwc.tuning.threads import called_functions


def prepare(mod, tvm_target, database=None):
    """TVM's zero pipeline (legalize, fuse), applying ``database`` when given.

    This is how both ``lwc tune`` (task extraction) and ``lwc compile`` see the module, so
    the tasks tuned are exactly the functions compile looks up.
    """
    from tvm import relax

    ms = _ms() if database is not None else None
    if database is None:  # the zero pipeline's passes, shared with the compile report's count
        from lwc.kernel_inventory import lower_to_kernels

        return lower_to_kernels(mod, tvm_target)
    with tvm_target, database:
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


def apply_records(mod, preset, tvm_target, *, tuning_log=None, enabled=True, model_key=None,
                  rules: bool = True):
    """The schedule stage: every kernel of ``mod`` scheduled, records first.

    Runs TVM's zero pipeline (legalize + fuse) and MetaScheduleApplyDatabase with the
    records that match this target; the default lowering that follows keeps the tuned
    schedules (it re-runs legalize/fuse, which leave the fused functions alone). Kernels
    no record schedules get lwc's fixed schedules (int8 depthwise), then lwc's CPU
    schedule rules (:mod:`lwc.schedules`); a kernel every rule declines is lowered as
    written.

    Args:
        tuning_log: a tuning log folder to use (``--tuning-log``); its manifest must match
            the target and apache-tvm version.
        enabled: False skips records (``--no-tuning-log``).
        model_key: :func:`model_key` of the model, to find its folder under tuning_logs/.
        rules: False leaves kernels without a record unscheduled (``--no-schedule-rules``).
            No record applies where ``lwc tune`` timed the whole model faster on the rules
            alone (:mod:`lwc.tuning.whole_model`).
    Returns:
        (module, info): info has ``status`` (tuned/untuned), ``tasks``, ``tuned_tasks``,
        ``untuned_tasks``, ``log`` (folder or None) and ``message`` (one line for the
        compile output).
    Raises:
        LwcError: ``tuning_log`` does not exist or was tuned for another target/TVM.
    """
    from lwc.tuning import whole_model

    if preset.is_gpu:
        return mod, _info(None, 0, 0, "tuning records are not applied to GPU targets yet")
    fused = prepare(mod, tvm_target)
    workloads = task_workloads(fused, tvm_target)
    total = len(workloads)
    if not enabled:
        return _untuned(fused, preset, tvm_target, rules,
                        _info(None, total, 0, f"tuning records disabled; {_tasks_word(total)} untuned"))
    choice = locate_log(preset, tvm_target, tuning_log=tuning_log, model_key=model_key)
    if choice.folder is None or choice.why_not:
        return _untuned(fused, preset, tvm_target, rules,
                        _info(choice.folder, total, 0, f"{choice.why_not}; {_tasks_word(total)} untuned"))
    folder, substitute, records_target = choice.folder, choice.substitute, choice.records_target
    timed = whole_model.read(folder)
    if whole_model.rules_win(timed):
        return _untuned(fused, preset, tvm_target, rules, _info(folder, total, 0, (
            f"tuning: records of {_short(folder)} not applied: lwc tune timed the model faster "
            f"with lwc's rules alone ({timed['rules_ms']} ms) than with them "
            f"({timed['log_ms']} ms; {whole_model.FILE}); {_tasks_word(total)} untuned")))
    database, kept, foreign = valid_records_for(folder, records_target)
    if kept == 0:
        note = f" ({foreign} records for other targets ignored)" if foreign else ""
        return _untuned(fused, preset, tvm_target, rules, _info(
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
    applied, info = _with_single_thread(fused, applied, folder, info, preset, rules)
    return _with_rules(applied, preset, tvm_target, rules, info)


def _untuned(fused, preset, tvm_target, rules: bool, info: dict) -> tuple[object, dict]:
    """No record applies: lwc's fixed schedules, then its rules."""
    mod, info = _with_fixed(fused, preset, tvm_target, info)
    return _with_rules(mod, preset, tvm_target, rules, info)


def _with_rules(mod, preset, tvm_target, enabled: bool, info: dict) -> tuple[object, dict]:
    """Kernels still unscheduled: lwc's int8 kernels on a seeded sample of their own rule's
    design space (:func:`schedule_fixed` with :data:`LWC_RULE_PREFIX`), then lwc's CPU
    rules for the rest (``enabled``: ``CompileOptions.schedule_rules``)."""
    if enabled and not preset.is_gpu:
        mod, sampled = schedule_fixed(mod, preset, tvm_target, LWC_RULE_PREFIX, _facts(preset))
        info["sampled_schedules"] = sampled
        if sampled:
            info["message"] += f"; {sampled} int8 kernels on an untuned draw of their tuning space"
    return _with_cpu_rules(mod, preset, enabled, info)


def _with_cpu_rules(mod, preset, enabled: bool, info: dict) -> tuple[object, dict]:
    """lwc's CPU schedule rules (:func:`lwc.schedules.apply_rules`) on every called kernel
    no record or fixed schedule scheduled; counts per rule in ``info["rules"]``."""
    from lwc import schedules
    from lwc.tuning.threads import called_functions

    if not enabled:
        info["rules"] = {"disabled": True}
        return mod, info
    called = called_functions(mod)
    mod, report = schedules.apply_rules(mod, schedules.CpuFacts.from_preset(preset), only=called)
    counts = {name: n for name, n in report.items() if name != "declined"}
    info["rules"] = {**counts, "declined": [list(d) for d in report["declined"]]}
    scheduled = sum(counts.values())
    if scheduled:
        info["message"] += f"; {scheduled} kernels by lwc's schedule rules"
    if report["declined"]:
        info["message"] += f" ({len(report['declined'])} declined: lowered as written)"
    return mod, info


def _with_single_thread(fused, applied, folder, info: dict, preset, rules: bool) -> tuple[object, dict]:
    """The per-kernel choices ``lwc tune`` timed (:mod:`lwc.tuning.threads`): one thread,
    or lwc's rule schedule where it beat the record (``rules``: schedule rules enabled)."""
    from lwc import schedules
    from lwc.tuning import threads

    facts = schedules.CpuFacts.from_preset(preset) if rules and not preset.is_gpu else None
    applied, serial, ruled = threads.apply(fused, applied, threads.read(folder), facts)
    info["single_thread_kernels"] = serial
    info["rule_over_record_kernels"] = ruled
    if serial:
        info["message"] += f"; {serial} on one thread (timed by lwc tune: {threads.DECISIONS})"
    if ruled:
        info["message"] += f"; {ruled} by lwc's rule, which lwc tune timed faster than the record"
    return applied, info


#: Block annotations (``schedule_rule``) of lwc kernels whose MetaSchedule rule is one
#: fixed schedule (no sampled decision worth a search): applied even without a record.
FIXED_SCHEDULE_RULES = ("lwc_int8_depthwise", "lwc_int8_depthwise_quad", "lwc_int8_depthwise_window")


#: Prefix of every lwc kernel's ``schedule_rule`` annotation (:mod:`lwc.kernels`).
LWC_RULE_PREFIX = "lwc_"


def _fixed_rule_funcs(mod, rules=FIXED_SCHEDULE_RULES) -> list:
    """Names of the unscheduled PrimFuncs holding a block whose ``schedule_rule`` is one of
    ``rules`` (a tuple of names, or a prefix string), of those a Relax function calls
    where the module has any."""
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
        found = {str(sch.get(b).annotations.get("schedule_rule", "")) for b in blocks}
        if isinstance(rules, str) and any(r.startswith(rules) for r in found):
            names.append(name)
        elif not isinstance(rules, str) and found & set(rules):
            names.append(name)
    return names


def schedule_fixed(mod, preset, tvm_target, rules=FIXED_SCHEDULE_RULES, facts=None) -> tuple[object, int]:
    """Schedule the functions no record scheduled whose kernel has a fixed schedule
    (:data:`FIXED_SCHEDULE_RULES`, e.g. lwc's int8 depthwise conv) with MetaSchedule's
    design space for ``preset`` (one space; the root's sampled unroll depth is drawn with
    a fixed seed) and its postprocessors, as one tuning trial would, without measuring.

    Untuned, such a function would be lowered as written: one thread, nothing vectorized.
    With it, logs tuned before the kernel existed (or on another CPU) need no new records.

    ``rules``: the ``schedule_rule`` names (or a name prefix) whose kernels to schedule;
    with :data:`LWC_RULE_PREFIX` every lwc kernel without a record gets one seeded sample
    of its rule's design space (the packed int8 convs: a vectorized, tensorized kernel
    whose tile sizes a search would refine).

    ``facts``: the CPU (:class:`lwc.schedules.CpuFacts`); given, the space and its tiles are
    chosen for it (:func:`lwc.schedules.int8.pick_space`: register-blocked, tiles that fit
    the vector registers) and kernels too small to pay for a fork/join run on one thread
    (:func:`lwc.schedules.int8.parallel_pays`); None takes the seeded draw as is.

    Returns:
        (module, number of functions scheduled). A function whose space or
        postprocessors fail is left unscheduled.
    """
    import tvm

    from lwc.schedules import int8 as int8_rule
    from lwc.tuning.threads import serial

    names = _fixed_rule_funcs(mod, rules)
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
        sch = None
        for candidate in _draws(ctx, func, facts):
            try:
                sch = candidate()
                if all(post.apply(sch) for post in ctx.space_generator.postprocs):
                    break
            except RuntimeError:  # TVM's errors (InternalError ...) derive from it
                pass
            sch = None
        if sch is None:
            continue
        scheduled = sch.mod["main"]
        for key, value in (func.attrs or {}).items():
            scheduled = scheduled.with_attr(key, value)
        if facts is not None and not int8_rule.parallel_pays(func, facts):
            scheduled = serial(scheduled) or scheduled
        out[gvar] = scheduled.with_attr("tirx.is_scheduled", True)
        done += 1
    return out, done


def _draws(ctx, func, facts) -> list:
    """Ways to schedule one lwc kernel, best first (callables returning a Schedule):
    given ``facts``, the space and tiles :func:`lwc.schedules.int8.pick_space` chooses,
    replayed, with the blocks after its matmul placed and vectorized by
    :func:`lwc.schedules.int8.schedule_epilogues`; then the first seeded design space
    (what a failed replay or postprocessor falls back to)."""
    from tvm import s_tir

    from lwc.schedules import int8 as int8_rule

    spaces = []  # generated once, on first use

    def design_spaces():
        if not spaces:
            spaces.extend(ctx.generate_design_space())
        return spaces

    def seeded():
        return design_spaces()[0].copy()

    def picked():
        trace = int8_rule.pick_space(design_spaces(), facts, int8_rule.copy_channels(func),
                                     int8_rule.dot_reduction(func))
        sch = s_tir.Schedule(ctx.mod)
        trace.apply_to_schedule(sch, remove_postproc=True)
        int8_rule.schedule_epilogues(sch, facts)
        return sch

    return [seeded] if facts is None else [picked, seeded]


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


def _facts(preset):
    """The CPU facts lwc's untuned int8 schedules are chosen for (None for GPU presets)."""
    from lwc.schedules import CpuFacts

    return None if preset.is_gpu else CpuFacts.from_preset(preset)


def _with_fixed(mod, preset, tvm_target, info: dict) -> tuple[object, dict]:
    mod, fixed = schedule_fixed(mod, preset, tvm_target, facts=_facts(preset))
    info["fixed_schedules"] = fixed
    if fixed:
        info["message"] += f"; {fixed} kernels with lwc's fixed schedule (int8 depthwise)"
    return mod, info


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
    from lwc.kernels.int8_conv2d import AVX2, dot_product_for

    if dot_product_for(preset.arch, preset.features) != AVX2:
        return "post-order-apply"
    postprocs = [ms.postproc.DisallowDynamicLoop(), ms.postproc.RewriteParallelVectorizeUnroll(),
                 ms.postproc.RewriteReductionBlock(),
                 ms.postproc.RewriteTensorize(vectorize_init_loop=True), ms.postproc.RewriteLayout()]
    return ms.space_generator.PostOrderApply(postprocs=postprocs)


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
