"""``mlpipe validate``, ``schema`` and ``render`` through typer's CliRunner."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from airflow_mlpipe.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "dags_examples" / "pipelines" / "quickstart.yaml"
INVALID = ROOT / "tests" / "spec" / "invalid"

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "schema", "render"):
        assert command in result.output


def test_validate_ok():
    result = runner.invoke(app, ["validate", str(QUICKSTART)])
    assert result.exit_code == 0, result.output
    assert f"ok  {QUICKSTART}  (pipeline mlpipe_quickstart, 2 steps)" in result.output


def test_validate_folder_of_examples():
    result = runner.invoke(app, ["validate", str(QUICKSTART.parent)])
    assert result.exit_code == 0, result.output
    assert "mlpipe_quickstart" in result.output


def test_validate_bad_file_prints_the_report(monkeypatch):
    monkeypatch.chdir(INVALID)
    result = runner.invoke(app, ["validate", "unknown_compute.yaml"])
    assert result.exit_code == 1
    assert "1 problem in unknown_compute.yaml" in result.output
    assert (
        "unknown_compute.yaml:22: steps.train.compute: unknown compute target 'locl' (did you mean 'local'?)"
        in result.output
    )
    assert "Traceback" not in result.output


def test_validate_mixed_and_folder(tmp_path):
    base = (ROOT / "tests" / "spec" / "fixtures" / "base.yaml").read_text()
    (tmp_path / "good.yaml").write_text(base.replace("../fixtures/src", "."))
    (tmp_path / "main.py").write_text("")
    (tmp_path / "bad.yml").write_text("pipeline: x\nsteps: {}\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "ignored.yaml").write_text("not: [valid\n")
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "no steps" in result.output
    assert "1 valid, 1 invalid" in result.output
    assert "ignored" not in result.output


def test_validate_json(monkeypatch):
    monkeypatch.chdir(INVALID)
    result = runner.invoke(app, ["validate", "--json", "cycle.yaml", str(QUICKSTART)])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["valid"] is False
    bad, good = doc["files"]
    assert bad["valid"] is False and bad["problems"][0]["path"] == "steps.prep"
    assert bad["problems"][0]["line"] == 14
    assert good == {"file": str(QUICKSTART), "valid": True, "pipeline": "mlpipe_quickstart", "steps": 2}


def test_validate_missing_path(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "no such file or directory" in result.output


def test_schema_stdout_and_file(tmp_path):
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "airflow-mlpipe pipeline definition"
    out = tmp_path / "schema.json"
    result = runner.invoke(app, ["schema", "--output", str(out)])
    assert result.exit_code == 0
    assert json.loads(out.read_text()) == schema


def test_render_table():
    result = runner.invoke(app, ["render", str(QUICKSTART)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "pipeline mlpipe_quickstart" in result.output
    assert result.output.index("prep") < result.output.index("train")
    assert "table <- step prep.table" in result.output
    assert "quickstart_table" in result.output


def test_render_json():
    result = runner.invoke(app, ["render", "--json", str(QUICKSTART)])
    assert result.exit_code == 0
    graph = json.loads(result.output)
    assert graph["order"] == ["prep", "train"]
    train = graph["steps"]["train"]
    assert train["upstream"] == ["prep"]
    assert train["compute"] == "local" and train["environment"] == "plain"
    assert train["inputs"]["table"] == {
        "kind": "step_output",
        "source": "step prep.table",
        "ref": "${steps.prep.outputs.table}",
    }
    assert train["params"] == ["learning_rate", "epochs"]


@pytest.mark.parametrize(
    "args", [["render", "missing_image.yaml"], ["render", "--json", "missing_image.yaml"]]
)
def test_render_invalid(args, monkeypatch):
    monkeypatch.chdir(INVALID)
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "1 problem in missing_image.yaml" in result.output


def test_validate_refuses_an_alias_bomb_at_once(tmp_path):
    bomb = (ROOT / "tests" / "spec" / "invalid" / "alias_bomb.yaml").read_text()
    (tmp_path / "bomb.yaml").write_text(bomb.replace("../fixtures/src", "."))
    base = (ROOT / "tests" / "spec" / "fixtures" / "base.yaml").read_text()
    (tmp_path / "good.yaml").write_text(base.replace("../fixtures/src", "."))
    (tmp_path / "main.py").write_text("")
    started = time.perf_counter()
    result = runner.invoke(app, ["validate", str(tmp_path)])
    elapsed = time.perf_counter() - started
    assert elapsed < 5, elapsed  # a few ms here; generous for a busy machine
    assert result.exit_code == 1
    assert f"1 problem in {tmp_path / 'bomb.yaml'}" in result.output
    assert (f"{tmp_path / 'bomb.yaml'}:7: YAML aliases expand the value on this line to 597,871 values, more than "
            "the 100,000 that aliases may add to a definition") in " ".join(result.output.split())
    assert "1 valid, 1 invalid" in result.output
    assert "Traceback" not in result.output
