import numpy as np
import tvm
from support import TOLERANCE, assert_unchanged
from tvm import relax

from lwc.passes._support import count_ops
from lwc.passes.fold_pad_into_conv import FoldPadIntoConv

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3, 3, 3)).astype("float32")


def pad_conv(pad_width, pad_value=0.0):
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            p = bb.emit(relax.op.nn.pad(x, pad_width, "constant", pad_value))
            out = bb.emit_output(relax.op.nn.conv2d(p, relax.const(W), padding=[1, 1, 1, 1]))
        bb.emit_func_output(out)
    return bb.get()


def run(mod, x):
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_folds_spatial_zero_pad():
    pass_obj = FoldPadIntoConv()
    mod = pass_obj(pad_conv([0, 0, 0, 0, 1, 2, 0, 3]))
    assert count_ops(mod, "relax.nn.pad") == 0
    conv = mod["main"].body.blocks[0].bindings[-1].value
    assert [int(p) for p in conv.attrs.padding] == [2, 1, 3, 4]


def test_declines_nonzero_pad_value():
    pass_obj = FoldPadIntoConv()
    assert_unchanged(pass_obj, pad_conv([0, 0, 0, 0, 1, 1, 1, 1], pad_value=1.0))
    assert pass_obj.stats.declined[0][1] == "pad value is not 0"


def test_numerics_unchanged():
    mod = pad_conv([0, 0, 0, 0, 1, 2, 0, 3])
    x = RNG.standard_normal((1, 3, 8, 8)).astype("float32")
    np.testing.assert_allclose(run(FoldPadIntoConv()(mod), x), run(mod, x), **TOLERANCE["float32"])
