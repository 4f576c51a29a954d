"""``lwc tune``'s last check: the whole model with its records against lwc's rules alone.

``lwc tune`` measures each candidate schedule as one kernel called in a loop, its data
hot in the caches, and :mod:`lwc.tuning.threads` times each tuned kernel against the
rule's schedule the same way. Inside the model a kernel meets its weights and its input
as the previous kernels left the caches. There a record can lose to the rule it beat
alone. resnet50 on the znver4 VM, tuned 10 minutes from the rules: the log's build ran
50.5 ms, the rules alone 42.9 ms, interleaved. Its 1x1 conv 64->256 at 56x56 took 1.62 ms
tuned and 2.18 ms by the rule, alone; in the model, 5.5 ms and 3.3 ms.

So the tune ends by building the model twice as ``lwc compile`` does, with the log and
with no log (the rules alone; ``--sparsity auto`` consults the log too, so the graphs may
differ as the users' builds do). It times both interleaved on this machine
(:func:`measure`) and writes the result into the log folder (:data:`FILE`). ``lwc
compile`` then applies no record of a log whose model ran :data:`MARGIN` faster on the
rules (:func:`rules_win`).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

#: The file in a tuning log folder that holds the result.
FILE = "whole_model.json"
#: The rules' build must be this much faster (a fraction), and by at least
#: :data:`MIN_GAIN_MS`, before the records are dropped: the VM's run-to-run noise on two
#: shared cores is a few percent, and a model of a few microseconds is all noise.
MARGIN = 0.03
MIN_GAIN_MS = 0.02
#: Interleaved rounds of :data:`CALLS` timed calls of each build.
ROUNDS = 10
CALLS = 5


def _inputs(func) -> list[np.ndarray] | None:
    """Seeded random arrays for the Relax function's parameters (None: a symbolic shape)."""
    from lwc import tvm_compat

    rng = np.random.default_rng(0)
    arrays = []
    for param in func.params:
        ty = param.ty
        if getattr(ty, "shape", None) is None or not hasattr(ty.shape, "values"):
            return None
        dims = tvm_compat.shape_dims(ty.shape)
        if not all(isinstance(d, int) for d in dims):
            return None
        arrays.append(rng.standard_normal(dims).astype(str(ty.dtype)))
    return arrays


def measure(main, folder: Path, build: Callable[[bool], object]) -> dict:
    """Time the model built with the log in ``folder`` and with lwc's rules alone.

    Args:
        main: the prepared model's Relax ``main`` (its parameters give the inputs' shapes).
        folder: the tuning log folder; :data:`FILE` is written into it.
        build: ``build(use_log)`` -> the executable ``lwc compile`` builds with the log in
            ``folder`` (True) or with no tuning log (False), on the same graph options.
    Returns:
        ``{"log_ms", "rules_ms"}``: p50 per call in milliseconds, 4 decimals; or
        ``{"skipped": reason}`` (symbolic input shapes), also written.
    """
    from lwc import tvm_compat

    (Path(folder) / FILE).unlink(missing_ok=True)  # the log build below applies the records
    args = _inputs(main)
    if args is None:
        return _write(folder, {"skipped": "the model has symbolic input dims"})
    args = [tvm_compat.tensor(a) for a in args]
    runs = {}
    for name, use_log in (("log", True), ("rules", False)):
        fn = tvm_compat.virtual_machine(build(use_log))["main"]
        fn(*args)  # warm-up
        runs[name] = functools.partial(fn, *args)
    times = {name: [] for name in runs}
    for k in range(ROUNDS):
        for name in (list(runs) if k % 2 == 0 else list(runs)[::-1]):
            run = runs[name]
            for _ in range(CALLS):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    p50 = {f"{name}_ms": round(1e3 * float(np.median(t)), 4) for name, t in times.items()}
    return _write(folder, p50)


def _write(folder: Path, result: dict) -> dict:
    from lwc.tuning.logs import _write_json_atomic

    _write_json_atomic(Path(folder) / FILE, {"version": 1, **result})
    return result


def read(folder: Path | None) -> dict:
    """The result in a tuning log folder ({} without the file or with an unreadable one)."""
    if folder is None or not (Path(folder) / FILE).is_file():
        return {}
    try:
        data = json.loads((Path(folder) / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("version") == 1 else {}


def rules_win(result: dict) -> bool:
    """Whether the model ran :data:`MARGIN` (and :data:`MIN_GAIN_MS`) faster on lwc's rules
    than with the records."""
    log, rules = result.get("log_ms"), result.get("rules_ms")
    return bool(log and rules and rules <= (1 - MARGIN) * log and log - rules >= MIN_GAIN_MS)
