"""``mlpipe compile``: write the plain-Python DAG file equivalent to what the factory builds from a
definition, for teams that want static DAGs in review. The same builders produce the operator arguments,
so the compiled file and the factory's DAG have the same tasks, params, edges and settings."""

from __future__ import annotations

import os
import pathlib
import pprint
from typing import Any

from airflow_mlpipe.factory import dag_kwargs, param_args
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
    schedule = spec.schedule
    if schedule is None or isinstance(schedule, str):
        return _lit(schedule), set()
    cron = getattr(schedule, "cron", None)
    names = list(getattr(schedule, "datasets", None) or [])
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
    return (f"AssetOrTimeSchedule(timetable=CronTriggerTimetable({cron!r}, timezone='UTC'), "
            f"assets={condition})"), imports


def compile_source(spec: Any, out_dir: str | pathlib.Path | None = None) -> str:
    """Python source of the DAG of ``spec``; paths are written relative to ``out_dir`` (the folder the
    file will live in; default: the definition's folder)."""
    out = pathlib.Path(out_dir or spec.source_file.parent).resolve()
    kwargs = dag_kwargs(spec, with_params=False)
    schedule_src, imports = _schedule_source(spec)
    kwargs.pop("schedule")
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
    classes: dict[str, str] = {}
    steps = []
    for name in spec.step_order():
        step = spec.steps[name]
        builder = builder_for(step.type)
        classes[builder.operator_class] = builder.operator_module
        op_kwargs = builder.kwargs(spec, name, step)
        op_kwargs["source_directory"] = _Relative(op_kwargs["source_directory"], out)
        env = op_kwargs.get("environment") or {}
        if env.get("requirements_file"):
            env["requirements_file"] = _Relative(env["requirements_file"], out)
        steps.append((name, builder.operator_class, op_kwargs))
    for cls, module in sorted(classes.items()):
        lines.append(f"from {module} import {cls}")
    lines += ["", "HERE = pathlib.Path(__file__).resolve().parent", "", "with DAG("]
    for key, value in kwargs.items():
        lines.append(f"    {key}={_indent(_lit(value), 4).lstrip()},")
    lines.append(f"    schedule={schedule_src},")
    lines.append("    params={")
    for name, (default, pkw) in param_args(spec).items():
        args = ", ".join([_lit(default), *(f"{k}={_lit(v)}" for k, v in pkw.items() if v is not None)])
        lines.append(f"        {name!r}: Param({args}),")
    lines += ["    },", ") as dag:"]
    variables = {}
    for index, (name, cls, op_kwargs) in enumerate(steps):
        var = f"task_{index}"
        variables[name] = var
        lines.append(f"    {var} = {cls}(")
        for key, value in op_kwargs.items():
            lines.append(f"        {key}={_indent(_lit(value), 8).lstrip()},")
        lines.append("    )")
    for name in spec.step_order():
        for upstream in spec.upstream(name):
            lines.append(f"    {variables[upstream]} >> {variables[name]}")
    return "\n".join(lines) + "\n"
