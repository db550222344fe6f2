"""The invalid corpus: one defect per file under invalid/, each with the exact problem expected
(file, line, field path, message, "did you mean" hint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.spec import Problem, load_pipeline, load_pipelines_text

HERE = Path(__file__).parent
INVALID = HERE / "invalid"

EXPECTED = {
    "alias_bomb.yaml": "alias_bomb.yaml:7: YAML aliases expand the value on this line to 597,871 values, more than the 100,000 that aliases may add to a definition",
    "absolute_script.yaml": "absolute_script.yaml:21: steps.train.script: script '/usr/bin/main.py' must be a path relative to source_directory, without '..'",
    "after_unknown.yaml": "after_unknown.yaml:22: steps.train.after.0: unknown step 'prepp' (did you mean 'prep'?)",
    "bad_cron.yaml": "bad_cron.yaml:3: schedule: invalid cron expression '0 6 * *': expected 5 fields 'minute hour day month weekday' (e.g. '0 6 * * 1') or a preset such",
    "bad_dataset_default.yaml": "bad_dataset_default.yaml:12: params.data.default: default 'raw:v2' is invalid: invalid dataset reference 'raw:v2': expected NAME, NAME:VERSION or",
    "bad_dataset_input.yaml": "bad_dataset_input.yaml:26: steps.train.inputs.extra: invalid dataset reference 'raw:0.1': expected NAME, NAME:VERSION or NAME:latest (NAME: letters,",
    "bad_destination.yaml": "bad_destination.yaml:27: steps.train.outputs.model.destination: unknown placeholder {run} in destination: use {pipeline}, {run_id}, {step} and",
    "bad_duration.yaml": "bad_duration.yaml:7: defaults.timeout: expected a duration like 30, '30s', '10m' or '1h30m', got '10 minutes'",
    "bad_model_ref.yaml": "bad_model_ref.yaml:26: steps.train.inputs.clf: invalid model reference 'models:/income_model': expected models:/NAME/VERSION or models:/NAME@ALIAS",
    "bad_mount.yaml": "bad_mount.yaml:9: compute.box.mounts: invalid mount '/data': expected 'host_path:/container/path' or 'host_path:/container/path:ro'",
    "bad_pipeline_name.yaml": "bad_pipeline_name.yaml:2: pipeline: invalid pipeline name 'my corpus': use letters, digits, '_', '.' and '-' (at most 200 characters); it becomes the",
    "bad_retries.yaml": "bad_retries.yaml:22: steps.train.retries: expected an integer, got 'many'",
    "bad_start_date.yaml": "bad_start_date.yaml:3: start_date: expected an absolute date like 2026-01-01 or 2026-01-01T06:00:00Z, got 'yesterday' (relative dates such as",
    "bad_step_name.yaml": "bad_step_name.yaml:20: steps.train it: invalid step name 'train it': use letters, digits, '_' and '-', starting with a letter or '_' (at most 100",
    "bounds_on_string.yaml": "bounds_on_string.yaml:12: params.label.minimum: 'minimum' is only for integer and number params (this one is string)",
    "compute_type_typo.yaml": "compute_type_typo.yaml:9: compute.gpu.type: unknown type 'kubernets' (expected one of: local, docker, kubernetes) (did you mean 'kubernetes'?)",
    "cycle.yaml": "cycle.yaml:14: steps.prep: the steps form a cycle: prep -> train -> prep (through inputs and 'after')",
    "default_out_of_bounds.yaml": "default_out_of_bounds.yaml:12: params.rows.default: default 0 is invalid: below minimum 1",
    "duplicate_key.yaml": "duplicate_key.yaml:28: steps.prep: duplicate key 'prep': already defined on line 14 (keys must be unique)",
    "empty_schedule.yaml": "empty_schedule.yaml:3: schedule: a schedule mapping needs 'cron', 'datasets' or both",
    "enum_default_not_in_values.yaml": "enum_default_not_in_values.yaml:12: params.mode.default: default 'quick' is invalid: must be one of 'fast', 'full', got 'quick'",
    "enum_without_values.yaml": "enum_without_values.yaml:12: params.mode.type: an enum param needs a non-empty 'values' list",
    "input_param_wrong_type.yaml": "input_param_wrong_type.yaml:25: steps.train.inputs.table: param 'rows' is of type integer: an input can only use a param of type dataset or path",
    "missing_image.yaml": "missing_image.yaml:23: steps.train.compute: compute target 'box' (docker) needs a container image: set compute.box.image or environments.plain.image",
    "no_environment.yaml": "no_environment.yaml:20: steps.train: no environment for step 'train': set steps.train.environment or defaults.environment",
    "no_steps.yaml": "no_steps.yaml:13: steps: no steps: a pipeline needs at least one step",
    "path_param_absolute.yaml": "path_param_absolute.yaml:12: params.where.default: default '/etc/passwd' is invalid: '/etc/passwd' is absolute: give a path relative to the workspace root",
    "path_param_dotdot.yaml": "path_param_dotdot.yaml:12: params.where.default: default 'data/../../secrets' is invalid: 'data/../../secrets' contains a '..' segment: a path must stay inside the workspace",
    "register_as_clash.yaml": "register_as_clash.yaml:27: steps.train.outputs.model.register_as: dataset 'corpus_table' is already registered by steps.prep.outputs.table: each",
    "requirements_file_missing.yaml": "requirements_file_missing.yaml:10: environments.plain.requirements_file: requirements file 'requirements-missing.txt' not found",
    "reserved_param.yaml": "reserved_param.yaml:12: params.regenerate_outputs: 'regenerate_outputs' is reserved: the pipeline adds this param itself; pick another name",
    "reserved_version_param.yaml": "reserved_version_param.yaml:12: params.pipeline_version: 'pipeline_version' is reserved: the endpoint DAG picks the published version with it; pick another name",
    "script_missing.yaml": "script_missing.yaml:21: steps.train.script: script 'missing.py' not found in source directory '../fixtures/src'",
    "self_reference.yaml": "self_reference.yaml:25: steps.train.inputs.table: a step cannot read its own output",
    "source_dir_absolute.yaml": "source_dir_absolute.yaml:22: steps.train.source_directory: source directory '/etc' is outside the definitions folder",
    "source_dir_escape.yaml": "source_dir_escape.yaml:22: steps.train.source_directory: source directory '../../..' is outside the definitions folder",
    "source_dir_missing.yaml": "source_dir_missing.yaml:22: steps.train.source_directory: source directory '../fixtures/nowhere' not found",
    "steps_ref_in_arguments.yaml": "steps_ref_in_arguments.yaml:23: steps.train.arguments.1: ${steps.prep.outputs.table} cannot be used here: declare it as an input of step 'train'",
    "top_level_list.yaml": "top_level_list.yaml:2: expected a mapping at the top level (pipeline, steps, ...), got a list",
    "unclosed_reference.yaml": "unclosed_reference.yaml:17: steps.prep.arguments.1: unclosed reference in '${params.rows': '${' without '}' (write $${ for a literal)",
    "undeclared_input_in_args.yaml": "undeclared_input_in_args.yaml:23: steps.train.arguments.1: ${inputs.data} refers to an undeclared input: declare it under steps.train.inputs",
    "undeclared_output_in_args.yaml": "undeclared_output_in_args.yaml:23: steps.train.arguments.3: ${outputs.modle} refers to an undeclared output: declare it under steps.train.outputs",
    "unknown_compute.yaml": "unknown_compute.yaml:22: steps.train.compute: unknown compute target 'locl' (did you mean 'local'?)",
    "unknown_default_compute.yaml": "unknown_default_compute.yaml:5: defaults.compute: unknown compute target 'lokal' (did you mean 'local'?)",
    "unknown_environment.yaml": "unknown_environment.yaml:22: steps.train.environment: unknown environment 'plian' (did you mean 'plain'?)",
    "unknown_field.yaml": "unknown_field.yaml:21: steps.train.scirpt: unknown field 'scirpt' (did you mean 'script'?)",
    "unknown_output_ref.yaml": "unknown_output_ref.yaml:25: steps.train.inputs.table: step 'prep' has no output 'tabel' (its outputs: table) (did you mean 'table'?)",
    "unknown_param_in_args.yaml": "unknown_param_in_args.yaml:17: steps.prep.arguments.1: unknown param 'rowz' in ${params.rowz} (did you mean 'rows'?)",
    "unknown_step_ref.yaml": "unknown_step_ref.yaml:25: steps.train.inputs.table: unknown step 'prp' (did you mean 'prep'?)",
    "unknown_step_type.yaml": "unknown_step_type.yaml:21: steps.train.type: unknown step type 'pyhton' (registered: python, register_model, compare, batch_score) (did you mean 'python'?)",
    "unknown_top_field.yaml": "unknown_top_field.yaml:11: parms: unknown field 'parms' (did you mean 'params'?)",
    "values_on_non_enum.yaml": "values_on_non_enum.yaml:12: params.mode.values: 'values' is only for enum params (this one is string)",
    "version_zero.yaml": "version_zero.yaml:3: version: must be >= 1, got 0",
    "yaml_syntax.yaml": "yaml_syntax.yaml:20: YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping)",
}


def test_every_corpus_file_has_an_expectation():
    files = {p.name for p in INVALID.glob("*.yaml")}
    assert files == set(EXPECTED)
    assert len(files) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_definition_reports_its_one_defect(name, monkeypatch):
    monkeypatch.chdir(INVALID)
    with pytest.raises(DefinitionError) as info:
        load_pipeline(name)
    err = info.value
    assert len(err.problems) == 1, str(err)
    problem = err.problems[0]
    assert isinstance(problem, Problem)
    assert str(problem).startswith(EXPECTED[name])
    report = str(err)
    assert report.splitlines()[0] == f"1 problem in {name}"
    assert report.splitlines()[1] == str(problem)
    # a user's mistake never surfaces as Python or pydantic internals
    for leak in ("Traceback", "pydantic", "Input should", "validation error", "Value error,", "[type="):
        assert leak not in report


TRAIN = "  train:\n    script: main.py"


def _defective(*mutations: tuple[str, str]) -> str:
    text = (INVALID.parent / "fixtures" / "base.yaml").read_text()
    for old, new in mutations:
        assert old in text
        text = text.replace(old, new, 1)
    return text


def test_three_defects_are_all_reported():
    text = _defective(
        (TRAIN, TRAIN + "\n    compute: locl"),  # unknown compute target
        ("${steps.prep.outputs.table}", "${steps.prep.outputs.tabel}"),  # unknown output
    )
    text = text.replace(
        "  rows: {type: integer, default: 10, minimum: 1}", "  rows: {type: integer, default: 0, minimum: 1}"
    )
    with pytest.raises(DefinitionError) as info:
        load_pipelines_text(text, "three.yaml", base_dir=HERE / "invalid")
    err = info.value
    lines = str(err).splitlines()
    assert lines[0] == "3 problems in three.yaml"
    assert sorted(p.path for p in err.problems) == [
        "params.rows.default",
        "steps.train.compute",
        "steps.train.inputs.table",
    ]
    assert "three.yaml:12: params.rows.default: default 0 is invalid: below minimum 1" in lines
    assert any("unknown compute target 'locl' (did you mean 'local'?)" in line for line in lines)
    assert any("has no output 'tabel'" in line and "did you mean 'table'" in line for line in lines)


def test_structural_and_semantic_problems_together():
    """A step with a bad field is still checked for references; a typo'd step field hides nothing."""
    text = _defective(
        (TRAIN, TRAIN + "\n    retries: many"),
        ('"${inputs.table}"', '"${inputs.tabel}"'),
    ).replace("  prep:\n    script: main.py", "  prep:\n    scirpt: main.py")
    with pytest.raises(DefinitionError) as info:
        load_pipelines_text(text, "mixed.yaml", base_dir=HERE / "invalid")
    messages = [str(p) for p in info.value.problems]
    assert len(messages) == 3, messages
    assert any("steps.prep.scirpt: unknown field 'scirpt' (did you mean 'script'?)" in m for m in messages)
    assert any("steps.train.retries: expected an integer, got 'many'" in m for m in messages)
    assert any("${inputs.tabel} refers to an undeclared input" in m for m in messages)


