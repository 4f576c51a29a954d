"""PP-OCR cls pruned 30% by channel vs dense: FLOPs, accuracy and tuned latency, one run.

    .venv/bin/python benchmarks/sparsity/pruned_vs_dense.py [DIR]   (default build/issue6)

DIR/cls_pruned30.onnx comes from make_models.py (``channel:l1``, amount 0.3,
``--round-to 16``). Both models are compiled for the host with their own tuning logs
(tuning_logs/, found by model key; the dense one is PP-OCR cls's committed log), the
pruned artifact is checked against onnxruntime on the pruned ONNX model (max abs), and the
two lwc artifacts are timed in one process, interleaved in
blocks of 10 runs (benchmarks/passes_on_off.py's ``_interleaved_p50``), p50 ms;
onnxruntime (same thread count) is timed alone afterwards: its spinning pool slows TVM
runs interleaved with it on 2 cores.
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


def main(work: Path) -> dict:
    from lwc import artifact, driver, models
    from lwc.bench import _ort_session

    threads = setup_threads()

    shapes = {"x": [1, 3, 48, 192]}
    paths = {"dense": str(models.ppocr_model("cls")), "pruned": str(work / "cls_pruned30.onnx")}
    row, runs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        arts = {}
        for name, model in paths.items():
            result = driver.compile(model, "host", shapes)
            manifest = json.loads(result.export(Path(tmp) / f"{name}.so").with_suffix(".json").read_text())
            sp = manifest.get("sparsity", {})
            row[name] = {
                "tuning": f"{manifest['tuning'].get('tuned_tasks')}/{manifest['tuning'].get('tasks')} tasks, "
                          f"{Path(manifest['tuning']['log']).name if manifest['tuning'].get('log') else 'no log'}",
                # FLOPs of the compiled graph (after RemoveZeroChannels); the pruned model's
                # "before" is the dense model's count (same graph, zeros included)
                "flops_m": round(sp.get("flops_after", 0) / 1e6, 2),
                "flops_before_m": round(sp.get("flops_before", 0) / 1e6, 2),
                "channels_removed": sp.get("remove_zero_channels", {}).get("removed_channels", 0),
            }
            arts[name] = artifact.load(Path(tmp) / f"{name}.so")
        feed = arts["dense"].full_inputs(None, 0)
        sessions = {}
        for name, model in paths.items():
            sessions[name] = _ort_session(model, threads)
            want = sessions[name].run(None, feed)[0]
            row[name]["max_abs_vs_onnxruntime"] = float(np.max(np.abs(arts[name].run(feed)[0] - want)))
            runs[f"lwc {name}"] = lambda a=arts[name]: a.run(feed)
        p50 = _interleaved_p50(runs)
        for name, session in sessions.items():
            p50[f"onnxruntime {name}"] = alone_p50(lambda s=session: s.run(None, feed))
    row["dense"]["flops_m"] = row["pruned"]["flops_before_m"]
    row["p50_ms"] = {k: round(v, 3) for k, v in p50.items()}
    row["pruned_over_dense"] = round(p50["lwc pruned"] / p50["lwc dense"], 3)
    print(json.dumps(row, indent=2))
    (work / "pruned_vs_dense.json").write_text(json.dumps(row, indent=2))
    return row


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "issue6"))
