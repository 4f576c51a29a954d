"""The prepare stage: ONNX model + target + options -> the Relax module lwc schedules.

``prepare(model, target, input_shapes, options) -> Prepared`` does import, sparsity, the
graph passes, int8 lowering and precision, and nothing else: no schedule, no build, no
file written. ``lwc compile`` continues with the schedule stage (tuning records and
rules, :mod:`lwc.tuning.apply`), the build (``tvm.compile``) and the artifact
(:class:`lwc.driver.CompileResult`); ``lwc tune`` tunes the kernels of the module it
returns, so the tasks tuned are the ones compile looks up.

Data flows one way::

    model.onnx --frontend--> ImportedModel (ONNX simplified, Relax module)
               --sparsity--> RemoveZeroChannels (ONNX), DenseToSparse / Conv1x1ToSparse (Relax)
               --graph-----> lwc's Relax passes (lwc.pipeline.PASSES)
               --int8------> QDQ -> integer kernels (lwc.quantize.lowering_passes)
               --precision-> fp16 on CUDA targets
               = Prepared.mod
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lwc.frontend import ImportedModel, import_model
from lwc.options import DEFAULT, CompileOptions
from lwc.targets import Preset, resolve


@dataclass
class Prepared:
    """The output of :func:`prepare`.

    Attributes:
        mod: Relax IRModule after every graph stage (not legalized, not fused).
        preset: the target preset; ``tvm_target`` its ``tvm.target.Target``.
        model: the imported model (static input/output specs, sha256, simplified ONNX).
        options: the :class:`~lwc.options.CompileOptions` it was prepared with.
        model_key: 12 hex digits naming (model, input shapes, graph options): the
            workload part of a tuning log's folder name (:func:`lwc.tuning.keys.model_key`).
        records: one :class:`lwc.pass_records.PassRecord` per pass of every stage, in order.
        passes: names of what ran, in order, for the manifest.
        quantization: the manifest's ``quantization`` section ({} for fp32 models).
        sparsity: the manifest's ``sparsity`` section.
        cuda_build: the CUDA part of the compile (:class:`lwc.cuda.CudaBuild`), None on CPUs.
        report: the compile report's data (:func:`lwc.report.collect_safely`).
        notes: compile-output lines (what was simplified, int8 speed notes, CUDA driver).
        seconds: wall time of the stage in seconds.
    """

    mod: object
    preset: Preset
    tvm_target: object
    model: ImportedModel
    options: CompileOptions
    model_key: str
    records: list = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    quantization: dict = field(default_factory=dict)
    sparsity: dict = field(default_factory=dict)
    cuda_build: object = None
    report: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def resolve_target(target) -> Preset:
    """A :class:`Preset` for a preset name, old-style TVM string, JSON dict or Preset.

    Raises:
        LwcError: unknown target (the message lists the presets).
    """
    return target if isinstance(target, Preset) else resolve(target)


def check(preset: Preset, options: CompileOptions):
    """Everything :func:`prepare` can refuse before any long work.

    Returns:
        the CUDA build (:func:`lwc.cuda.prepare`), None for CPU presets.
    Raises:
        LwcError: an unknown ``--disable-pass`` name, fp16 on a CPU target, no CUDA
            toolkit for the arch.
    """
    from lwc import cuda, pipeline

    pipeline.check_pass_names(options.disabled_passes)
    return cuda.prepare(preset, options.precision, options.nvcc)


def log_lookup(preset: Preset, tuning_log: str | None = None, enabled: bool = True):
    """``model_key -> LogChoice | None``: the tuning log whose tuned dense kernels
    ``--sparsity auto`` times against BSR (the lookup the schedule stage makes too:
    :func:`lwc.sparsity_stage.tuning_log_choice`).

    Args:
        tuning_log: ``--tuning-log`` folder, or None for the model's own folder.
        enabled: False for ``--no-tuning-log`` (the lookup then always answers None).
    """
    from lwc import sparsity_stage

    def lookup(key: str):
        return sparsity_stage.tuning_log_choice(preset, tuning_log, enabled, key)

    return lookup


def prepare(
    model,
    target: str | Preset = "host",
    input_shapes: dict[str, list[int]] | None = None,
    options: CompileOptions = DEFAULT,
    *,
    tuning_log=None,
    tuning_run: bool = False,
    input_values: dict | None = None,
) -> Prepared:
    """Import ``model`` and run every graph stage for ``target``.

    Args:
        model: path to an .onnx file or an ``onnx.ModelProto``.
        target: preset name, old-style TVM target string, JSON target dict or a Preset.
        input_shapes: ``{input name: [d0, ...]}``; required for inputs with dynamic dims.
        options: the graph and kernel options (:class:`~lwc.options.CompileOptions`).
        tuning_log: ``lookup(model_key) -> LogChoice | None``: the tuning log whose
            tuned dense kernels ``--sparsity auto`` times against its BSR kernels (None:
            TVM's default schedules are timed).
        tuning_run: the module is prepared for ``lwc tune`` (``--sparsity auto`` then
            takes the cost model for dense kernels not tuned yet).
        input_values: ``{input name: value}`` bound as constants (``--input-value``,
            :mod:`lwc.input_values`); they are no longer inputs, and the model key names them.

    Returns:
        a :class:`Prepared`.
    Raises:
        LwcError: unknown target or pass name, bad model or shapes, unsupported ops,
            calibration problems (one line each).
    """
    from lwc import pass_records, pipeline, report, sparsity_stage
    from lwc import quantize as quant
    from lwc.tuning import keys

    start = time.perf_counter()
    preset = resolve_target(target)
    cuda_build = check(preset, options)
    tvm_target = preset.tvm_target()

    if options.quantize is not None:
        imported, quant_report = quant.import_quantized(model, input_shapes, options.quantize,
                                                        input_values)
    else:
        imported, quant_report = import_model(model, input_shapes, input_values=input_values), None
    key = keys.model_key(imported.sha256, imported.inputs, options.variant_key(), imported.bound)

    imported, sparsity_info = sparsity_stage.apply(
        imported, options.sparsity, preset=preset, disabled=options.disabled_passes,
        tuning_log=tuning_log(key) if tuning_log else None, tuning_run=tuning_run,
    )
    records = _sparsity_records(sparsity_info, options.disabled_passes)
    dump = pass_records.IrDump()
    graph_disabled = tuple(options.disabled_passes)
    if cuda_build:
        graph_disabled += cuda_build.skipped_passes()
    mod, graph_records = pipeline.run_passes(imported.mod, preset, disabled=graph_disabled,
                                             options=options, dump=dump)
    records += graph_records
    # QDQ -> integer kernels after lwc's fp32 passes: those fold constants into weights
    # and must not meet int8 weights and int32 accumulators
    mod, int8_records, quant_info = quant.lower_qdq(mod, options.disabled_passes, preset, dump)
    records += int8_records
    quant_info = quant.describe(quant_report, quant_info, preset)
    if cuda_build:  # before tuning: records are keyed by the fp16 kernels
        mod, precision_records = _precision(mod, cuda_build, options, dump)
        records += precision_records
    # the sparsity stage's passes are named by its report (ONNX ones before the import)
    applied = [r.name for r in records if not r.disabled and r.stage != "sparsity"]
    compile_report = report.collect_safely(imported, records, imported.mod, mod, tvm_target)
    return Prepared(
        mod=mod,
        preset=preset,
        tvm_target=tvm_target,
        model=imported,
        options=options,
        model_key=key,
        records=records,
        passes=["onnx.checker", "onnxsim", *sparsity_info["passes"], "relax.frontend.from_onnx",
                *sparsity_info["relax_passes"], *applied],
        quantization=quant_info,
        sparsity=sparsity_info,
        cuda_build=cuda_build,
        report=compile_report,
        notes=list(imported.notes) + quant_info.get("notes", [])
        + (cuda_build.notes() if cuda_build else []),
        seconds=time.perf_counter() - start,
    )


def _precision(mod, cuda_build, options: CompileOptions, dump):
    """The precision stage: fp16 on CUDA targets (``--precision fp16``), one record."""
    from lwc import pass_records

    if cuda_build.precision == "fp32":
        return mod, []
    if "ToMixedPrecision" in options.disabled_passes:
        return mod, [pass_records.skipped("precision", "ToMixedPrecision", "disabled (--disable-pass)")]
    mod, record = pass_records.run_pass("precision", "ToMixedPrecision", cuda_build.apply_precision, mod, dump)
    return mod, [record]


def _sparsity_records(info: dict, disabled) -> list:
    """The sparsity stage's :class:`lwc.pass_records.PassRecord` s, from its report
    (:func:`lwc.sparsity_stage.apply`): what each of its passes changed and declined."""
    from lwc import pass_records, sparsity_stage

    records = []
    for name in sparsity_stage.PASS_NAMES:
        if name in disabled:
            records.append(pass_records.skipped("sparsity", name, "disabled (--disable-pass)"))
            continue
        changed, declined = {}, []
        if name == "RemoveZeroChannels":
            removed = (info.get("remove_zero_channels") or {}).get("removed_channels", 0)
            if removed:
                changed["channels removed"] = removed
        else:
            key = "dense_to_sparse" if name == "DenseToSparse" else "conv1x1_to_sparse"
            for d in info.get(key) or ():
                if d.get("used"):
                    changed["bsr kernels"] = changed.get("bsr kernels", 0) + 1
                else:
                    declined.append({"where": d.get("layer", ""), "reason": d.get("reason", "")})
        summary = "; ".join(f"{n} {k}" for k, n in changed.items())
        if declined:
            summary = "; ".join(filter(None, [summary, f"{len(declined)} declined (e.g. "
                                              f"{declined[0]['where']}: {declined[0]['reason']})"]))
        records.append(pass_records.PassRecord(name, 0.0, {"changed": changed, "declined": declined},
                                           summary or "nothing to do", 0, 0, stage="sparsity"))
    return records
