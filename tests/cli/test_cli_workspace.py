"""``mlpipe datasets | models | runs | gc`` against a local workspace (and one S3 workspace on moto)."""

from __future__ import annotations

import json

import pytest

from airflow_mlpipe.cli.main import app
from tests.cli.conftest import age, make_tree, record_run


def invoke(runner, ws_dir, *args, env=None):
    return runner.invoke(app, [*args, "--workspace", str(ws_dir)], env=env)


# ------------------------------------------------------------------------------------------ datasets


def test_register_then_identical_content_reports_the_existing_version(runner, ws, ws_dir, tmp_path):
    data = make_tree(tmp_path / "data", {"a.csv": "a,b\n1,2\n", "sub/b.csv": "c\n3\n"})
    first = invoke(runner, ws_dir, "datasets", "register", "iris", str(data), "-d", "first cut", "--tag", "src=unit")
    assert first.exit_code == 0, first.output
    assert "registered dataset iris version 1" in first.output
    assert "2 file(s)" in first.output
    assert "MLPIPE_AIRFLOW_URL is not set" in first.output  # said plainly, not an error

    again = invoke(runner, ws_dir, "datasets", "register", "iris", str(data), "--json")
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    assert (doc["version"], doc["created"], doc["asset_event"]) == (1, False, None)

    (data / "a.csv").write_text("a,b\n1,3\n")
    second = invoke(runner, ws_dir, "datasets", "register", "iris", str(data), "--json")
    assert json.loads(second.stdout)["version"] == 2
    assert [v.version for v in ws.datasets.list_versions("iris")] == [1, 2]
    assert ws.datasets.get("iris", 1).tags == {"src": "unit"}


def test_register_a_single_file_with_a_progress_bar(runner, ws, ws_dir, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 300_000)
    result = invoke(runner, ws_dir, "datasets", "register", "blob", str(path), "--progress")
    assert result.exit_code == 0, result.output
    assert "version 1" in result.output
    assert ws.datasets.get("blob").files == 1
    assert ws.datasets.get("blob").size == 300_000


