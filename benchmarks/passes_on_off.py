"""lwc's graph passes on vs all off (``--disable-pass all``): kernels, accuracy, latency.

    .venv/bin/python benchmarks/passes_on_off.py [--models cls,det,rec] [--untuned] [--json out.json]
    .venv/bin/python benchmarks/passes_on_off.py --models zoo --untuned     # onnx's light model zoo

``--models`` takes run_benchmarks' names (cls, det, rec, resnet50, squeezenet), any model of
onnx's light zoo by its file name without ``light_`` (densenet121, inception_v1, ...), and
``zoo`` for all of :data:`ZOO`.

For each model: compile twice for the host, with every lwc pass (the default) and with
``--disable-pass all``; each build applies its own tuning log when tuning_logs/ has one
(the passes-off graph has other kernels, so its log is a variant folder, tuned with
``lwc tune MODEL --disable-pass all --reuse-records <passes-on log>``: the kernels both
graphs share start from the same records). ``--untuned`` compiles both without records.
Both artifacts are checked against onnxruntime (max abs), then timed in one process,
interleaved in blocks of 10 runs with a settling run per switch (as ``lwc bench`` does),
p50 over at least 8 s each. Kernel counts are the manifest's (Relax calls after FuseOps).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import MODELS, _zoo  # noqa: E402


#: onnx's light model zoo (onnx/backend/test/data/light), as in docs/kernel_counts.md.
ZOO = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
       "squeezenet", "vgg19", "zfnet512")


def model_entry(name: str):
    """(model path factory, input shapes) for a ``--models`` name; KeyError names the known ones."""
    if name in MODELS:
        return MODELS[name]
    if name in ZOO:
        return (lambda: _zoo(name)), None
    raise KeyError(f"unknown model {name!r}: use one of {', '.join(dict.fromkeys([*MODELS, *ZOO]))} or 'zoo'")


def _interleaved_p50(runs: dict, seconds: float = 8.0, block: int = 10) -> dict:
    """p50 ms of each callable in ``runs``, timed in alternating blocks.

    ``block`` shrinks for slow models (one run over 0.1 s: blocks of ~1 s, at least 2 runs)
    so untuned zoo models finish in minutes; every callable gets at least 2 blocks.

    Interleave lwc artifacts only: they share TVM's one thread pool. onnxruntime's pool
    spins after each run and, on 2 cores, slowed TVM runs timed right after it by 2-20x
    here; time it alone with :func:`alone_p50`.
    """
    times = {k: [] for k in runs}
    slowest = 0.0
    for fn in runs.values():
        t = time.perf_counter()
        fn()
        slowest = max(slowest, time.perf_counter() - t)
    block = max(2, min(block, int(1.0 / max(slowest, 1e-6))))
    end = time.perf_counter() + seconds * len(runs)
    order = list(runs)
    while time.perf_counter() < end or min(len(t) for t in times.values()) < 2 * block:
        for name in order:
            runs[name]()  # settling run
            for _ in range(block):
                t = time.perf_counter()
                runs[name]()
                times[name].append((time.perf_counter() - t) * 1e3)
        order.reverse()
    return {k: float(np.median(v)) for k, v in times.items()}


def alone_p50(fn, seconds: float = 5.0, min_runs: int = 20) -> float:
    """p50 ms of ``fn`` timed on its own, after a 1 s pause (other thread pools go idle)."""
    time.sleep(1.0)
    fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < min_runs:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def setup_threads() -> int:
    """TVM's pool at the CPUs this process may use (as ``lwc bench``); returns the count."""
    from lwc.bench import default_threads, set_tvm_threads

    return set_tvm_threads(default_threads())


def run_model(name: str, untuned: bool, tmp: Path) -> dict:
    import onnxruntime as ort

    from lwc import artifact, driver, pipeline

    factory, shapes = model_entry(name)
    model = str(factory())
    row = {"model": name}
    arts = {}
    for label, disabled in (("on", ()), ("off", tuple(pipeline.pass_names()))):
        result = driver.compile(model, "host", shapes, disabled_passes=disabled, use_tuning_logs=not untuned)
        path = result.export(tmp / f"{name}-{label}.so")
        info = json.loads(path.with_suffix(".json").read_text())
        tuning = info.get("tuning", {})
        row[f"kernels_{label}"] = info["report"]["kernel_count"]["with_lwc_passes"]
        row[f"tuned_{label}"] = f"{tuning.get('tuned_tasks', 0)}/{tuning.get('tasks', 0)}"
        row[f"log_{label}"] = Path(tuning["log"]).name if tuning.get("log") else None
        arts[label] = artifact.load(path)
    feed = arts["on"].full_inputs(None, 0)
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    for label, art in arts.items():
        got = art.run(feed)
        row[f"max_abs_{label}"] = max(float(np.max(np.abs(np.asarray(g, np.float64) - w))) for g, w in zip(got, want))
    p50 = _interleaved_p50({label: (lambda a=a: a.run(feed)) for label, a in arts.items()})
    row.update({f"p50_ms_{k}": round(v, 3) for k, v in p50.items()})
    row["ratio_on_off"] = round(p50["on"] / p50["off"], 3)
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict], untuned: bool) -> str:
    from lwc import tvm_compat
    from lwc.bench import default_threads
    from lwc.tuning.logs import machine_cpu

    head = (f"{'untuned' if untuned else 'tuned'}, host {machine_cpu()}, {default_threads()} threads, "
            f"apache-tvm {tvm_compat.versions().get('apache-tvm')}, {dt.date.today()}")
    lines = [head, "", "| model | kernels off → on | tuned tasks off / on | p50 ms off | p50 ms on | on/off | "
             "max abs vs onnxruntime off / on |", "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['kernels_off']} → {r['kernels_on']} | {r['tuned_off']} / {r['tuned_on']} | "
                     f"{r['p50_ms_off']} | {r['p50_ms_on']} | **{r['ratio_on_off']}** | "
                     f"{r['max_abs_off']:.1e} / {r['max_abs_on']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cls,det,rec")
    p.add_argument("--untuned", action="store_true", help="compile both without tuning records")
    p.add_argument("--json", help="write the rows here too")
    args = p.parse_args(argv)
    setup_threads()
    with tempfile.TemporaryDirectory() as tmp:
        names = [n for name in args.models.split(",") for n in (ZOO if name == "zoo" else (name,))]
        for name in names:
            model_entry(name)  # unknown names fail before any compile
        rows = [run_model(name, args.untuned, Path(tmp)) for name in names]
    print(markdown(rows, args.untuned))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
