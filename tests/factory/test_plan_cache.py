"""The factory's plan cache: a definition parsed before builds the same DAG from its plan without the
pydantic models; any change to the file means a new validation (so a new defect is still reported)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.factory import load_dag

REPO = pathlib.Path(__file__).resolve().parents[2]


def _shape(dag) -> dict:
    return {
        "tasks": {t.task_id: (type(t).__name__, sorted(t.upstream_task_ids)) for t in dag.tasks},
        "params": {k: dag.params.get_param(k).dump() for k in dag.params},
        "schedule": (type(dag.timetable).__name__, repr(getattr(dag.timetable, "asset_condition", None)),
                     repr(getattr(dag.timetable, "timetable", None))),
        "default_args": repr(dag.default_args),
        "operator_args": {t.task_id: repr(getattr(t, "arguments", None)) for t in dag.tasks},
    }


def test_warm_build_equals_cold_build_and_changes_invalidate(folder, tmp_path):
    for name in ("income_retrain.yaml", "income_batch_score.yaml", "quickstart.yaml"):
        cold = load_dag(folder / "x.py", f"pipelines/{name}")
        plans = list((tmp_path / "cache" / "plans").glob(f"{pathlib.Path(name).stem}-*.json"))
        assert len(plans) == 1
        warm = load_dag(folder / "x.py", f"pipelines/{name}")
        assert _shape(warm) == _shape(cold)

    definition = folder / "pipelines" / "quickstart.yaml"
    definition.write_text(definition.read_text().replace("default: 2000", "default: 2500"))
    assert load_dag(folder / "x.py", "pipelines/quickstart.yaml").params["rows"] == 2500
    definition.write_text(definition.read_text().replace("minimum: 100", "minimun: 100"))
    with pytest.raises(DefinitionError, match="minimun"):
        load_dag(folder / "x.py", "pipelines/quickstart.yaml")


@pytest.mark.integration  # a fresh Python process imports Airflow (about 5 s)
def test_a_warm_parse_does_not_load_pydantic(folder, tmp_path):
    load_dag(folder / "x.py", "pipelines/income_retrain.yaml")  # cold: validates, writes the plan
    probe = (
        "import sys; from airflow_mlpipe.factory import load_dag; "
        f"dag = load_dag({str(folder / 'x.py')!r}, 'pipelines/income_retrain.yaml'); "
        "print(dag.dag_id, 'pydantic' in sys.modules, "
        "','.join(sorted(m for m in sys.modules if m.startswith('airflow_mlpipe.spec'))) or '-')"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "MLPIPE_CACHE_DIR": str(tmp_path / "cache")})
    dag_id, _pydantic_loaded_by_airflow, spec_modules = out.stdout.split()[-3:]
    assert dag_id == "income_retrain_v2"
    # the standard-library naming and value rules (spec/names.py, spec/values.py, and the lazy package that
    # holds them), and the models of compute targets and environments that every step operator's constructor
    # checks its compute= / environment= with (spec/compute.py, spec/types.py: about 15 ms, pydantic itself
    # is loaded by Airflow); never the definition models (spec.pipeline, spec.steps, spec.loader...)
    allowed = {"-", "airflow_mlpipe.spec", "airflow_mlpipe.spec.names", "airflow_mlpipe.spec.values",
               "airflow_mlpipe.spec.compute", "airflow_mlpipe.spec.types"}
    assert set(spec_modules.split(",")) <= allowed, (
        f"the spec layer (our pydantic models) was imported on a warm parse: {spec_modules}")


def test_a_cached_plan_whose_script_is_gone_is_validated_again(folder):
    """A hit checks that every step's script is still there: a deleted script is reported with its line as on a
    cold parse (before, the cached plan built the DAG and the task failed at run time)."""
    dag = load_dag(folder / "x.py", "pipelines/quickstart.yaml")  # cold: the plan is written
    train = load_dag(folder / "x.py", "pipelines/quickstart.yaml").task_dict["train"]  # warm
    assert train.task_id == dag.task_dict["train"].task_id
    (pathlib.Path(train.source_directory) / train.script).unlink()
    with pytest.raises(DefinitionError, match=re.escape(train.script)):
        load_dag(folder / "x.py", "pipelines/quickstart.yaml")


def test_the_plan_key_follows_the_builders(folder, tmp_path, monkeypatch):
    """A step type registered by a plugin, or an edit of a module that holds a builder (an editable install keeps
    the version), gives the plan another key: a plan built by other code is never reused."""
    import importlib

    import airflow_mlpipe.factory as factory
    from airflow_mlpipe.factory.builders import BUILDERS

    definition = folder / "pipelines" / "quickstart.yaml"
    raw = definition.read_bytes()
    before = factory._plan_file(definition, raw, folder)
    assert factory._plan_file(definition, raw, folder) == before

    module_dir = tmp_path / "plugin_src"
    module_dir.mkdir()
    source = module_dir / "mlpipe_extra_builder.py"
    source.write_text("from airflow_mlpipe.factory.builders import StepBuilder\n\n\n"
                      "class ExtraBuilder(StepBuilder):\n    pass\n")
    monkeypatch.syspath_prepend(str(module_dir))
    extra = importlib.import_module("mlpipe_extra_builder")
    monkeypatch.setitem(BUILDERS, "extra", extra.ExtraBuilder())  # register_builder, undone after the test
    registered = factory._plan_file(definition, raw, folder)
    assert registered != before

    source.write_text(source.read_text().replace("pass", '"""edited"""'))
    monkeypatch.setattr(factory, "_CODE_DIGEST", {})  # a new process reads the files again
    assert factory._plan_file(definition, raw, folder) not in (before, registered)
