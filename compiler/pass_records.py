"""How a pass reports: one :class:`PassRecord` per pass run, in every stage.

:func:`run_pass` applies a pass object and records its time, op counts and outcome
(:func:`pass_outcome`: what it changed, what it declined and why), and writes the IR dump
(:class:`IrDump`, ``LWC_DUMP_IR=DIR``). Every stage (:mod:`lwc.pipeline`) uses it, so
the manifest, the compile report and ``--disable-pass`` see one shape of record. A leaf
module: it imports no other stage.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PassRecord:
    """What one lwc pass did: name, stage, wall time, op counts, what it changed and declined."""

    name: str
    seconds: float
    stats: dict
    summary: str
    ops_before: int
    ops_after: int
    disabled: bool = False
    stage: str = "graph"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "stage": self.stage,
            "disabled": self.disabled,
            "seconds": round(self.seconds, 4),
            "summary": self.summary,
            "ops_before": self.ops_before,
            "ops_after": self.ops_after,
            **self.stats,
        }


def pass_outcome(pass_obj) -> tuple[dict, str]:
    """What a pass object says it did, in the one form every record uses.

    lwc's passes report through :class:`lwc.passes._support.PassStats` (``.stats``);
    the int8 lowering passes count ``.lowered``/``.fused`` and list ``.declined`` as
    ``(op, reason)``; the BSR passes keep ``.decisions``.

    Returns:
        (``{"changed": {kind: count}, "declined": [{"where", "reason"}]}``, one-line summary).
    """
    stats = getattr(pass_obj, "stats", None)
    if stats is not None and hasattr(stats, "to_json"):
        return stats.to_json(), stats.summary()
    changed: dict = {}
    declined: list[dict] = []
    for attr in ("lowered", "fused"):
        count = getattr(pass_obj, attr, None)
        if isinstance(count, int) and count:
            changed[attr] = count
    for where, reason in getattr(pass_obj, "declined", None) or ():
        declined.append({"where": str(where), "reason": str(reason)})
    for decision in getattr(pass_obj, "decisions", None) or ():
        if getattr(decision, "used", False):
            changed["sparse"] = changed.get("sparse", 0) + 1
        else:
            declined.append({"where": str(getattr(decision, "layer", "")),
                             "reason": str(getattr(decision, "reason", ""))})
    parts = [f"{n} {kind}" for kind, n in changed.items()]
    if declined:
        parts.append(f"{len(declined)} declined (e.g. {declined[0]['where']}: {declined[0]['reason']})")
    return {"changed": changed, "declined": declined}, "; ".join(parts) or "nothing to do"


class IrDump:
    """``LWC_DUMP_IR=DIR``: the module after each pass of every stage, as
    ``DIR/NN_<stage>_<pass>.py``, numbered across stages (a debugging switch only)."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        folder = folder if folder is not None else os.environ.get("LWC_DUMP_IR")
        self.folder = Path(folder) if folder else None
        self.index = 0
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, stage: str, name: str, mod) -> None:
        if self.folder is None:
            return
        script = mod.script() if hasattr(mod, "script") else str(mod)
        (self.folder / f"{self.index:02d}_{stage}_{name}.py").write_text(script)
        self.index += 1


def run_pass(stage: str, name: str, pass_obj, mod, dump: IrDump | None = None):
    """Apply one pass object to ``mod`` and record it (op counts, time, outcome, dump).

    Returns:
        (new module, :class:`PassRecord`).
    """
    from lwc.passes._support import op_counts

    before = sum(op_counts(mod).values())
    start = time.perf_counter()
    mod = pass_obj(mod)
    seconds = time.perf_counter() - start
    stats, summary = pass_outcome(pass_obj)
    if dump is not None:
        dump(stage, name, mod)
    return mod, PassRecord(name, seconds, stats, summary, before, sum(op_counts(mod).values()), stage=stage)


def skipped(stage: str, name: str, why: str) -> PassRecord:
    """The record of a pass that did not run (``--disable-pass`` or not for this target)."""
    return PassRecord(name, 0.0, {"changed": {}, "declined": []}, why, 0, 0, True, stage=stage)
