"""Compile report (manifest "report" + HTML) and the per-kernel profile, on a tiny model."""

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from lwc import artifact, driver, profile, report

RNG = np.random.default_rng(0)


def _t(name, shape):
    return helper.make_tensor(name, TensorProto.FLOAT, shape, RNG.standard_normal(shape).astype(np.float32).ravel())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """conv -> BatchNorm -> HardSwish -> conv -> Relu, opset 14."""
    var = helper.make_tensor("v", TensorProto.FLOAT, [8], RNG.uniform(0.5, 2, 8).astype(np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv_1"),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"], name="bn_1"),
        helper.make_node("HardSwish", ["bn"], ["hs"], name="hswish_1"),
        helper.make_node("Conv", ["hs", "w2"], ["c2"], name="conv_2"),
        helper.make_node("Relu", ["c2"], ["y"], name="relu_2"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [_t("w1", [8, 3, 3, 3]), _t("g", [8]), _t("b", [8]), _t("m", [8]), var, _t("w2", [4, 8, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    result = driver.compile(model, "host")
    path = result.export(tmp_path_factory.mktemp("report") / "tiny.so")
    return result, path


def test_manifest_has_report(compiled):
    result, path = compiled
    rep = json.loads(path.with_suffix(".json").read_text())["report"]
    passes = {p["name"]: p for p in rep["passes"]}
    assert passes["FoldBatchNorm"]["changed"] == {"batch_norm folded": 1}
    assert passes["FuseHardSwish"]["changed"] == {"hard_swish fused": 1}
    counts = rep["kernel_count"]
    assert counts["with_lwc_passes"] < counts["without_lwc_passes"]
    nodes = [n for k in rep["kernels"] for n in k["onnx_nodes"]]
    assert {"conv_1", "bn_1", "hswish_1", "conv_2", "relu_2"} <= set(nodes)


def test_html_report(compiled, tmp_path):
    result, _ = compiled
    page = report.write_html(result.describe(), tmp_path / "r.html").read_text()
    assert "<svg" in page and "FoldBatchNorm" in page and "batch_norm folded" in page
    assert "conv_1" in page


def test_profile_lists_kernels(compiled):
    _, path = compiled
    rows = profile.profile_artifact(artifact.load(path), repeat=2)
    names = [r.name for r in rows]
    assert any(n.startswith("fused_conv2d") for n in names)
    assert abs(sum(r.share for r in rows) - 1.0) < 1e-6
    assert "GFLOP/s" in profile.format_profile(rows)
