"""Valid definitions: the examples, the PipelineSpec helpers, field forms, the step registry and
the JSON Schema."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import jsonschema
import pytest
import yaml

from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.spec import (
    STEP_TYPES,
    LocalCompute,
    PipelineSpec,
    PythonStep,
    StepBase,
    json_schema,
    load_pipeline,
    load_pipelines_text,
    register_step_type,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "dags_examples" / "pipelines").glob("*.y*ml"))
QUICKSTART = ROOT / "dags_examples" / "pipelines" / "quickstart.yaml"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(path):
    spec = load_pipeline(path)
    assert isinstance(spec, PipelineSpec)
    assert spec.source_file == path.resolve()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_match_the_json_schema(path):
    data = yaml.safe_load(path.read_text())
    data = json.loads(json.dumps(data, default=lambda v: v.isoformat()))  # dates as JSON would carry them
    jsonschema.validate(data, json_schema())


def test_quickstart_graph():
    spec = load_pipeline(QUICKSTART)
    assert spec.pipeline == "mlpipe_quickstart"
    assert list(spec.steps) == ["prep", "train"]
    assert spec.step_order() == ["prep", "train"]
    assert spec.upstream("train") == ["prep"]
    assert spec.upstream("prep") == []
    assert spec.downstream("prep") == ["train"]
    assert spec.params_used("prep") == ["rows", "seed"]
    assert spec.params_used("train") == ["learning_rate", "epochs"]
    assert spec.resolved_compute("train") == ("local", LocalCompute(type="local"))
    name, env = spec.resolved_environment("train")
    assert name == "plain" and env.python == "python3"
    assert spec.resolved_retries("train") == 1
    assert spec.resolved_timeout("train") == 600
    assert spec.source_dir("train") == (ROOT / "dags_examples" / "src" / "quickstart").resolve()
    assert spec.start_date == dt.datetime(2026, 1, 1)
    assert spec.schedule is None and spec.catchup is False and spec.max_active_runs == 4
    assert spec.registered_datasets() == {"quickstart_table": ("prep", "table")}
    assert spec.steps["train"].outputs["model"].destination == "outputs/{pipeline}/{run_id}/{step}/{output}"
    assert spec.line_of("steps", "train", "script") == 65
    ref = spec.input_refs("train")["table"]
    assert (ref.kind, ref.step, ref.name) == ("step_output", "prep", "table")


BASE = (FIXTURES / "base.yaml").read_text()


def _load(text: str) -> PipelineSpec:
    return load_pipelines_text(text, "t.yaml", base_dir=FIXTURES)


def test_stable_topological_order_follows_the_written_order():
    steps = "".join(
        f"  {name}:\n    script: main.py\n    source_directory: src\n"
        + (f"    after: [{after}]\n" if after else "")
        for name, after in [("d", "b"), ("c", ""), ("b", ""), ("a", "d")]
    )
    spec = _load(BASE.split("steps:\n")[0] + "steps:\n" + steps)
    assert spec.step_order() == ["c", "b", "d", "a"]
    assert spec.upstream("a") == ["d"]


@pytest.mark.parametrize(
    "value, seconds",
    [(30, 30), ("30", 30), ("30s", 30), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1d", 86400)],
)
def test_durations(value, seconds):
    spec = _load(
        BASE.replace("  environment: plain\n", f"  environment: plain\n  timeout: {json.dumps(value)}\n", 1)
    )
    assert spec.defaults.timeout == seconds


@pytest.mark.parametrize(
    "schedule, cron, datasets",
    [
        ("'@weekly'", "@weekly", []),
        ("'0 6 * * 1'", "0 6 * * 1", []),
        ("{datasets: [raw_events]}", None, ["raw_events"]),
        ("{cron: '@daily', datasets: [a, b.c]}", "@daily", ["a", "b.c"]),
    ],
)
def test_schedule_forms(schedule, cron, datasets):
    spec = _load(BASE.replace("start_date:", f"schedule: {schedule}\nstart_date:", 1))
    assert spec.schedule.cron == cron and spec.schedule.datasets == datasets


def test_compute_targets_and_environment():
    text = BASE.replace(
        "  local: {type: local}",
        """  local: {type: local, venv_dir: /tmp/venvs}
  box:
    type: docker
    cpus: 1.5
    memory: 1g
    mounts: ["/data:/data:ro"]
    env: {MODE: fast, N: 3}
  k8s:
    type: kubernetes
    image: python:3.12-slim
    cpu: 500m
    memory: 2Gi
    gpu: 1
    node_selector: {pool: gpu}
    tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]
    image_pull_secrets: [regcred]""",
    ).replace(
        "  plain: {python: python3}",
        "  plain: {python: python3, image: 'python:3.12', requirements_file: requirements.txt}",
    )
    text = text.replace(
        "  train:\n    script: main.py",
        "  train:\n    compute: k8s\n    resources: {cpu: 2, memory: 4g, gpu: 1}\n    script: main.py",
    )
    spec = _load(text)
    assert spec.compute["box"].env == {"MODE": "fast", "N": "3"}
    assert spec.compute["k8s"].tolerations[0].operator == "Exists"
    assert spec.resolved_compute("train")[0] == "k8s"
    assert spec.steps["train"].resources.gpu == 1


def test_outputs_null_and_empty_mean_defaults():
    spec = _load(BASE.replace("      model: {}", "      model:\n      other: null"))
    outputs = spec.steps["train"].outputs
    assert outputs["model"] == outputs["other"]
    assert outputs["model"].register_as is None


def test_endpoint_and_version():
    spec = _load(
        BASE.replace(
            "pipeline: corpus", "pipeline: corpus\nversion: 3\nendpoint: {name: corpus_ep, default: true}"
        )
    )
    assert spec.version == 3 and spec.endpoint.name == "corpus_ep" and spec.endpoint.default is True


def test_text_without_base_dir_skips_file_checks():
    spec = load_pipelines_text(BASE.replace("main.py", "not-there.py"), "t.yaml")
    assert spec.source_file is None


def test_register_a_step_type():
    class NoteStep(StepBase):
        needs_compute = False
        type: Literal["note"] = "note"
        text: str

    register_step_type("note", NoteStep)
    try:
        spec = _load(BASE + "  note:\n    type: note\n    text: hello\n    after: [train]\n")
        assert isinstance(spec.steps["note"], NoteStep)
        assert spec.upstream("note") == ["train"]
        assert "note" in json.dumps(json_schema())
        with pytest.raises(ValueError, match="already registered"):
            register_step_type("note", PythonStep)
        with pytest.raises(TypeError):
            register_step_type("bad", dict)  # type: ignore[arg-type]
        with pytest.raises(DefinitionError, match="unknown field 'txt'"):
            _load(BASE + "  note:\n    type: note\n    txt: hello\n")
    finally:
        STEP_TYPES.pop("note", None)


def test_json_schema_structure():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"pipeline", "steps"}
    for key in (
        "pipeline",
        "schedule",
        "start_date",
        "defaults",
        "compute",
        "environments",
        "params",
        "steps",
    ):
        assert key in schema["properties"]
    bad = {"pipeline": "x", "steps": {"a": {"scirpt": "x.py"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_spec_imports_no_airflow():
    code = (
        "import sys, airflow_mlpipe.spec, airflow_mlpipe.cli.main; "
        "bad = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # noqa: S603
    assert result.returncode == 0, result.stdout + result.stderr