def test_datasets_list_and_show(runner, ws, ws_dir, tmp_path):
    ws.datasets.register("iris", make_tree(tmp_path / "d1", {"a.csv": "1"}), description="v1")
    ws.datasets.register("iris", make_tree(tmp_path / "d2", {"a.csv": "2", "b.csv": "3"}),
                         producing_run={"pipeline": "p", "run_id": "manual__1", "step": "prep", "output": "table"})
    ws.datasets.register("wine", make_tree(tmp_path / "d3", {"w.csv": "9"}))

    listed = invoke(runner, ws_dir, "datasets", "list")
    assert listed.exit_code == 0, listed.output
    assert "iris" in listed.output and "wine" in listed.output

    rows = json.loads(invoke(runner, ws_dir, "datasets", "list", "--json").stdout)["datasets"]
    assert [(r["name"], r["versions"], r["latest"]) for r in rows] == [("iris", 2, 2), ("wine", 1, 1)]

    shown = invoke(runner, ws_dir, "datasets", "show", "iris")
    assert shown.exit_code == 0, shown.output
    assert "2 version(s)" in shown.output
    assert "manual__1 (p/prep/table)" in shown.output
    assert ws.datasets.get("iris", 2).digest[:12] in shown.output

    one = json.loads(invoke(runner, ws_dir, "datasets", "show", "iris:1", "--json").stdout)
    assert [v["version"] for v in one["versions"]] == [1]
    assert sorted(one["manifest"]["files"]) == ["a.csv"]
    detail = invoke(runner, ws_dir, "datasets", "show", "iris:2")
    assert "b.csv" in detail.output and "producing run" in detail.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["datasets", "show", "iras"], "dataset 'iras' is not registered"),
        (["datasets", "show", "iris:9"], "has no version 9"),
        (["datasets", "show", "iris:x"], "expected a number or 'latest'"),
        (["datasets", "show", "iris:0"], "versions start at 1"),
        (["datasets", "show", ".iris"], "invalid dataset reference '.iris': expected NAME"),
        (["datasets", "register", "iris", "/no/such/folder"], "/no/such/folder does not exist"),
        (["datasets", "register", "iris", ".", "--tag", "novalue"], "--tag 'novalue': expected KEY=VALUE"),
        (["datasets", "register", "bad name", "."], "invalid dataset name 'bad name'"),
    ],
)
def test_dataset_errors_are_one_clear_message(runner, ws, ws_dir, tmp_path, args, message):
    ws.datasets.register("iris", make_tree(tmp_path / "d1", {"a.csv": "1"}))
    result = invoke(runner, ws_dir, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "error:" in result.output
    assert "Traceback" not in result.output


# -------------------------------------------------------------------------------------------- models


def test_models_set_alias_show_and_list(runner, ws, ws_dir, tmp_path):
    for i in (1, 2):
        ws.models.register("churn", make_tree(tmp_path / f"m{i}", {"model.json": str(i)}),
                           extra={"metrics": {"auc": 0.8 + i / 100}})
    result = invoke(runner, ws_dir, "models", "set-alias", "churn", "production", "1", "--reason", "first release")
    assert result.exit_code == 0, result.output
    assert "alias production of model churn set to version 1" in result.output
    moved = invoke(runner, ws_dir, "models", "set-alias", "churn", "production", "2", "-r", "better auc")
    assert "moved from version 1 to 2" in moved.output
    assert ws.models.get_alias("churn", "production") == 2

    shown = invoke(runner, ws_dir, "models", "show", "churn")
    assert shown.exit_code == 0, shown.output
    assert "auc=0.82" in shown.output and "auc=0.81" in shown.output
    assert "aliases of model churn" in shown.output
    assert "better auc" in shown.output and "first release" in shown.output

    doc = json.loads(invoke(runner, ws_dir, "models", "show", "churn", "--json").stdout)
    history = doc["aliases"]["production"]["history"]
    assert [h["version"] for h in history] == [1, 2]
    assert history[1]["reason"]["text"] == "better auc"

    listed = json.loads(invoke(runner, ws_dir, "models", "list", "--json").stdout)["models"]
    assert listed[0]["aliases"] == {"production": 2}
    assert listed[0]["metrics"] == {"auc": pytest.approx(0.82)}

    missing = invoke(runner, ws_dir, "models", "set-alias", "churn", "production", "7")
    assert missing.exit_code == 2
    assert "has no version 7" in missing.output


# ---------------------------------------------------------------------------------------------- runs


def test_runs_list_and_show(runner, ws, ws_dir, tmp_path):
    record_run(ws, tmp_path, "quick", "manual__2026-01-01T00:00:00+00:00", started=1_767_225_600)
    record_run(ws, tmp_path, "quick", "manual__2026-01-02", reused=True, origin="manual__2026-01-01T00:00:00+00:00",
               started=1_767_312_000)
    record_run(ws, tmp_path, "other", "manual__bad", fail_train=True, started=1_767_398_400)

    listed = invoke(runner, ws_dir, "runs", "list")
    assert listed.exit_code == 0, listed.output
    assert "manual__bad" in listed.output and "failed" in listed.output
    rows = json.loads(invoke(runner, ws_dir, "runs", "list", "--json").stdout)["runs"]
    assert [(r["run_id"], r["status"], r["ran"], r["reused"], r["failed"]) for r in rows] == [
        ("manual__bad", "failed", 1, 0, 1),
        ("manual__2026-01-02", "succeeded", 1, 1, 0),
        ("manual__2026-01-01T00:00:00+00:00", "succeeded", 2, 0, 0),
    ]
    only = json.loads(invoke(runner, ws_dir, "runs", "list", "-p", "quick", "-n", "1", "--json").stdout)["runs"]
    assert [r["run_id"] for r in only] == ["manual__2026-01-02"]

    shown = invoke(runner, ws_dir, "runs", "show", "manual__2026-01-02")
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "reused from run manual__2026-01-01T00:00:00+00:00" in out
    assert "params changed: learning_rate 0.1 -> 0.5" in out
    assert "0123456789ab on main" in out
    assert "rows" in out and "conf" in out and "default" in out
    assert "accuracy=0.9123" in out
    assert "table <- prep.table" in out
    assert "c1c1c1c1c1c1" in out

    failed = invoke(runner, ws_dir, "runs", "show", "manual__bad", "-p", "other")
    assert "ValueError: boom" in failed.output
    doc = json.loads(invoke(runner, ws_dir, "runs", "show", "manual__bad", "--json").stdout)
    assert doc["summary"]["status"] == "failed"
    assert doc["run"]["steps"]["train"]["error"].endswith("boom")


def test_groups_alone_list_as_git_branch_does(runner, ws, ws_dir, tmp_path):
    """``mlpipe runs`` / ``models`` / ``datasets`` / ``endpoints`` alone list (the README's wording), with the
    list command's options; options before another sub-command reach it."""
    record_run(ws, tmp_path, "quick", "manual__2026-01-01T00:00:00+00:00", started=1_767_225_600)
    ws.models.register("churn", make_tree(tmp_path / "m", {"model.json": "1"}))
    ws.datasets.register("raw", make_tree(tmp_path / "d", {"a.csv": "1"}))
    for group in ("runs", "models", "datasets"):
        alone = runner.invoke(app, [group, "--workspace", str(ws_dir), "--json"])
        assert alone.exit_code == 0, alone.output
        assert json.loads(alone.stdout) == json.loads(invoke(runner, ws_dir, group, "list", "--json").stdout)
    assert "manual__2026-01-01T00:00:00+00:00" in runner.invoke(app, ["runs", "-w", str(ws_dir), "-p", "quick"]).output
    endpoints = runner.invoke(app, ["endpoints", "--definitions", str(tmp_path), "--workspace", str(ws_dir)])
    assert endpoints.exit_code == 0, endpoints.output
    shown = runner.invoke(app, ["runs", "--workspace", str(ws_dir), "show", "manual__2026-01-01T00:00:00+00:00"])
    assert shown.exit_code == 0, shown.output
    assert "run manual__2026-01-01T00:00:00+00:00 of pipeline quick" in shown.output


def test_runs_errors(runner, ws, ws_dir, tmp_path):
    record_run(ws, tmp_path, "quick", "r1")
    unknown = invoke(runner, ws_dir, "runs", "show", "nope")
    assert unknown.exit_code == 2
    assert "no pipeline recorded run 'nope'" in unknown.output
    wrong = invoke(runner, ws_dir, "runs", "list", "--pipeline", "quik")
    assert wrong.exit_code == 2
    assert "did you mean 'quick'" in wrong.output


# ------------------------------------------------------------------------------------------------ gc


def test_gc_dry_run_then_yes_keeps_registered_and_young(runner, ws, ws_dir, tmp_path):
    record_run(ws, tmp_path, "quick", "old")
    record_run(ws, tmp_path, "quick", "young")
    ws.datasets.register("kept", ws.output_prefix("quick", "old", "prep", "table"),
                         producing_run={"pipeline": "quick", "run_id": "old", "step": "prep", "output": "table"})
    age(ws_dir / "outputs" / "quick" / "old", 30)

    dry = invoke(runner, ws_dir, "gc", "--older-than", "7")
    assert dry.exit_code == 0, dry.output
    assert "would delete 1 output(s)" in dry.output
    assert "outputs/quick/old/train/model" in dry.output
    assert "add --yes" in dry.output
    assert (ws_dir / "outputs" / "quick" / "old" / "train" / "model").exists()

    doc = json.loads(invoke(runner, ws_dir, "gc", "--older-than", "7", "--json").stdout)
    assert doc["dry_run"] is True
    assert [c["prefix"] for c in doc["collected"]] == ["outputs/quick/old/train/model"]
    assert doc["bytes"] == doc["collected"][0]["bytes"] > 0

    done = invoke(runner, ws_dir, "gc", "--older-than", "7", "--yes", "--show-kept")
    assert done.exit_code == 0, done.output
    assert "deleted 1 output(s)" in done.output
    assert "produced dataset kept:1" in done.output
    assert not (ws_dir / "outputs" / "quick" / "old" / "train" / "model").exists()
    assert (ws_dir / "outputs" / "quick" / "old" / "prep" / "table").exists()
    assert ws.datasets.get("kept").version == 1  # registered content untouched
    assert ws.read_manifest(ws.datasets.get("kept").key) is not None


# --------------------------------------------------------------------------------------- workspace


def test_workspace_from_the_environment(runner, ws, ws_dir, tmp_path):
    ws.datasets.register("iris", make_tree(tmp_path / "d1", {"a.csv": "1"}))
    result = runner.invoke(app, ["datasets", "list", "--json"], env={"MLPIPE_WORKSPACE": ws_dir.as_uri()})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["workspace"] == ws_dir.as_uri()


def test_workspace_from_the_airflow_connection(runner, ws, ws_dir, tmp_path):
    ws.datasets.register("iris", make_tree(tmp_path / "d1", {"a.csv": "1"}))
    conn = json.dumps({"conn_type": "mlpipe", "extra": {"workspace": ws_dir.as_uri()}})
    result = runner.invoke(app, ["datasets", "list", "--json", "--conn-id", "mlpipe_clitest"],
                           env={"AIRFLOW_CONN_MLPIPE_CLITEST": conn})
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.stdout)["datasets"]] == ["iris"]


