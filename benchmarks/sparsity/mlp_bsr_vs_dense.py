"""Block-sparse MLP: lwc BSR vs lwc tuned dense vs onnxruntime, in one interleaved run.

    .venv/bin/python benchmarks/sparsity/mlp_bsr_vs_dense.py [DIR]   (default build/issue6)

DIR/mlp_r{rows}_b{pct}.onnx come from make_models.py (768 -> 3072 -> 768 MLP, bias + ReLU,
1x4 blocks pruned by ``lwc prune``). For each: ``--sparsity force`` (lwc's BSR kernels)
and ``--sparsity off`` with the unpruned MLP's tuning log (tuning_logs/15af90a92a16 for 1
row, 70f1b446b805 for 16: records are per workload, so they fit the pruned model's dense
kernels), both checked against onnxruntime on the pruned model (max abs), then the two
artifacts timed in one process, interleaved in blocks of 10 runs, and onnxruntime (same
threads) alone after them, p50 ms.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from passes_on_off import _interleaved_p50, alone_p50, setup_threads  # noqa: E402

DENSE_LOGS = {1: "15af90a92a16-host-znver4", 16: "70f1b446b805-host-znver4"}


def main(work: Path) -> list[dict]:
    from lwc import artifact, driver
    from lwc.bench import _ort_session

    threads = setup_threads()

    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows, log in DENSE_LOGS.items():
            for pct in (90, 80):
                model = str(work / f"mlp_r{rows}_b{pct}.onnx")
                arts = {}
                for kind, opts in (("bsr", {"sparsity": "force"}),
                                   ("dense", {"sparsity": "off", "tuning_log": str(ROOT / "tuning_logs" / log)})):
                    path = driver.compile(model, "host", **opts).export(Path(tmp) / f"{rows}-{pct}-{kind}.so")
                    arts[kind] = artifact.load(path)
                feed = arts["bsr"].full_inputs(None, 0)
                session = _ort_session(model, threads)
                want = session.run(None, feed)[0]
                row = {"rows": rows, "block_sparsity": pct / 100}
                for kind, art in arts.items():
                    row[f"max_abs_{kind}"] = float(np.max(np.abs(art.run(feed)[0] - want)))
                p50 = _interleaved_p50({"lwc BSR": lambda a=arts["bsr"]: a.run(feed),
                                        "lwc dense": lambda a=arts["dense"]: a.run(feed)}, seconds=5.0)
                p50["onnxruntime"] = alone_p50(lambda: session.run(None, feed))
                row["p50_ms"] = {k: round(v, 4) for k, v in p50.items()}
                row["dense_over_bsr"] = round(p50["lwc dense"] / p50["lwc BSR"], 2)
                row["onnxruntime_over_bsr"] = round(p50["onnxruntime"] / p50["lwc BSR"], 2)
                print(json.dumps(row), flush=True)
                rows_out.append(row)
    (work / "mlp_bsr_vs_dense.json").write_text(json.dumps(rows_out, indent=2))
    return rows_out


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "issue6"))
