"""lwc int8 vs lwc fp32 vs onnxruntime fp32 vs onnxruntime int8 (QDQ), in one run.

    python benchmarks/int8_bench.py MODEL.onnx --input-shape x:1,3,48,192 --calib DIR \\
        --fp32 cls-fp32.so --int8 cls-int8.so [--repeat 200] [--json out.json]

The two lwc artifacts come from ``lwc compile`` (fp32 with its tuning log, int8 with
``--quantize int8 --calib DIR`` and its own tuning log). The onnxruntime int8 model is
made here with ``onnxruntime.quantization.quantize_static`` on the same calibration
samples: QDQ format, per-channel int8 weights, uint8 activations (the scheme lwc uses),
after converting the model to opset 13 (onnxruntime's quantizer writes per-channel
DequantizeLinear, which opset < 13 rejects). All four engines run on the same input
with the same thread count, interleaved in blocks of 10 runs with a 50 ms pause and an
untimed settling run before each block (as ``lwc bench`` does), so machine noise hits all
alike and no engine runs while another's worker threads still spin.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx


def ort_int8_model(model: Path, samples: list[dict], out: Path) -> Path:
    """onnxruntime's quantize_static QDQ model (per-channel, uint8 activations) at ``out``."""
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    proto = onnx.load(str(model))
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        proto = version_converter.convert_version(proto, 13)
    fp32 = out.with_name(out.stem + "-opset13.onnx")
    onnx.save(proto, str(fp32))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def time_engines(engines: dict, repeat: int, block: int = 10) -> dict[str, list[float]]:
    """Interleaved timings (seconds) of ``{name: zero-arg run}``, ``repeat`` runs each,
    with :data:`lwc.bench.SPIN_SETTLE_S` of idle before each block (onnxruntime's spinning
    workers otherwise doubled lwc's cls times)."""
    from lwc.bench import SPIN_SETTLE_S

    times = {name: [] for name in engines}
    order = list(engines)
    for run in engines.values():  # warm-up
        for _ in range(5):
            run()
    turn = 0
    while min(len(t) for t in times.values()) < repeat:
        for name in order if turn % 2 == 0 else order[::-1]:
            time.sleep(SPIN_SETTLE_S)  # the previous engine's worker threads stop spinning
            engines[name]()  # settling run
            for _ in range(min(block, repeat - len(times[name]))):
                start = time.perf_counter()
                engines[name]()
                times[name].append(time.perf_counter() - start)
        turn += 1
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--input-shape", required=True, metavar="NAME:D0,...")
    parser.add_argument("--calib", required=True, help="folder of .npy samples (as lwc --calib)")
    parser.add_argument("--fp32", required=True, help="lwc fp32 artifact (.so)")
    parser.add_argument("--int8", required=True, help="lwc int8 artifact (.so)")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from lwc import artifact, calibrate, tvm_compat
    from lwc.bench import _ort_session, default_threads, set_tvm_threads
    from lwc.frontend import TensorSpec, parse_input_shape

    name, shape = parse_input_shape(args.input_shape)
    specs = [TensorSpec(name, tuple(shape), "float32")]
    samples = calibrate.load_samples(args.calib, specs)
    threads = default_threads()
    set_tvm_threads(threads)
    x = samples[0][name]
    engines, outputs = {}, {}
    for label, path in (("lwc fp32", args.fp32), ("lwc int8", args.int8)):
        art = artifact.load(path)
        vm = art.vm()
        arg = tvm_compat.tensor(x)
        fn = vm["main"]
        engines[label] = lambda fn=fn, arg=arg: fn(arg)
        outputs[label] = art.run({name: x})[0]
    with tempfile.TemporaryDirectory() as tmp:
        q_path = ort_int8_model(Path(args.model), samples, Path(tmp) / "ort-int8.onnx")
        for label, path in (("onnxruntime fp32", args.model), ("onnxruntime int8", q_path)):
            session = _ort_session(path, threads)
            feed = {session.get_inputs()[0].name: x}
            engines[label] = lambda s=session, f=feed: s.run(None, f)
            outputs[label] = session.run(None, feed)[0]
        times = time_engines(engines, args.repeat)
    ref = outputs["onnxruntime fp32"].ravel().astype(np.float64)
    rows = []
    for label, t in times.items():
        ms = np.asarray(t) * 1e3
        out = outputs[label].ravel().astype(np.float64)
        cos = float(np.dot(ref, out) / (np.linalg.norm(ref) * np.linalg.norm(out)))
        rows.append({"engine": label, "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                     "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "cosine_vs_ort_fp32": cos})
    fp32_p50 = rows[0]["p50_ms"]
    print(f"{Path(args.model).name} {args.input_shape}: {threads} threads, {args.repeat} runs each, "
          f"interleaved; onnxruntime {ort.__version__}")
    print(f"{'engine':<18} {'p50 ms':>8} {'p90 ms':>8} {'min ms':>8} {'/lwc fp32':>9} {'cosine':>9}")
    for r in rows:
        print(f"{r['engine']:<18} {r['p50_ms']:>8.3f} {r['p90_ms']:>8.3f} {r['min_ms']:>8.3f} "
              f"{r['p50_ms'] / fp32_p50:>9.2f} {r['cosine_vs_ort_fp32']:>9.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "threads": threads, "repeat": args.repeat,
                                               "onnxruntime": ort.__version__, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
