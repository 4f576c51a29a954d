"""The pass pipeline as data: registered names, --disable-pass, LWC_DUMP_IR, records."""

import numpy as np
import pytest
from onnx import helper
from support import model, relax_module, tensor

from lwc import pipeline
from lwc.errors import LwcError
from lwc.options import DEFAULT
from lwc.targets import resolve


def conv_relu():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    return model(nodes, {"x": [1, 2, 4, 4]}, {"y": [1, 2, 4, 4]}, [tensor("w", np.ones((2, 2, 1, 1)))])


def test_registered_name_is_class_name():
    for entry in pipeline.PASSES:
        assert entry.factory(resolve("host"), DEFAULT).info.name == entry.name


def test_disable_pass_and_dump_ir(tmp_path, monkeypatch):
    monkeypatch.setenv("LWC_DUMP_IR", str(tmp_path))
    _, records = pipeline.run_passes(relax_module(conv_relu()), resolve("host"), ("PreserveNaN",))
    by_name = {r.name: r for r in records}
    assert by_name["PreserveNaN"].disabled
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0] == "00_graph_imported.py" and files[1] == "01_graph_CanonicalizeClip.py"
    assert not any("PreserveNaN" in f for f in files)


def test_unknown_pass_is_an_error():
    with pytest.raises(LwcError, match="no such pass"):
        pipeline.run_passes(relax_module(conv_relu()), resolve("host"), ("FoldEverything",))


def test_disable_pass_all_means_every_graph_pass_and_keeps_other_names():
    from lwc.cli import expand_disabled

    assert expand_disabled(["all"]) == tuple(pipeline.pass_names())
    # other stages keep their own names; duplicates and case of "all" do not matter
    both = expand_disabled(["DenseToSparse", "ALL", "PreserveNaN"])
    assert both == ("DenseToSparse", *pipeline.pass_names())
    _, records = pipeline.run_passes(relax_module(conv_relu()), resolve("host"), expand_disabled(["all"]))
    assert all(r.disabled for r in records)
