"""The DAG factory: a validated pipeline definition -> an Airflow DAG.

One stub file per definition in the DAGs folder::

    from airflow_mlpipe.factory import load_dag

    dag = load_dag(__file__, "pipelines/quickstart.yaml")

so a broken definition is an import error of its own stub and never takes other pipelines down.
Parse-time discipline: no network, database, Variable, Connection or subprocess here; only the YAML file
(and the existence of each step's script) is read.
"""

from __future__ import annotations

import datetime
import pathlib
from typing import Any

from airflow_mlpipe.factory.builders import builder_for, dag_id_for

# Imported here, not lazily: the dag processor pre-imports the modules a DAG file imports
# (``parsing_pre_import_modules``), so the pydantic models are loaded once, not in every file's process.
from airflow_mlpipe.spec import load_pipeline, param_json_schema

REGENERATE_PARAM = "regenerate_outputs"
REGENERATE_DESCRIPTION = "Recompute every step, ignoring results that could be reused."


def param_args(spec: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (default, keyword arguments of ``Param``): the JSON schema and description of each param,
    plus the run-level regenerate switch. Shared by the factory and ``mlpipe compile``."""
    args: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name, param in spec.params.items():
        schema = param_json_schema(param)
        schema.pop("description", None)
        schema.pop("default", None)
        args[name] = (param.default, {"description": param.description, "title": name, **schema})
    args[REGENERATE_PARAM] = (
        False, {"type": "boolean", "title": REGENERATE_PARAM, "description": REGENERATE_DESCRIPTION}
    )
    return args


def dag_params(spec: Any) -> dict[str, Any]:
    from airflow_mlpipe.compat import Param

    return {name: Param(default, **kwargs) for name, (default, kwargs) in param_args(spec).items()}


def dag_schedule(spec: Any) -> Any:
    """null -> None; a cron or preset -> itself; {cron, datasets} -> Assets, or Assets-or-time."""
    schedule = spec.schedule
    if schedule is None or isinstance(schedule, str):
        return schedule
    from airflow_mlpipe.assets import dataset_asset

    cron = getattr(schedule, "cron", None)
    names = list(getattr(schedule, "datasets", None) or [])
    if not names:
        return cron
    from airflow_mlpipe.compat import AssetAny

    condition = dataset_asset(names[0]) if len(names) == 1 else AssetAny(*(dataset_asset(n) for n in names))
    if not cron:
        return condition
    from airflow_mlpipe.compat import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=condition)


def _start_date(value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
    return datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def dag_kwargs(spec: Any, with_params: bool = True) -> dict[str, Any]:
    defaults = spec.defaults
    default_args: dict[str, Any] = {"owner": spec.owner or "airflow"}
    if defaults is not None and defaults.retries is not None:
        default_args["retries"] = defaults.retries
    if defaults is not None and defaults.timeout is not None:
        default_args["execution_timeout"] = datetime.timedelta(seconds=defaults.timeout)
    description = (spec.description or "").strip()
    return {
        "dag_id": dag_id_for(spec),
        "description": description.splitlines()[0][:200] if description else None,
        "doc_md": description or None,
        "tags": sorted({*(spec.tags or []), "mlpipe"}),
        "schedule": dag_schedule(spec),
        "start_date": _start_date(spec.start_date),
        "max_active_runs": spec.max_active_runs or 16,
        "catchup": bool(spec.catchup),
        "default_args": default_args,
        **({"params": dag_params(spec)} if with_params else {}),
    }


def build_dag(spec: Any) -> Any:
    """A validated PipelineSpec -> DAG with one task per step, edges from data and ``after``."""
    from airflow_mlpipe.compat import DAG

    dag = DAG(**dag_kwargs(spec))
    with dag:
        tasks: dict[str, Any] = {}
        for name in spec.step_order():
            step = spec.steps[name]
            tasks[name] = builder_for(step.type).create(spec, name, step)
        for name in spec.step_order():
            for upstream in spec.upstream(name):
                tasks[upstream] >> tasks[name]
    return dag


def load_dag(anchor: str | pathlib.Path, definition: str | pathlib.Path) -> Any:
    """Build the DAG of ``definition`` (relative to the folder of ``anchor``, usually ``__file__``)."""
    path = pathlib.Path(definition)
    if not path.is_absolute():
        path = pathlib.Path(anchor).resolve().parent / path
    return build_dag(load_pipeline(path))
