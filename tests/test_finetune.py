"""lwc.finetune: masked fine-tuning with distillation (needs torch, the ``torch`` extra)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'lwc[torch]')")

from lwc import finetune, prune  # noqa: E402
from lwc.errors import LwcError  # noqa: E402


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


def convnet(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(16, 4),
    )


def batches(shape, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def onnx_mlp(model) -> onnx.ModelProto:
    """The same MLP as ONNX (MatMul with W.T, Add bias, Relu)."""
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    inits, nodes, x = [], [], "x"
    for i, layer in enumerate(layers):
        w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
        inits += [numpy_helper.from_array(np.ascontiguousarray(w.T), f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        x = f"a{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 32])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [8, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("method", ["unstructured", "block:1x4"])
def test_masks_follow_the_lwc_prune_criterion(method):
    model = mlp()
    masks = finetune.prune_masks(model, method, 0.7)
    pruned = prune.prune(onnx_mlp(model), method, 0.7, measure=False).model
    arrays = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    for i, name in enumerate(["0", "2", "4"]):
        np.testing.assert_array_equal(masks[f"{name}.weight"].numpy(), arrays[f"w{i}"].T != 0)


@pytest.mark.parametrize("make, shape, method", [
    (mlp, (8, 32), "block:1x4"),
    (convnet, (4, 3, 8, 8), "channel:l1"),
])
def test_distillation_loss_decreases_and_masks_hold(make, shape, method):
    model = make()
    masks = finetune.prune_masks(model, method, 0.5)
    history: list[float] = []
    out = finetune.masked_finetune(model, batches(shape), method, 0.5, steps=60, lr=3e-3, history=history)
    assert out is model and not out.training and len(history) == 60
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:5])
    assert all("_mask" not in n for n, _ in out.named_buffers())
    params = dict(out.named_parameters())
    for name, keep in masks.items():
        assert isinstance(params[name], torch.nn.Parameter)  # hooks removed: a plain weight
        assert torch.all(params[name].detach()[~keep] == 0), name
    assert (~masks[next(iter(masks))]).float().mean() >= 0.45


def test_channel_pruning_masks_bias_and_batch_norm():
    model = convnet()
    masks = finetune.prune_masks(model, "channel:l2", 0.5)
    dead = ~masks["1.weight"]  # the BatchNorm after the first conv
    assert int(dead.sum()) == 8
    assert torch.equal(~masks["0.bias"], dead) and torch.equal(~masks["1.bias"], dead)
    assert "7.weight" not in masks  # the classifier is left alone


def test_errors():
    model = mlp()
    with pytest.raises(LwcError, match=r"outside \[0, 1\)"):
        finetune.prune_masks(model, "unstructured", 1.0)
    with pytest.raises(LwcError, match="unknown pruning method"):
        finetune.masked_finetune(model, batches((8, 32)), "magic", 0.5)
    with pytest.raises(LwcError, match="no such parameter"):
        finetune.masked_finetune(model, batches((8, 32)), masks={"nope.weight": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(LwcError, match="at least one batch"):
        finetune.masked_finetune(model, [], "unstructured", 0.5)
    with pytest.raises(LwcError, match="no prunable weights"):
        finetune.prune_masks(torch.nn.ReLU(), "unstructured", 0.5)


def test_exported_model_keeps_zeros_and_compiles_to_bsr(tmp_path):
    """fine-tune -> torch.onnx.export -> lwc compile --sparsity force == onnxruntime (Gemm transB path)."""
    import onnxruntime as ort

    import lwc.driver
    from tests.conftest import TOL

    model = finetune.masked_finetune(mlp(), batches((8, 32)), "block:1x4", 0.8, steps=10, lr=1e-3)
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(model, (torch.randn(8, 32),), str(path), dynamo=False, input_names=["x"])
    exported = onnx.load(str(path))
    weights = [numpy_helper.to_array(t) for t in exported.graph.initializer if t.dims and len(t.dims) == 2]
    assert len(weights) == 3 and all((w == 0).mean() >= 0.75 for w in weights)  # block: every layer
    result = lwc.driver.compile(exported, "host", sparsity="force")
    assert "DenseToSparse" in result.passes
    x = np.random.default_rng(2).standard_normal((8, 32)).astype(np.float32)
    (y,) = result.run({"x": x})
    ref = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, ref, **TOL["fp32"])
