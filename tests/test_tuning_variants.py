"""Tuning the graph compile builds: graph-changing options (--quantize int8 with its
calibration, --sparsity, --disable-pass) go through ``lwc tune`` and name the log folder.

The model key gets a variant component that is empty for the default options, so the
committed fp32 logs keep their folder names; any other option set gets a folder of its
own, and ``lwc compile`` with the same options finds it. Kept fast: a tiny fp32 conv
model quantized on random calibration data, 2 trials per task, a 16-candidate population.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

import ort_reference
from lwc import driver
from lwc.errors import LwcError
from lwc.options import CompileOptions
from lwc.prepare import prepare as prepare_stage
from lwc.quantize import QuantizeOptions
from lwc.tuning.apply import prepare, task_workloads
from lwc.tuning.database import RECORD_FILE, WORKLOAD_FILE, _workload_key
from lwc.tuning.keys import model_key, target_name
from lwc.tuning.logs import MANIFEST, find_log, read_manifest
from lwc.tuning.search import tune

QUICK = dict(runner_min_repeat_ms=5, population_size=16)
REPO = Path(__file__).resolve().parent.parent
SHAPE = {"x": [1, 8, 12, 12]}


def conv_relu_model() -> onnx.ModelProto:
    """fp32 x[1,8,12,12] -> Conv 3x3 (16, pad 1, bias) -> Relu -> Conv 1x1 (8): two int8 layers."""
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "w1"),
             nh.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "b1"),
             nh.from_array(rng.normal(0, 0.2, (8, 16, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "conv_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE["x"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def int8(**kw) -> QuantizeOptions:
    return QuantizeOptions(calib_random=kw.pop("calib_random", 4), progress=False, **kw)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("variants") / "conv.onnx"
    onnx.save(conv_relu_model(), path)
    return path


# --------------------------------------------------------------------------- keys


def graph_variant(quantize=None, sparsity="auto", disabled_passes=(), conv_layout=None) -> str:
    """The variant key of these graph options (:meth:`CompileOptions.variant_key`)."""
    return CompileOptions(quantize=quantize, sparsity=sparsity, disabled_passes=disabled_passes,
                          conv_layout=conv_layout).variant_key()


def prepared_module(path, target, shapes, **options):
    """What ``lwc tune`` tunes: the prepared module (``prepare`` with ``tuning_run``)."""
    return prepare_stage(path, target, shapes, CompileOptions(**options), tuning_run=True)


def test_default_options_have_no_variant_and_keep_the_old_key():
    assert graph_variant() == ""
    assert graph_variant(None, "auto", ()) == ""
    assert model_key("ab" * 32, {"x": [1, 3]}, "") == model_key("ab" * 32, {"x": [1, 3]})


def test_each_graph_option_gives_its_own_variant(tmp_path):
    variants = {
        graph_variant(quantize=int8()),
        graph_variant(sparsity="off"),
        graph_variant(sparsity="force"),
        graph_variant(disabled_passes=("FoldBatchNorm",)),
    }
    assert "" not in variants and len(variants) == 4
    assert all(len(v) == 8 for v in variants)
    # order and repetition of --disable-pass do not matter
    assert graph_variant(disabled_passes=("A", "B")) == graph_variant(disabled_passes=("B", "A", "B"))
    keys = {model_key("ab" * 32, {"x": [1, 3]}, v) for v in variants | {""}}
    assert len(keys) == 5
    # issue 24: the calibration (samples, method) changes scales only, and no kernel holds a
    # scale (LiftQuantParams): every int8 calibration shares one log folder
    assert graph_variant(quantize=int8(calib_random=8)) == graph_variant(quantize=int8())
    assert graph_variant(quantize=int8(method="minmax")) == graph_variant(quantize=int8())


def test_calibration_data_enters_the_manifest_by_content_not_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        np.save(folder / "s0.npy", np.ones(SHAPE["x"], np.float32))

    def variant(folder):
        return CompileOptions(quantize=int8(calib_random=None, calib=str(folder))).variant()

    same = variant(a)
    assert variant(b) == same
    np.save(b / "s0.npy", np.zeros(SHAPE["x"], np.float32))
    assert variant(b) != same
    assert graph_variant(quantize=int8(calib_random=None, calib=str(b))) == graph_variant(
        quantize=int8(calib_random=None, calib=str(a)))  # the log folder is shared all the same
    (a / "notes.txt").write_text("not a sample")  # ignored, like the loader ignores it
    assert variant(a) == same
    with pytest.raises(LwcError, match="not found"):
        graph_variant(quantize=int8(calib_random=None, calib=str(tmp_path / "missing")))


def test_committed_fp32_logs_keep_their_names(ocr_models, zoo_dir):
    """Default options: compile computes the keys of the committed folders (no variant)."""
    from lwc.targets import resolve

    cases = [(ocr_models["cls"], {"x": [1, 3, 48, 192]}, "fcdf8dabbb44"),
             (zoo_dir / "light_squeezenet.onnx", None, "ec3aebf2b7bf")]
    for path, shapes, key in cases:
        if not Path(path).is_file():
            pytest.skip(f"{path} not installed")
        prepared = prepared_module(str(path), "host", shapes)
        assert prepared.model_key == key
        manifest = read_manifest(REPO / "tuning_logs" / f"{key}-host-znver4")
        assert manifest is not None and "variant" not in manifest
    match, _ = find_log("fcdf8dabbb44", resolve("host"), [REPO / "tuning_logs"])
    if target_name(resolve("host")) == "host-znver4":
        assert match is not None and match.name == "fcdf8dabbb44-host-znver4"


# --------------------------------------------------------------------------- tune + compile


@pytest.fixture(scope="module")
def tuned_int8(model_path, tmp_path_factory):
    """(logs root, TuneResult) after tuning the int8 graph of the tiny model."""
    logs = tmp_path_factory.mktemp("logs")
    tasks = len(task_workloads(*_fused(model_path, int8())))
    result = tune(model_path, "host", SHAPE, trials=2 * tasks, log_root=logs, quantize=int8(), **QUICK)
    return logs, result


def _fused(model_path, quantize):
    prepared = prepared_module(str(model_path), "host", SHAPE, quantize=quantize)
    return prepare(prepared.mod, prepared.tvm_target), prepared.tvm_target


def test_tune_int8_uses_the_quantized_graph_and_its_own_folder(model_path, tuned_int8):
    logs, result = tuned_int8
    fp32_key = prepared_module(str(model_path), "host", SHAPE).model_key
    assert not result.log_dir.name.startswith(fp32_key)
    manifest = json.loads((result.log_dir / MANIFEST).read_text())
    assert manifest["variant"]["quantize"]["calib_random"] == 4
    assert manifest["variant"]["quantize"]["method"] == "percentile:99.99"
    # the tasks tuned are integer kernels: some task reads uint8 data
    workloads = task_workloads(*_fused(model_path, int8()))
    text = "".join(wl.script() for wl in workloads)
    assert '"uint8"' in text and '"int8"' in text and len(workloads) == len(result.tasks)
    # every task measured (a tiny elementwise task may have one distinct candidate only);
    # on an AVX-512 host the packed convs' candidates are tensorized and must build and run
    assert all(1 <= t.trials <= 2 and t.best_us for t in result.tasks), [(t.name, t.trials) for t in result.tasks]


def test_compile_int8_finds_the_tuned_folder_and_matches_untuned(model_path, tuned_int8, monkeypatch, tmp_path):
    logs, result = tuned_int8
    monkeypatch.setenv("LWC_TUNING_LOGS", str(logs))
    x = np.random.default_rng(1).normal(0, 1, SHAPE["x"]).astype(np.float32)
    tuned = driver.compile(str(model_path), "host", SHAPE, quantize=int8())
    info = tuned.extra["tuning"]
    assert info["log"] == str(result.log_dir)
    assert info["tuned_tasks"] == info["tasks"] == len(result.tasks)
    _assert_dot_product_instruction(tuned, tmp_path)
    untuned = driver.compile(str(model_path), "host", SHAPE, quantize=int8(), use_tuning_logs=False)
    got, ref = tuned.run({"x": x})[0], untuned.run({"x": x})[0]
    np.testing.assert_array_equal(got, ref)  # integer kernels: schedules change no bit
    # and the QDQ model itself (onnxruntime, op by op: tests/ort_reference.py) agrees within
    # one output step of the last layer
    [expect] = ort_reference.run(tuned.model.onnx_model, {"x": x})
    assert np.max(np.abs(got - expect)) <= 0.05 * np.max(np.abs(expect)) + 1e-6
    # fp32 compile (default options) does not pick up the int8 folder
    fp32 = driver.compile(str(model_path), "host", SHAPE)
    assert fp32.extra["tuning"]["tuned_tasks"] == 0 and fp32.extra["tuning"]["log"] is None
    # issue 24: another calibration (other scales, the same kernels: LiftQuantParams) finds
    # the same folder and a record for every kernel
    other = driver.compile(str(model_path), "host", SHAPE, quantize=int8(calib_random=5, method="minmax"))
    assert other.extra["tuning"]["log"] == str(result.log_dir)
    assert other.extra["tuning"]["tuned_tasks"] == other.extra["tuning"]["tasks"] == len(result.tasks)
    np.testing.assert_array_equal(  # the records change no bit of the other calibration's output
        other.run({"x": x})[0],
        driver.compile(str(model_path), "host", SHAPE, quantize=int8(calib_random=5, method="minmax"),
                       use_tuning_logs=False).run({"x": x})[0])


def _assert_dot_product_instruction(result, tmp_path) -> None:
    """On an x86 host with VNNI or AVX2 the tuned int8 convs are packed and run on the
    host's exact int8 dot product: vpdpbusd (VNNI), else vpmaddwd (AVX2, 16-bit), never
    the saturating vpmaddubsw."""
    import shutil
    import subprocess

    if result.preset.arch != "x86_64" or not {"vnni", "avx2"} & set(result.preset.features):
        return
    assert result.quantization["lowering"]["PackInt8Conv2d"] == 2
    if shutil.which("objdump") is None:
        pytest.skip("objdump not installed")
    so = result.export(tmp_path / "tuned-int8.so")
    asm = subprocess.run(["objdump", "-d", str(so)], capture_output=True, text=True, check=True).stdout
    assert ("vpdpbusd" if "vnni" in result.preset.features else "vpmaddwd") in asm
    assert "vpmaddubsw" not in asm


def test_cli_tune_takes_the_compile_graph_options(model_path, tuned_int8, capsys, monkeypatch):
    from lwc.cli import main

    logs, _ = tuned_int8
    flags = ["--target", "host", "--input-shape", "x:1,8,12,12", "--quantize", "int8", "--calib-random", "4"]
    assert main(["tune", str(model_path), *flags, "--trials", "2", "--log-dir", str(logs), "--quiet"]) == 0
    assert "already has" in capsys.readouterr().out  # same folder as the library call
    monkeypatch.setenv("LWC_TUNING_LOGS", str(logs))
    assert main(["compile", str(model_path), *flags, "-o", str(logs.parent / "int8.so")]) == 0
    out = capsys.readouterr().out
    assert "tuning: " in out and " 0 untuned" in out


def test_cli_tune_calibration_flags_need_quantize(model_path, capsys):
    from lwc.cli import main

    assert main(["tune", str(model_path), "--input-shape", "x:1,8,12,12", "--calib-random", "4"]) == 2
    assert "need --quantize int8" in capsys.readouterr().err


def test_conv_layout_override_names_its_own_log(monkeypatch):
    """--conv-layout NHWC changes every conv kernel: its records get their own folder; the
    environment plays no part (the old LWC_CONV_LAYOUT is ignored)."""
    monkeypatch.setenv("LWC_CONV_LAYOUT", "NHWC")
    assert graph_variant() == ""
    nhwc = graph_variant(conv_layout="nhwc")
    assert nhwc and CompileOptions(conv_layout="nhwc").variant()["conv_layout"] == "NHWC"
    assert graph_variant(conv_layout="NCHW") not in ("", nhwc)


# --------------------------------------------------------------------------- reuse


def test_reuse_records_seeds_the_kernels_two_variants_share(model_path, tmp_path):
    """``lwc tune --disable-pass all --reuse-records LOG``: the passes-off graph starts from
    the default graph's records for every identical kernel and tunes only the others."""
    from lwc.cli import expand_disabled

    logs = tmp_path / "logs"
    off_passes = expand_disabled(["all"])
    assert "PreserveNaN" in off_passes and "FoldBatchNorm" in off_passes
    on_tasks = len(task_workloads(*_fused_fp32(model_path, ())))
    base = tune(model_path, "host", SHAPE, trials=2 * on_tasks, log_root=logs, **QUICK)
    base_trials = {_workload_key(wl): t.trials
                   for wl, t in zip(task_workloads(*_fused_fp32(model_path, ())), base.tasks)}
    off_workloads = task_workloads(*_fused_fp32(model_path, off_passes))
    shared = [_workload_key(wl) in base_trials for wl in off_workloads]
    # the 1x1 conv is the same kernel; the first conv's relu loses its NaN guard (PreserveNaN off)
    assert any(shared) and not all(shared)
    off = tune(model_path, "host", SHAPE, trials=2 * len(off_workloads), log_root=logs,
               disabled_passes=off_passes, reuse_records=(base.log_dir,), **QUICK)
    assert off.log_dir != base.log_dir
    manifest = json.loads((off.log_dir / MANIFEST).read_text())
    copied = manifest["reused_records"][str(base.log_dir)]
    # every record of the shared kernels in the base log (its trials and the rule's record)
    from lwc.tuning.database import open_database

    shared_keys = {_workload_key(wl) for wl, s in zip(off_workloads, shared) if s}
    in_base = sum(_workload_key(r.workload.mod) in shared_keys
                  for r in open_database(base.log_dir).get_all_tuning_records())
    assert copied == in_base >= sum(base_trials[k] for k in shared_keys) > 0
    # the copied tasks start with the base's trials; only the others were measured here
    assert off.resumed_trials == copied
    assert off.trials_run == sum(t.trials for t, s in zip(off.tasks, shared) if not s) > 0
    # running again copies nothing twice
    again = tune(model_path, "host", SHAPE, trials=2 * len(off_workloads), log_root=logs,
                 disabled_passes=off_passes, reuse_records=(base.log_dir,), **QUICK)
    assert again.trials_run == 0
    assert json.loads((off.log_dir / MANIFEST).read_text())["reused_records"][str(base.log_dir)] == copied
    # and compile with the same options finds the folder, every task tuned
    compiled = driver.compile(str(model_path), "host", SHAPE, disabled_passes=off_passes, tuning_log=str(off.log_dir))
    assert compiled.extra["tuning"]["tuned_tasks"] == compiled.extra["tuning"]["tasks"] == len(off_workloads)


