"""How far the int8 model is from fp32: SQNR and cosine per layer, cosine and top-1 per output.

:func:`layer_report` runs the fp32 and the QDQ ONNX model in onnxruntime on the same
samples and compares every quantized layer's output (SQNR in dB, cosine; the error
accumulated up to that layer) and every model output (mean and min cosine, top-1
agreement). :func:`output_drop` is the accuracy drop the fp32 fallback bounds;
:func:`verify_samples` compares a compiled artifact with the fp32 model (``lwc verify``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from lwc import calibrate
from lwc.quantize.rewrite import Layer


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10 log10(|ref|^2 / |ref - test|^2) in dB (capped at 100)."""
    ref, test = ref.astype(np.float64).ravel(), test.astype(np.float64).ravel()
    noise = float(np.sum((ref - test) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return 100.0
    return float(min(100.0, 10 * np.log10(max(signal, 1e-30) / noise)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.dot(a, b) / norm) if norm > 0 else float(np.array_equal(a, b))


def top1_agreement(refs: list[np.ndarray], tests: list[np.ndarray]) -> float | None:
    """Share of samples (rows) whose argmax over the last axis agrees; None if not a classifier output.

    Classifier outputs are ``[N, classes]`` or ``[N, T, classes]`` (CTC, per time step);
    rank-4+ outputs are maps (NCHW, e.g. a DBNet probability map) and get None.
    """
    if refs[0].ndim not in (2, 3) or refs[0].shape[-1] < 2:
        return None
    r = np.concatenate([x.reshape(-1, x.shape[-1]) for x in refs]).argmax(-1)
    t = np.concatenate([x.reshape(-1, x.shape[-1]) for x in tests]).argmax(-1)
    return float(np.mean(r == t))

def run_outputs(model: onnx.ModelProto, samples: list[dict], names: list[str]) -> list[list[np.ndarray]]:
    return [[values[n] for n in names] for values in calibrate.run_with_intermediates(model, samples, names)]


def output_drop(fp32_out, q_out, metric: Callable | None = None) -> float:
    """Accuracy drop: ``metric`` or the worst output's 1 - mean cosine over samples."""
    if metric is not None:
        return float(metric(fp32_out, q_out))
    drops = []
    for j in range(len(fp32_out[0])):
        drops.append(1.0 - float(np.mean([cosine(r[j], t[j]) for r, t in zip(fp32_out, q_out)])))
    return max(drops)


def layer_report(fp32: onnx.ModelProto, qdq: onnx.ModelProto, layers: list[Layer],
                 samples: list[dict], excluded: set[str]) -> tuple[list[dict], list[dict]]:
    """Per-layer SQNR/cosine and per-output cosine/top-1 of the QDQ model vs fp32."""
    outputs = [o.name for o in fp32.graph.output]
    names = outputs + [layer.output for layer in layers if layer.output not in outputs]
    ref = run_outputs(fp32, samples, names)
    got = run_outputs(qdq, samples, names)
    col = {n: i for i, n in enumerate(names)}
    rows = []
    for layer in layers:
        i = col[layer.output]
        r = np.concatenate([s[i].ravel() for s in ref])
        t = np.concatenate([s[i].ravel() for s in got])
        rows.append({"name": layer.name, "op": layer.op, "int8": layer.name not in excluded,
                     "sqnr_db": round(sqnr_db(r, t), 2), "cosine": round(cosine(r, t), 6)})
    outs = []
    for n in outputs:
        i = col[n]
        cos = [cosine(a[i], b[i]) for a, b in zip(ref, got)]
        outs.append({"name": n, "cosine": round(float(np.mean(cos)), 6), "cosine_min": round(float(np.min(cos)), 6),
                     "top1_agreement": top1_agreement([a[i] for a in ref], [b[i] for b in got])})
    return rows, outs

def verify_samples(model_path, artifact_path, folder, min_cosine: float | None = None) -> dict:
    """Run an (int8) artifact and the fp32 model in onnxruntime on every sample of ``folder``.

    Per output: mean and min cosine over samples, max abs difference, top-1 agreement
    (outputs whose last axis holds classes). ``ok`` when every output's mean cosine is at
    least ``min_cosine`` (default: 1 - the artifact's max accuracy drop, else 0.99).
    """
    from lwc import artifact as art
    from lwc.frontend import TensorSpec, model_sha256
    from lwc.verify import onnxruntime_outputs, reference_feed

    artifact = art.load(artifact_path)
    specs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in artifact.manifest["inputs"]]
    samples = calibrate.load_samples(folder, specs)
    quant = artifact.manifest.get("quantization", {})
    if min_cosine is None:
        drop = quant.get("max_accuracy_drop")
        min_cosine = 1.0 - drop if drop is not None else 0.99
    warnings = []
    recorded = artifact.manifest.get("source_model", {}).get("sha256")
    if recorded and recorded != model_sha256(model_path):
        warnings.append(f"{model_path} is not the model {Path(artifact_path).name} was compiled from (sha256 differs)")
    if not quant:
        warnings.append("the artifact is not quantized; `lwc verify` without --inputs checks fp32 tolerances")
    got = [artifact.run(s) for s in samples]
    ref = [onnxruntime_outputs(model_path, reference_feed(model_path, artifact.manifest, s)) for s in samples]
    outputs = []
    for j, spec in enumerate(artifact.outputs):
        cos = [cosine(r[j], g[j]) for r, g in zip(ref, got)]
        outputs.append({
            "name": spec["name"], "cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
            "max_abs": float(max(np.abs(r[j].astype(np.float64) - g[j]).max() for r, g in zip(ref, got))),
            "top1_agreement": top1_agreement([r[j] for r in ref], [g[j] for g in got]),
            "ok": bool(np.mean(cos) >= min_cosine),
        })
    return {"ok": all(o["ok"] for o in outputs), "model": str(model_path), "artifact": str(artifact_path),
            "target": artifact.manifest["target"]["preset"], "samples": len(samples),
            "min_cosine": min_cosine, "outputs": outputs, "warnings": warnings}
