"""``mlpipe compile``: write the plain-Python DAG file equivalent to what the factory builds from a
definition, for teams that want static DAGs in review. The same builders produce the operator arguments,
so the compiled file and the factory's DAG have the same tasks, params, edges and settings."""

from __future__ import annotations

import keyword
import os
import pathlib
import pprint
from typing import Any

from airflow_mlpipe.factory import dag_kwargs, dag_timezone, param_args, schedule_data
from airflow_mlpipe.factory.builders import builder_for


def _lit(value: Any) -> str:
    return pprint.pformat(value, width=100, sort_dicts=False)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


class _Relative:
    """A path written relative to the compiled file's folder, so the file works wherever it is deployed."""

    def __init__(self, path: str, out_dir: pathlib.Path):
        self.rel = os.path.relpath(path, out_dir)

    def __repr__(self) -> str:
        return f"str(HERE / {self.rel!r})"


def _schedule_source(spec: Any) -> tuple[str, set[str]]:
    schedule = schedule_data(spec)
    if schedule is None or isinstance(schedule, str):
        return _lit(schedule), set()
    cron = schedule["cron"]
    names = schedule["datasets"]
    if not names:
        return _lit(cron), set()
    imports = {"from airflow_mlpipe.assets import dataset_asset"}
    assets = [f"dataset_asset({n!r})" for n in names]
    condition = assets[0] if len(assets) == 1 else f"AssetAny({', '.join(assets)})"
    if len(assets) > 1:
        imports.add("from airflow.sdk import AssetAny")
    if not cron:
        return condition, imports
    imports.add("from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable")
    tz = _timezone_source(dag_kwargs(spec)["start_date"], imports)
    return (f"AssetOrTimeSchedule(timetable=CronTriggerTimetable({cron!r}, timezone={tz}), "
            f"assets={condition})"), imports


def _timezone_source(start_date: Any, imports: set[str]) -> str:
    """The DAG's time zone (``factory.dag_timezone``, as the factory builds it) as source."""
    tz = dag_timezone(start_date)
    if isinstance(tz, str):
        return repr(tz)
    imports.add("from pendulum import FixedTimezone")
    return f"FixedTimezone({tz.offset})"


def compile_source(spec: Any, out_dir: str | pathlib.Path | None = None) -> str:
    """Python source of the DAG of ``spec``; paths are written relative to ``out_dir`` (the folder the
    file will live in; default: the definition's folder)."""
    out = pathlib.Path(out_dir or spec.source_file.parent).resolve()
    kwargs = dag_kwargs(spec)
    schedule_src, imports = _schedule_source(spec)
    lines = [
        f'"""DAG {spec.pipeline!r}, compiled by `mlpipe compile` from '
        f'{os.path.relpath(spec.source_file, out)}.',
        "",
        "Generated code: edit the YAML definition and compile again rather than editing this file.",
        '"""',
        "",
        "import datetime",
        "import pathlib",
        "",
        "from airflow.sdk import DAG, Param",
        *sorted(imports),
    ]
    imports_needed: set[str] = set()
    for name in spec.step_order():
        imports_needed.update(builder_for(spec.steps[name].type).imports())
    lines.extend(sorted(imports_needed))
    lines += ["", "HERE = pathlib.Path(__file__).resolve().parent", "", "with DAG("]
    for key, value in kwargs.items():
        lines.append(f"    {key}={_indent(_lit(value), 4).lstrip()},")
    lines.append(f"    schedule={schedule_src},")
    lines.append("    params={")
    for name, (default, pkw) in param_args(spec).items():
        given = {k: v for k, v in pkw.items() if v is not None}
        # JSON Schema keywords that are not Python names ("not") go in as **{...}
        extra = {k: v for k, v in given.items() if not k.isidentifier() or keyword.iskeyword(k)}
        args = ", ".join([_lit(default), *(f"{k}={_lit(v)}" for k, v in given.items() if k not in extra),
                          *([f"**{_lit(extra)}"] if extra else [])])
        lines.append(f"        {name!r}: Param({args}),")
    lines += ["    },", ") as dag:"]
    def render(op_kwargs: dict[str, Any], indent: int) -> list[str]:
        op_kwargs = dict(op_kwargs)
        if "source_directory" in op_kwargs:
            op_kwargs["source_directory"] = _Relative(op_kwargs["source_directory"], out)
        env = dict(op_kwargs.get("environment") or {})
        if env.get("requirements_file"):
            env["requirements_file"] = _Relative(env["requirements_file"], out)
            op_kwargs["environment"] = env
        pad = " " * indent
        return [f"{pad}{key}={_indent(_lit(value), indent).lstrip()}," for key, value in op_kwargs.items()]

    variables = {}
    for index, name in enumerate(spec.step_order()):
        var = f"task_{index}"
        variables[name] = var
        step = spec.steps[name]
        lines.extend(builder_for(step.type).source(spec, name, step, var, render))
    for name in spec.step_order():
        for upstream in spec.upstream(name):
            lines.append(f"    {variables[upstream]} >> {variables[name]}")
    return "\n".join(lines) + "\n"
