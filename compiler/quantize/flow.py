"""The int8 flow (:func:`import_quantized`): calibrate, decide, insert QDQ, import to Relax.

:func:`lwc.frontend.import_model` loads, shape-fixes and simplifies the model and, between
simplification and the Relax conversion, runs :func:`quantize_onnx` as its ONNX-level
``rewrite`` stage: :func:`lwc.quantize.rewrite.prepare` (BatchNorm folded, so the weights
quantized are the final ones), :func:`lwc.calibrate.observe` on the samples,
:func:`fallback` where an accuracy bound is given, :func:`lwc.quantize.rewrite.insert_qdq`,
and the per-layer comparison with fp32 (:func:`lwc.quantize.metrics.layer_report`).
"""

from __future__ import annotations

import sys
from typing import Callable

import onnx

from lwc import calibrate
from lwc.errors import LwcError
from lwc.quantize.metrics import layer_report, output_drop, run_outputs
from lwc.quantize.options import QuantizeOptions
from lwc.quantize.report import QuantizationReport
from lwc.quantize.rewrite import Layer, find_layers, has_qdq, insert_qdq, prepare

REPORT_SAMPLES = 32


def fallback(fp32: onnx.ModelProto, layers: list[Layer], ranges: dict, samples: list[dict],
             bound: float, metric: Callable | None, exclude: set[str], log=None) -> tuple[set[str], float]:
    """Layers to keep in fp32 so that the output drop is <= ``bound``, and the drop reached.

    Sensitivity of a layer = the drop with only that layer quantized; the most sensitive
    go back to fp32 first, one at a time, until the bound holds.
    """
    outputs = [o.name for o in fp32.graph.output]
    ref = run_outputs(fp32, samples, outputs)

    def drop(excluded: set[str]) -> float:
        return output_drop(ref, run_outputs(insert_qdq(fp32, layers, ranges, excluded), samples, outputs), metric)

    current = drop(exclude)
    if current <= bound:
        return set(exclude), current
    names = [layer.name for layer in layers if layer.name not in exclude]
    sensitivity = {n: drop(set(names) - {n} | exclude) for n in names}
    excluded = set(exclude)
    for n in sorted(names, key=lambda n: -sensitivity[n]):
        excluded.add(n)
        current = drop(excluded)
        if log:
            log(f"lwc: accuracy fallback: {n} -> fp32 (sensitivity {sensitivity[n]:.2e}); drop now {current:.2e}")
        if current <= bound:
            break
    return excluded, current


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quantize_onnx(model: onnx.ModelProto, inputs: list, options: QuantizeOptions,
                  log=_log) -> tuple[onnx.ModelProto, QuantizationReport]:
    """Calibrate and insert QDQ into a simplified fp32 model with static shapes."""
    method = calibrate.parse_method(options.method)
    samples, source = calibrate.calibration_samples(inputs, options.calib, options.calib_random,
                                                    options.preprocess, options.max_samples)
    model = prepare(model)
    layers = find_layers(model)
    if not layers:
        raise LwcError("--quantize int8: the model has no Conv/MatMul/Gemm with constant weights")
    unknown = set(options.exclude) - {layer.name for layer in layers}
    if unknown:
        raise LwcError(f"exclude names no quantizable layer: {', '.join(sorted(unknown))}")
    acts = sorted({layer.activation for layer in layers})
    ranges = calibrate.observe(model, samples, acts, method, progress=options.progress)
    excluded = set(options.exclude)
    report = QuantizationReport(str(method), len(samples), source, max_accuracy_drop=options.max_accuracy_drop)
    eval_samples = samples[:REPORT_SAMPLES]
    if options.max_accuracy_drop is not None:
        excluded, reached = fallback(model, layers, ranges, eval_samples, options.max_accuracy_drop,
                                     options.metric, excluded, log if options.progress else None)
        report.fallback = sorted(excluded - set(options.exclude))
        if reached > options.max_accuracy_drop:
            report.notes.append(f"accuracy bound {options.max_accuracy_drop:g} not reached even with "
                                f"all layers in fp32 (drop {reached:.3g})")
    qdq = insert_qdq(model, layers, ranges, excluded)
    report.layers, report.outputs = layer_report(model, qdq, layers, eval_samples, excluded)
    for row in report.layers:
        row["input_range"] = [round(v, 6) for v in ranges[next(x.activation for x in layers if x.name == row["name"])]]
    return qdq, report


def import_quantized(model, input_shapes: dict | None, options: QuantizeOptions | None,
                     input_values: dict | None = None):
    """:func:`lwc.frontend.import_model` with :func:`quantize_onnx` as its ONNX-level stage.

    Returns:
        (ImportedModel whose ``mod`` holds relax.quantize/dequantize, QuantizationReport).
    Raises:
        LwcError: the model is already quantized (QuantizeLinear/DequantizeLinear after
            simplification), and the errors of the import and of :func:`quantize_onnx`.
    """
    from lwc import frontend

    reports = []

    def quantize(simplified: onnx.ModelProto, inputs: list) -> onnx.ModelProto:
        if has_qdq(simplified):
            raise LwcError("the model is already quantized (it has QuantizeLinear/DequantizeLinear); "
                           "compile it without --quantize")
        qdq, report = quantize_onnx(simplified, inputs, options)
        reports.append(report)
        return qdq

    imported = frontend.import_model(model, input_shapes, rewrite=quantize, input_values=input_values)
    return imported, reports[0]
