"""Sparsity analysis (lwc inspect), the pruner (lwc prune) and its errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lwc import cli, prune, sparsity_analysis
from lwc.errors import LwcError
from lwc.passes.remove_zero_channels import RemoveZeroChannels


def mlp(hidden=64, seed=0):
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((32, hidden)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((hidden, 16)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_block_and_two_four_measures():
    m = np.zeros((8, 8), np.float32)
    m[0, 0] = 1  # one non-zero: one 1x4 block of 16, one 4x4 block of 4
    assert sparsity_analysis.block_occupancy(m, 1, 4) == pytest.approx(1 / 16)
    assert sparsity_analysis.block_occupancy(m, 4, 4) == pytest.approx(1 / 4)
    assert sparsity_analysis.block_occupancy(m, 8, 1) == pytest.approx(1 / 8)
    assert sparsity_analysis.two_four_fraction(m) == 1.0
    assert sparsity_analysis.two_four_fraction(np.ones((2, 8))) == 0.0
    assert sparsity_analysis.block_occupancy(np.ones((3, 5)), 4, 4) == 1.0  # padded edges


def test_analyze_reports_zero_channels():
    model = mlp()
    w1 = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w1[:, :8] = 0  # 8 output columns (channels) of MatMul B[K, N]
    w1[5, :] = 0  # one input row
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w1, "w1"))
    first = sparsity_analysis.analyze(model)[0]
    assert first.op == "MatMul" and first.out_channels == 64 and first.in_channels == 32
    assert first.zero_out_channels == 8 and first.zero_in_channels == 1
    assert first.zero_fraction == pytest.approx((8 * 32 + 56) / (32 * 64))


@pytest.mark.parametrize("method", ["unstructured", "unstructured:layer", "block:1x4", "block:4x4", "block:8x1"])
def test_prune_reaches_amount(method):
    result = prune.prune(mlp(), method, 0.75)
    assert result.to_json()["zero_fraction"] == pytest.approx(0.75, abs=0.02)
    onnx.checker.check_model(result.model)
    assert result.deviation and 0 < result.deviation[0]["cosine"] < 1
    assert any("fine-tuning" in n for n in result.notes)
    if method.startswith("block:1x4"):
        assert all(layer["block_1x4"] == pytest.approx(0.25, abs=0.02) for layer in result.layers)


def test_prune_keeps_names_and_graph():
    original = mlp()
    pruned = prune.prune(original, "block:1x4", 0.5, measure=False).model
    assert [n.op_type for n in pruned.graph.node] == [n.op_type for n in original.graph.node]
    assert {t.name for t in pruned.graph.initializer} == {t.name for t in original.graph.initializer}


def test_channel_prune_is_physically_removable():
    result = prune.prune(mlp(), "channel:l2", 0.5)
    layer = result.layers[0]
    assert layer["channels_pruned"] == 32 and layer["zero_out_channels"] == 32
    assert result.layers[1]["channels_pruned"] == 0  # produces the graph output
    p = RemoveZeroChannels()
    shrunk = p(result.model)
    assert p.last_report.total_removed == 32
    assert sparsity_analysis.count_flops(shrunk) < sparsity_analysis.count_flops(result.model)


def test_channel_prune_round_to_keeps_whole_vector_lanes():
    """--round-to 16: 64 channels at amount 0.3 keep 48 (nearest multiple of 16 to 45), not 45."""
    exact = prune.prune(mlp(), "channel:l1", 0.3, measure=False)
    assert exact.layers[0]["channels_pruned"] == 19
    rounded = prune.prune(mlp(), "channel:l1", 0.3, measure=False, round_to=16)
    assert rounded.layers[0]["channels_pruned"] == 16
    # the weakest channels go first either way: the rounded set is a subset of the exact one
    zero = [set(np.flatnonzero(~np.any(numpy_helper.to_array(r.model.graph.initializer[1]).reshape(1, -1) != 0, 0)))
            for r in (exact, rounded)]
    assert zero[1] <= zero[0]
    # kept = total - pruned, rounded to the nearest multiple (at least one multiple)
    assert [prune._round_keep(n, n, 0.3, 16) for n in (8, 24, 32, 88, 200)] == [0, 8, 16, 24, 56]
    assert prune._round_keep(64, 64, 0.3, 1) == 19
    with pytest.raises(LwcError, match="--round-to 0"):
        prune.prune(mlp(), "channel:l1", 0.3, round_to=0)
    with pytest.raises(LwcError, match="channel:\\* methods only"):
        prune.prune(mlp(), "block:1x4", 0.3, round_to=4)


def test_errors():
    with pytest.raises(LwcError, match=r"outside \[0, 1\)"):
        prune.prune(mlp(), "unstructured", 1.0)
    with pytest.raises(LwcError, match=r"outside \[0, 1\)"):
        prune.prune(mlp(), "unstructured", -0.1)
    with pytest.raises(LwcError, match="unknown pruning method 'magic'.*block:RxC"):
        prune.prune(mlp(), "magic", 0.5)
    with pytest.raises(LwcError, match="unknown pruning method"):
        prune.prune(mlp(), "block:0x4", 0.5)
    relu_only = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    with pytest.raises(LwcError, match="no prunable weights"):
        prune.prune(relu_only, "unstructured", 0.5)


def test_cli_prune_and_inspect(tmp_path, capsys):
    src, dst = tmp_path / "model.onnx", tmp_path / "pruned.onnx"
    onnx.save(mlp(), src)
    assert cli.main(["prune", str(src), "--method", "block:1x4", "--amount", "0.8", "-o", str(dst)]) == 0
    text = capsys.readouterr().out
    assert "cosine vs unpruned" in text and "fine-tuning" in text and dst.is_file()
    assert cli.main(["inspect", str(dst), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sparsity"][0]["blocks"]["1x4"] == pytest.approx(0.2, abs=0.02)
    assert cli.main(["inspect", str(dst)]) == 0
    assert "1x4" in capsys.readouterr().out
    assert cli.main(["prune", str(src), "--method", "channel:l1", "--amount", "1.5", "-o", str(dst)]) == 2
    assert "outside [0, 1)" in capsys.readouterr().err
    assert cli.main(["prune", str(src), "--method", "bogus", "--amount", "0.3", "-o", str(dst)]) == 2
    assert "unknown pruning method" in capsys.readouterr().err


def _compile_json(capsys, *args) -> dict:
    assert cli.main(["compile", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_disable_sparsity_passes(tmp_path, capsys):
    """--disable-pass accepts the sparsity stage's passes; an unknown name lists them."""
    channel = tmp_path / "channel.onnx"
    onnx.save(prune.prune(mlp(), "channel:l1", 0.5, measure=False).model, channel)
    out = str(tmp_path / "m.so")
    on = _compile_json(capsys, str(channel), "-o", out)
    assert "RemoveZeroChannels" in on["passes"]
    off = _compile_json(capsys, str(channel), "-o", out, "--disable-pass", "RemoveZeroChannels")
    assert "RemoveZeroChannels" not in off["passes"]
    assert off["sparsity"]["disabled"] == ["RemoveZeroChannels"]
    assert "remove_zero_channels" not in off["sparsity"]

    block = tmp_path / "block.onnx"
    onnx.save(prune.prune(mlp(), "block:1x4", 0.9, measure=False).model, block)
    forced = _compile_json(capsys, str(block), "-o", out, "--sparsity", "force")
    assert "DenseToSparse" in forced["passes"]
    skipped = _compile_json(capsys, str(block), "-o", out, "--sparsity", "force",
                            "--disable-pass", "DenseToSparse", "--disable-pass", "Conv1x1ToSparse")
    assert "DenseToSparse" not in skipped["passes"] and "dense_to_sparse" not in skipped["sparsity"]

    assert cli.main(["compile", str(block), "-o", out, "--disable-pass", "NoSuchPass"]) == 2
    err = capsys.readouterr().err
    assert "NoSuchPass" in err and "RemoveZeroChannels" in err and "DenseToSparse" in err


def test_cli_compile_prints_and_reports_sparsity_decisions(tmp_path, capsys):
    block = tmp_path / "block.onnx"
    onnx.save(prune.prune(mlp(), "block:1x4", 0.9, measure=False).model, block)
    page = tmp_path / "r.html"
    assert cli.main(["compile", str(block), "-o", str(tmp_path / "m.so"), "--report", str(page)]) == 0
    manifest = json.loads((tmp_path / "m.json").read_text())["sparsity"]
    decisions = manifest["dense_to_sparse"]
    used = sum(d["used"] for d in decisions)
    out = capsys.readouterr().out
    if used:
        assert f"sparsity auto: BSR kernel for {used} of {len(decisions)} block-sparse layers" in out
    else:  # every layer measured faster dense: no sparsity line at all
        assert "BSR kernel" not in out
    html = page.read_text()
    assert "<h2>Sparsity</h2>" in html and all(d["reason"].split(" (")[0] in html for d in decisions)
