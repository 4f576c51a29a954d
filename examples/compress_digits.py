#!/usr/bin/env python3
"""The compression workflow end to end on real data, to arm64: distill, prune, int8, compile.

``--model digits`` (default; about 1-2 minutes on 2 cores): scikit-learn's bundled
handwritten digits (1,797 real 8x8 images, 10 classes; 80 % train / 20 % held out, seeded).

1. teacher: conv 32 -> conv 64 -> fc 128 -> fc 10, trained with cross-entropy;
2. student: the same at half width, distilled from the teacher (Hinton et al. 2015);
3. pruned: the student's channels pruned by lwc's ``channel:l1`` criterion, fine-tuned by
   distillation, the zero channels deleted;
4. int8: the pruned model through lwc's ``--quantize int8`` calibration (training images).

``--model cls`` (about 10 minutes): PP-OCR mobile cls (text-line orientation, 0 / 180
degrees, input x:1,3,48,192) on rendered text lines (benchmarks/int8_accuracy.py's lines):
the teacher is the ONNX model itself (onnxruntime gives the soft labels), the student a small
torch CNN (more than 2x fewer FLOPs), then the same steps.

Each step is exported to ONNX with fixed shapes, compiled by lwc for the host and for arm64,
and evaluated on the held-out set by torch, onnxruntime, the host artifact and the arm64
artifact under qemu-aarch64. One row per step: parameters, FLOPs, ONNX bytes, artifact
bytes, held-out accuracy, host latency (ms, batch 1, lwc artifact), arm64 instructions per
inference (benchmarks/arm64_proxy.py under qemu ``-cpu cortex-a76``; null with the reason
when the proxy cannot run), host/arm64 agreement.

    .venv/bin/python examples/compress_digits.py [--quick] [--json PATH|-] [--out DIR]
        [--model digits|cls] [--no-arm64] [--no-proxy] [--qat]

``--json PATH`` writes the rows as JSON (``--json -``: to stdout instead of the table).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- models and data


def cnn(widths: tuple[int, int, int], classes: int = 10):
    """conv w0 -> conv w1 -> fc w2 -> fc classes on 1x8x8 digits (3x3 convs, 2x2 max pools)."""
    from torch import nn

    c1, c2, f1 = widths
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 2 * 2, f1), nn.ReLU(), nn.Linear(f1, classes),
    )


def cls_student():
    """A small CNN for 3x48x192 text lines: four stride-2 3x3 convs, fc 64, fc 2."""
    from torch import nn

    layers, c_in = [], 3
    for c_out in (8, 16, 32, 32):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        c_in = c_out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 3 * 12, 64), nn.ReLU(), nn.Linear(64, 2))


def digits_data(seed: int = 0):
    """(x_train, y_train, x_test, y_test): float32 [N,1,8,8] in [0, 1], int64 labels; 20 % held out."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test = order[: len(x) // 5]
    train = order[len(x) // 5:]
    return x[train], y[train], x[test], y[test]


def cls_data(n_train: int, n_test: int):
    """Rendered text lines (benchmarks/int8_accuracy.py ``line``): label 1 = rotated 180 degrees."""
    spec = importlib.util.spec_from_file_location("int8_accuracy", ROOT / "benchmarks" / "int8_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def make(n, base):
        pairs = [mod.line("cls", base + i) for i in range(n)]
        return np.concatenate([p[0] for p in pairs]).astype(np.float32), np.array([p[1] for p in pairs], np.int64)

    x_train, y_train = make(n_train, 10_000)
    x_test, y_test = make(n_test, 50_000)  # disjoint seeds
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- arm64 proxy


def arm64_instructions(artifact: Path, x1: np.ndarray, cpu: str = "cortex-a76") -> tuple[float | None, str | None]:
    """Guest instructions per inference (benchmarks/arm64_proxy.py) or (None, why not)."""
    try:
        spec = importlib.util.spec_from_file_location("arm64_proxy", ROOT / "benchmarks" / "arm64_proxy.py")
        proxy = importlib.util.module_from_spec(spec)
        sys.modules.setdefault("arm64_proxy", proxy)
        spec.loader.exec_module(proxy)
        missing = proxy.missing_tools(need_ort=False)
        if missing:
            return None, f"arm64 proxy needs {', '.join(missing)}"
        counts = proxy.count_lwc(artifact, [("x", x1)], cpu, timeout=600)
        return float(counts["insns"]), None
    except Exception as err:  # noqa: BLE001  (the proxy is optional: any failure leaves the column empty)
        return None, f"arm64 proxy failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"


# --------------------------------------------------------------------------- one step


def run_step(name: str, fp32_onnx: tuple[Path, Path], torch_model, data, out: Path, args,
             int8: bool = False) -> dict:
    """Compile, evaluate and measure one step; ``fp32_onnx`` = (batch-1 model, batch-N model)."""
    from lwc import compress

    x_train, _, x_test, y_test = data
    b1, bn = fp32_onnx
    if int8:  # the same calibration images in both batches: the same scales
        calib = x_train[: len(x_test)]
        b1, report = compress.quantize_int8(b1, calib, out / f"{name}-b1.onnx")
        bn, _ = compress.quantize_int8(bn, calib, out / f"{name}-bn.onnx")
        log(f"[{name}] int8 calibration: {report.samples} samples, {len(report.layers)} layers")
    t0 = time.perf_counter()
    host = compress.compile_artifact(b1, "host", out / f"{name}-host.so")
    arm_bn = arm_b1 = None
    if args.arm64:
        arm_bn = compress.compile_artifact(bn, "arm64", out / f"{name}-arm64-bn.so")
        if args.proxy or not args.quick:  # the deployable batch-1 arm64 artifact
            arm_b1 = compress.compile_artifact(b1, "arm64", out / f"{name}-arm64.so")
    log(f"[{name}] compiled in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    ev = compress.evaluate(x_test, y_test, torch=torch_model, onnxruntime=bn, lwc_host=host, lwc_arm64=arm_bn)
    log(f"[{name}] evaluated in {time.perf_counter() - t0:.1f} s: {ev.accuracy}")
    stats = compress.onnx_stats(b1)
    row = {
        "step": name,
        "params": stats["params"],
        "flops": stats["flops"],
        "onnx_bytes": stats["bytes"],
        "artifact_bytes_host": host.stat().st_size,
        "artifact_bytes_arm64": arm_b1.stat().st_size if arm_b1 else None,
        "accuracy": ev.accuracy.get("lwc_host"),
        "accuracy_all": ev.accuracy,
        "agreement": ev.agreement,
        "arm64_agrees_with_host": ev.agreement.get("lwc_arm64 vs lwc_host"),
        "host_latency_ms": round(compress.host_latency_ms(host, repeat=args.repeat), 4),
        "arm64_instructions": None,
        "arm64_instructions_note": None,
    }
    if not args.arm64:
        row["arm64_instructions_note"] = "--no-arm64"
    elif not args.proxy:
        row["arm64_instructions_note"] = "--no-proxy"
    else:
        row["arm64_instructions"], row["arm64_instructions_note"] = arm64_instructions(arm_b1, x_test[:1])
    return row


def export_pair(model, name: str, shape: tuple[int, ...], n: int, out: Path) -> tuple[Path, Path]:
    from lwc import compress

    return (compress.export_onnx(model, out / f"{name}-b1.onnx", (1, *shape)),
            compress.export_onnx(model, out / f"{name}-bn.onnx", (n, *shape)))


# --------------------------------------------------------------------------- journeys


def digits(args, out: Path) -> list[dict]:
    import torch
    from lwc import compress

    torch.manual_seed(0)
    torch.set_num_threads(1)  # small convs gain nothing from threads; on a busy 2-core box they lose 4x
    data = digits_data()
    x_train, y_train, x_test, _ = data
    train = (x_train, y_train)
    e = 4 if args.quick else 1  # epochs divisor
    shape, n = x_train.shape[1:], len(x_test)
    rows = []
    t0 = time.perf_counter()
    teacher = compress.fit(cnn((32, 64, 128)), train, epochs=40 // e, lr=2e-3)
    log(f"[teacher] trained in {time.perf_counter() - t0:.1f} s")
    rows.append(run_step("teacher", export_pair(teacher, "teacher", shape, n, out), teacher, data, out, args))
    t0 = time.perf_counter()
    student = compress.distill(teacher, cnn((16, 32, 64)), train, temperature=4.0, alpha=0.5,
                               epochs=40 // e, lr=2e-3)
    log(f"[student] distilled in {time.perf_counter() - t0:.1f} s")
    rows.append(run_step("student", export_pair(student, "student", shape, n, out), student, data, out, args))
    t0 = time.perf_counter()
    pruned = compress.prune_finetune(student, train, "channel:l1", 0.5, teacher=teacher,
                                     temperature=4.0, alpha=0.5, epochs=40 // e, lr=2e-3)
    if args.qat:
        pruned = compress.qat_finetune(pruned, train, teacher=teacher, epochs=5 // e or 1, lr=1e-4)
    log(f"[pruned] pruned and fine-tuned in {time.perf_counter() - t0:.1f} s")
    pruned_onnx = export_pair(pruned, "pruned", shape, n, out)
    rows.append(run_step("pruned", pruned_onnx, pruned, data, out, args))
    rows.append(run_step("int8", pruned_onnx, None, data, out, args, int8=True))
    return rows


def cls(args, out: Path) -> list[dict]:
    import torch
    from lwc import compress
    from lwc.compress.deploy import fixed_model
    from lwc.models import ppocr_model

    torch.manual_seed(0)
    torch.set_num_threads(1)  # small convs gain nothing from threads; on a busy 2-core box they lose 4x
    n_train, n_test = (400, 100) if args.quick else (3000, 400)
    t0 = time.perf_counter()
    data = cls_data(n_train, n_test)
    x_train, y_train, x_test, _ = data
    log(f"[cls] rendered {n_train} + {n_test} text lines in {time.perf_counter() - t0:.1f} s")
    model = ppocr_model("cls")
    shape, n = x_train.shape[1:], len(x_test)
    import onnx

    teacher_b1, teacher_bn = out / "teacher-b1.onnx", out / "teacher-bn.onnx"
    onnx.save(fixed_model(str(model), {"x": [1, *shape]}), str(teacher_b1))
    onnx.save(fixed_model(str(model), {"x": [n, *shape]}), str(teacher_bn))
    # the teacher's soft labels, once: onnxruntime on the ONNX model (it ends in Softmax:
    # teacher_logits takes log-probabilities, its logits up to a constant)
    t0 = time.perf_counter()
    soft = compress.teacher_logits(teacher_b1, x_train)
    log(f"[teacher] onnxruntime soft labels in {time.perf_counter() - t0:.1f} s")
    rows = [run_step("teacher", (teacher_b1, teacher_bn), None, data, out, args)]
    e = 4 if args.quick else 1
    train = (x_train, y_train)
    t0 = time.perf_counter()
    student = compress.distill(teacher_b1, cls_student(), train, temperature=4.0, alpha=0.5,
                               epochs=24 // e, lr=2e-3, soft_targets=soft)
    log(f"[student] distilled in {time.perf_counter() - t0:.1f} s")
    rows.append(run_step("student", export_pair(student, "student", shape, n, out), student, data, out, args))
    t0 = time.perf_counter()
    pruned = compress.prune_finetune(student, train, "channel:l1", 0.5, soft_targets=soft,
                                     temperature=4.0, alpha=0.5, epochs=12 // e, lr=1e-3)
    log(f"[pruned] pruned and fine-tuned in {time.perf_counter() - t0:.1f} s")
    pruned_onnx = export_pair(pruned, "pruned", shape, n, out)
    rows.append(run_step("pruned", pruned_onnx, pruned, data, out, args))
    rows.append(run_step("int8", pruned_onnx, None, data, out, args, int8=True))
    return rows


# --------------------------------------------------------------------------- output


COLUMNS = (("step", "{}"), ("params", "{:,}"), ("flops", "{:,}"), ("onnx_bytes", "{:,}"),
           ("artifact_bytes_arm64", "{:,}"), ("accuracy", "{:.2%}"), ("host_latency_ms", "{:.3f}"),
           ("arm64_instructions", "{:,.0f}"), ("arm64_agrees_with_host", "{:.2%}"))


def table(rows: list[dict]) -> str:
    cells = [[c for c, _ in COLUMNS]] + [
        ["-" if r.get(c) is None else fmt.format(r[c]) for c, fmt in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
             for row in cells]
    notes = sorted({r["arm64_instructions_note"] for r in rows if r.get("arm64_instructions_note")})
    return "\n".join(lines + [f"note: arm64_instructions: {n}" for n in notes])


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("digits", "cls"), default="digits")
    p.add_argument("--quick", action="store_true", help="few epochs (and for cls few lines): for CI")
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON to PATH ('-': stdout)")
    p.add_argument("--out", default=None, help="folder for models and artifacts (default build/compress_MODEL)")
    p.add_argument("--no-arm64", dest="arm64", action="store_false", help="host only (no cross compile, no qemu)")
    p.add_argument("--no-proxy", dest="proxy", action="store_false",
                   help="skip the arm64 instruction count (qemu + TCG plugin)")
    p.add_argument("--qat", action="store_true", help="quantization-aware fine-tuning before int8")
    p.add_argument("--repeat", type=int, default=200, help="timed runs for the host latency")
    args = p.parse_args(argv)
    out = Path(args.out or ROOT / "build" / f"compress_{args.model}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = (digits if args.model == "digits" else cls)(args, out)
    result = {"model": args.model, "quick": args.quick, "machine": machine(),
              "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(table(rows))
        print(f"{args.model}: {result['seconds']} s on {result['machine']['cpu']} ({result['machine']['cores']} cores)")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
