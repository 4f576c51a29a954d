"""lwc tuned and onnxruntime timed one after the other, each alone (not interleaved).

`lwc bench --vs-onnxruntime` interleaves blocks of runs in one process; on a 2-core
machine each engine's idle-spinning thread pool can still slow the other (onnxruntime's
p50 for PP-OCRv4 det read 59 ms in one interleaved run and 110 ms in the next). This
script times each engine in its own phase (lwc first, then onnxruntime with its threads
created after lwc's have gone idle) as a cross-check of the interleaved ratios.

    .venv/bin/python benchmarks/alone.py det squeezenet ...   (names of run_benchmarks.MODELS)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from passes_on_off import alone_p50  # noqa: E402
from run_benchmarks import MODELS  # noqa: E402


def main(names: list[str]) -> list[dict]:
    from lwc import artifact, driver, tvm_compat
    from lwc.bench import _ort_session, default_threads

    threads = default_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            factory, shapes = MODELS[name]
            model = str(factory())
            path = driver.compile(model, "host", shapes).export(Path(tmp) / f"{name}.so")
            art = artifact.load(path)
            feed = art.full_inputs(None, 0)
            vm, args = art.vm(), [tvm_compat.tensor(a) for _, a in art.check_inputs(feed)]
            # one VM (art.run made one per call until this stop)
            lwc_ms = alone_p50(lambda: vm["main"](*args), seconds=10.0, min_runs=5)
            time.sleep(2)  # let TVM's pool go idle
            sess = _ort_session(model, threads)  # as lwc bench makes it
            ort_ms = alone_p50(lambda: sess.run(None, feed), seconds=10.0, min_runs=5)
            row = {"model": name, "lwc_tuned_ms": round(lwc_ms, 3), "onnxruntime_ms": round(ort_ms, 3),
                   "ratio": round(lwc_ms / ort_ms, 2), "threads": threads}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODELS))
