"""lwc tune / tuning records: a tiny real MetaSchedule run (case F6), applying its records
at compile (outputs still match onnxruntime), resume, target/shape keying (case T1), and
tuning over a TVM RPC tracker + server started on 127.0.0.1.

Kept fast: one small MatMul+Add task, 4 trials, a 32-candidate population.
"""

from __future__ import annotations

import json
import platform
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lwc import driver
from lwc.errors import LwcError
from lwc.tuning.database import (
    RECORD_FILE, STALE_FILE, WORKLOAD_FILE, _rebind, _with_stored_names, open_database, repair_database,
    valid_records_for,
)
from lwc.tuning.keys import _target_dict
from lwc.tuning.logs import locate_log
from lwc.tuning.search import (
    RpcSettings, TaskStat, _CallbackState, _Interrupt, _plan, _plan_only, _search_plan, parse_duration, tune,
)

TRIALS = 4
#: records of the tiny run: its trials and the rule schedule the search started from (lwc.tuning.seed)
RECORDS = TRIALS + 1
QUICK = dict(runner_min_repeat_ms=5, population_size=32)


def matmul_add_model() -> onnx.ModelProto:
    """x[N,64] @ W[64,64] + B: one tuning task; the batch is dynamic (case T1)."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [64, 64], rng.standard_normal((64, 64)).astype(np.float32).ravel())
    b = helper.make_tensor("B", TensorProto.FLOAT, [64], rng.standard_normal(64).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Add", ["y", "B"], ["z"])],
        "matmul_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 64])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """(model path, tuning_logs root, TuneResult) after one tiny real tuning run."""
    root = tmp_path_factory.mktemp("tune")
    model = root / "mm.onnx"
    onnx.save(matmul_add_model(), model)
    logs = root / "tuning_logs"
    result = tune(model, "host", {"x": [1, 64]}, trials=TRIALS, log_root=logs, **QUICK)
    return model, logs, result


@pytest.fixture
def use_logs(tuned, monkeypatch):
    monkeypatch.setenv("LWC_TUNING_LOGS", str(tuned[1]))
    return tuned


def test_tiny_tuning_writes_database_and_manifest(tuned):
    """Case F6: a real MetaSchedule run works with the pinned tvm-ffi."""
    _, logs, result = tuned
    assert result.trials_run == TRIALS
    assert result.log_dir.parent == logs and "-host-" in result.log_dir.name
    assert (result.log_dir / RECORD_FILE).read_text().count("\n") == RECORDS
    assert (result.log_dir / WORKLOAD_FILE).stat().st_size > 0
    [task] = result.tasks
    assert task.trials == TRIALS and task.best_us and task.best_us > 0 and task.flops > 0
    assert task.rule == "matmul" and 0 < task.best_us <= task.rule_us  # the search started from the rule
    manifest = json.loads((result.log_dir / "manifest.json").read_text())
    assert manifest["versions"]["apache-tvm"] and manifest["versions"]["apache-tvm-ffi"] == "0.1.14.post0"
    assert manifest["target"]["tvm"]["kind"] == "llvm" and manifest["target"]["tvm"]["mcpu"]
    assert manifest["input_shapes"] == {"x": [1, 64]}
    assert manifest["trials"] == TRIALS and manifest["machine_cpu"] and manifest["created"]


def test_tuning_ends_by_timing_the_kernel_on_one_thread_and_on_all(tuned):
    """lwc.tuning.threads: the tuned kernel is timed both ways and the decision is stored with the
    records, keyed by its workload hash."""
    from lwc.tuning import threads

    _, _, result = tuned
    decisions = threads.read(result.log_dir)
    assert len(decisions) == result.single_thread["kernels_timed"] <= 1
    if not decisions:  # the best schedule (the rule's or a serial one the search found) has
        [task] = result.tasks  # no parallel loop: nothing to time both ways
        assert task.best_us <= task.rule_us * 1.05
        return
    [entry] = decisions.values()
    assert entry["parallel_us"] > 0 and "matmul" in entry["name"]
    assert entry.get("serial_us", 1) > 0 and entry["rule_us"] > 0  # the rule timed beside it
    assert result.single_thread["single_thread"] == int(threads.single_thread(entry))
    assert result.single_thread["rule_faster"] == int(threads.rule_wins(entry))


def test_tuning_ends_by_timing_the_whole_model_with_and_without_its_records(tuned):
    """lwc.tuning.whole_model: both builds timed, the result stored in the log folder."""
    from lwc.tuning import whole_model

    _, _, result = tuned
    timed = result.single_thread["whole_model"]
    assert timed["log_ms"] > 0 and timed["rules_ms"] > 0
    assert whole_model.read(result.log_dir) == {"version": 1, **timed}


def test_rules_win_needs_the_margin_and_the_absolute_gain():
    from lwc.tuning.whole_model import rules_win

    assert rules_win({"log_ms": 50.5, "rules_ms": 42.9})
    assert not rules_win({"log_ms": 50.5, "rules_ms": 49.5})  # within 3 %
    assert not rules_win({"log_ms": 0.010, "rules_ms": 0.005})  # 5 us: noise
    assert not rules_win({"skipped": "the model has symbolic input dims"}) and not rules_win({})


def test_compile_applies_no_record_where_the_rules_won_the_whole_model(use_logs, tmp_path):
    """A log whose model ran faster on the rules alone (as lwc tune timed resnet50's) is not
    applied; the build is the rules' and still matches onnxruntime."""
    import shutil

    import onnxruntime as ort

    from lwc.tuning import whole_model

    model, _, result = use_logs
    folder = tmp_path / result.log_dir.name
    shutil.copytree(result.log_dir, folder)
    whole_model._write(folder, {"log_ms": 2.0, "rules_ms": 1.0})
    compiled = driver.compile(str(model), "host", {"x": [1, 64]}, tuning_log=str(folder))
    info = compiled.extra["tuning"]
    assert info["tuned_tasks"] == 0 and "not applied" in info["message"] and "1.0 ms" in info["message"]
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    [got] = compiled.run({"x": x})
    [want] = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_compile_applies_records_and_matches_onnxruntime(use_logs):
    import onnxruntime as ort

    model, _, result = use_logs
    compiled = driver.compile(str(model), "host", {"x": [1, 64]})
    info = compiled.extra["tuning"]
    assert (info["tasks"], info["tuned_tasks"], info["untuned_tasks"]) == (1, 1, 0)
    assert info["log"] == str(result.log_dir)
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    [got] = compiled.run({"x": x})
    [want] = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_no_tuning_log_skips_records(use_logs):
    model = use_logs[0]
    info = driver.compile(str(model), "host", {"x": [1, 64]}, use_tuning_logs=False).extra["tuning"]
    assert info["tuned_tasks"] == 0 and "disabled" in info["message"]


def test_rerun_resumes_without_new_trials(tuned):
    model, logs, _ = tuned
    again = tune(model, "host", {"x": [1, 64]}, trials=TRIALS, log_root=logs, **QUICK)
    assert again.trials_run == 0 and again.resumed_trials == TRIALS
    assert "already has" in again.stop_reason


def test_t1_other_shape_is_reported_untuned(use_logs):
    """Case T1: records tuned for batch 1 are not applied to batch 4."""
    model = use_logs[0]
    info = driver.compile(str(model), "host", {"x": [4, 64]}).extra["tuning"]
    assert info["tuned_tasks"] == 0 and info["untuned_tasks"] == 1
    assert "no tuning records" in info["message"]


def test_t1_forced_log_with_other_shape_applies_nothing(use_logs):
    model, _, result = use_logs
    info = driver.compile(str(model), "host", {"x": [4, 64]}, tuning_log=str(result.log_dir)).extra["tuning"]
    assert info["tuned_tasks"] == 0 and info["untuned_tasks"] == 1


needs_cross = pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                                 reason="aarch64-linux-gnu-g++ not installed")


