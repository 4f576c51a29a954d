"""lwc's rule-based CPU schedules for kernels without a tuning record.

In the style of TVM's dlight (s_tir/dlight): each rule is a small class whose
``apply(func, facts)`` returns a ``tvm.s_tir.Schedule`` or None to decline; rules are
tried in order from :data:`RULES`; kernels are classified by their block and loop
structure (:mod:`lwc.schedules.analysis`), never by name. The CPU's facts (vector width,
cores, caches) come from the preset (:class:`CpuFacts`), so one rule serves NEON, AVX2 and
AVX-512.

Usage::

    fused = lwc.tuning.apply.prepare(mod, preset.tvm_target())   # legalized + fused
    sched, report = apply_rules(fused, CpuFacts.from_preset(preset))
    ex = tvm_compat.build(sched, preset.tvm_target())
"""

from __future__ import annotations

import tvm
from tvm import s_tir

from .analysis import classify, symbolic_loops
from .conv2d import Conv2D
from .facts import CpuFacts
from .injective import Injective
from .matmul import Matmul
from .pooling import Pooling
from .prepack import LAYOUT_FREE_ATTR, PrepackFailed, fold_prepacks, layout_free_params
from .reduction import Reduction

#: Rules in the order they are tried; the first that returns a schedule wins.
RULES = [Conv2D(), Matmul(), Pooling(), Reduction(), Injective()]

__all__ = ["RULES", "CpuFacts", "apply_rules", "schedule_func"]


def _is_scheduled(func) -> bool:
    return "tirx.is_scheduled" in func.attrs and bool(func.attrs["tirx.is_scheduled"])


def schedule_func(func: tvm.tirx.PrimFunc, facts: CpuFacts, rules=None):
    """Try ``rules`` (default :data:`RULES`) on one PrimFunc.

    Returns:
        (scheduled PrimFunc or None, rule name or the reason every rule declined).
        A rule that raises counts as a decline; the error's message is the reason.
    """
    try:
        kind, _ = classify(s_tir.Schedule(func))
    except Exception as err:  # noqa: BLE001 - analysis bug: leave the kernel as it is
        return None, f"analysis: {_first_line(err)}"
    if kind in ("annotated", "blockless"):
        why = "a block has a schedule_rule annotation" if kind == "annotated" else "no blocks"
        return None, why
    errors = []
    for rule in rules if rules is not None else RULES:
        try:
            try:
                sch = rule.apply(func, facts)
            except PrepackFailed:  # the rule again, packing its weights per call
                sch = rule.apply(func.without_attr(LAYOUT_FREE_ATTR), facts)
        except Exception as err:  # noqa: BLE001 - a rule bug must never break a build
            errors.append(f"{rule.name}: {_first_line(err)}")
            continue
        if sch is not None:
            return sch.mod["main"].without_attr(LAYOUT_FREE_ATTR).with_attr("tirx.is_scheduled", True), rule.name
    return None, "; ".join(errors) or f"no rule matches a {kind} kernel"


def apply_rules(mod: tvm.IRModule, facts: CpuFacts, rules=None, only=None) -> tuple[tvm.IRModule, dict]:
    """Schedule every PrimFunc of ``mod`` without ``tirx.is_scheduled``.

    Args:
        mod: a legalized, fused Relax IRModule (``lwc.tuning.apply.prepare``'s output);
            not modified.
        facts: the target CPU.
        rules: rule objects to try in order (default :data:`RULES`).
        only: names of the functions to consider (e.g. those the Relax functions call:
            FuseTIR leaves the unfused kernels behind, uncalled); None: every PrimFunc.
    Returns:
        (new module, report): the report maps each rule name to the number of functions it
        scheduled and ``"declined"`` to a list of (function name, why).
        Scheduled functions carry ``tirx.is_scheduled = True``.
    """
    report: dict = {"declined": []}
    updates = {}
    with symbolic_loops(dim_plan(mod), dim_bounds(mod)):
        _schedule_all(mod, facts, rules, only, report, updates)
    out = mod.clone()
    for gv, func in updates.items():
        out[gv] = func
    return fold_prepacks(out), report


def dim_plan(mod: tvm.IRModule) -> dict[str, int] | None:
    """For a dynamic-dims compile (a Relax function declares the ranges of its symbolic
    dims: ``tir_var_lower_bound`` / ``tir_var_upper_bound``,
    :func:`lwc.tvm_compat.with_dim_bounds`), the value the rules plan each symbol with: the
    geometric mean of its range (96..1280 plans with 350), a typical size rather than the
    extremes. None for a fixed-shape compile: the rules then decline symbolic loops
    (:func:`analysis.symbolic_loops`)."""
    bounds = dim_bounds(mod)
    if bounds is None:
        return None
    return {name: max(1, round((lo * hi) ** 0.5)) for name, (lo, hi) in bounds.items()}


def dim_bounds(mod: tvm.IRModule) -> dict[str, tuple[int, int]] | None:
    """The accepted range ``(lo, hi)`` of each symbolic dim of a dynamic-dims compile (its
    ``tir_var_lower_bound``, 1 where it has none, and ``tir_var_upper_bound``), None for a
    fixed-shape compile."""
    bounds = None
    for _, f in mod.functions_items():
        if isinstance(f, tvm.tirx.PrimFunc) or f.attrs is None or "tir_var_upper_bound" not in f.attrs:
            continue
        lower = dict(f.attrs).get("tir_var_lower_bound", {})
        bounds = bounds or {}
        for name, hi in f.attrs["tir_var_upper_bound"].items():
            bounds[str(name)] = (max(1, int(lower[name])) if name in lower else 1, int(hi))
    return bounds


def _schedule_all(mod, facts, rules, only, report: dict, updates: dict) -> None:
    constants = layout_free_params(mod)
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or _is_scheduled(func):
            continue
        if only is not None and gv.name_hint not in only:
            continue
        if gv.name_hint in constants:  # weights the rule may pre-pack (lwc.schedules.prepack)
            func = func.with_attr(LAYOUT_FREE_ATTR, constants[gv.name_hint])
        new, why = schedule_func(func, facts, rules)
        if new is None:
            report["declined"].append((gv.name_hint, why))
            continue
        report[why] = report.get(why, 0) + 1
        updates[gv] = new


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]
