"""What names a tuning log: ``tuning_logs/<model-key>-<target-name>/``.

Keys (case T1): the folder is found by model key (sha256 of the ONNX file plus the input
shapes, and the graph variant of the compile options) and target name; its manifest must
name the same target (kind, triple, CPU, attributes, :func:`target_identity`) and
apache-tvm version, and each record's own target is checked again when it is loaded.
"""

from __future__ import annotations

import hashlib
import json

_TARGET_KEYS = ("kind", "mtriple", "mcpu", "mattr", "arch")


def model_key(sha256: str, input_shapes: dict[str, list[int]] | list, variant: str = "",
              bound: dict | None = None) -> str:
    """12 hex digits naming (model bytes, input shapes, graph variant, bound inputs): the
    workload part of a log name.

    ``variant`` is :meth:`lwc.options.CompileOptions.variant_key`; it is empty for the
    default options and then leaves the key what it was before variants existed, so
    fp32 tuning logs keep their folder names. ``bound`` is the inputs bound to values
    (``--input-value``, :attr:`lwc.frontend.ImportedModel.bound`): another value may
    select another graph (Silero's ``sr``: another network), so it names another log;
    none leaves the key as it was.
    """
    if isinstance(input_shapes, list):  # TensorSpec list
        input_shapes = {s.name: s.key_shape() for s in input_shapes}
    data = {"sha256": sha256, "shapes": input_shapes}
    if variant:
        data["variant"] = variant
    if bound:
        data["bound"] = bound
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def target_name(preset) -> str:
    """Folder-safe target name: preset name, with the CPU for ``host``, a hash for custom."""
    if preset.name == "host":
        return f"host-{preset.cpu}"
    if preset.name in ("custom", "cuda"):
        digest = hashlib.sha256(json.dumps(preset.target, sort_keys=True).encode()).hexdigest()
        return f"{preset.name}-{digest[:8]}"
    return preset.name


def target_identity(target: dict) -> dict:
    """The parts of a TVM target dict that decide whether a record is valid for it."""
    out = {}
    for key in _TARGET_KEYS:
        value = target.get(key)
        if value in (None, "", [], ()):
            continue
        out[key] = sorted(value) if isinstance(value, (list, tuple)) else value
    if "host" in target and isinstance(target["host"], dict):
        out["host"] = target_identity(target["host"])
    return out


def _target_dict(tvm_target) -> dict:
    """``tvm.target.Target`` -> plain JSON dict (lists for tuples)."""
    return json.loads(json.dumps(dict(tvm_target.export()), default=list))
