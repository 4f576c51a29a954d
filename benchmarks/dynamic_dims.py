"""One dynamic-width artifact against fixed-width builds of the same model (issue 21, item 3).

    .venv/bin/python benchmarks/dynamic_dims.py [--range 96..1280] [--widths 96,320,1280]
        [--rounds 12] [--threads 2] [--out build/dynamic_dims]

Compiles PP-OCRv4 rec (host, no tuning records) once with ``x:1,3,48,LO..HI`` and once per
width with a fixed shape, checks the dynamic artifact against onnxruntime at every width,
then times, per width, the fixed build and the dynamic one on the same input: alternating
blocks of 5 runs, ``--rounds`` blocks each, in one process, so both see the same machine
load. Prints p50 ms of each and the ratio dynamic / fixed (the issue's goal: within 10 %
at 320); ``--json`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _compile(model: str, dims: str, out: Path) -> Path:
    from lwc import driver
    from lwc.frontend import parse_input_shape

    name, shape = parse_input_shape(f"x:1,3,48,{dims}")
    result = driver.compile(model, "host", {name: shape}, use_tuning_logs=False)
    return result.export(out)


def _interleaved(arts: list, feed: dict, rounds: int) -> list[float]:
    """p50 ms of each artifact's run on ``feed``, timed in alternating blocks of 5."""
    times: list[list[float]] = [[] for _ in arts]
    for art in arts:
        art.run(feed)  # warm-up
    for _ in range(rounds):
        for i, art in enumerate(arts):
            for _ in range(5):
                start = time.perf_counter()
                art.run(feed)
                times[i].append(time.perf_counter() - start)
            time.sleep(0.02)
    return [float(np.median(t) * 1e3) for t in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range", default="96..1280")
    parser.add_argument("--widths", default="96,320,1280")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="build/dynamic_dims")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from lwc import artifact
    from lwc.bench import set_tvm_threads
    from lwc.models import ppocr_model

    set_tvm_threads(args.threads)
    model = str(ppocr_model("rec"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dynamic = artifact.load(_compile(model, args.range, out / "rec_dynamic.so"))
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        fixed = artifact.load(_compile(model, str(width), out / f"rec_{width}.so"))
        x = np.random.default_rng(width).standard_normal((1, 3, 48, width)).astype(np.float32)
        feed = {"x": x}
        diff = float(np.abs(dynamic.run(feed)[0] - session.run(None, feed)[0]).max())
        fixed_ms, dynamic_ms = _interleaved([fixed, dynamic], feed, args.rounds)
        rows.append({"width": width, "fixed_ms": fixed_ms, "dynamic_ms": dynamic_ms,
                     "ratio": dynamic_ms / fixed_ms, "max_abs_diff_vs_onnxruntime": diff})
        print(f"W={width:5d}  fixed {fixed_ms:8.2f} ms  dynamic {dynamic_ms:8.2f} ms  "
              f"ratio {dynamic_ms / fixed_ms:.2f}  max|dynamic - onnxruntime| {diff:.1e}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"range": args.range, "threads": args.threads,
                                                   "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
