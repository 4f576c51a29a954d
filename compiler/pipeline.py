"""lwc's pass pipeline, as data.

A compile's graph work is four stages, each a list of passes run in order
(:func:`lwc.prepare.prepare` runs them):

1. ``sparsity`` (:mod:`lwc.sparse_compile`): RemoveZeroChannels on the ONNX graph,
   DenseToSparse / Conv1x1ToSparse on the Relax module;
2. ``graph``: :data:`PASSES`, lwc's Relax passes, each with a predicate deciding from
   the preset and the :class:`~lwc.options.CompileOptions` whether it applies;
3. ``int8``: QDQ -> integer kernels (:func:`lwc.quantize.lowering_passes`), where the
   module has dequantize ops;
4. ``precision``: fp16 on CUDA targets (:func:`lwc.cuda.to_mixed_precision`).

Every pass's registered name (its class name) is what ``--disable-pass``, IR dumps
(``LWC_DUMP_IR=DIR``: the module after each pass, numbered across stages) and the compile
report use; :func:`check_pass_names` is the one check of those names. Every pass run gives
one :class:`PassRecord` (what it changed, what it declined and why), read from the pass by
:func:`pass_outcome`. TVM's default lowering for the target runs after the stages
(:func:`lwc.tvm_compat.build`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lwc.errors import LwcError
from lwc.options import DEFAULT, CompileOptions
from lwc.targets import Preset


def _always(preset: Preset, options: CompileOptions) -> bool:
    return True


@dataclass(frozen=True)
class PassEntry:
    """One lwc pass: registered name, factory, and when it applies."""

    name: str
    factory: Callable[[Preset, CompileOptions], object]
    applies: Callable[[Preset, CompileOptions], bool] = _always


def _entry(cls, applies: Callable[[Preset, CompileOptions], bool] = _always) -> PassEntry:
    return PassEntry(cls.__name__, lambda preset, options: cls(), applies)


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
        PassEntry("ConvertConvLayout", lambda preset, options: ConvertConvLayout(
            layout_for(preset.features, options.conv_layout))),
        # last: NaN guards around the max/min-based ops that remain
        _entry(PreserveNaN),
    ]


#: lwc's Relax passes in pipeline order.
PASSES: list[PassEntry] = _lwc_passes()


def pass_names() -> list[str]:
    """The graph stage's pass names, in order."""
    return [p.name for p in PASSES]


def stage_pass_names() -> dict[str, list[str]]:
    """Every stage's pass names, in pipeline order: ``{"sparsity": [...], "graph": [...], ...}``."""
    from lwc import sparse_compile
    from lwc.quantize import LOWERING_PASS_NAMES

    return {
        "sparsity": list(sparse_compile.PASS_NAMES),
        "graph": pass_names(),
        "int8": list(LOWERING_PASS_NAMES),
        "precision": ["ToMixedPrecision"],
    }


def known_pass_names() -> list[str]:
    """Every name ``--disable-pass`` accepts, all stages, in pipeline order."""
    return [name for names in stage_pass_names().values() for name in names]


def check_pass_names(disabled) -> None:
    """The one check of ``--disable-pass`` names (before any long work).

    Raises:
        LwcError: one line naming the unknown passes and listing every pass by stage.
    """
    stages = stage_pass_names()
    known = {name for names in stages.values() for name in names}
    unknown = sorted(set(disabled) - known)
    if unknown:
        listing = "; ".join(f"{stage}: {', '.join(names)}" for stage, names in stages.items())
        raise LwcError(f"--disable-pass {', '.join(unknown)}: no such pass; passes by stage: {listing} "
                       "(or all: every graph-stage pass)")


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


def run_passes(mod, preset: Preset, disabled: tuple[str, ...] = (), options: CompileOptions = DEFAULT,
               dump: IrDump | None = None) -> tuple[object, list[PassRecord]]:
    """Run the graph stage (:data:`PASSES`) on a Relax module, recording what each pass did.

    Args:
        disabled: registered pass names to skip (``--disable-pass``; names of other
            stages are ignored here).
        options: the compile options the passes' factories and predicates read.
        dump: where IR dumps go (default: ``LWC_DUMP_IR``).
    Returns:
        (new module, one record per pass in pipeline order, disabled ones included).
    Raises:
        LwcError: ``disabled`` names a pass that does not exist in any stage.
    """
    check_pass_names(disabled)
    dump = dump if dump is not None else IrDump()
    dump("graph", "imported", mod)
    records: list[PassRecord] = []
    for entry in PASSES:
        if entry.name in disabled or not entry.applies(preset, options):
            why = "disabled (--disable-pass)" if entry.name in disabled else "not for this target"
            records.append(skipped("graph", entry.name, why))
            continue
        mod, record = run_pass("graph", entry.name, entry.factory(preset, options), mod, dump)
        records.append(record)
    return _drop_unused_functions(mod), records


def run_lwc_passes(mod, preset: Preset, disabled: tuple[str, ...] = ()) -> tuple[object, list[str]]:
    """:func:`run_passes` returning only the names of the passes applied, in order."""
    mod, records = run_passes(mod, preset, disabled)
    return mod, [r.name for r in records if not r.disabled]


def _drop_unused_functions(mod):
    """Remove TIR functions no longer called (e.g. the importer's Clip kernels)."""
    from tvm import relax

    return relax.transform.DeadCodeElimination()(mod)

