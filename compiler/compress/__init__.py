"""The compression workflow, torch side to arm64: distill, prune, quantize, compile, evaluate.

::

    from lwc import compress
    teacher = compress.fit(teacher, (x, y), epochs=20)                 # or an ONNX teacher
    student = compress.distill(teacher, student, (x, y), temperature=4.0, alpha=0.5)
    pruned = compress.prune_finetune(student, (x, y), "channel:l1", 0.5, teacher=teacher)
    compress.export_onnx(pruned, "pruned.onnx", (1, 1, 8, 8))
    compress.quantize_int8("pruned.onnx", calib_x, "pruned-int8.onnx")   # lwc --quantize int8
    compress.compile_artifact("pruned-int8.onnx", "arm64", "pruned-int8-arm64.so")
    compress.evaluate(x_test, y_test, torch=pruned, onnxruntime="pruned.onnx",
                      lwc_host="host.so", lwc_arm64="arm64.so")

Modules: :mod:`~lwc.compress.training` (training, Hinton et al. 2015 distillation, pruning
with lwc's criterion and fine-tuning, physical channel removal), :mod:`~lwc.compress.fake_quant`
(quantization-aware fine-tuning with lwc's int8 rounding), :mod:`~lwc.compress.deploy`
(ONNX export with fixed shapes, int8, compile, evaluation on host and arm64 under qemu).
docs/compression.md describes the workflow, its formulas and measured numbers;
examples/compress_digits.py runs it end to end. torch is the optional ``torch`` extra.
"""

from lwc.compress.deploy import (
    Evaluation,
    compile_artifact,
    evaluate,
    export_onnx,
    host_latency_ms,
    onnx_stats,
    onnxruntime_predict,
    predict,
    quantize_int8,
)
from lwc.compress.fake_quant import (
    fake_quant_activation,
    fake_quant_weight,
    prepare_qat,
    qat_finetune,
    strip_qat,
)
from lwc.compress.training import (
    count_parameters,
    distill,
    distillation_loss,
    fit,
    prune_finetune,
    shrink_sequential,
    teacher_logits,
)

__all__ = [
    "Evaluation",
    "compile_artifact",
    "count_parameters",
    "distill",
    "distillation_loss",
    "evaluate",
    "export_onnx",
    "fake_quant_activation",
    "fake_quant_weight",
    "fit",
    "host_latency_ms",
    "onnx_stats",
    "onnxruntime_predict",
    "predict",
    "prepare_qat",
    "prune_finetune",
    "qat_finetune",
    "quantize_int8",
    "shrink_sequential",
    "strip_qat",
    "teacher_logits",
]
