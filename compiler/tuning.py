"""Tuning records: placeholder until the tuning work lands (see lwc tune)."""

from __future__ import annotations


def apply_records(mod, preset, tvm_target, *, tuning_log=None, enabled=True):
    """Return (module, info) — the module with tuning records applied, and a summary dict."""
    return mod, {"status": "untuned", "tuned_tasks": 0}
