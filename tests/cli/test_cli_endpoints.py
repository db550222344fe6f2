"""`mlpipe endpoints`: the published versions come from the definitions, the default override from the
workspace, and the endpoint operator honours it."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
from typer.testing import CliRunner

from airflow_mlpipe.cli.main import app
from airflow_mlpipe.errors import ConfError
from airflow_mlpipe.operators.endpoint import MlpipeEndpointOperator, default_override
from airflow_mlpipe.workspace.core import Workspace

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFINITIONS = str(REPO / "dags_examples" / "pipelines")
runner = CliRunner()


def test_list_and_set_default(tmp_path):
    ws_uri = (tmp_path / "ws").as_uri()
    out = runner.invoke(app, ["endpoints", "list", "-d", DEFINITIONS, "--workspace", ws_uri, "--json"])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)
    assert row["endpoint"] == "income_retrain"
    assert row["versions"] == {"1": "income_retrain_v1", "2": "income_retrain_v2"}
    assert row["default"] == row["definitions_default"] == 2 and row["override"] is None

    out = runner.invoke(app, ["endpoints", "set-default", "income_retrain", "1", "-d", DEFINITIONS, "--workspace", ws_uri])
    assert out.exit_code == 0, out.output
    assert "now runs version 1" in out.output
    assert default_override(Workspace.from_uri(ws_uri), "income_retrain") == 1

    out = runner.invoke(app, ["endpoints", "set-default", "income_retrain", "5", "-d", DEFINITIONS, "--workspace", ws_uri])
    assert out.exit_code == 2
    assert "no published version 5" in out.output and "[1, 2]" in out.output
    out = runner.invoke(app, ["endpoints", "set-default", "income_retrian", "1", "-d", DEFINITIONS, "--workspace", ws_uri])
    assert out.exit_code == 2 and "endpoints: income_retrain" in out.output


def test_endpoint_operator_chooses_the_version_and_refuses_unknown_ones():
    op = MlpipeEndpointOperator(
        task_id="run_pipeline", endpoint="e", versions={1: "p_v1", 2: "p_v2"}, default_version=2,
        version_params={1: ["epochs"], 2: ["epochs", "l2"]},
    )
    assert op.choose({}, None) == (2, {})
    assert op.choose({}, 1) == (1, {})  # the workspace override wins over the definitions
    assert op.choose({"pipeline_version": 1, "epochs": 3}, None) == (1, {"epochs": 3})
    assert op.choose({"pipeline_version": None, "l2": None}, None) == (2, {})  # empty form fields
    for conf, message in (
        ({"pipeline_version": 7}, "has no published version 7; published versions: [1, 2]"),
        ({"pipeline_version": 1, "l2": 0.1}, "version 1 has no param(s) ['l2']"),
        ({"pipeline_version": "x"}, "must be a version number"),
    ):
        with pytest.raises(ConfError, match=re.escape(message)):
            op.choose(conf, None)


BROKEN_VERSION = "pipeline: income_retrain\nversion: 3\nendpoint:\n  name: income_retrain\n  default: true\nsteps: [oops\n"
BROKEN_OTHER = "pipeline: other\nsteps: [oops\n"


def _definitions_with(tmp_path, files: dict[str, str]) -> pathlib.Path:
    import shutil

    shutil.copytree(REPO / "dags_examples", tmp_path / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    folder = tmp_path / "dags" / "pipelines"
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_a_definition_that_may_publish_the_endpoint_and_cannot_be_read_is_not_routed_around(tmp_path):
    """A broken file that names the endpoint may be its default version: the CLI listing and the endpoint DAG
    refuse, naming it, instead of silently choosing among the others (before, both skipped it). Another
    pipeline's broken file does not concern them."""
    from airflow_mlpipe.errors import DefinitionError
    from airflow_mlpipe.factory.endpoints import endpoint_dag

    ws_uri = (tmp_path / "ws").as_uri()
    other = _definitions_with(tmp_path / "a", {"other.yaml": BROKEN_OTHER})
    out = runner.invoke(app, ["endpoints", "list", "-d", str(other), "--workspace", ws_uri, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["default"] == 2
    assert endpoint_dag(other.parent / "x.py", "income_retrain", other).params["pipeline_version"] is None

    folder = _definitions_with(tmp_path / "b", {"income_retrain_v3.yaml": BROKEN_VERSION})
    for command in (["endpoints", "list"], ["endpoints", "set-default", "income_retrain", "1"]):
        out = runner.invoke(app, [*command, "-d", str(folder), "--workspace", ws_uri])
        assert out.exit_code == 2, out.output
        assert "income_retrain_v3.yaml" in out.output and "cannot be read" in out.output, out.output
    assert default_override(Workspace.from_uri(ws_uri), "income_retrain") is None  # nothing was set
    with pytest.raises(DefinitionError, match=r"income_retrain_v3\.yaml cannot be read"):
        endpoint_dag(folder.parent / "x.py", "income_retrain", folder)