def test_reuse_records_refuses_a_folder_that_is_no_log_or_for_another_target(model_path, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LwcError, match="not a tuning log folder"):
        tune(model_path, "host", SHAPE, trials=1, log_root=tmp_path / "logs",
             reuse_records=(tmp_path / "empty",), **QUICK)
    other = tmp_path / "other"
    other.mkdir()
    manifest = json.loads((REPO / "tuning_logs" / "fcdf8dabbb44-host-znver4" / MANIFEST).read_text())
    manifest["target"]["tvm"] = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"}
    (other / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(LwcError, match="--reuse-records .*tuned for"):
        tune(model_path, "host", SHAPE, trials=1, log_root=tmp_path / "logs",
             reuse_records=(other,), **QUICK)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="znver CPUs are x86-64")
def test_reuse_records_from_an_isa_subset_cpu_are_retargeted(model_path, tmp_path, host_as):
    """``lwc tune --reuse-records tuning_logs/<key>-host-znver4`` on a znver5 machine seeds
    the znver5 log with znver4's records, re-targeted (a compile for znver5 applies them);
    a log from a CPU with more ISA stays refused."""
    logs = tmp_path / "logs"
    tasks = len(task_workloads(*_fused_fp32(model_path, ())))
    base = tune(model_path, "host", SHAPE, trials=tasks, log_root=logs, **QUICK)
    older = tmp_path / "older"  # the same records, as if tuned on a znver4
    older.mkdir()
    for name in (RECORD_FILE, WORKLOAD_FILE):
        (older / name).write_bytes((base.log_dir / name).read_bytes())
    manifest = json.loads((base.log_dir / MANIFEST).read_text())
    manifest["target"]["tvm"]["mcpu"] = "znver4"
    (older / MANIFEST).write_text(json.dumps(manifest))
    # every task gets its record from the znver4 log: nothing is measured (no znver5 here)
    newer = tune(model_path, host_as("znver5"), SHAPE, trials=tasks, log_root=logs,
                 reuse_records=(older,), **QUICK)
    assert newer.log_dir.name.endswith("-host-znver5") and newer.trials_run == 0
    # every record of the older log (one trial per task, plus a rule's record where the
    # rule's schedule was measured as one: 3 for 2 tasks on a znver4)
    in_older = len((older / RECORD_FILE).read_text().splitlines())
    assert newer.resumed_trials == in_older >= tasks
    records = [json.loads(line) for line in (newer.log_dir / RECORD_FILE).read_text().splitlines()]
    assert len(records) == in_older and all('"mcpu": "znver5"' in json.dumps(r) for r in records)
    compiled = driver.compile(str(model_path), host_as("znver5"), SHAPE, tuning_log=str(newer.log_dir))
    assert compiled.extra["tuning"]["tuned_tasks"] == tasks
    assert compiled.extra["tuning"].get("tuned_on_cpu") is None  # its own log now
    with pytest.raises(LwcError, match="--reuse-records .*tuned for"):
        tune(model_path, host_as("znver3"), SHAPE, trials=tasks, log_root=logs,
             reuse_records=(older,), **QUICK)


