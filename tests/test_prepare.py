"""The prepare stage and the one options value (issue: one compile pipeline)."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lwc import driver, pipeline
from lwc.errors import LwcError
from lwc.options import DEFAULT, CompileOptions
from lwc.prepare import Prepared, prepare

RNG = np.random.default_rng(0)


def conv_relu_model():
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], RNG.standard_normal(108).astype("float32"))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_defaults_have_no_variant():
    assert DEFAULT.variant() == {} and DEFAULT.variant_key() == ""


def test_every_graph_option_names_its_own_variant():
    keys = {CompileOptions(**change).variant_key() for change in (
        {"sparsity": "off"}, {"sparsity": "force"}, {"conv_layout": "NHWC"},
        {"disabled_passes": ("PreserveNaN",)}, {"precision": "fp16"})}
    assert "" not in keys and len(keys) == 5
    # order and duplicates of disabled passes do not matter; nvcc is not a graph option
    a = CompileOptions(disabled_passes=("FuseSilu", "PreserveNaN"))
    b = CompileOptions(disabled_passes=("PreserveNaN", "FuseSilu", "PreserveNaN"))
    assert a.variant_key() == b.variant_key()
    assert CompileOptions(nvcc="/opt/nvcc").variant_key() == ""


@pytest.mark.parametrize("bad, flag", [({"sparsity": "some"}, "--sparsity"), ({"precision": "int4"}, "--precision"),
                                       ({"conv_layout": "NCHWc"}, "--conv-layout")])
def test_bad_option_values_are_one_line_errors(bad, flag):
    with pytest.raises(LwcError, match=flag):
        CompileOptions(**bad)


def test_conv_layout_is_case_insensitive_and_frozen():
    opts = CompileOptions(conv_layout="nhwc")
    assert opts.conv_layout == "NHWC"
    with pytest.raises(AttributeError):
        opts.sparsity = "off"  # frozen


def test_prepare_runs_the_graph_stages_and_builds_nothing():
    prepared = prepare(conv_relu_model(), "host", options=CompileOptions(disabled_passes=("PreserveNaN",)))
    assert isinstance(prepared, Prepared)
    stages = {r.stage for r in prepared.records}
    assert "graph" in stages
    by_name = {r.name: r for r in prepared.records}
    assert by_name["PreserveNaN"].disabled and not by_name["FoldBatchNorm"].disabled
    assert "relax.frontend.from_onnx" in prepared.passes and "PreserveNaN" not in prepared.passes
    # the key names the options: another variant, another key
    other = prepare(conv_relu_model(), "host")
    assert other.model_key != prepared.model_key
    # nothing scheduled yet: every PrimFunc is as the importer / legalizer left it
    assert not any(f.attrs is not None and f.attrs.get("tirx.is_scheduled")
                   for _, f in prepared.mod.functions.items() if hasattr(f, "body") and hasattr(f, "buffer_map"))


def test_unknown_pass_fails_before_import():
    with pytest.raises(LwcError, match="no such pass.*passes by stage: sparsity"):
        prepare("/does/not/exist.onnx", "host", options=CompileOptions(disabled_passes=("FoldAll",)))


def test_every_stage_pass_name_is_accepted():
    names = pipeline.known_pass_names()
    assert {"RemoveZeroChannels", "FoldBatchNorm", "LowerQdqConv2d", "ToMixedPrecision"} <= set(names)
    pipeline.check_pass_names(tuple(names))  # no error


def test_compile_takes_options_or_keywords_not_both():
    with pytest.raises(LwcError, match="not both"):
        driver.compile(conv_relu_model(), "host", options=DEFAULT, sparsity="off")


def test_compile_with_options_matches_onnxruntime():
    model = conv_relu_model()
    x = RNG.standard_normal((1, 3, 8, 8)).astype("float32")
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    for options in (DEFAULT, CompileOptions(conv_layout="NHWC", sparsity="off")):
        got = driver.compile(model, "host", options=options).run({"x": x})[0]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_dumps_and_records_cover_every_stage(tmp_path, monkeypatch):
    """LWC_DUMP_IR writes the module after each pass of the graph and int8 stages, numbered
    across them; --disable-pass works on an int8 pass like on a graph pass."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "passes"))
    from qdq_models import conv_model

    monkeypatch.setenv("LWC_DUMP_IR", str(tmp_path))
    prepared = prepare(conv_model(channels=8, groups=1), "host",
                       options=CompileOptions(disabled_passes=("FuseRequantize",)))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0] == "00_graph_imported.py"
    int8 = [f for f in files if "_int8_" in f]
    assert int8 and int8[0].endswith("_int8_QuantizeBeforeConcat.py")
    assert any(f.endswith("_int8_LowerQdqConv2d.py") for f in int8)
    assert not any("FuseRequantize" in f for f in files)
    by_name = {r.name: r for r in prepared.records}
    assert by_name["FuseRequantize"].disabled and by_name["FuseRequantize"].stage == "int8"
    assert by_name["LowerQdqConv2d"].stats["changed"].get("lowered") == 1
    assert {r.stage for r in prepared.records} >= {"sparsity", "graph", "int8"}
