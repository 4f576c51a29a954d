"""dpl pattern helpers shared by lwc's passes (commutative products and sums)."""

from __future__ import annotations

from itertools import permutations

from tvm.relax.dpl import is_op


def mul(a, b):
    """a * b in either operand order."""
    return is_op("relax.multiply")(a, b) | is_op("relax.multiply")(b, a)


def add(a, b):
    """a + b in either operand order."""
    return is_op("relax.add")(a, b) | is_op("relax.add")(b, a)


def product3(a, b, c):
    """a * b * c in any association and order."""
    result = None
    for x, y, z in permutations((a, b, c)):
        pat = mul(mul(x, y), z)
        result = pat if result is None else result | pat
    return result