@needs_cross
def test_t1_other_target_is_reported_untuned(use_logs):
    """Case T1: host records are not applied to arm64, and the message says so."""
    model = use_logs[0]
    info = driver.compile(str(model), "arm64", {"x": [1, 64]}).extra["tuning"]
    assert info["tuned_tasks"] == 0 and info["untuned_tasks"] == 1
    assert info["message"].startswith("no tuning records for arm64")


@needs_cross
def test_t1_forced_log_for_other_target_is_refused(use_logs):
    model, _, result = use_logs
    with pytest.raises(LwcError, match="cannot be used for arm64"):
        driver.compile(str(model), "arm64", {"x": [1, 64]}, tuning_log=str(result.log_dir))


def test_t1_records_of_another_target_in_the_database_are_dropped(tuned, tmp_path):
    """Even inside a matching folder, each record's own target is checked."""
    from lwc.targets import resolve

    _, _, result = tuned
    copy = tmp_path / result.log_dir.name
    shutil.copytree(result.log_dir, copy, ignore=shutil.ignore_patterns("logs"))
    text = (copy / RECORD_FILE).read_text().replace('"znver', '"zzver')
    (copy / RECORD_FILE).write_text(text)
    preset = resolve("host")
    _, kept, foreign = valid_records_for(copy, preset.tvm_target())
    assert kept == 0 and foreign == RECORDS


