"""The DAG factory: a validated pipeline definition -> an Airflow DAG.

One stub file per definition in the DAGs folder::

    from airflow_mlpipe.factory import load_dag

    dag = load_dag(__file__, "pipelines/quickstart.yaml")

so a broken definition is an import error of its own stub and never takes other pipelines down.
Parse-time discipline: no network, database, Variable, Connection or subprocess here; only the YAML file
(and the existence of each step's script) is read.

Airflow parses a DAG file in the dag processor and again in every task process. So a validated definition
is kept as its *plan* (the DAG's and each task's arguments, plain JSON) in ``MLPIPE_CACHE_DIR``, keyed by
the definition's bytes, its path, its definitions folder and this package's version: a definition parsed
before builds its DAG from the plan, without loading the pydantic models or validating again. A changed
file is validated anew.

The definitions folder is the folder of the DAG file (``anchor``): every step's source directory must
resolve inside it, so a definition cannot snapshot ``/etc`` or ``../..`` (``spec.api.definitions_root``
for a definition that is not below the DAG file's folder).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
from typing import Any

from airflow_mlpipe import __version__
from airflow_mlpipe.factory.builders import builder_for
from airflow_mlpipe.spec.names import REGENERATE_PARAM, dag_id_for

PLAN_FORMAT = 4  # 2: validated with the definitions-folder rule; 3: params carry mlpipe_type, integer bounds, no control characters; 4: operators take no params_used, param_types, step_task_ids (derived from the DAG)
REGENERATE_DESCRIPTION = "Recompute every step, ignoring results that could be reused."


def param_args(spec: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (default, keyword arguments of ``Param``): the JSON schema and description of each param,
    plus the run-level regenerate switch. Shared by the factory and ``mlpipe compile``."""
    from airflow_mlpipe.spec import param_json_schema

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


def _params(args: dict[str, Any]) -> dict[str, Any]:
    from airflow_mlpipe.compat import Param

    return {name: Param(default, **kwargs) for name, (default, kwargs) in args.items()}


def schedule_data(spec: Any) -> Any:
    """The schedule as plain data: None, a cron/preset string, or ``{"cron", "datasets"}``."""
    schedule = spec.schedule
    if schedule is None or isinstance(schedule, str):
        return schedule
    return {"cron": getattr(schedule, "cron", None), "datasets": list(getattr(schedule, "datasets", None) or [])}


def _schedule(schedule: Any, start_date: datetime.datetime | None = None) -> Any:
    """null -> None; a cron or preset -> itself; {cron, datasets} -> Assets, or Assets-or-time. The cron of
    Assets-or-time is read in the DAG's time zone (``start_date``'s), as Airflow reads a cron given alone."""
    if schedule is None or isinstance(schedule, str):
        return schedule
    from airflow_mlpipe.assets import dataset_asset

    cron = schedule.get("cron")
    names = list(schedule.get("datasets") or [])
    if not names:
        return cron
    from airflow_mlpipe.compat import AssetAny

    condition = dataset_asset(names[0]) if len(names) == 1 else AssetAny(*(dataset_asset(n) for n in names))
    if not cron:
        return condition
    from airflow_mlpipe.compat import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone=dag_timezone(start_date)),
                               assets=condition)


def dag_timezone(start_date: datetime.datetime | None) -> Any:
    """The DAG's time zone as Airflow takes it from ``start_date``: ``"UTC"``, a zone name, or a
    ``pendulum.FixedTimezone`` for a fixed offset. ``mlpipe compile`` writes the same value."""
    if start_date is None or start_date.tzinfo is None:
        return "UTC"
    import pendulum

    tz = pendulum.instance(start_date).timezone
    if isinstance(tz, pendulum.FixedTimezone):
        return "UTC" if tz.offset == 0 else pendulum.FixedTimezone(tz.offset)
    return tz.name


def _start_date(value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
    return datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def dag_kwargs(spec: Any) -> dict[str, Any]:
    """The DAG's settings but its schedule and params (see ``schedule_data`` and ``param_args``)."""
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
        "start_date": _start_date(spec.start_date),
        "max_active_runs": spec.max_active_runs or 16,
        "catchup": bool(spec.catchup),
        "default_args": default_args,
    }


def dag_plan(spec: Any) -> dict[str, Any]:
    """Everything the DAG is built from, as plain JSON data (see the module docstring)."""
    kwargs = dag_kwargs(spec)
    kwargs["start_date"] = kwargs["start_date"].isoformat()
    timeout = kwargs["default_args"].get("execution_timeout")
    if timeout is not None:
        kwargs["default_args"]["execution_timeout"] = {"$seconds": timeout.total_seconds()}
    order = spec.step_order()
    return {
        "format": PLAN_FORMAT,
        "dag": kwargs,
        "schedule": schedule_data(spec),
        "params": param_args(spec),
        "tasks": [
            {"name": name, "type": spec.steps[name].type,
             "data": builder_for(spec.steps[name].type).describe(spec, name, spec.steps[name])}
            for name in order
        ],
        "edges": [[upstream, name] for name in order for upstream in spec.upstream(name)],
    }


