"""The ``--sparsity`` stage of ``lwc compile``: make the model's zeros pay.

Runs between ONNX import and lwc's Relax passes:

1. analysis (:mod:`lwc.sparsity_analysis`) of every constant conv/dense/matmul weight, for the
   compile report;
2. RemoveZeroChannels (``passes/remove_zero_channels.py``) on the simplified ModelProto:
   exact, so it runs under ``auto`` and ``force``; when it removed anything the model is
   re-imported to Relax;
3. DenseToSparse (``passes/dense_to_sparse.py``) and Conv1x1ToSparse
   (``passes/conv1x1_to_sparse.py``) on the Relax module: matmuls and 1x1 convs with a
   block-sparse constant weight become a BSR TIR kernel -- under ``auto`` per layer where
   it is faster than the dense kernel (measured on native targets, a cost model on cross
   targets: :mod:`lwc.sparsity_decide`), under ``force`` wherever a zero block exists.
   BSR kernels are CPU kernels: GPU targets skip this step.

Modes: ``auto`` (exploit what is there where it pays), ``force`` (same, for tests and
measurements), ``off`` (nothing; the report still carries the analysis). Each pass can be
skipped by name with ``--disable-pass`` (:data:`PASS_NAMES`).
"""

from __future__ import annotations

import dataclasses

from lwc import sparsity_analysis
from lwc.errors import LwcError

MODES = ("auto", "off", "force")
#: The sparsity stage's passes, as ``--disable-pass`` names them.
PASS_NAMES = ("RemoveZeroChannels", "DenseToSparse", "Conv1x1ToSparse")


def apply(imported, mode: str = "auto", *, preset=None, tuning_log=None,
          disabled: tuple[str, ...] = (), tuning_run: bool = False):
    """Run the sparsity stage on an imported model.

    Args:
        imported: :class:`lwc.frontend.ImportedModel`.
        mode: ``auto``, ``off`` or ``force``.
        preset: the target preset (None: host, decided by the cost model).
        tuning_log: the model's :class:`lwc.tuning.logs.LogChoice` (:func:`tuning_log_choice`),
            for the tuned dense kernels ``auto`` times; None: TVM's default schedules.
        disabled: ``--disable-pass`` names; those in :data:`PASS_NAMES` are skipped.
        tuning_run: the graph is prepared for ``lwc tune`` (dense kernels without a
            record yet take the cost model: :func:`lwc.sparsity_decide.decider`).
    Returns:
        (imported model after the stage, report dict: mode, analysis, passes applied,
        per-layer decisions with reasons and times).
    Raises:
        LwcError: unknown mode.
    """
    if mode not in MODES:
        raise LwcError(f"--sparsity {mode!r}: expected one of {', '.join(MODES)}")
    proto = imported.onnx_model
    layers = sparsity_analysis.analyze(proto)
    info = {"mode": mode, "analysis": sparsity_analysis.summarize(layers), "passes": [], "relax_passes": []}
    skipped = [name for name in PASS_NAMES if name in disabled]
    if skipped:
        info["disabled"] = skipped
    if mode == "off" or not layers:
        return imported, info
    if "RemoveZeroChannels" not in disabled:
        imported = _remove_zero_channels(imported, info)
    if preset is not None and preset.is_gpu:
        info["bsr"] = "skipped: BSR kernels are CPU kernels"
        return imported, info
    decide = None
    if mode == "auto" and preset is not None:
        from lwc import sparsity_decide

        decide = sparsity_decide.decider(preset, preset.tvm_target(), tuning_log, tuning_run)
    return _to_sparse(imported, mode, decide, disabled, info)


def _remove_zero_channels(imported, info: dict):
    """ONNX: all-zero output channels removed, consumers rewritten; re-imported if anything changed."""
    from lwc.frontend import to_relax
    from lwc.passes.remove_zero_channels import RemoveZeroChannels

    proto = imported.onnx_model
    pass_ = RemoveZeroChannels()
    shrunk = pass_(proto)
    report = pass_.last_report
    info["remove_zero_channels"] = report.to_json()
    if report.total_removed:
        info["flops_before"] = sparsity_analysis.count_flops(proto)
        info["flops_after"] = sparsity_analysis.count_flops(shrunk)
        info["weight_bytes_before"] = sparsity_analysis.weight_bytes(proto)
        info["weight_bytes_after"] = sparsity_analysis.weight_bytes(shrunk)
        info["passes"].append(RemoveZeroChannels.name)
        imported = dataclasses.replace(imported, onnx_model=shrunk, mod=to_relax(shrunk, imported.inputs))
    return imported


def _to_sparse(imported, mode: str, decide, disabled: tuple[str, ...], info: dict):
    """Relax: block-sparse constant matmul / 1x1 conv weights -> the BSR TIR kernel, per layer."""
    from lwc.passes.conv1x1_to_sparse import Conv1x1ToSparse
    from lwc.passes.dense_to_sparse import DenseToSparse

    decisions = []
    for cls, key in ((DenseToSparse, "dense_to_sparse"), (Conv1x1ToSparse, "conv1x1_to_sparse")):
        if cls.name in disabled:
            continue
        pass_ = cls(mode, decide=decide)
        mod = pass_(imported.mod)
        info[key] = [d.to_json() for d in pass_.decisions]
        decisions += pass_.decisions
        if mod is not imported.mod:
            info["relax_passes"].append(cls.name)
            imported = dataclasses.replace(imported, mod=mod)
    used = [d for d in decisions if d.used]
    if used:
        info["bsr_bytes_before"] = sum(d.bytes_dense for d in used)
        info["bsr_bytes_after"] = sum(d.bytes_sparse for d in used)
    return imported, info


def tuning_log_choice(preset, tuning_log: str | None, enabled: bool, model_key: str | None):
    """The tuning log whose dense kernels ``auto`` times against BSR, or None.

    The same lookup as the tuning stage (:func:`lwc.tuning.logs.locate_log`: ``--tuning-log``,
    the model's folder, or a host log from an ISA-subset CPU); None with
    ``--no-tuning-log`` or when no records apply. A bad ``--tuning-log`` is reported by
    the tuning stage, which raises the same error.
    """
    from lwc.tuning.logs import locate_log

    if not enabled:
        return None
    try:
        choice = locate_log(preset, preset.tvm_target(), tuning_log=tuning_log, model_key=model_key)
    except LwcError:
        return None
    return None if choice.folder is None or choice.why_not else choice


def summary_line(info: dict | None) -> str | None:
    """One line for ``lwc compile``'s output: channels removed, BSR layers, bytes; None if nothing to say."""
    if not info or info.get("mode") == "off":
        return None
    parts = []
    removed = info.get("remove_zero_channels", {}).get("removed_channels", 0)
    if removed:
        parts.append(f"{removed} all-zero channels removed (FLOPs {info['flops_before'] / 1e6:.1f} M -> "
                     f"{info['flops_after'] / 1e6:.1f} M)")
    candidates = [d for key in ("dense_to_sparse", "conv1x1_to_sparse") for d in info.get(key, [])
                  if d.get("bytes_sparse")]
    used = [d for d in candidates if d["used"]]
    if used:  # nothing to say when every layer stays dense (the decisions are in the manifest)
        parts.append(f"BSR kernel for {len(used)} of {len(candidates)} block-sparse layers "
                     f"(weights {info['bsr_bytes_before'] / 1e6:.2f} -> "
                     f"{info['bsr_bytes_after'] / 1e6:.2f} MB)")
    return f"sparsity {info['mode']}: " + "; ".join(parts) if parts else None