def test_repair_database_drops_a_truncated_line(tuned, tmp_path):
    """Ctrl-C during a write leaves at most a partial last line; it is dropped on load."""
    _, _, result = tuned
    copy = tmp_path / "copy"
    shutil.copytree(result.log_dir, copy, ignore=shutil.ignore_patterns("logs"))
    path = copy / RECORD_FILE
    path.write_text(path.read_text() + '[0, [[["Sample')
    assert repair_database(copy) == 1
    assert len(open_database(copy).get_all_tuning_records()) == RECORDS


STALE = Path(__file__).parent / "data" / "stale_block_names"


def test_a_record_naming_blocks_its_workload_lacks_is_moved_aside_not_fatal(tmp_path):
    """A real log (cls int8, znver4) held 33 records filed under a structurally equal
    kernel with other buffer names: TVM's JSONDatabase refused the whole log (compile
    failed with 'parallel_for_dynamic error'). Now that record moves to the stale file
    and the rest loads."""
    log = tmp_path / "log"
    shutil.copytree(STALE, log)
    with pytest.warns(UserWarning, match="1 records no longer replay"):
        database = open_database(log)
    assert len(database.get_all_tuning_records()) == 1
    assert len((log / STALE_FILE).read_text().splitlines()) == 1
    assert len((log / RECORD_FILE).read_text().splitlines()) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(open_database(log).get_all_tuning_records()) == 1


def test_a_log_tvm_cannot_load_is_a_one_line_error(tmp_path):
    log = tmp_path / "log"
    shutil.copytree(STALE, log)
    (log / WORKLOAD_FILE).write_text('["not a workload", {}]\n')
    with pytest.raises(LwcError, match=r"tuning log .*log: TVM cannot load it \(.*\); move it away"):
        open_database(log)


def test_reused_record_is_rebound_to_the_kernels_block_names(tmp_path):
    """--reuse-records maps block names (lv458_red -> lv547_red, lv458_red_rf ->
    lv547_red_rf) so the copied trace replays on this graph's kernel; the same record
    copied as is (what made the stale lines) does not."""
    from tvm.s_tir import meta_schedule as ms

    log = tmp_path / "log"
    shutil.copytree(STALE, log)
    with pytest.warns(UserWarning):
        [record] = open_database(log).get_all_tuning_records()
    workloads = [ms.database.Workload.from_json(json.loads(line))
                 for line in (log / WORKLOAD_FILE).read_text().splitlines()]
    assert "lv458_red" in record.workload.mod.script() and "lv547_red" in workloads[0].mod.script()
    with pytest.raises(Exception):
        ms.database.TuningRecord.from_json(record.as_json(), workloads[0])
    rebound = _rebind(record, workloads[0], record.target)
    assert rebound is not None
    trace = json.dumps(rebound.as_json()[0])
    assert "lv458" not in trace and '"lv547_red"' in trace and '"lv547_red_rf"' in trace
    assert [float(s) for s in rebound.run_secs] == [float(s) for s in record.run_secs]


def test_tuning_a_renamed_kernel_tunes_the_stored_copy(tmp_path):
    """Resuming a log after a graph change renamed a kernel's buffers: the task is tuned
    on the log's copy of the kernel, so new records replay on the workload they are filed
    under (the cause of the stale records above, at the source)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    log = tmp_path / "log"
    shutil.copytree(STALE, log)
    lines = (log / WORKLOAD_FILE).read_text().splitlines()
    (log / WORKLOAD_FILE).write_text(lines[0] + "\n")  # the log knows lv547_red only
    (log / RECORD_FILE).write_text("")
    renamed = ms.database.Workload.from_json(json.loads(lines[1])).mod  # lv458_red
    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"})
    database = open_database(log)
    task = ms.ExtractedTask("mean", renamed, target, [renamed], 3)
    tuned = _with_stored_names(task, database)
    assert "lv547_red" in tuned.mod.script() and "lv458" not in tuned.mod.script()
    assert (tuned.task_name, int(tuned.weight)) == ("mean", 3)
    same = ms.ExtractedTask("mean", tuned.mod, target, [tuned.mod], 3)
    assert _with_stored_names(same, database) is same


def test_tuning_over_rpc(tmp_path):
    """Measure through TVM's own RPC tracker and server on 127.0.0.1."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    model = tmp_path / "mm.onnx"
    onnx.save(matmul_add_model(), model)
    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc.Server(host="127.0.0.1", port=9300, port_end=9400, key="lwc-test",
                        tracker_addr=("127.0.0.1", tracker.port), silent=True)
    try:
        result = tune(
            model, "host", {"x": [2, 64]}, trials=2, log_root=tmp_path / "logs",
            rpc=RpcSettings(f"127.0.0.1:{tracker.port}", "lwc-test"), **QUICK,
        )
    finally:
        server.terminate()
        tracker.terminate()
    [task] = result.tasks
    assert task.trials == 2 and task.best_us and task.best_us > 0


