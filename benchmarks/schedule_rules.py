"""Untuned lwc with and without lwc.schedules vs onnxruntime, 2 threads, interleaved.

    .venv/bin/python benchmarks/schedule_rules.py [--models cls,rec] [--target host]
        [--repeat 20] [--threads 2] [--before] [--check] [--arm64-asm]

For each model: import, lwc passes, TVM's zero pipeline (``lwc.tuning.apply.prepare``), then
``lwc.schedules.apply_rules``; build in-process and time the Relax VM against onnxruntime
on the same seeded input, in interleaved blocks (as ``lwc bench`` does: block of lwc runs,
settle, block of onnxruntime runs). ``--before`` also times the unscheduled build (slow:
det takes ~2 s a run). ``--check`` compares outputs with onnxruntime. Prints one markdown
row per model: p50 ms and ratio to onnxruntime. ``--arm64-asm`` instead builds each model
for the ``arm64`` preset with and without the rules and counts NEON ``fmla v.4s`` and
scalar ``fmadd s`` instructions in the exported .so.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import MODELS

THREADS = 2
SETTLE_S = 0.05  # lwc.bench.SPIN_SETTLE_S: let the other engine's workers stop spinning
BLOCK = 5


def prepared(model_path, shapes, target):
    """(fused Relax module, preset, input shapes) exactly as lwc compile builds it."""
    from lwc import pipeline
    from lwc.frontend import import_model
    from lwc.targets import resolve
    from lwc.tuning.apply import prepare

    preset = resolve(target)
    imp = import_model(str(model_path), shapes)
    mod, _ = pipeline.run_passes(imp.mod, preset)
    return prepare(mod, preset.tvm_target()), preset, imp


def build(fused, preset, schedule: bool):
    from lwc import tvm_compat
    from lwc.schedules import CpuFacts, apply_rules

    report = None
    if schedule:
        fused, report = apply_rules(fused, CpuFacts.from_preset(preset))
    t0 = time.perf_counter()
    ex = tvm_compat.build(fused, preset.tvm_target())
    return ex, report, time.perf_counter() - t0


def _runner(ex, feed):
    from lwc import tvm_compat

    vm = tvm_compat.virtual_machine(ex)
    args = [tvm_compat.tensor(v) for v in feed.values()]

    def run():
        out = vm["main"](*args)
        return out

    return run


def _ort_runner(sess, feed):
    return lambda: sess.run(None, feed)


def _out_numpy(out):
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [o.numpy() for o in out]


def interleaved(runs: dict, repeat: int) -> dict:
    """p50 ms of each callable, timed in interleaved blocks of :data:`BLOCK` runs."""
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()
        fn()
    while min(len(v) for v in times.values()) < repeat:
        for name, fn in runs.items():
            time.sleep(SETTLE_S)
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def arm64_vector_fmas(name: str, target: str = "arm64") -> dict:
    """Count NEON vector FMAs (``fmla vN.4s``) and scalar ones (``fmadd sN``) in the
    exported arm64 .so of a model, without and with the schedule rules."""
    import re
    import tempfile

    from tvm.support import cc

    path_fn, shapes = MODELS[name]
    fused, preset, _ = prepared(path_fn(), shapes, target)
    out = {}
    for label, schedule in (("before", False), ("after", True)):
        ex, _, _ = build(fused, preset, schedule)
        with tempfile.TemporaryDirectory() as tmp:
            so = Path(tmp) / "m.so"
            ex.export_library(str(so), fcompile=cc.cross_compiler(preset.cross_compiler))
            asm = subprocess.run(
                ["aarch64-linux-gnu-objdump", "-d", str(so)], capture_output=True, text=True, check=True
            ).stdout
        out[label] = {
            "fmla v.4s": len(re.findall(r"\bfmla\s+v\d+\.4s", asm)),
            "fmadd s": len(re.findall(r"\bfmadd\s+s\d+", asm)),
            "fmul/fadd v.4s": len(re.findall(r"\bf(?:mul|add)\s+v\d+\.4s", asm)),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cls,squeezenet,resnet50,rec,det")
    ap.add_argument("--target", default="host")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--before", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--arm64-asm", action="store_true", help="count NEON FMAs in arm64 builds")
    args = ap.parse_args(argv)
    if args.arm64_asm:
        print("| model (arm64) | fmla v.4s before | after | fmadd s before | after |")
        print("|---|---|---|---|---|")
        for name in args.models.split(","):
            c = arm64_vector_fmas(name)
            print(f"| {name} | {c['before']['fmla v.4s']} | {c['after']['fmla v.4s']} | "
                  f"{c['before']['fmadd s']} | {c['after']['fmadd s']} |", flush=True)
        return 0
    threads = args.threads
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import onnxruntime as ort
    from lwc.bench import set_tvm_threads

    set_tvm_threads(threads)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), platform.processor())
    print(f"CPU: {cpu}; {threads} threads; onnxruntime {ort.__version__}")
    print("| model | before ms | after ms | onnxruntime ms | after/ort | rules | declined |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        path_fn, shapes = MODELS[name]
        path = path_fn()
        fused, preset, _ = prepared(path, shapes, args.target)
        ex, report, _ = build(fused, preset, True)
        rng = np.random.default_rng(0)
        sess_opts = ort.SessionOptions()
        sess_opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), sess_opts, providers=["CPUExecutionProvider"])
        feed = {}
        for inp in sess.get_inputs():
            shape = (shapes or {}).get(inp.name) or [d if isinstance(d, int) else 1 for d in inp.shape]
            feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        runs = {"after": _runner(ex, feed), "ort": _ort_runner(sess, feed)}
        if args.check:
            got = _out_numpy(runs["after"]())
            want = sess.run(None, feed)
            err = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
            print(f"  {name}: max abs diff vs onnxruntime {err:.2e}", file=sys.stderr)
        if args.before:
            ex0, _, _ = build(fused, preset, False)
            runs["before"] = _runner(ex0, feed)
        p50 = interleaved(runs, args.repeat)
        counts = ", ".join(f"{k} {v}" for k, v in report.items() if k != "declined")
        before = f"{p50['before']:.2f}" if "before" in p50 else "-"
        print(
            f"| {name} | {before} | {p50['after']:.2f} | {p50['ort']:.2f} | "
            f"{p50['after'] / p50['ort']:.2f} | {counts} | {len(report['declined'])} |",
            flush=True,
        )
        for fname, why in report["declined"]:
            print(f"  declined {fname}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
