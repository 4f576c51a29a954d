import numpy as np
import tvm
from support import assert_unchanged
from tvm import relax

from lwc.passes._support import count_ops
from lwc.passes.remove_no_ops import RemoveNoOps


def build(body):
    """A Relax module main(x: [2, 3, 4]) whose body is ``body(x) -> expr``."""
    x = relax.Var("x", relax.TensorType((2, 3, 4), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def test_removes_identity_reshape_and_cancelling_transposes():
    def body(bb, x):
        r = bb.emit(relax.op.reshape(x, (2, 3, 4)))
        t = bb.emit(relax.op.permute_dims(r, [2, 0, 1]))
        return relax.op.permute_dims(t, [1, 2, 0])

    pass_obj = RemoveNoOps()
    mod = pass_obj(build(body))
    assert count_ops(mod, "relax.reshape") == 0 and count_ops(mod, "relax.permute_dims") == 0
    assert pass_obj.stats.changed["transpose pair cancelled"] == 1


def test_merges_reshape_chain_and_drops_times_one():
    def body(bb, x):
        r = bb.emit(relax.op.reshape(x, (6, 4)))
        r2 = bb.emit(relax.op.reshape(r, (24,)))
        return relax.op.multiply(r2, relax.const(np.ones(24, "float32")))

    mod = RemoveNoOps()(build(body))
    assert count_ops(mod, "relax.reshape") == 1 and count_ops(mod, "relax.multiply") == 0


def test_keeps_real_reshape_and_broadcasting_add():
    def body(bb, x):
        r = bb.emit(relax.op.reshape(x, (6, 4)))
        return relax.op.add(relax.op.permute_dims(r, [1, 0]), relax.const(np.zeros((4, 6), "float32")))

    # add(x, 0) of the same shape goes; everything else stays
    mod = RemoveNoOps()(build(body))
    assert count_ops(mod, "relax.reshape") == 1 and count_ops(mod, "relax.permute_dims") == 1


def test_negative_unchanged():
    def body(bb, x):
        return relax.op.multiply(x, relax.const(np.full((2, 3, 4), 2.0, "float32")))

    assert_unchanged(RemoveNoOps(), build(body))


def test_numerics_identity():
    def body(bb, x):
        r = bb.emit(relax.op.reshape(x, (2, 3, 4)))
        return relax.op.add(r, relax.const(np.zeros((2, 3, 4), "float32")))

    mod = RemoveNoOps()(build(body))
    ex = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype("float32")
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), x)
