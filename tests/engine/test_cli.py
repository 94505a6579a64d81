"""The headless CLI: run, validate, nodes, schema; overrides; exit codes; machine-readable output."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sdgraph.cli import main
from tests.engine import toy_nodes

WORKFLOW = {
    "1": {"class_type": "Number", "inputs": {"value": 2}, "_meta": {"title": "left"}},
    "2": {"class_type": "Number", "inputs": {"value": 3}},
    "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
    "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
}


@pytest.fixture
def base(tmp_path) -> Path:
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    shutil.copy(toy_nodes.__file__, custom / "toy.py")
    return tmp_path


def write_workflow(base: Path, workflow: dict) -> str:
    path = base / "wf.json"
    path.write_text(json.dumps(workflow))
    return str(path)


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(list(args))
    return code, json.loads(capsys.readouterr().out)


def test_run_json(base, capsys):
    code, out = run_json(capsys, "run", write_workflow(base, WORKFLOW), "--base-dir", str(base), "--json")
    assert code == 0 and out["status"] == "success"
    assert out["outputs"] == {"4": {"text": ["5"]}}


def test_set_overrides_by_id_title_and_class(base, capsys):
    path = write_workflow(base, WORKFLOW)
    code, out = run_json(capsys, "run", path, "--base-dir", str(base), "--json",
                         "--set", "left.value=10", "--set", "2.value=20")
    assert out["outputs"]["4"] == {"text": ["30"]}
    code, out = run_json(capsys, "run", path, "--base-dir", str(base), "--json", "--set", "Add.bias=1")
    assert out["outputs"]["4"] == {"text": ["6"]}


def test_ambiguous_override_is_refused(base, capsys):
    code = main(["run", write_workflow(base, WORKFLOW), "--base-dir", str(base), "--set", "Number.value=1"])
    assert code == 2
    assert "several nodes" in capsys.readouterr().err


def test_invalid_workflow_exits_non_zero_with_readable_errors(base, capsys):
    bad = json.loads(json.dumps(WORKFLOW))
    bad["1"]["inputs"]["value"] = 1000
    code = main(["run", write_workflow(base, bad), "--base-dir", str(base)])
    err = capsys.readouterr().err
    assert code == 2
    assert "node 1 (Number)" in err and "value_bigger_than_max" in err and "input 'value'" in err


def test_validate_json(base, capsys):
    code, out = run_json(capsys, "validate", write_workflow(base, WORKFLOW), "--base-dir", str(base), "--json")
    assert code == 0 and out["ok"] and out["outputs"] == ["4"]


def test_node_failure_exit_code(base, capsys):
    failing = {"1": {"class_type": "Number", "inputs": {"value": 1}},
               "2": {"class_type": "Fail", "inputs": {"x": ["1", 0], "explode": True}},
               "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    code = main(["run", write_workflow(base, failing), "--base-dir", str(base), "--quiet"])
    assert code == 1
    assert "error in node 2 (Fail): ValueError: boom" in capsys.readouterr().err


def test_bad_json_file(base, capsys):
    path = base / "broken.json"
    path.write_text("{not json")
    assert main(["validate", str(path), "--base-dir", str(base)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_nodes_lists_packs_and_load_failures(base, capsys):
    (base / "custom_nodes" / "broken.py").write_text("import does_not_exist\n")
    assert main(["nodes", "--base-dir", str(base)]) == 0
    captured = capsys.readouterr()
    assert "custom_nodes/toy:" in captured.out and "Add (also Plus)" in captured.out
    assert "FAILED TO LOAD custom_nodes/broken" in captured.err and "does_not_exist" in captured.err
    assert main(["nodes", "Scale", "--base-dir", str(base)]) == 0
    assert json.loads(capsys.readouterr().out)["input_order"]["required"] == ["x", "factor", "mode"]


def test_schema(capsys):
    main(["schema"])
    assert json.loads(capsys.readouterr().out)["title"] == "sdgraph API-format workflow"


EXIT_PROBE = '''
import atexit, gc, sys

atexit.register(lambda: sys.stderr.write(f"at exit: {gc.get_freeze_count()} objects frozen\\n"))
NODE_CLASS_MAPPINGS = {}
'''


@pytest.mark.parametrize("workflow, code", [(WORKFLOW, 0), ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, 2)])
def test_the_command_exits_with_its_code_after_freezing_the_collector(base, workflow, code):
    """`python -m sdgraph` (and the console script, the same `entry`): the exit code is main's, exit handlers
    still run, and by then the collector has frozen the process's objects instead of collecting them again."""
    import subprocess
    import sys

    (base / "custom_nodes" / "exit_probe.py").write_text(EXIT_PROBE)
    done = subprocess.run([sys.executable, "-m", "sdgraph", "run", write_workflow(base, workflow), "--base-dir",
                           str(base), "--json"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == code, done.stderr
    frozen = [line for line in done.stderr.splitlines() if line.startswith("at exit:")]
    assert len(frozen) == 1 and int(frozen[0].split()[2]) > 10_000, done.stderr


def test_the_console_script_is_the_process_entry():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["sdgraph"] == "sdgraph.cli:entry"
