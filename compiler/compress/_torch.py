"""torch, imported on first use: it is the optional ``torch`` extra."""

from __future__ import annotations

from lwc.errors import LwcError


def torch():
    """The ``torch`` module.

    Raises:
        LwcError: torch is not installed.
    """
    try:
        import torch as module
    except ImportError:
        raise LwcError("lwc.compress needs torch: pip install 'lwc[torch]'") from None
    return module