def test_parse_duration():
    assert parse_duration("40m") == 2400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90
    assert parse_duration("12") == 12
    with pytest.raises(LwcError):
        parse_duration("forty minutes")


def test_rpc_settings_validate_address():
    with pytest.raises(LwcError, match="HOST:PORT"):
        RpcSettings("tracker.lab", "rpi5").host_port


def test_cli_tune_and_compile_print_task_counts(use_logs, capsys):
    from lwc.cli import main

    model, logs, _ = use_logs
    assert main(["tune", str(model), "--target", "host", "--input-shape", "x:1,64", "--trials",
                 str(TRIALS), "--log-dir", str(logs), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "already has" in out
    assert main(["compile", str(model), "--target", "host", "--input-shape", "x:1,64",
                 "-o", str(logs.parent / "cli.so")]) == 0
    assert "tuning: 1/1 tasks from" in capsys.readouterr().out


class _FakeTask:
    def __init__(self):
        self.is_terminated = False


class _FakeScheduler:
    def __init__(self, n):
        self.tasks_ = [_FakeTask() for _ in range(n)]

    def terminate_task(self, i):
        assert not self.tasks_[i].is_terminated
        self.tasks_[i].is_terminated = True


class _FakeResult:
    def __init__(self, secs):
        self.error_msg = None
        self.run_secs = [secs]


def _state(budget=None):
    import time

    stats = [TaskStat("a", 1e6, 1), TaskStat("b", 2e6, 2)]
    seen = []
    state = _CallbackState(stats, [1, 0], 16, time.perf_counter(), budget, seen.append)
    return state, stats, seen


def test_callback_tracks_trials_and_best_latency():
    state, stats, seen = _state()
    scheduler = _FakeScheduler(2)
    state.update(scheduler, 0, [_FakeResult(2e-6), _FakeResult(1e-6)])  # task id 0 -> stats[1]
    assert stats[1].trials == 2 and stats[1].best_us == pytest.approx(1.0) and stats[0].trials == 0
    assert state.trials_done == 2 and seen[-1].estimated_ms == pytest.approx(2e-3)
    assert not any(t.is_terminated for t in scheduler.tasks_)


def test_time_budget_terminates_every_task_after_the_batch():
    state, stats, seen = _state(budget=0.0)
    scheduler = _FakeScheduler(2)
    state.update(scheduler, 1, [_FakeResult(3e-6)])
    assert all(t.is_terminated for t in scheduler.tasks_)
    assert "time budget" in state.stop_reason and stats[0].trials == 1
    state.update(scheduler, 0, [_FakeResult(3e-6)])  # a late batch: still recorded, no error


def test_ctrl_c_requests_a_clean_stop():
    state, _, _ = _state()
    state.interrupt = _Interrupt()
    state.interrupt.requested = True
    scheduler = _FakeScheduler(2)
    state.update(scheduler, 0, [_FakeResult(3e-6)])
    assert state.stop_reason == "interrupted (Ctrl-C)"
    assert all(t.is_terminated for t in scheduler.tasks_)


def test_sigterm_requests_a_clean_stop_and_handlers_are_restored():
    """kill / timeout / a job scheduler send SIGTERM: same clean stop as Ctrl-C."""
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with _Interrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.requested and interrupt.name == "SIGTERM"
        state, _, _ = _state()
        state.interrupt = interrupt
        scheduler = _FakeScheduler(2)
        state.update(scheduler, 0, [_FakeResult(3e-6)])
        assert state.stop_reason == "interrupted (SIGTERM)"
        with pytest.raises(KeyboardInterrupt):  # a second signal aborts
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_plan_spreads_trials_heaviest_first():
    tasks = [TaskStat("small", 1e3, 1), TaskStat("big", 1e9, 1, trials=10),
             TaskStat("mid", 1e6, 3)]
    per_task, todo = _plan(tasks, 60)
    assert per_task == 20 and todo == [1, 2, 0]
    per_task, todo = _plan(tasks, 30)
    assert per_task == 10 and todo == [2, 0]  # "big" already has its 10


def test_plan_only_tasks_adds_trials_to_the_matching_tasks():
    tasks = [TaskStat("fused_conv2d1_add", 1e3, 1, trials=64),
             TaskStat("fused_conv2d14_add12_hard_swish6", 1e9, 4, trials=64),
             TaskStat("fused_conv2d13_add12", 1e6, 1, trials=27)]
    # already at the even spread's cap: --only-tasks still adds --trials on top
    per_task, todo = _plan_only(tasks, 32, "conv2d14_")
    assert per_task == 64 + 32 and todo == [1]
    per_task, todo = _plan_only(tasks, 20, r"conv2d1[34]_")
    assert per_task == 64 + 10 and todo == [1, 2]  # heaviest first; conv2d13 gets 47 to reach 74
    with pytest.raises(LwcError, match=r"matches none of the 3 tasks \(heaviest: fused_conv2d14"):
        _plan_only(tasks, 10, "matmul")
    with pytest.raises(LwcError, match="not a regular expression"):
        _plan_only(tasks, 10, "conv2d(")


def _related_cpu(cpu: str, triple: str, wider: bool) -> str | None:
    """An LLVM CPU whose ISA strictly includes ``cpu``'s (``wider``: znver4 -> znver5) or
    that ``cpu``'s strictly includes (znver5 -> znver4), or None."""
    import tvm
    from tvm.target import codegen

    from lwc import tvm_compat

    mine = tvm_compat.llvm_cpu_features(cpu, triple)
    for other in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple})):
        other = str(other)
        theirs = tvm_compat.llvm_cpu_features(other, triple)
        if other != cpu and (mine < theirs if wider else theirs < mine):
            return other
    return None


