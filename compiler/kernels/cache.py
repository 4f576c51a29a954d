"""Kernels a pass adds to a module: :class:`KernelCache`, one PrimFunc per key.

Used by the int8 conv passes (one kernel per conv geometry) and, through
:class:`lwc.kernels.elementwise.KernelTable`, by the activation passes.
"""

from __future__ import annotations

import tvm
from tvm import relax


class KernelCache:
    """PrimFuncs a pass adds to the module, one per key (e.g. one per conv geometry).

    :meth:`get` makes the function for a new key and names it ``prefix``, ``prefix1``, ...
    (skipping names the module has); :meth:`add_to` adds them all to the module at the end
    of the pass run.
    """

    def __init__(self, mod: tvm.IRModule, prefix: str):
        self.prefix = prefix
        self.taken = {gv.name_hint for gv in mod.get_global_vars()}
        self.builder = relax.BlockBuilder()
        self.funcs: dict[tuple, tuple[relax.GlobalVar, tvm.tirx.PrimFunc]] = {}

    def get(self, key: tuple, make) -> relax.GlobalVar:
        """The function for ``key``, made by ``make()`` the first time."""
        if key not in self.funcs:
            index = len(self.funcs)
            name = f"{self.prefix}{index or ''}"
            while name in self.taken:
                index += 1
                name = f"{self.prefix}{index}"
            self.taken.add(name)
            func = make().with_attr("global_symbol", name)
            self.funcs[key] = (self.builder.add_func(func, name), func)
        return self.funcs[key][0]

    def add_to(self, mod: tvm.IRModule) -> tvm.IRModule:
        if not self.funcs:
            return mod
        out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
        for gvar, func in self.funcs.values():
            out[gvar] = func
        return out
