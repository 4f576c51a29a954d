"""What TVM 0.27 offers for CPU code without tuning records, measured on one model.

    .venv/bin/python benchmarks/untuned_options.py [--model cls] [--threads 2]

Variants, all from the module ``lwc compile`` hands to the tuning step, lowered with
TVM's default CPU pipeline:

- ``default``: TVM's default pipeline (LegalizeOps -> plain loop nests; nothing is
  scheduled: no parallel loops, no tiling, only what LLVM auto-vectorizes);
- ``dlight-cpu``: ``tvm.s_tir.dlight`` CPU rules (GEMV, Reduction: the only CPU rules in
  0.27) applied to every function;
- ``parallel-vectorize``: MetaSchedule's RewriteParallelVectorizeUnroll applied with
  root annotations (fuse and parallelize outer spatial loops, vectorize inner spatial
  loops, unroll) and no search;

each timed against onnxruntime (same threads, interleaved), p50 in ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _timed(fn, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def parallel_vectorize(mod, cores: int):
    import tvm
    from tvm.s_tir import Schedule
    from tvm.s_tir.meta_schedule.postproc import RewriteParallelVectorizeUnroll

    post = RewriteParallelVectorizeUnroll()
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in list(out.functions.items()):
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        try:
            sch = Schedule(tvm.IRModule({"main": func}))
            root = sch.get_sblock("root")
            sch.annotate(root, "meta_schedule.parallel", 16 * cores)
            sch.annotate(root, "meta_schedule.vectorize", 64)
            sch.annotate(root, "meta_schedule.unroll_explicit", 16)
            if post.apply(sch):
                out.update_func(gv, sch.mod["main"])
        except Exception:  # noqa: BLE001  (a function it cannot handle stays as is)
            continue
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="cls")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    sys.path.insert(0, os.path.dirname(__file__))
    import onnxruntime as ort
    import tvm
    from run_benchmarks import MODELS
    from tvm import relax
    from tvm.s_tir import dlight as dl

    from lwc import tvm_compat
    from lwc.tuning.apply import prepare
    from lwc.tuning.search import prepared_module

    factory, shapes = MODELS[args.model]
    model = factory()
    prepared = prepared_module(str(model), "host", shapes)
    target = prepared.tvm_target
    base = prepare(prepared.mod, target)
    with target:
        variants = {
            "default": base,
            "dlight-cpu": dl.ApplyDefaultSchedule(dl.cpu.GEMV(), dl.cpu.Reduction())(base),
            "parallel-vectorize": parallel_vectorize(base, args.threads),
        }
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = next(iter(shapes.values())) if shapes else session.get_inputs()[0].shape
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = session.run(None, {name: x})[0]
    print(f"{args.model} {shape}, {args.threads} threads, p50 of {args.repeat}")
    for label, mod in variants.items():
        vm = relax.VirtualMachine(tvm_compat.build(mod, target), tvm.cpu())
        arg = tvm_compat.tensor(x)
        out = vm["main"](arg)
        got = (out if hasattr(out, "numpy") else out[0]).numpy()
        for _ in range(3):
            vm["main"](arg)
            session.run(None, {name: x})
        lwc_ms = _timed(lambda: vm["main"](arg), args.repeat)
        ort_ms = _timed(lambda: session.run(None, {name: x}), args.repeat)
        print(f"  {label:<20} lwc {lwc_ms:9.3f} ms   onnxruntime {ort_ms:7.3f} ms   "
              f"ratio {lwc_ms / ort_ms:6.2f}   max|diff| {np.abs(got - ref).max():.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
