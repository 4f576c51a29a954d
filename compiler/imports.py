"""Imports of third-party packages that pull in torch although lwc never hands them a tensor.

``tvm_ffi`` imports torch whenever it is installed (DLPack interop: 1.2 s of a ~20 s compile
here) and onnxsim 0.8's package ``__init__`` imports it through its PPQ integration (1.4 s).
A compile uses neither feature, so these imports run with torch hidden; torch stays
importable afterwards (lwc's torch extra, a user's own code).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def import_without_torch(name: str) -> ModuleType:
    """``importlib.import_module(name)`` with ``import torch`` failing during the import.

    If torch is already imported (a user's process), or ``name`` is, this is a plain import.

    Raises:
        ImportError: ``name`` is not installed.
    """
    if name in sys.modules or "torch" in sys.modules:
        return importlib.import_module(name)
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        return importlib.import_module(name)
    finally:
        del sys.modules["torch"]
