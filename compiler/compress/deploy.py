"""Deployment steps of the compression workflow: ONNX export, int8, compile, evaluate.

* :func:`export_onnx`: a torch model to ONNX with every shape fixed (lwc compiles static
  shapes; the batch dimension is part of the shape, so a batch-N evaluation artifact is a
  second export).
* :func:`quantize_int8`: lwc's ``--quantize int8`` calibration and QDQ insertion
  (:func:`lwc.quantize.quantize_onnx`) on given calibration data, written as a QDQ ONNX file
  (int8 weights) that ``lwc compile`` lowers to integer kernels. The same calibration images
  in batches of 1 or of N give the same ranges (min / max and histograms over the same
  values), so batch-1 and batch-N QDQ models carry the same scales.
* :func:`compile_artifact`: ``lwc.compile`` + export (host in-process; arm64 cross-compiled).
* :func:`predict` / :func:`evaluate`: the torch model, onnxruntime and lwc artifacts (host
  in-process, arm64 under qemu-aarch64 via :mod:`lwc.cross_runtime`) on the same held-out
  set: accuracy of each, and agreement (share of equal top-1 predictions) between them.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from lwc.errors import LwcError


def is_onnx(model) -> bool:
    """Whether ``model`` is an ONNX ModelProto or a path to an ``.onnx`` file."""
    return isinstance(model, onnx.ModelProto) or (
        isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx"))


def export_onnx(model, path: str | os.PathLike, input_shape: tuple[int, ...], *,
                input_name: str = "x", output_name: str = "logits", opset: int = 17) -> Path:
    """Export a torch model to ONNX with fixed shapes (no dynamic axes).

    Args:
        model: ``torch.nn.Module`` taking one float32 input of ``input_shape`` (batch first).
        path: the ``.onnx`` file to write.
        input_shape: e.g. ``(1, 1, 8, 8)``.
        input_name, output_name: graph input / output names.
        opset: ONNX opset (13 or later: per-channel QDQ needs 13).
    Raises:
        LwcError: torch missing or the export fails (one line).
    """
    from lwc.compress._torch import torch as _torch

    torch = _torch()
    path = Path(path)
    example = torch.zeros(tuple(int(d) for d in input_shape))
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, (example,), str(path), input_names=[input_name],
                              output_names=[output_name], opset_version=opset, dynamo=False)
    except Exception as err:  # noqa: BLE001  (torch raises many types here)
        raise LwcError(f"ONNX export failed: {str(err).splitlines()[0] if str(err) else err!r}") from None
    return path


def _proto(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    from lwc.frontend import load_onnx

    return load_onnx(model)


def fixed_model(model, input_shapes: dict[str, list[int]] | None = None) -> onnx.ModelProto:
    """``model`` with input shapes fixed and simplified (lwc's frontend: onnxsim).

    Raises:
        LwcError: unreadable model, or dynamic dims without ``input_shapes``.
    """
    from lwc.frontend import resolve_input_shapes, simplify

    proto = _proto(model)
    simplified, _ = simplify(proto, resolve_input_shapes(proto, input_shapes))
    return simplified


def onnx_stats(model, input_shapes: dict[str, list[int]] | None = None) -> dict:
    """Size of an ONNX model: parameters, FLOPs per inference, bytes on disk.

    Returns:
        ``{"params": float constant elements (weights, biases, BN statistics),
        "int8_params": int8 constant elements, "flops": 2 x multiply-adds of Conv/Gemm/MatMul
        (:func:`lwc.sparsity_analysis.count_flops`), "bytes": serialized size in bytes}``.
        A QDQ model's weights count once (as int8); its scales and zero points not at all.
    Raises:
        LwcError: unreadable model or dynamic shapes without ``input_shapes``.
    """
    from lwc import sparsity_analysis

    proto = _proto(model)
    size = Path(model).stat().st_size if isinstance(model, (str, os.PathLike)) else proto.ByteSize()
    fixed = fixed_model(proto, input_shapes)
    qparams = {name for n in fixed.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for name in n.input[1:]}
    consts = {k: a for k, a in sparsity_analysis.constant_arrays(fixed).items() if k not in qparams}
    floats = sum(a.size for a in consts.values() if a.dtype.kind == "f" and a.size > 1)
    ints = sum(a.size for a in consts.values() if a.dtype == np.int8)
    return {"params": int(floats + ints), "int8_params": int(ints),
            "flops": int(sparsity_analysis.count_flops(fixed)), "bytes": int(size)}


def ends_in_softmax(model) -> bool:
    """Whether the first graph output of an ONNX model is made by a Softmax node."""
    proto = _proto(model)
    name = proto.graph.output[0].name
    return any(n.op_type == "Softmax" and name in n.output for n in proto.graph.node)


def _batch(model: onnx.ModelProto) -> int:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0


def quantize_int8(model, calib_x: np.ndarray, path: str | os.PathLike, *,
                  method: str = "percentile:99.99") -> tuple[Path, object]:
    """lwc's int8 post-training quantization on ``calib_x``, written as a QDQ ONNX file.

    Args:
        model: fixed-shape fp32 ONNX model (path or ModelProto) with one input.
        calib_x: float32 ``[K, ...]`` calibration inputs (per sample the input's shape
            without its batch dim); K is cut to a multiple of the model's batch.
        path: where the QDQ model is written.
        method: calibration method (``minmax``, ``percentile:P``, ``entropy``).
    Returns:
        ``(path, QuantizationReport)`` (per-layer SQNR / cosine vs fp32).
    Raises:
        LwcError: dynamic batch, fewer calibration samples than the batch, or the errors of
            :func:`lwc.quantize.quantize_onnx`.
    """
    from lwc.frontend import resolve_input_shapes, simplify
    from lwc.quantize import QuantizeOptions, quantize_onnx

    proto = _proto(model)
    batch = _batch(proto)
    if batch < 1:
        raise LwcError("quantize_int8 needs a model with a fixed batch dimension (export_onnx)")
    groups = len(calib_x) // batch
    if groups < 1:
        raise LwcError(f"{len(calib_x)} calibration samples for a batch of {batch}")
    inputs = resolve_input_shapes(proto, None)
    simplified, _ = simplify(proto, inputs)
    stacked = np.ascontiguousarray(calib_x[:groups * batch], np.float32).reshape(groups, batch, *calib_x.shape[1:])
    with tempfile.TemporaryDirectory(prefix="lwc-calib-") as tmp:
        np.save(Path(tmp) / "calib.npy", stacked)
        options = QuantizeOptions(calib=tmp, method=method, max_samples=groups, progress=False)
        qdq, report = quantize_onnx(simplified, inputs, options)
    path = Path(path)
    onnx.save(qdq, str(path))
    return path, report


def compile_artifact(model, target: str, path: str | os.PathLike) -> Path:
    """``lwc.compile(model, target)`` exported to ``path`` (``NAME.so`` + ``NAME.json``).

    Raises:
        LwcError: the compile's errors (missing cross compiler, unsupported op, ...).
    """
    from lwc.driver import compile as lwc_compile

    return Path(lwc_compile(str(model) if not isinstance(model, onnx.ModelProto) else model,
                            target).export(path))


# --------------------------------------------------------------------------- predictions


def _chunks(x: np.ndarray, batch: int):
    """(padded chunk of ``batch`` rows, real row count) over ``x``."""
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        n = len(part)
        if n < batch:
            part = np.concatenate([part, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
        yield part, n


def onnxruntime_predict(model, x: np.ndarray) -> np.ndarray:
    """onnxruntime (CPU) logits ``[N, classes]`` of a one-input ONNX model on ``x`` ``[N, ...]``.

    A fixed batch ``b`` is fed in chunks of ``b`` (the last padded); a dynamic one in chunks of 256.
    A quantized (QDQ) model runs op by op (``ORT_DISABLE_ALL``), the ONNX spec's definition of
    the graph: onnxruntime's fused uint8 x int8 kernels can saturate on x86 (``vpmaddubsw``;
    docs/int8.md, tests/ort_reference.py) and are no reference.
    """
    import onnxruntime as ort
    from lwc.quantize import has_qdq

    proto = _proto(model)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if has_qdq(proto):
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    batch = _batch(proto) or 256
    x = np.ascontiguousarray(x, np.float32)
    outs = [sess.run(None, {name: part})[0][:n] for part, n in _chunks(x, batch)]
    return np.concatenate(outs).reshape(len(x), -1)


def artifact_predict(path: str | os.PathLike, x: np.ndarray, *, timeout_s: float = 600) -> np.ndarray:
    """An lwc artifact's logits ``[N, classes]`` on ``x`` ``[N, ...]``, in chunks of its batch.

    Host artifacts run in-process; arm64 ones under qemu-aarch64 (one emulator run per chunk:
    compile the arm64 evaluation artifact with a large batch).
    Raises:
        LwcError: the artifact cannot load or run here (e.g. qemu-aarch64 missing).
    """
    from lwc import artifact, cross_runtime

    art = artifact.load(path)
    spec = art.inputs[0]
    batch = int(spec["shape"][0])
    x = np.ascontiguousarray(x, np.float32)
    outs = []
    for part, n in _chunks(x, batch):
        if art.runs_natively:
            out = art.run({spec["name"]: part})[0]
        else:
            out = cross_runtime.run_aarch64(art.path, art.check_inputs({spec["name"]: part}),
                                            timeout_s=timeout_s)[0][0]
        outs.append(np.asarray(out)[:n])
    return np.concatenate(outs).reshape(len(x), -1)


def torch_predict(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """A torch module's logits ``[N, classes]`` on ``x`` (eval mode, no gradient)."""
    from lwc.compress._torch import torch as _torch

    torch = _torch()
    x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def predict(runner, x: np.ndarray) -> np.ndarray:
    """Logits of ``runner`` on ``x``: a torch module, an ONNX model, or an artifact ``.so``.

    Raises:
        LwcError: ``runner`` is none of these.
    """
    if is_onnx(runner):
        return onnxruntime_predict(runner, x)
    if isinstance(runner, (str, os.PathLike)) and str(runner).endswith(".so"):
        return artifact_predict(runner, x)
    if hasattr(runner, "parameters") and callable(runner):
        return torch_predict(runner, x)
    raise LwcError(f"cannot run {runner!r}: expected a torch module, an .onnx model or an lwc .so artifact")