def _relabel(log_dir, cpu: str, root) -> Path:
    """A copy of ``log_dir`` under ``root`` as if tuned on ``cpu`` (manifest and records)."""
    here = json.loads((log_dir / "manifest.json").read_text())["target"]["tvm"]["mcpu"]
    copy = root / log_dir.name.replace(f"host-{here}", f"host-{cpu}")
    shutil.copytree(log_dir, copy, ignore=shutil.ignore_patterns("logs"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target"]["tvm"]["mcpu"] = cpu
    (copy / "manifest.json").write_text(json.dumps(manifest))
    records = copy / RECORD_FILE
    records.write_text(records.read_text().replace(f'"{here}"', f'"{cpu}"'))
    return copy


def _older_and_newer(use_logs, tmp_path, monkeypatch):
    """(log tuned on the older CPU, older, newer): this CPU's log and a CPU whose ISA
    includes this one's, or, on a CPU LLVM knows nothing wider than (znver5), the log
    relabeled as tuned on a CPU this one includes. Compiles only: nothing runs as newer."""
    _, _, result = use_logs
    here = result.manifest["target"]["tvm"]
    newer = _related_cpu(here["mcpu"], here["mtriple"], wider=True)
    if newer is not None:
        return result.log_dir, here["mcpu"], newer
    older = _related_cpu(here["mcpu"], here["mtriple"], wider=False)
    if older is None:
        pytest.skip(f"LLVM knows no CPU whose ISA includes or is included in {here['mcpu']}'s")
    root = tmp_path / "relabeled"
    root.mkdir()
    monkeypatch.setenv("LWC_TUNING_LOGS", str(root))  # only the copy is visible
    return _relabel(result.log_dir, older, root), older, here["mcpu"]


def test_host_log_from_an_isa_subset_cpu_is_applied_and_said(use_logs, tmp_path, monkeypatch, host_as):
    """A host log tuned on an older CPU serves a newer CPU of the same family (e.g. records
    tuned on znver4 compile for znver5), and the compile output says so."""
    model, _, result = use_logs
    log, older, newer = _older_and_newer(use_logs, tmp_path, monkeypatch)
    info = driver.compile(str(model), host_as(newer), {"x": [1, 64]}).extra["tuning"]
    assert (info["tuned_tasks"], info["untuned_tasks"]) == (1, 0)
    assert info["tuned_on_cpu"] == older
    assert f"records tuned on {older}, applied to this {newer}" in info["message"]
    forced = driver.compile(str(model), host_as(newer), {"x": [1, 64]}, tuning_log=str(log))
    assert forced.extra["tuning"]["tuned_tasks"] == 1
    # --sparsity auto times the tuned dense kernels of the same log (one lookup for both)
    from lwc import sparsity_decide, sparsity_stage

    choice = sparsity_stage.tuning_log_choice(host_as(newer), None, True, result.manifest["model_key"])
    assert choice.folder.name == log.name and choice.substitute == older
    assert sparsity_decide.tuned_dense_kernels(choice.folder, choice.records_target)
    assert not sparsity_decide.tuned_dense_kernels(choice.folder, host_as(newer).tvm_target())


def test_host_log_from_a_cpu_with_more_isa_is_not_applied(use_logs, tmp_path, monkeypatch, host_as):
    """The reverse (records from a CPU with features this one lacks) stays untuned."""
    model, _, result = use_logs
    log, older, newer = _older_and_newer(use_logs, tmp_path, monkeypatch)
    root = tmp_path / "wider"
    root.mkdir()
    copy = _relabel(log, newer, root)
    monkeypatch.setenv("LWC_TUNING_LOGS", str(root))  # only the copy is visible
    info = driver.compile(str(model), host_as(older), {"x": [1, 64]}).extra["tuning"]
    assert info["tuned_tasks"] == 0 and f"host-{newer}" in info["message"]
    with pytest.raises(LwcError, match=f"cannot be used for host-{older}"):
        driver.compile(str(model), host_as(older), {"x": [1, 64]}, tuning_log=str(copy))


@pytest.mark.skipif(platform.machine() != "x86_64", reason="znver CPUs are x86-64")
def test_host_log_from_the_closest_isa_subset_cpu_wins(tmp_path, monkeypatch, host_as):
    """On a znver5 machine with znver3 and znver4 logs of one model, the znver4 records
    (AVX-512 VNNI int8 workloads) apply, not the first folder by name (znver3: AVX2 only,
    whose int8 workloads a VNNI compile does not have: 17 of resnet50's 49 tasks)."""
    from lwc import tvm_compat

    triple = "x86_64-linux-gnu"
    features = {cpu: tvm_compat.llvm_cpu_features(cpu, triple) for cpu in ("znver3", "znver4", "znver5")}
    assert features["znver3"] < features["znver4"] < features["znver5"]
    key = "0123456789ab"
    for cpu in ("znver3", "znver4"):
        tvm = _target_dict(host_as(cpu).tvm_target())
        folder = tmp_path / f"{key}-host-{cpu}"
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(
            {"target": {"name": f"host-{cpu}", "preset": "host", "tvm": tvm},
             "versions": tvm_compat.versions()}))
    monkeypatch.setenv("LWC_TUNING_LOGS", str(tmp_path))
    znver5 = host_as("znver5")
    choice = locate_log(znver5, znver5.tvm_target(), model_key=key)
    assert (choice.folder.name, choice.substitute, choice.why_not) == (f"{key}-host-znver4", "znver4", None)
    assert choice.records_target.attrs["mcpu"] == "znver4"
    (tmp_path / f"{key}-host-znver4" / "manifest.json").unlink()  # only znver3's left
    assert locate_log(znver5, znver5.tvm_target(), model_key=key).substitute == "znver3"


def test_time_budget_shrinks_the_search_so_every_task_gets_trials():
    """45 min at (512, 64) reached 12 of det's 62 tasks; a budget now sizes population and batch."""
    assert _search_plan(1613, 62, None) == (512, 64)
    pop, per_iter = _search_plan(1613, 62, 45 * 60)
    assert (pop, per_iter) != (512, 64) and per_iter >= 8 and pop >= 128
    assert _search_plan(1613, 5, 45 * 60) == (512, 64)  # few tasks: full search fits
    assert _search_plan(1613, 62, 60) == (128, 8)  # never below (128, 8)
    assert _search_plan(4, 1, 3600, population=32) == (32, 4)  # never above the caller's


# --- tuning starts from lwc's rule schedules (lwc.tuning.seed) -------------------------------


def conv_model() -> onnx.ModelProto:
    """One task: x[1,8,16,16] -> Conv 3x3 (16) + bias + Relu."""
    rng = np.random.default_rng(0)

    def const(name, shape):
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  rng.standard_normal(shape).astype(np.float32).ravel())

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "Bc"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
        [const("W", [16, 8, 3, 3]), const("Bc", [16])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """(model path, TuneResult) of a run with one search trial per task, started from the rules
    (the matmul rule is seeded in the ``tuned`` fixture's run)."""
    root = tmp_path_factory.mktemp("seeded")
    model = root / "conv.onnx"
    onnx.save(conv_model(), model)
    result = tune(model, "host", None, trials=1, log_root=root / "logs", **QUICK)
    return model, result


def _best_secs_by_workload(log_dir) -> dict:
    from lwc.tuning.database import _record_secs, _workload_key

    best: dict = {}
    for record in open_database(log_dir).get_all_tuning_records():
        key = str(_workload_key(record.workload.mod))
        best[key] = min(best.get(key, float("inf")), _record_secs(record))
    return best


def test_tuning_starts_from_the_rule_schedule_and_is_never_slower(seeded):
    """Every task's rule schedule is measured and committed before the search, so the best
    record of each task is at most the rule's time; compile applies every task from the log."""
    from lwc.tuning.seed import RULE_SEEDS

    model, result = seeded
    assert len(result.tasks) >= 1 and result.trials_run == len(result.tasks)
    for task in result.tasks:
        assert task.rule_us and task.rule_us > 0 and task.rule, (task.name, task.rule_note)
        assert task.trials == 1  # the rule's record is not counted as a search trial
        assert task.best_us <= task.rule_us
    assert "conv2d" in {t.rule for t in result.tasks}
    seeds = json.loads((result.log_dir / "manifest.json").read_text())[RULE_SEEDS]
    assert len(seeds) == len(result.tasks)
    best = _best_secs_by_workload(result.log_dir)
    for key, seed in seeds.items():
        assert seed["rule_us"] and best[key] * 1e6 <= seed["rule_us"] * 1.05
    assert json.loads(json.dumps(result.to_json()))["tasks"][0]["rule_us"] == result.tasks[0].rule_us
    info = driver.compile(str(model), "host", None, tuning_log=str(result.log_dir)).extra["tuning"]
    assert info["tuned_tasks"] == info["tasks"] == len(result.tasks)


def test_a_task_is_seeded_once(seeded, tmp_path, monkeypatch):
    """A rerun that would search more keeps the manifest's rule times and measures no rule
    again (the search itself is stubbed out here); the rule's record is not a trial;
    ``--trials 0`` does not seed either."""
    from lwc.tuning import seed
    from tvm.s_tir import meta_schedule as ms

    model, result = seeded
    shutil.copytree(result.log_dir, tmp_path / "logs" / result.log_dir.name)
    monkeypatch.setattr(seed, "seed_tasks", lambda *a, **k: pytest.fail("seeded twice"))
    searched = []
    monkeypatch.setattr(ms, "tune_tasks", lambda **kw: searched.append(len(kw["tasks"])))
    again = tune(model, "host", None, trials=2 * len(result.tasks), log_root=tmp_path / "logs", **QUICK)
    assert searched == [len(result.tasks)]  # every task was due for more trials
    assert again.resumed_trials == len(result.tasks)
    assert [t.rule_us for t in again.tasks] == [t.rule_us for t in result.tasks]
    zero = tune(model, "host", None, trials=0, log_root=tmp_path / "logs", **QUICK)
    assert zero.trials_run == 0 and searched == [len(result.tasks)]


def test_task_table_shows_rule_and_best_latency():
    from lwc.cli_tuning import format_task_table

    tasks = [TaskStat("fused_conv2d_add_relu", 2e6, 1, trials=8, best_us=10.0, rule_us=15.0, rule="conv2d"),
             TaskStat("reshape", 0, 1, trials=8, best_us=1.0, rule_note="no rule schedule (no blocks)")]
    table = format_task_table(tasks)
    header, row = table.splitlines()[:2]
    assert header.index("rule us") < header.index("best us")
    assert "15.00" in row and "10.00" in row
    assert "#1: no rule schedule (no blocks)" in table
    assert "rule 0.015 ms -> tuned 0.010 ms" in table


def test_a_trace_that_does_not_replay_on_the_workload_is_not_seeded():
    """A rule's trace names blocks: on a structurally equal workload with other block names
    it does not replay, and the task is skipped with the reason."""
    import tvm
    from lwc.schedules import CpuFacts
    from lwc.tuning.seed import replay, rule_schedule
    from tvm.s_tir import meta_schedule as ms
    from tvm.script import tirx as T

    def make(name):
        @T.prim_func(s_tir=True)
        def f(a: T.Buffer((64, 64), "float32"), b: T.Buffer((64, 64), "float32"),
              c: T.Buffer((64, 64), "float32")):
            for i, j, k in T.grid(64, 64, 64):
                with T.sblock(name):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    with T.init():
                        c[vi, vj] = T.float32(0)
                    c[vi, vj] = c[vi, vj] + a[vi, vk] * b[vk, vj]
        return f

    sch, rule = rule_schedule(make("mm"), CpuFacts(vector_bits=256, cores=2))
    assert sch is not None and rule == "matmul"
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    args = ms.arg_info.ArgInfo.from_entry_func(sch.mod)
    same = ms.database.Workload(tvm.IRModule({"main": make("mm")}))
    assert replay(ms, sch, same, target, args)[0] is not None
    other = ms.database.Workload(tvm.IRModule({"main": make("renamed")}))
    replayed, why = replay(ms, sch, other, target, args)
    assert replayed is None and "does not replay" in why


def test_a_rule_trace_with_a_layout_transform_replays():
    """The conv rule re-lays out tiles and pre-packed weights with ``transform_layout``; TVM's
    ``TuningRecord.as_json`` raises on the IndexMap in such a trace, which left 18 of det's
    64 tasks unseeded. The record's JSON (``record_json``) round-trips to the same kernel."""
    import tvm
    from lwc.schedules import CpuFacts
    from lwc.tuning.seed import replay, rule_schedule
    from tvm import te, topi
    from tvm.s_tir import meta_schedule as ms

    x = te.placeholder((1, 64, 28, 28), "float32", name="x")
    w = te.placeholder((64, 64, 3, 3), "float32", name="w")
    func = te.create_prim_func([x, w, topi.nn.conv2d_nchw(x, w, 1, 1, 1)])
    func = func.with_attr("layout_free_buffers", [1])
    sch, rule = rule_schedule(func, CpuFacts(vector_bits=512, vector_regs=32, cores=2))
    assert rule == "conv2d" and "TransformLayout" in {str(i.kind.name) for i in sch.trace.insts}
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    args = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
    workload = ms.database.Workload(tvm.IRModule({"main": func}))
    replayed, why = replay(ms, sch, workload, target, args)
    assert replayed is not None, why


def test_compacted_log_gives_the_same_kernel_and_resumes(tuned, tmp_path, monkeypatch):
    """Issue 24 item 4: `lwc compact-logs` keeps the best record per workload (the one
    compile picks), xz-compresses the workloads, and a rerun of `lwc tune` neither loses
    the trials counted before nor tunes again."""
    from lwc.cli import main
    from lwc.tuning.compact import WORKLOAD_XZ

    model, logs, result = tuned
    copy = tmp_path / "tuning_logs" / result.log_dir.name
    shutil.copytree(result.log_dir, copy)
    monkeypatch.setenv("LWC_CACHE_DIR", str(tmp_path / "cache"))
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    before = driver.compile(str(model), "host", {"x": [1, 64]}, tuning_log=str(result.log_dir))
    assert main(["compact-logs", str(copy)]) == 0
    assert (copy / WORKLOAD_XZ).is_file() and not (copy / WORKLOAD_FILE).exists()
    [line] = (copy / RECORD_FILE).read_text().splitlines()  # RECORDS trials -> the best one
    best = min(sum(r.run_secs) / len(r.run_secs) for r in open_database(result.log_dir).get_all_tuning_records())
    assert np.isclose(np.mean(json.loads(line)[1][1]), float(best))
    after = driver.compile(str(model), "host", {"x": [1, 64]}, tuning_log=str(copy))
    assert after.extra["tuning"]["tuned_tasks"] == 1
    before.export(str(tmp_path / "before.so"))
    after.export(str(tmp_path / "after.so"))  # the same schedule, so the same machine code
    assert (tmp_path / "before.so").read_bytes() == (tmp_path / "after.so").read_bytes()
    np.testing.assert_array_equal(after.run({"x": x})[0], before.run({"x": x})[0])
    again = tune(model, "host", {"x": [1, 64]}, trials=TRIALS, log_root=copy.parent, **QUICK)
    assert again.trials_run == 0 and "already has" in again.stop_reason
    assert (copy / WORKLOAD_FILE).is_file()  # tune expanded it to append to it
