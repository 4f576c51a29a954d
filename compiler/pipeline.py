"""lwc's pass pipeline, as data.

:data:`PASSES` lists lwc's own Relax passes in the order they run, each with a predicate
deciding from the preset and options whether it applies. Passes live in ``lwc.passes``
(one per file); their registered TVM pass name is what ``--disable-pass``, IR dumps
(``LWC_DUMP_IR=DIR``) and the compile report use. TVM's default lowering for the target
runs after them (:func:`lwc.tvm_compat.build`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lwc.errors import LwcError
from lwc.targets import Preset


@dataclass(frozen=True)
class PassEntry:
    """One lwc pass: registered name, factory, and when it applies."""

    name: str
    factory: Callable[[Preset], object]
    applies: Callable[[Preset], bool] = lambda preset: True


def _entry(cls, applies: Callable[[Preset], bool] = lambda preset: True) -> PassEntry:
    return PassEntry(cls.__name__, lambda preset: cls(), applies)


def _lwc_passes() -> list[PassEntry]:
    from lwc.passes.canonicalize_clip import CanonicalizeClip
    from lwc.passes.canonicalize_min_max import CanonicalizeMinMax
    from lwc.passes.convert_conv_layout import ConvertConvLayout, layout_for
    from lwc.passes.fold_batch_norm import FoldBatchNorm
    from lwc.passes.fold_pad_into_conv import FoldPadIntoConv
    from lwc.passes.fuse_gelu import FuseGelu
    from lwc.passes.fuse_hard_sigmoid import FuseHardSigmoid
    from lwc.passes.fuse_hard_swish import FuseHardSwish
    from lwc.passes.fuse_layer_norm import FuseLayerNorm
    from lwc.passes.fuse_silu import FuseSilu
    from lwc.passes.fuse_transpose_into_matmul import FuseTransposeIntoMatmul
    from lwc.passes.merge_parallel_branches import MergeParallelBranches
    from lwc.passes.preserve_nan import PreserveNaN
    from lwc.passes.remove_no_ops import RemoveNoOps

    return [
        # canonical forms first, so the fusions below see one spelling of each op
        _entry(CanonicalizeClip),
        _entry(CanonicalizeMinMax),
        _entry(RemoveNoOps),
        _entry(FoldPadIntoConv),
        # activation / normalization recognition (before folding eats their constants)
        _entry(FuseHardSwish),
        _entry(FuseHardSigmoid),
        _entry(FuseSilu),
        _entry(FuseGelu),
        _entry(FuseLayerNorm),
        # folding into conv / matmul weights
        _entry(FoldBatchNorm),
        # parallel narrow convs / matmuls on one input -> one wider op + split (biases folded)
        _entry(MergeParallelBranches),
        # matmul reading a transposed operand in place (after RemoveNoOps merged permutes)
        _entry(FuseTransposeIntoMatmul),
        # conv layout per target, as measured (before PreserveNaN: ConvertLayout has no rule for where)
        PassEntry("ConvertConvLayout", lambda preset: ConvertConvLayout(layout_for(preset.features))),
        # last: NaN guards around the max/min-based ops that remain
        _entry(PreserveNaN),
    ]


#: lwc's Relax passes in pipeline order.
PASSES: list[PassEntry] = _lwc_passes()


def pass_names() -> list[str]:
    return [p.name for p in PASSES]


@dataclass
class PassRecord:
    """What one lwc pass did: name, wall time, op counts it changed, stats (see passes._support)."""

    name: str
    seconds: float
    stats: dict
    summary: str
    ops_before: int
    ops_after: int
    disabled: bool = False

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "disabled": self.disabled,
            "seconds": round(self.seconds, 4),
            "summary": self.summary,
            "ops_before": self.ops_before,
            "ops_after": self.ops_after,
            **self.stats,
        }


def run_passes(mod, preset: Preset, disabled: tuple[str, ...] = ()) -> tuple[object, list[PassRecord]]:
    """Apply lwc's passes to a Relax module, recording what each did.

    Args:
        disabled: registered pass names to skip (``--disable-pass``).
    Returns:
        (new module, one record per pass in pipeline order, disabled ones included).
    Raises:
        LwcError: ``disabled`` names a pass that does not exist.
    """
    from lwc.passes._support import op_counts

    unknown = sorted(set(disabled) - set(pass_names()))
    if unknown:
        raise LwcError(
            f"--disable-pass {', '.join(unknown)}: no such pass; passes: "
            + (", ".join(pass_names()) or "(none)")
        )
    dump_dir = os.environ.get("LWC_DUMP_IR")
    if dump_dir:
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        _dump(Path(dump_dir), 0, "imported", mod)
    records: list[PassRecord] = []
    applied = 0
    for entry in PASSES:
        if entry.name in disabled or not entry.applies(preset):
            why = "disabled (--disable-pass)" if entry.name in disabled else "not for this target"
            records.append(PassRecord(entry.name, 0.0, {"changed": {}, "declined": []}, why, 0, 0, True))
            continue
        before = sum(op_counts(mod).values())
        start = time.perf_counter()
        pass_obj = entry.factory(preset)
        mod = pass_obj(mod)
        seconds = time.perf_counter() - start
        stats = getattr(pass_obj, "stats", None)
        records.append(PassRecord(
            entry.name, seconds,
            stats.to_json() if stats is not None else {"changed": {}, "declined": []},
            stats.summary() if stats is not None else "",
            before, sum(op_counts(mod).values()),
        ))
        applied += 1
        if dump_dir:
            _dump(Path(dump_dir), applied, entry.name, mod)
    return _drop_unused_functions(mod), records


def run_lwc_passes(mod, preset: Preset, disabled: tuple[str, ...] = ()) -> tuple[object, list[str]]:
    """:func:`run_passes` returning only the names of the passes applied, in order."""
    mod, records = run_passes(mod, preset, disabled)
    return mod, [r.name for r in records if not r.disabled]


def _drop_unused_functions(mod):
    """Remove TIR functions no longer called (e.g. the importer's Clip kernels)."""
    from tvm import relax

    return relax.transform.DeadCodeElimination()(mod)


def _dump(folder: Path, index: int, name: str, mod) -> None:
    (folder / f"{index:02d}_{name}.py").write_text(mod.script())
