"""The int8 lowering stage: QDQ Relax graphs onto integer kernels (:func:`lower_qdq`).

TVM imports the QDQ model as ``relax.quantize``/``relax.dequantize``; the passes of
:func:`lowering_passes` turn dequantize -> conv2d/matmul [-> quantize] into int8 x int8 ->
int32 kernels with fixed-point requantization. The stage runs after lwc's fp32 pass
pipeline (those passes fold constants into weights and must not meet int8 weights and
int32 accumulators); ``--disable-pass`` takes the names in :data:`LOWERING_PASS_NAMES`.
"""

from __future__ import annotations


def lowering_passes(preset=None) -> list:
    """The Relax passes that put QDQ graphs on integer kernels, in order (fresh instances).

    With a CPU ``preset``, Int8DepthwiseConv2d puts the depthwise convs on lwc's
    vectorized kernel that pads with the zero point itself; where the CPU has an int8
    dot-product instruction MetaSchedule can tensorize to (x86 VNNI, Arm dotprod, and
    lwc's AVX2 ``vpmaddwd``), PackInt8Conv2d then rewrites the dense integer convs into
    kernels shaped for it. LiftQuantParams runs last, so no kernel holds a value the
    calibration chose (tuning records match any calibration).
    """
    from lwc.kernels.int8_conv2d import dot_product_for
    from lwc.passes.fuse_requantize import FuseRequantize
    from lwc.passes.int8_depthwise_conv2d import Int8DepthwiseConv2d
    from lwc.passes.lift_quant_params import LiftQuantParams
    from lwc.passes.lower_qdq_conv2d import LowerQdqConv2d
    from lwc.passes.lower_qdq_matmul import LowerQdqMatmul
    from lwc.passes.pack_int8_conv2d import PackInt8Conv2d
    from lwc.passes.quantize_before_concat import QuantizeBeforeConcat
    from lwc.passes.reciprocal_quantize import ReciprocalQuantize

    passes = [QuantizeBeforeConcat(), LowerQdqConv2d(), LowerQdqMatmul(), FuseRequantize()]
    cpu = preset is not None and not preset.is_gpu
    dot = dot_product_for(preset.arch, preset.features) if cpu else None
    if cpu:
        passes.append(Int8DepthwiseConv2d(dot))
    if dot is not None:
        passes.append(PackInt8Conv2d(dot))
    passes.append(ReciprocalQuantize())
    passes.append(LiftQuantParams())  # last: no kernel's TIR holds a calibration value
    return passes


LOWERING_PASS_NAMES = ("QuantizeBeforeConcat", "LowerQdqConv2d", "LowerQdqMatmul", "FuseRequantize", "Int8DepthwiseConv2d",
                       "PackInt8Conv2d", "ReciprocalQuantize", "LiftQuantParams")


def lower_qdq(mod, disabled: tuple[str, ...] = (), preset=None, dump=None) -> tuple[object, list, dict]:
    """Run the int8 lowering stage if ``mod`` has dequantize ops.

    Args:
        disabled: pass names to skip (``--disable-pass``).
        preset: the target preset; decides whether dense int8 convs are packed for the
            CPU's dot-product instruction (:func:`lowering_passes`).
        dump: :class:`lwc.pass_records.IrDump` (``LWC_DUMP_IR``), or None.
    Returns:
        (module, one :class:`lwc.pass_records.PassRecord` per pass of the stage, disabled ones
        included; summary: ops lowered/fused and the declines with their reasons).
    """
    from lwc import pass_records
    from lwc.passes._qdq import count_ops

    if count_ops(mod, "relax.dequantize") == 0:
        return mod, [], {}
    records, summary, declined = [], {}, []
    for p in lowering_passes(preset):
        name = p.info.name
        if name in disabled:
            records.append(pass_records.skipped("int8", name, "disabled (--disable-pass)"))
            continue
        mod, record = pass_records.run_pass("int8", name, p, mod, dump)
        records.append(record)
        summary[name] = getattr(p, "lowered", getattr(p, "fused", getattr(p, "moved", 0)))
        if hasattr(p, "quad_rows"):
            summary["depthwise_row_quads"] = p.quad_rows
            summary["depthwise_row_windows"] = p.row_windows
        declined += [{"pass": name, "op": op, "reason": reason} for op, reason in p.declined]
    summary["int8_conv2d"] = (_count_int(mod, "relax.nn.conv2d") + summary.get("PackInt8Conv2d", 0)
                              + summary.get("Int8DepthwiseConv2d", 0))
    summary["int8_matmul"] = _count_int(mod, "relax.matmul")
    summary["fp32_conv2d"] = _count_ops_dtype(mod, "relax.nn.conv2d", "float32")
    summary["fp32_matmul"] = _count_ops_dtype(mod, "relax.matmul", "float32")
    summary["declined"] = declined
    return mod, records, summary


def _count_ops_dtype(mod, name: str, dtype: str) -> int:
    from tvm import relax

    count = 0

    def visit(e):
        nonlocal count
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == name and str(e.args[0].ty.dtype) == dtype:
            count += 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return count


def _count_int(mod, name: str) -> int:
    return _count_ops_dtype(mod, name, "uint8") + _count_ops_dtype(mod, name, "int8")