def test_problems_are_sorted_by_line_and_structured():
    text = _defective(("pipeline: corpus", "pipeline: 'bad name'"), (TRAIN, TRAIN + "\n    compute: locl"))
    with pytest.raises(DefinitionError) as info:
        load_pipelines_text(text, "x.yaml")
    problems = info.value.problems
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    as_dict = problems[-1].to_dict()
    assert as_dict == {
        "file": "x.yaml",
        "line": problems[-1].line,
        "path": "steps.train.compute",
        "message": "unknown compute target 'locl'",
        "hint": "local",
    }


def test_reference_to_a_broken_step_is_not_reported_twice():
    text = _defective().replace(
        "  prep:\n    script: main.py", "  prep:\n    type: pyhton\n    script: main.py"
    )
    with pytest.raises(DefinitionError) as info:
        load_pipelines_text(text, "x.yaml")
    assert [p.path for p in info.value.problems] == ["steps.prep.type"]


def test_file_not_found_is_a_definition_error(tmp_path):
    with pytest.raises(DefinitionError, match="cannot read the file"):
        load_pipeline(tmp_path / "nope.yaml")


def test_empty_file(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(DefinitionError, match="the file is empty"):
        load_pipeline(tmp_path / "empty.yaml")


def test_source_directory_outside_the_definitions_folder_names_both(monkeypatch):
    monkeypatch.chdir(INVALID)
    with pytest.raises(DefinitionError) as info:
        load_pipeline("source_dir_escape.yaml")
    message = info.value.problems[0].message
    root = HERE.resolve()  # the folder above the definition's folder (no DAG file names another)
    assert f"outside the definitions folder {root} " in message
    assert f"(it resolves to {HERE.resolve().parents[1]})" in message
    assert message.endswith("a definition may only snapshot code inside that folder; move the code there and "
                            "name it relative to the definition")


def test_symlinked_source_directory_must_stay_inside(tmp_path):
    """A source_directory is judged on its real path: a symlink inside the folder that leads out is refused;
    one that stays inside is fine."""
    root = tmp_path / "dags"
    (root / "pipelines").mkdir(parents=True)
    (root / "src" / "app").mkdir(parents=True)
    (root / "src" / "app" / "main.py").write_text("")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "main.py").write_text("")
    (root / "src" / "inside").symlink_to(root / "src" / "app", target_is_directory=True)
    (root / "src" / "outside").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    base = (HERE / "fixtures" / "base.yaml").read_text()
    good = base.replace("../fixtures/src", "../src/inside")
    assert len(load_pipelines_text(good, "p.yaml", base_dir=root / "pipelines").steps) == 2
    bad = _defective(("    source_directory: ../fixtures/src\n    arguments: [\"--data\"",
                      "    source_directory: ../src/outside\n    arguments: [\"--data\""))
    bad = bad.replace("../fixtures/src", "../src/inside")
    with pytest.raises(DefinitionError) as info:
        load_pipelines_text(bad, "p.yaml", base_dir=root / "pipelines")
    assert [str(p) for p in info.value.problems] == [
        f"p.yaml:22: steps.train.source_directory: source directory '../src/outside' leads outside the definitions "
        f"folder {root.resolve()} through a symbolic link (its real path is {(tmp_path / 'elsewhere').resolve()}): "
        "a definition may only snapshot code inside that folder; move the code there and name it relative to "
        "the definition"
    ]
    # an explicit root (the factory passes the DAG file's folder) is what the path is judged against
    with pytest.raises(DefinitionError, match="outside the definitions folder"):
        load_pipelines_text(good, "p.yaml", base_dir=root / "pipelines", root=root / "pipelines")