def test_no_workspace_configured_says_what_to_do(runner):
    result = runner.invoke(app, ["datasets", "list", "--conn-id", "mlpipe_nowhere"])
    assert result.exit_code == 2
    assert "connection 'mlpipe_nowhere' not found" in result.output
    assert "--workspace" in result.output and "MLPIPE_WORKSPACE" in result.output
    assert "Traceback" not in result.output


def test_bad_workspace_uri(runner):
    result = runner.invoke(app, ["runs", "list", "--workspace", "ftp://host/x"])
    assert result.exit_code == 2
    assert "unsupported workspace URI 'ftp://host/x'" in result.output


@pytest.mark.integration
def test_datasets_and_runs_on_s3(runner, s3_workspace_uri, moto_env, tmp_path):
    from airflow_mlpipe.workspace.core import Workspace

    env = {k: moto_env[k] for k in ("MLPIPE_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                    "AWS_DEFAULT_REGION")}
    data = make_tree(tmp_path / "data", {"a.csv": "1,2\n", "b/c.csv": "3\n"})
    args = ["--workspace", s3_workspace_uri]
    first = runner.invoke(app, ["datasets", "register", "iris", str(data), "--json", *args], env=env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["created"] is True
    again = runner.invoke(app, ["datasets", "register", "iris", str(data), "--json", *args], env=env)
    assert (json.loads(again.stdout)["version"], json.loads(again.stdout)["created"]) == (1, False)
    shown = runner.invoke(app, ["datasets", "show", "iris:1", "--json", *args], env=env)
    assert sorted(json.loads(shown.stdout)["manifest"]["files"]) == ["a.csv", "b/c.csv"]

    ws = Workspace.from_uri(s3_workspace_uri, endpoint_url=env["MLPIPE_S3_ENDPOINT_URL"],
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    record_run(ws, tmp_path, "quick", "manual__s3")
    runs = runner.invoke(app, ["runs", "show", "manual__s3", "--json", *args], env=env)
    assert runs.exit_code == 0, runs.output
    assert json.loads(runs.stdout)["summary"]["ran"] == 2
    gc = runner.invoke(app, ["gc", "--older-than", "0", "--json", *args], env=env)
    assert gc.exit_code == 0, gc.output
    assert json.loads(gc.stdout)["dry_run"] is True


def test_model_version_detail(runner, ws, ws_dir, tmp_path):
    ws.models.register("churn", make_tree(tmp_path / "m1", {"model.json": "1"}), extra={"metrics": {"auc": 0.9}})
    result = invoke(runner, ws_dir, "models", "show", "churn:1")
    assert result.exit_code == 0, result.output
    assert "model churn version 1" in result.output and "auc=0.9" in result.output and "model.json" in result.output


def test_importing_the_cli_imports_no_airflow():
    import subprocess
    import sys

    code = ("import sys, airflow_mlpipe.cli.main; "
            "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith(('airflow.', 'boto3'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_runs_list_reports_a_damaged_record_and_lists_the_others(runner, ws, ws_dir, tmp_path):
    """A corrupt run record is reported as damaged; `mlpipe runs list` still lists every other run."""
    from airflow_mlpipe.workspace.runs import run_prefix

    record_run(ws, tmp_path, "quick", "r1", started=1_767_225_600)
    record_run(ws, tmp_path, "quick", "r2", started=1_767_312_000)
    record_run(ws, tmp_path, "quick", "r3", started=1_767_398_400)
    ws.datastore.write_bytes(f"{run_prefix('quick', 'r2')}/run.json", b'{"run_id": "r2", "pip')

    listed = invoke(runner, ws_dir, "runs", "list")
    assert listed.exit_code == 0, listed.output
    assert "r1" in listed.output and "r3" in listed.output
    assert "damaged record quick/r2" in listed.output and "not valid JSON" in listed.output
    rows = json.loads(invoke(runner, ws_dir, "runs", "list", "--json").stdout)["runs"]
    assert sorted((r["run_id"], r["status"]) for r in rows) == [("r1", "succeeded"), ("r2", "damaged"),
                                                                 ("r3", "succeeded")]
    shown = invoke(runner, ws_dir, "runs", "show", "r2", "-p", "quick")
    assert shown.exit_code != 0 and "damaged" in shown.output and "Traceback" not in shown.output
