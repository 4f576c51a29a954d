"""MergeParallelBranches: parallel convs / matmuls reading the same input become one wider op + split.

Math (conv): for branches y_i = act(conv2d(x, W_i) + b_i), i = 1..n, with the same input x and
the same conv attributes, concat_c(y_1..y_n) = act(conv2d(x, concat_O(W_i)) + concat(b_i)):
each output channel of a conv depends only on its own filter, so stacking the filters along
O gives the branch outputs side by side on the channel axis; ``split`` recovers them.
Matmul: x @ [W_1 | ... | W_n] = [x @ W_1 | ... | x @ W_n] (columns are independent); TVM's
``relax.transform.CombineParallelMatmul`` does this rewrite (bias add and relu/gelu/silu
included); it only matches weights that are function parameters, so this pass lifts the
constant weights to parameters, runs it, and binds them back.

Why: inception modules (3-4 1x1 convs on one input) and Q/K/V projections run several
narrow GEMMs that each read the whole input; one wider GEMM reads it once and gives the
schedule a wider N to vectorise and parallelise. Cost: the split copies the outputs.

Rule (conv), all required, else declined with the reason:
- same input tensor, conv2d NCHW/OIHW, groups == 1, the same kernel size, strides,
  padding, dilation and dtype;
- constant weights (and constant per-channel biases, when the branches have biases);
- the same epilogue on every branch: bias add or not, then relu or nothing;
- narrow branches: each at most :data:`MAX_BRANCH_CHANNELS` output channels (a wider conv
  is already a wide GEMM; widening it buys little and the split copy costs);
- at least :data:`MIN_BRANCHES` branches (two branches give conv + split = two kernels,
  no fewer than before).
Matmul: weights constant 2-D, at least MIN_BRANCHES branches, each at most
MAX_BRANCH_CHANNELS columns.

Before::  a = relu(conv2d(x, W1) + b1); b = relu(conv2d(x, W2) + b2); c = relu(conv2d(x, W3) + b3)
After::   m = relu(conv2d(x, concat(W1, W2, W3)) + concat(b1, b2, b3)); s = split(m, [o1, o1 + o2], axis=1)
          a = s[0]; b = s[1]; c = s[2]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from lwc.passes._support import Bindings, PassStats, const, const_value

#: Branches wider than this (output channels / columns) are not merged (see module doc).
MAX_BRANCH_CHANNELS = 256

#: Fewest branches worth merging: 3 (2 would trade two conv kernels for conv + split).
MIN_BRANCHES = 3


@dataclass
class _Branch:
    conv_var: relax.Var
    chain: list  # bound vars of conv, bias add, activation (those present), in order
    weight: np.ndarray
    bias: np.ndarray | None
    act: str | None

    @property
    def tail(self) -> relax.Var:
        return self.chain[-1]

    @property
    def channels(self) -> int:
        return int(self.weight.shape[0])


def _op(value) -> str:
    return getattr(getattr(value, "op", None), "name", "") if isinstance(value, relax.Call) else ""


def _const_through_reshape(expr, values) -> np.ndarray | None:
    """The value of a constant, or of ``reshape(constant)`` bound to a variable (bias adds)."""
    value = const_value(expr)
    if value is not None or not isinstance(expr, relax.Var):
        return value
    bound = values.get(expr)
    if _op(bound) == "relax.reshape":
        inner = const_value(bound.args[0])
        shape = tuple(int(d) for d in bound.ty.shape.values) if inner is not None else None
        return inner.reshape(shape) if shape is not None else None
    return None


def _conv_key(call, weight) -> tuple:
    a = call.attrs
    return (tuple(weight.shape[2:]), tuple(int(v) for v in a.strides), tuple(int(v) for v in a.padding),
            tuple(int(v) for v in a.dilation), str(a.out_dtype))


def _differs(key_a: tuple, key_b: tuple) -> str:
    names = ("kernel size", "strides", "padding", "dilation", "out dtype", "bias", "activation")
    for name, a, b in zip(names, key_a, key_b):
        if a != b:
            return f"{name} {a} vs {b}"
    return "same"


@tvm.transform.module_pass(opt_level=0, name="MergeParallelBranches")
class MergeParallelBranches:
    """Merge narrow parallel convs (and constant-weight matmuls) on one input; see module doc."""

    def __init__(self, merge_convs: bool = True, merge_matmuls: bool = True):
        """Args: merge_convs / merge_matmuls: which of the two rewrites to run."""
        self.merge_convs = merge_convs
        self.merge_matmuls = merge_matmuls
        self.stats = PassStats()

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        if self.merge_convs:
            mod = self._merge_convs(mod)
        if self.merge_matmuls:
            mod = self._merge_matmuls(mod)
        return mod

    # ---- convs -------------------------------------------------------------------

    def _merge_convs(self, mod: tvm.IRModule) -> tvm.IRModule:
        updates = {}
        for gvar, func in mod.functions.items():
            if not isinstance(func, relax.Function):
                continue
            groups = self._conv_groups(func)
            if groups:
                updates[gvar] = relax.analysis.remove_all_unused(_ConvMerger(mod, groups).visit_expr(func))
        if not updates:
            return mod
        mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    def _conv_groups(self, func: relax.Function) -> list[list[_Branch]]:
        bindings = Bindings(func)
        values = {var: value for value, var in bindings.var_of.items()}
        readers: dict = defaultdict(list)
        for var, value in values.items():
            for used in relax.analysis.free_vars(value):
                readers[used].append(var)
        by_input: dict = defaultdict(list)
        for var, value in values.items():
            if _op(value) == "relax.nn.conv2d" and isinstance(value.args[0], relax.Var):
                by_input[value.args[0]].append(var)
        groups = []
        for convs in by_input.values():
            if len(convs) < 2:
                continue
            branches = []
            for conv_var in convs:
                branch, reason = self._branch(conv_var, values, readers, bindings)
                if reason:
                    self.stats.declined.append((conv_var.name, reason))
                else:
                    branches.append(branch)
            groups.extend(self._partition(branches, values))
        return groups

    @staticmethod
    def _branch(conv_var, values, readers, bindings) -> tuple[_Branch | None, str | None]:
        call = values[conv_var]
        a = call.attrs
        weight = const_value(call.args[1])
        if weight is None:
            return None, "weight is not constant"
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
            return None, f"layout {a.data_layout}/{a.kernel_layout} is not NCHW/OIHW"
        if int(a.groups) != 1:
            return None, f"grouped conv (groups={int(a.groups)})"
        chain, bias, act = [conv_var], None, None

        def only_reader(var):
            users = readers.get(var, [])
            return users[0] if len(users) == 1 and bindings.uses[var] == 1 else None

        nxt = only_reader(conv_var)
        if nxt is not None and _op(values[nxt]) == "relax.add":
            add = values[nxt]
            other = add.args[1] if add.args[0].same_as(conv_var) else add.args[0]
            b = _const_through_reshape(other, values)
            if b is not None and b.size == weight.shape[0] and b.shape in ((1, b.size, 1, 1), (b.size, 1, 1)):
                chain.append(nxt)
                bias = b.reshape(-1)
                nxt = only_reader(nxt)
        if nxt is not None and _op(values[nxt]) == "relax.nn.relu":
            chain.append(nxt)
            act = "relax.nn.relu"
        return _Branch(conv_var, chain, weight, bias, act), None

    def _partition(self, branches: list[_Branch], values) -> list[list[_Branch]]:
        parts: dict = defaultdict(list)
        for br in branches:
            key = (*_conv_key(values[br.conv_var], br.weight), br.bias is not None, br.act)
            parts[key].append(br)
        if not parts:
            return []
        main_key = max(parts, key=lambda k: len(parts[k]))
        groups = []
        for key, members in parts.items():
            if len(members) < 2:
                other = main_key if main_key != key else next((k for k in parts if k != key), None)
                reason = ("its siblings on the same input were declined" if other is None else
                          f"differs from its siblings on the same input: {_differs(key, other)}")
                for br in members:
                    self.stats.declined.append((br.conv_var.name, reason))
                continue
            wide = [br for br in members if br.channels > MAX_BRANCH_CHANNELS]
            if wide:
                for br in wide:
                    self.stats.declined.append((br.conv_var.name, f"{br.channels} output channels > "
                                                f"{MAX_BRANCH_CHANNELS} (already a wide GEMM)"))
                members = [br for br in members if br.channels <= MAX_BRANCH_CHANNELS]
            if len(members) < MIN_BRANCHES:
                for br in members:
                    self.stats.declined.append((br.conv_var.name, f"only {len(members)} mergeable branches "
                                                f"(< {MIN_BRANCHES}: no kernel saved)"))
                continue
            groups.append(members)
            self.stats.changed["conv groups merged"] += 1
            self.stats.changed["convs merged"] += len(members)
        return groups

    # ---- matmuls ---------------------------------------------------------------

    def _merge_matmuls(self, mod: tvm.IRModule) -> tvm.IRModule:
        if "main" not in {gv.name_hint for gv in mod.get_global_vars()}:
            return mod
        func = mod["main"]
        lifted, lifted_func = _lift_matmul_weights(func)
        if sum(name.startswith("lwc_merge_w") for name in lifted) < MIN_BRANCHES:
            return mod
        by_var = {var: name for name, (var, _) in lifted.items()}

        def check(_lhs, rhs, _bias, _bindings) -> bool:
            names = [by_var.get(r) for r in rhs]
            where = ", ".join(n or "?" for n in names)
            if any(n is None for n in names):
                self.stats.declined.append((where, "weights are not all constant (concat would copy at run time)"))
                return False
            widths = [int(lifted[n][1].shape[-1]) for n in names]
            if len(rhs) < MIN_BRANCHES:
                self.stats.declined.append((where, f"only {len(rhs)} branches (< {MIN_BRANCHES})"))
                return False
            if max(widths) > MAX_BRANCH_CHANNELS:
                self.stats.declined.append((where, f"a branch has {max(widths)} columns > {MAX_BRANCH_CHANNELS}"))
                return False
            self.stats.changed["matmul groups merged"] += 1
            self.stats.changed["matmuls merged"] += len(rhs)
            return True

        tmp = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
        tmp["main"] = lifted_func
        tmp = relax.transform.CombineParallelMatmul(check)(tmp)
        if not self.stats.changed["matmul groups merged"]:
            return mod
        arrays = {name: array for name, (_, array) in lifted.items()}
        return relax.transform.BindParams("main", arrays)(tmp)


def _lift_matmul_weights(func: relax.Function):
    """Constant 2-D matmul weights of ``func`` turned into new parameters.

    Returns:
        ({param name: (param var, array)}, the function with those parameters appended and
        the constants replaced by them).
    """
    lifter = _WeightLifter()
    body = lifter.visit_expr(func.body)
    params = [var for _, var, _ in lifter.lifted]
    new = relax.Function(list(func.params) + params, body, func.ret_ty, func.is_pure, func.attrs, func.span)
    return {name: (var, array) for name, var, array in lifter.lifted}, new


@mutator
class _WeightLifter(PyExprMutator):
    """Replace constant 2-D matmul weights and 1-D added biases by fresh Vars (in ``lifted``).

    CombineParallelMatmul matches weights and biases that are Vars only.
    """

    def __init__(self):
        super().__init__()
        self.lifted: list[tuple[str, relax.Var, np.ndarray]] = []

    def visit_call_(self, call):  # noqa: D102
        call = super().visit_call_(call)
        op = _op(call)
        if op in ("relax.matmul", "relax.add"):
            array = const_value(call.args[1])
            if array is not None and array.ndim == (2 if op == "relax.matmul" else 1):
                var = self._lift(array, "w" if op == "relax.matmul" else "b")
                if op == "relax.add":
                    return relax.op.add(call.args[0], var)
                return relax.op.matmul(call.args[0], var, out_dtype=call.attrs.out_dtype)
        return call

    def _lift(self, array: np.ndarray, kind: str) -> relax.Var:
        name = f"lwc_merge_{kind}{len(self.lifted)}"
        var = relax.Var(name, relax.TensorType(array.shape, str(array.dtype)))
        self.lifted.append((name, var, array))
        return var


@mutator
class _ConvMerger(PyExprMutator):
    """Emit one merged conv (+ bias, relu) and a split per group; drop the branches' bindings."""

    def __init__(self, mod, groups: list[list[_Branch]]):
        super().__init__(mod)
        self.first = {group[0].conv_var: group for group in groups}
        self.dropped = {var for group in groups for br in group for var in br.chain}

    def visit_var_binding_(self, binding):  # noqa: D102
        var = binding.var
        if var in self.first:
            self._emit_group(self.first[var], binding.value)
        elif var in self.dropped:
            return
        else:
            super().visit_var_binding_(binding)

    def _emit_group(self, group: list[_Branch], conv) -> None:
        a = conv.attrs
        x = self.visit_expr(conv.args[0])
        weight = np.concatenate([br.weight for br in group], axis=0)
        merged = self.builder_.emit(relax.op.nn.conv2d(
            x, const(weight), strides=a.strides, padding=a.padding, dilation=a.dilation, groups=1,
            data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW", out_dtype=a.out_dtype))
        if group[0].bias is not None:
            bias = np.concatenate([br.bias for br in group]).reshape(1, -1, 1, 1)
            merged = self.builder_.emit(relax.op.add(merged, const(bias.astype(weight.dtype))))
        if group[0].act == "relax.nn.relu":
            merged = self.builder_.emit(relax.op.nn.relu(merged))
        bounds = np.cumsum([br.channels for br in group])[:-1].tolist()
        parts = self.builder_.emit(relax.op.split(merged, bounds, axis=1))
        for i, br in enumerate(group):
            item = relax.TupleGetItem(parts, i)
            if isinstance(br.tail, relax.DataflowVar):
                new = self.builder_.emit(item)
            else:
                new = self.builder_.emit_output(item)
            self.set_var_remap(br.tail, new)
