"""lwc untuned / lwc tuned / onnxruntime on a fixed model set, as a markdown table.

    .venv/bin/python benchmarks/run_benchmarks.py [--models cls,squeezenet] [--tune-minutes 0]
        [--threads N] [--out benchmarks/RESULTS.md]

For each model: compile without tuning records (``--no-tuning-log``), compile with the
matching log under tuning_logs/ (committed logs, or tuned now with ``--tune-minutes M``
per model), then time both artifacts with ``lwc bench`` (onnxruntime interleaved in the
same process, same inputs, same threads). All numbers come from one run of this script;
the table records the date, CPU, thread count and versions.

Models: PP-OCR mobile v2 cls (1x3x48x192), PP-OCRv4 rec (1x3x48x320) and det
(1x3x640x640) from the rapidocr-onnxruntime wheel; resnet50 and squeezenet from onnx's
light model zoo.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parent.parent


def _rapidocr(name: str) -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / name


def _zoo(name: str) -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


#: name -> (model path factory, input shapes)
MODELS = {
    "cls": (lambda: _rapidocr("ch_ppocr_mobile_v2.0_cls_infer.onnx"), {"x": [1, 3, 48, 192]}),
    "rec": (lambda: _rapidocr("ch_PP-OCRv4_rec_infer.onnx"), {"x": [1, 3, 48, 320]}),
    "det": (lambda: _rapidocr("ch_PP-OCRv4_det_infer.onnx"), {"x": [1, 3, 640, 640]}),
    "resnet50": (lambda: _zoo("resnet50"), None),
    "squeezenet": (lambda: _zoo("squeezenet"), None),
}


def _repeat_for(seconds_per_run: float, budget_s: float = 8.0) -> int:
    return int(min(50, max(3, budget_s / max(seconds_per_run, 1e-4))))


def _bench(path: Path, model: Path, threads: int):
    from lwc.bench import bench

    probe = bench(path, repeat=1, warmup=0, threads=threads)
    repeat = _repeat_for(probe.lwc.mean / 1e3)
    return bench(path, vs_onnxruntime=model, repeat=repeat, warmup=2, threads=threads)


def run_model(name: str, threads: int, tune_minutes: float, workdir: Path) -> dict:
    from lwc import driver
    from lwc.tuning.search import tune

    factory, shapes = MODELS[name]
    model = factory()
    row: dict = {"model": name, "shapes": shapes}
    start = time.perf_counter()
    untuned = driver.compile(str(model), "host", shapes, use_tuning_logs=False)
    row["compile_untuned_s"] = round(time.perf_counter() - start, 1)
    path_u = untuned.export(workdir / f"{name}_untuned.so")
    if tune_minutes > 0:
        result = tune(model, "host", shapes, trials=100_000, time_budget_s=tune_minutes * 60,
                      log_root=REPO / "tuning_logs")
        row["tuned_now"] = {"trials": result.trials_run, "minutes": round(result.elapsed_s / 60, 1)}
    tuned = driver.compile(str(model), "host", shapes)
    row["tuning"] = tuned.extra["tuning"]
    path_t = tuned.export(workdir / f"{name}_tuned.so") if row["tuning"]["tuned_tasks"] else None
    bu = _bench(path_u, model, threads)
    row["untuned_ms"], row["ort_ms"] = bu.lwc.p50, bu.onnxruntime.p50
    row["max_abs_diff_untuned"] = bu.max_abs_diff
    if path_t is not None:
        bt = _bench(path_t, model, threads)
        row["tuned_ms"], row["ort_ms_tuned_run"] = bt.lwc.p50, bt.onnxruntime.p50
        row["max_abs_diff_tuned"] = bt.max_abs_diff
    return row


def _fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def markdown(rows: list[dict], threads: int) -> str:
    from lwc import tvm_compat
    from lwc.tuning.logs import machine_cpu

    import onnxruntime

    v = tvm_compat.versions()
    lines = [
        "# lwc vs onnxruntime on the host CPU",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {machine_cpu()}; {threads} threads for both (TVM_NUM_THREADS / "
        "intra_op_num_threads)",
        f"- lwc {v['lwc']}, apache-tvm {v['apache-tvm']}, apache-tvm-ffi {v['apache-tvm-ffi']}, "
        f"onnxruntime {onnxruntime.__version__}",
        "- p50 latency in ms, batch 1; lwc and onnxruntime interleaved in one process on the same "
        "inputs (`lwc bench --vs-onnxruntime`). Ratio = lwc tuned (or untuned where there is no "
        "log) / onnxruntime: below 1.0 means lwc is faster.",
        "",
        "| model | input | lwc untuned | lwc tuned | onnxruntime | untuned/ort | tuned/ort | tuned tasks |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | error: {r['error']} | | | | | |")
            continue
        shape = "x".join(map(str, next(iter(r["shapes"].values())))) if r["shapes"] else "zoo"
        ort = r.get("ort_ms_tuned_run", r["ort_ms"])
        tuned = r.get("tuned_ms")
        t = r["tuning"]
        lines.append(
            f"| {r['model']} | {shape} | {_fmt(r['untuned_ms'])} | {_fmt(tuned)} | {_fmt(ort)} | "
            f"{_fmt(r['untuned_ms'] / r['ort_ms'], 2)} | "
            f"{_fmt(tuned / ort if tuned else None, 2)} | {t['tuned_tasks']}/{t['tasks']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tune-minutes", type=float, default=0.0,
                        help="tune each model this long first (default 0: use committed logs)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args(argv)

    from lwc.bench import default_threads

    threads = args.threads or default_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lwc-bench-") as tmp:
        for name in args.models.split(","):
            print(f"[{name}] ...", file=sys.stderr, flush=True)
            try:
                rows.append(run_model(name, threads, args.tune_minutes, Path(tmp)))
            except Exception as err:  # noqa: BLE001  (one failing model must not hide the others)
                rows.append({"model": name, "error": str(err).splitlines()[-1][:120]})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    text = markdown(rows, threads)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