def _fused_fp32(model_path, disabled):
    prepared = prepared_module(str(model_path), "host", SHAPE, disabled_passes=tuple(disabled))
    return prepare(prepared.mod, prepared.tvm_target), prepared.tvm_target


def test_int8_kernels_do_not_depend_on_the_calibration(model_path, tmp_path):
    """LiftQuantParams: other calibration samples and method give other scales but the same
    kernels (tuning workloads), so one log's records serve both; without the pass the
    scales are TIR immediates and the kernels differ."""
    import tvm_ffi

    folders = []
    for name, spread in (("narrow", 1.0), ("wide", 4.0)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(3):
            sample = np.random.default_rng(i).normal(0, spread, SHAPE["x"]).astype(np.float32)
            np.save(folder / f"s{i}.npy", sample)
        folders.append(folder)

    def workloads(quantize, disabled=()):
        prepared = prepared_module(str(model_path), "host", SHAPE, quantize=quantize, disabled_passes=disabled)
        return task_workloads(prepare(prepared.mod, prepared.tvm_target), prepared.tvm_target)

    def unmatched(a, b):  # kernels of a with no structurally equal kernel in b (how records match)
        return [x for x in a if not any(tvm_ffi.structural_equal(x, y) for y in b)]

    first = int8(calib_random=None, calib=str(folders[0]))
    other = int8(calib_random=None, calib=str(folders[1]), method="minmax")
    assert unmatched(workloads(first), workloads(other)) == []
    assert unmatched(workloads(first, ("LiftQuantParams",)), workloads(other, ("LiftQuantParams",)))
