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
