"""The end of ``lwc tune``: time what was tuned, kernel by kernel and as a whole model.

:func:`measure_after_tuning` runs after the search (and alone for ``lwc tune --trials 0``):
the tuned kernels on one thread, on all and by lwc's rule (:mod:`lwc.tuning.threads`),
then the model with and without the log (:mod:`lwc.tuning.whole_model`). Both results
go into the log folder, where ``lwc compile`` reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def measure_after_tuning(mod, fused, preset, tvm_target, folder: Path, database, rpc,
                         build: Callable[[bool], object]) -> dict:
    """``lwc tune``'s last step: time the tuned kernels of ``mod`` (``fused``: the same,
    fused and unscheduled) on one thread, on all and by the rule (:mod:`lwc.tuning.threads`),
    then the whole model (:func:`lwc.tuning.whole_model.measure`; ``build(use_log)`` builds
    it as ``lwc compile`` does), and store both in ``folder``. Only where the kernels run on
    this machine.

    Returns:
        :func:`lwc.tuning.threads.summary` with ``"whole_model"``: that function's result;
        ``{}`` over RPC or for a cross target, ``{"skipped": reason}`` for another CPU's.
    """
    from lwc import schedules, tvm_compat
    from lwc.tuning import threads, whole_model
    from lwc.tuning.apply import prepare, schedule_fixed
    from lwc.tuning.logs import machine_cpu, runs_here

    if rpc is not None or not preset.is_native:
        return {}
    if not runs_here(tvm_target):  # e.g. znver5 (AVX-512) kernels on a znver3: SIGILL
        return {"skipped": f"{tvm_target.attrs.get('mcpu')} kernels do not run on this "
                           f"{tvm_compat.system_cpu()}: not timed"}
    facts = schedules.CpuFacts.from_preset(preset)
    applied, _ = schedule_fixed(prepare(mod, tvm_target, database), preset, tvm_target, facts=facts)
    decisions = threads.measure(fused, applied, tvm_target, facts=facts)
    threads.write(folder, decisions, machine_cpu())
    timed = whole_model.measure(mod["main"], folder, build)
    return {**threads.summary(decisions), "whole_model": timed}
