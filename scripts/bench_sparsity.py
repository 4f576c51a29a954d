"""Sparsity benchmarks, each in one run (host, untuned; 2 onnxruntime threads).

1. Block sparsity: a 768 -> 3072 -> 768 MLP (ReLU) pruned to 1x4 blocks at 80% and 90%,
   M rows: lwc's BSR kernel (--sparsity force) vs lwc's dense kernel (--sparsity off) vs
   onnxruntime on the same pruned model; max abs difference vs onnxruntime.
2. Channel pruning: PP-OCR mobile cls (1x3x48x192) pruned 30% by channel (channel:l1):
   lwc dense-compiled pruned model (--sparsity off) vs RemoveZeroChannels (--sparsity auto):
   FLOPs, weight bytes, latency, max abs difference vs onnxruntime on the pruned model.

Usage: python scripts/bench_sparsity.py [--rows 1 8 16] [--skip-cls]
"""

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import lwc.driver
from lwc import prune, tvm_compat


def mlp(rows: int, d: int = 768, h: int = 3072, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((d, h)) / np.sqrt(d)).astype(np.float32), "w1"),
        numpy_helper.from_array((0.1 * rng.standard_normal(h)).astype(np.float32), "b1"),
        numpy_helper.from_array((rng.standard_normal((h, d)) / np.sqrt(h)).astype(np.float32), "w2"),
        numpy_helper.from_array((0.1 * rng.standard_normal(d)).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, d])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def time_vm(result, feeds: dict, repeat: int) -> tuple[float, np.ndarray]:
    vm = tvm_compat.virtual_machine(result.executable)
    args = [tvm_compat.tensor(feeds[s.name]) for s in result.model.inputs]
    out = vm["main"](*args)
    out = out[0] if isinstance(out, (list, tuple)) or hasattr(out, "__getitem__") and not hasattr(out, "numpy") else out
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            vm["main"](*args)
        best = min(best, (time.perf_counter() - start) * 1e3 / repeat)
    return best, out.numpy()


def time_ort(model: onnx.ModelProto, feeds: dict, repeat: int) -> tuple[float, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)[0]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            sess.run(None, feeds)
        best = min(best, (time.perf_counter() - start) * 1e3 / repeat)
    return best, out


def bench_mlp(rows_list, amounts=(0.8, 0.9), repeat=20) -> None:
    print("MLP 768->3072->768, 1x4 block pruning; ms per call (best of 3 x", repeat, ")")
    print(f"{'rows':>4} {'sparsity':>8} {'lwc dense':>10} {'lwc bsr':>9} {'ort':>8} {'bsr/dense':>9} "
          f"{'max|bsr-ort|':>12} {'weights dense->bsr':>20}")
    for rows in rows_list:
        feeds = {"x": np.random.default_rng(1).standard_normal((rows, 768)).astype(np.float32)}
        for amount in amounts:
            pruned = prune.prune(mlp(rows), "block:1x4", amount, measure=False).model
            dense = lwc.driver.compile(pruned, "host", sparsity="off")
            sparse = lwc.driver.compile(pruned, "host", sparsity="force")
            t_dense, y_dense = time_vm(dense, feeds, repeat)
            t_sparse, y_sparse = time_vm(sparse, feeds, repeat)
            t_ort, y_ort = time_ort(pruned, feeds, repeat)
            dec = sparse.extra["sparsity"].get("dense_to_sparse", [])
            b0 = sum(d["bytes_dense"] for d in dec)
            b1 = sum(d["bytes_sparse"] for d in dec if d["used"])
            err = max(np.abs(y_sparse - y_ort).max(), np.abs(y_dense - y_ort).max())
            print(f"{rows:>4} {amount:>8.0%} {t_dense:>10.3f} {t_sparse:>9.3f} {t_ort:>8.3f} "
                  f"{t_dense / t_sparse:>8.2f}x {err:>12.2e} {b0 / 1e6:>8.2f}->{b1 / 1e6:.2f} MB")


def bench_cls(repeat=50) -> None:
    path = Path(importlib.util.find_spec("rapidocr_onnxruntime").origin).parent / "models" / \
        "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    shape = {"x": [1, 3, 48, 192]}
    result = prune.prune(str(path), "channel:l1", 0.3, input_shapes=shape)
    print(f"PP-OCR cls pruned 30% by channel: cosine vs unpruned "
          f"{result.deviation[0]['cosine']:.6f} (no fine-tuning)")
    with tempfile.TemporaryDirectory() as tmp:
        pruned_path = Path(tmp) / "pruned.onnx"
        result.save(pruned_path)
        feeds = {"x": np.random.default_rng(2).standard_normal((1, 3, 48, 192)).astype(np.float32)}
        off = lwc.driver.compile(str(pruned_path), "host", shape, sparsity="off")
        auto = lwc.driver.compile(str(pruned_path), "host", shape, sparsity="auto")
        t_off, y_off = time_vm(off, feeds, repeat)
        t_auto, y_auto = time_vm(auto, feeds, repeat)
        t_ort, y_ort = time_ort(result.model, feeds, repeat)
    info = auto.extra["sparsity"]
    print(f"  FLOPs {info['flops_before'] / 1e6:.1f} M -> {info['flops_after'] / 1e6:.1f} M; weights "
          f"{info['weight_bytes_before'] / 1e3:.0f} kB -> {info['weight_bytes_after'] / 1e3:.0f} kB; "
          f"channels removed {info['remove_zero_channels']['removed_channels']}")
    print(f"  latency ms: lwc --sparsity off {t_off:.3f}, lwc --sparsity auto {t_auto:.3f}, ort {t_ort:.3f}")
    print(f"  max |lwc - ort(pruned)|: off {np.abs(y_off - y_ort).max():.2e}, auto {np.abs(y_auto - y_ort).max():.2e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--skip-cls", action="store_true")
    parser.add_argument("--skip-mlp", action="store_true")
    args = parser.parse_args()
    if not args.skip_mlp:
        bench_mlp(args.rows)
    if not args.skip_cls:
        bench_cls()
