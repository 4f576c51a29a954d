"""lwc.compress: distillation loss, lwc-exact fake-quant, channel shrinking, and a short run of
examples/compress_digits.py (host + arm64 under qemu) -- needs the ``torch`` extra."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'lwc[torch]')")

from lwc import compress
from lwc.errors import LwcError
from lwc.finetune import prune_masks
from lwc.quantize.rewrite import activation_qparams, weight_qparams

ROOT = Path(__file__).resolve().parent.parent
needs_arm64 = pytest.mark.skipif(
    shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-g++") is None,
    reason="needs qemu-user and g++-aarch64-linux-gnu (apt-get install qemu-user g++-aarch64-linux-gnu)",
)


def _softmax(z):
    e = [math.exp(v - max(z)) for v in z]
    return [v / sum(e) for v in e]


# --------------------------------------------------------------------------- distillation


def test_distillation_loss_matches_hand_computed_value():
    s, t, label, temp, alpha = [1.0, 2.0, 0.5], [3.0, -1.0, 0.0], 1, 2.0, 0.3
    p_t = _softmax([v / temp for v in t])
    p_s = _softmax([v / temp for v in s])
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    ce = -math.log(_softmax(s)[label])
    want = alpha * ce + (1 - alpha) * temp * temp * kl

    got = compress.distillation_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([label]), temp, alpha)
    assert got.item() == pytest.approx(want, rel=1e-6)

    f = torch.nn.functional
    s2, t2, y2 = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    ref = f.kl_div(f.log_softmax(s2 / 3, -1), f.softmax(t2 / 3, -1), reduction="batchmean") * 9
    assert compress.distillation_loss(s2, t2, y2, 3.0, 0.0).item() == pytest.approx(ref.item(), rel=1e-5)
    assert compress.distillation_loss(s2, t2, y2, 3.0, 1.0).item() == pytest.approx(
        f.cross_entropy(s2, y2).item(), rel=1e-6)


@pytest.mark.parametrize("temp, alpha", [(0.0, 0.5), (-1.0, 0.5), (2.0, 1.5), (2.0, -0.1)])
def test_distillation_loss_rejects_bad_arguments(temp, alpha):
    with pytest.raises(LwcError):
        compress.distillation_loss(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, dtype=torch.long),
                                   temp, alpha)


@pytest.mark.parametrize("data, match", [
    ((np.zeros((4, 3), np.float32),), "pair"),
    ((np.zeros((4, 3), np.float32), np.zeros(3, np.int64)), "one label per x"),
    ((np.zeros((4, 3), np.float32), np.zeros(4, np.float32)), "integer class"),
])
def test_bad_data_is_an_lwc_error(data, match):
    with pytest.raises(LwcError, match=match):
        compress.fit(torch.nn.Linear(3, 2), data, epochs=1)


def test_distill_learns_from_an_onnx_softmax_teacher(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    w = np.zeros((4, 2), np.float32)
    w[0] = [-5.0, 5.0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=-1)],
        "teacher", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 2])], [numpy_helper.from_array(w, "w")])
    path = tmp_path / "teacher.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    logits = compress.teacher_logits(path, x).numpy()
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], x @ (w[:, 1] - w[:, 0]), rtol=1e-4, atol=1e-4)
    torch.manual_seed(0)
    student = compress.distill(path, torch.nn.Linear(4, 2), (x, y), temperature=2.0, alpha=0.0,
                               epochs=30, lr=0.05, batch_size=16)
    assert (compress.predict(student, x).argmax(1) == y).mean() > 0.95


# --------------------------------------------------------------------------- fake quant


def _qdq_model(scale, zp, shape, axis=None, weights=None) -> bytes:
    """x -> QuantizeLinear -> DequantizeLinear (or, with weights: DequantizeLinear(int8) only)."""
    inits = [numpy_helper.from_array(np.asarray(scale, np.float32), "s"), numpy_helper.from_array(zp, "zp")]
    if weights is None:
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    else:
        inits.append(numpy_helper.from_array(weights, "q"))
        nodes = [helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], axis=axis)]
        inputs = []
    graph = helper.make_graph(nodes, "qdq", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def test_fake_quant_activation_equals_onnxruntime_qdq():
    rng = np.random.default_rng(0)
    lo, hi = -1.3, 4.1
    scale, zp = compress.fake_quant.activation_qparams(lo, hi)
    assert (np.float32(scale), np.uint8(zp)) == activation_qparams(lo, hi)  # lwc's calibration numbers
    x = rng.uniform(lo - 1, hi + 1, (4, 1000)).astype(np.float32)
    # exact ties (k + 0.5) * scale: both must round half to even
    x[0, :200] = ((np.arange(200) - 60 + 0.5) * np.float32(scale)).astype(np.float32)
    sess = ort.InferenceSession(_qdq_model(scale, np.uint8(zp), x.shape), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = compress.fake_quant_activation(torch.from_numpy(x), scale, zp).numpy()
    np.testing.assert_array_equal(got, want)


def test_fake_quant_weight_equals_lwc_int8_weights_and_onnxruntime():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w[2] = 0.0  # an all-zero channel: scale 1
    q, scale = weight_qparams(w, 0)
    sess = ort.InferenceSession(_qdq_model(scale, np.zeros(6, np.int8), w.shape, axis=0, weights=q),
                                providers=["CPUExecutionProvider"])
    want = sess.run(None, {})[0]
    got = compress.fake_quant_weight(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    np.testing.assert_allclose(compress.fake_quant.weight_scales(torch.from_numpy(w)).numpy(), scale, rtol=1e-7)


def test_fake_quant_gradient_is_straight_through():
    x = torch.linspace(-1, 1, 11, requires_grad=True)
    compress.fake_quant_activation(x, 0.1, 10).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(11, np.float32))


def test_qat_wraps_and_strips_every_layer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    x = torch.rand(8, 1, 8, 8)
    qat = compress.prepare_qat(model, x)
    assert sum(type(m).__name__ == "FakeQuantLayer" for m in qat.modules()) == 2
    with torch.no_grad():  # fake-quant stays close to fp32 on the calibration batch
        assert torch.allclose(qat(x), model(x), atol=0.05)
    plain = compress.strip_qat(qat)
    assert [type(m) for m in plain] == [type(m) for m in model]
    with pytest.raises(LwcError, match="no nn.Conv2d"):
        compress.prepare_qat(torch.nn.Sequential(torch.nn.ReLU()), x)
    tuned = compress.qat_finetune(model, (x, torch.arange(8) % 3), epochs=1, batch_size=4)
    assert [type(m) for m in tuned] == [type(m) for m in model]
    assert not torch.equal(tuned[0].weight, model[0].weight)  # trained; the input model is not changed


# --------------------------------------------------------------------------- pruning


def test_shrink_sequential_deletes_zero_channels_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 4 * 4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).eval()
    masks = prune_masks(model, "channel:l1", 0.5)  # lwc's criterion
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_parameter(name).mul_(mask)
    x = torch.rand(2, 1, 8, 8)
    small = compress.shrink_sequential(model, x)
    assert [small[i].out_channels for i in (0, 3)] == [4, 3] and small[6].out_features == 3
    assert small[6].in_features == 3 * 16
    # conv 4x1x3x3+4, conv 3x4x3x3+3, fc 3x48+3, fc 3x3+3
    assert compress.count_parameters(small) == 40 + 111 + 147 + 12
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(LwcError, match="nn.Sequential"):
        compress.shrink_sequential(torch.nn.Linear(2, 2), x)


def test_evaluate_rejects_bad_calls():
    with pytest.raises(LwcError, match="at least one runner"):
        compress.evaluate(np.zeros((2, 3), np.float32), np.zeros(2))
    with pytest.raises(LwcError, match="labels"):
        compress.evaluate(np.zeros((2, 3), np.float32), np.zeros(3), torch=torch.nn.Linear(3, 2))
    with pytest.raises(LwcError, match="cannot run"):
        compress.evaluate(np.zeros((2, 3), np.float32), np.zeros(2), torch=object())


# --------------------------------------------------------------------------- the example, short


def _example():
    spec = importlib.util.spec_from_file_location("compress_digits", ROOT / "examples" / "compress_digits.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.qemu
@needs_arm64
def test_digits_example_quick_runs_end_to_end_on_host_and_arm64(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'lwc[torch]')")
    out = tmp_path / "rows.json"
    assert _example().main(["--quick", "--no-proxy", "--repeat", "20", "--out", str(tmp_path),
                            "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["step"]: r for r in result["rows"]}
    assert list(rows) == ["teacher", "student", "pruned", "int8"]
    assert rows["student"]["params"] < rows["teacher"]["params"] / 3
    assert rows["pruned"]["params"] < rows["student"]["params"]
    assert rows["pruned"]["flops"] < rows["student"]["flops"] < rows["teacher"]["flops"]
    assert rows["int8"]["onnx_bytes"] < rows["pruned"]["onnx_bytes"]
    for r in rows.values():
        assert r["arm64_agrees_with_host"] >= 0.995, r
        assert r["agreement"]["lwc_host vs onnxruntime"] >= 0.98, r
        assert r["accuracy"] > 0.5, r  # learned something (few epochs: no accuracy target)
        assert r["host_latency_ms"] > 0