def host_latency_ms(path: str | os.PathLike, repeat: int = 200) -> float:
    """Mean wall time (ms) of one call of a host artifact (its own input shape, seeded data)."""
    from lwc import artifact

    _, ms = artifact.load(path).timed_run(repeat=repeat)
    return float(ms)


@dataclass
class Evaluation:
    """Held-out accuracy per runner and top-1 agreement between runners.

    Attributes:
        n: held-out samples.
        accuracy: ``{runner name: fraction of correct top-1}``.
        agreement: ``{"a vs b": fraction of samples where a and b predict the same class}``.
        max_abs_diff: ``{"a vs b": max |logit difference|}``.
    """

    n: int
    accuracy: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"n": self.n, "accuracy": self.accuracy, "agreement": self.agreement,
                "max_abs_diff": self.max_abs_diff}


#: Pairs :func:`evaluate` compares, when both are given.
PAIRS = (("onnxruntime", "torch"), ("lwc_host", "onnxruntime"), ("lwc_host", "torch"),
         ("lwc_arm64", "lwc_host"))


def evaluate(x: np.ndarray, y: np.ndarray, **runners) -> Evaluation:
    """Run every given runner on the same held-out set; accuracy and agreement.

    Args:
        x: float32 ``[N, ...]`` held-out inputs; y: int ``[N]`` labels.
        runners: name -> torch module / ONNX model / artifact (see :func:`predict`); the
            conventional names are ``torch``, ``onnxruntime``, ``lwc_host``, ``lwc_arm64``
            (their pairs in :data:`PAIRS` are compared), e.g.
            ``evaluate(x, y, torch=m, onnxruntime="m.onnx", lwc_host="m.so", lwc_arm64="a.so")``.
    Raises:
        LwcError: no runner, ``x`` and ``y`` of different lengths, a runner that fails.
    """
    y = np.asarray(y)
    if not runners:
        raise LwcError("evaluate needs at least one runner (torch=, onnxruntime=, lwc_host=, lwc_arm64=)")
    if len(x) != len(y) or len(x) == 0:
        raise LwcError(f"evaluate: {len(x)} inputs and {len(y)} labels")
    logits = {name: predict(r, x) for name, r in runners.items() if r is not None}
    result = Evaluation(len(x))
    for name, out in logits.items():
        result.accuracy[name] = float((out.argmax(1) == y).mean())
    for a, b in PAIRS:
        if a in logits and b in logits:
            result.agreement[f"{a} vs {b}"] = float((logits[a].argmax(1) == logits[b].argmax(1)).mean())
            result.max_abs_diff[f"{a} vs {b}"] = float(np.abs(logits[a] - logits[b]).max())
    return result