def build_from_plan(plan: dict[str, Any]) -> Any:
    from airflow_mlpipe.compat import DAG
    from airflow_mlpipe.factory.builders import decode

    kwargs = decode(dict(plan["dag"]))
    kwargs["default_args"] = decode(dict(kwargs["default_args"]))
    kwargs["start_date"] = datetime.datetime.fromisoformat(kwargs["start_date"])
    dag = DAG(**kwargs, schedule=_schedule(plan["schedule"], kwargs["start_date"]), params=_params(plan["params"]))
    with dag:
        tasks = {task["name"]: builder_for(task["type"]).create_from(task["data"]) for task in plan["tasks"]}
        for upstream, name in plan["edges"]:
            tasks[upstream] >> tasks[name]
    return dag


def build_dag(spec: Any) -> Any:
    """A validated PipelineSpec -> DAG with one task per step, edges from data and ``after``."""
    return build_from_plan(json.loads(json.dumps(dag_plan(spec))))


_CODE_DIGEST: dict[tuple, str] = {}


def _code_digest() -> str:
    """What builds a DAG from a plan besides the definition: the registered step types and their builder
    classes, and the source of the modules that hold them and of this one. An edited builder (an editable
    install does not bump the version) or a step type registered by a plugin means a new plan. Memoised per
    registry state: the files are read once per process."""
    from airflow_mlpipe.factory.builders import BUILDERS

    registry = tuple(sorted((name, type(b).__module__, type(b).__qualname__) for name, b in BUILDERS.items()))
    digest = _CODE_DIGEST.get(registry)
    if digest is None:
        import sys

        files = sorted({__file__, *(getattr(sys.modules.get(module), "__file__", None) or ""
                                    for _, module, _ in registry)} - {""})
        h = hashlib.sha256(repr(registry).encode())
        for name in files:
            try:
                h.update(pathlib.Path(name).read_bytes())
            except OSError:
                h.update(f"unreadable:{name}".encode())
        digest = _CODE_DIGEST[registry] = h.hexdigest()
    return digest


def _cache_file(stem: str, parts: list[bytes], plan_format: int) -> pathlib.Path:
    """Where a plan is kept in ``MLPIPE_CACHE_DIR/plans``: ``stem`` and a key of ``parts`` (what the plan is
    made from), this package's version, ``plan_format`` and :func:`_code_digest`. Shared by the pipelines' plans
    and the endpoint DAGs' plans (``factory/endpoints.py``)."""
    key = hashlib.sha256(
        b"\0".join([*parts, __version__.encode(), str(plan_format).encode(), _code_digest().encode()])
    )
    root = os.environ.get("MLPIPE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "airflow_mlpipe")
    return pathlib.Path(root) / "plans" / f"{stem}-{key.hexdigest()[:32]}.json"


def _plan_file(path: pathlib.Path, raw: bytes, root: pathlib.Path | None) -> pathlib.Path:
    """The plan of the definition at ``path`` (its bytes ``raw``) validated with definitions folder ``root``."""
    return _cache_file(path.stem, [raw, str(path).encode(), str(root or "").encode()], PLAN_FORMAT)


def _read_plan(file: pathlib.Path, plan_format: int = PLAN_FORMAT) -> dict[str, Any] | None:
    """The cached plan, or None: absent, unreadable, another format than ``plan_format``, or one whose scripts
    are not all there any more (then the definition is validated again, and the missing script reported with its line)."""
    try:
        plan = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or plan.get("format") != plan_format:
        return None
    for task in plan.get("tasks") or []:
        data = task.get("data") if isinstance(task, dict) else None
        parts = [data, *data.values()] if isinstance(data, dict) else []  # a builder may nest its kwargs
        for part in parts:
            if isinstance(part, dict) and part.get("script") and part.get("source_directory"):
                if not os.path.isfile(os.path.join(part["source_directory"], part["script"])):
                    return None
    return plan


def _write_plan(file: pathlib.Path, plan: dict[str, Any]) -> None:
    try:  # a cache: a read-only or full disk only costs the next parse a validation
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(plan), encoding="utf-8")
        os.replace(tmp, file)
    except OSError:
        pass


def _root_for(path: pathlib.Path, folder: pathlib.Path) -> pathlib.Path | None:
    """The definitions folder a definition (resolved ``path``) is validated with: the DAG file's ``folder``
    when the definition is below it, else None (``load_pipeline``'s default, ``spec.api.definitions_root``)."""
    return folder if path.is_relative_to(folder) else None


def load_dag(anchor: str | pathlib.Path, definition: str | pathlib.Path) -> Any:
    """Build the DAG of ``definition`` (relative to the folder of ``anchor``, usually ``__file__``). Source
    directories must stay inside the anchor's folder (the definition's folder's parent when the definition
    is not below the anchor's folder)."""
    folder = pathlib.Path(anchor).resolve().parent
    path = pathlib.Path(definition)
    if not path.is_absolute():
        path = folder / path
    path = path.resolve()
    root = _root_for(path, folder)
    try:
        raw = path.read_bytes()
    except OSError:
        raw = None  # load_pipeline reports the missing file with its usual message
    plan_file = _plan_file(path, raw, root) if raw is not None else None
    plan = _read_plan(plan_file) if plan_file is not None else None
    if plan is None:
        from airflow_mlpipe.spec import load_pipeline

        plan = json.loads(json.dumps(dag_plan(load_pipeline(path, root=root))))
        if plan_file is not None:
            _write_plan(plan_file, plan)
    return build_from_plan(plan)
