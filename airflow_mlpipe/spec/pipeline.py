"""The top-level model of a pipeline definition and the helpers the factory and the operator use."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    SerializeAsAny,
    field_validator,
    model_validator,
)

from airflow_mlpipe.spec.compute import ComputeTarget, EnvironmentSpec
from airflow_mlpipe.spec.graph import topological_order
from airflow_mlpipe.spec.params import ParamSpec
from airflow_mlpipe.spec.refs import RefError, find_refs, parse_input
from airflow_mlpipe.spec.steps import StepBase
from airflow_mlpipe.spec.types import (
    STRICT,
    DatasetName,
    Duration,
    PipelineName,
    StartDate,
    describe,
    none_to_empty_dict,
    none_to_empty_list,
)

CRON_PRESETS = (
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
    "@annually",
)
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")


def _schedule(value: Any) -> Any:
    if isinstance(value, str):
        return {"cron": value}
    return value


class ScheduleSpec(BaseModel):
    """When the pipeline runs by itself: a cron expression or preset, and/or new dataset versions."""

    model_config = STRICT

    cron: str | None = Field(None, description="Cron expression ('0 6 * * 1') or preset ('@daily').")
    datasets: Annotated[list[DatasetName], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="Run when any of these registered datasets gets a new version."
    )

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        text = value.strip()
        if text.startswith("@"):
            if text not in CRON_PRESETS:
                raise ValueError(f"unknown schedule preset {text!r}: use one of {', '.join(CRON_PRESETS)}")
            return text
        fields = text.split()
        if len(fields) not in (5, 6) or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(
                f"invalid cron expression {value!r}: expected 5 fields 'minute hour day month weekday' "
                "(e.g. '0 6 * * 1') or a preset such as '@daily'"
            )
        return text

    @model_validator(mode="after")
    def _not_empty(self) -> ScheduleSpec:
        if self.cron is None and not self.datasets:
            raise ValueError("a schedule mapping needs 'cron', 'datasets' or both")
        return self


class EndpointSpec(BaseModel):
    """Publish the pipeline behind an endpoint (one DAG per version, an endpoint DAG runs the default)."""

    model_config = STRICT

    name: PipelineName = Field(description="Endpoint name (its DAG id).")
    default: bool = Field(False, description="Make this version the endpoint's default.")


class Defaults(BaseModel):
    """Values a step uses when it does not set them."""

    model_config = STRICT

    compute: str | None = Field(None, description="Default compute target name.")
    environment: str | None = Field(None, description="Default environment name.")
    retries: int = Field(0, ge=0, description="Default number of retries.")
    timeout: Duration | None = Field(None, description="Default step time limit (seconds or '10m', '1h30m').")


class PipelineSpec(BaseModel):
    """A validated pipeline definition. Build it with :func:`airflow_mlpipe.spec.load_pipeline`."""

    model_config = STRICT

    pipeline: PipelineName = Field(description="Pipeline name; the DAG id.")
    description: str | None = Field(None, description="Shown as the DAG's documentation.")
    version: int = Field(1, ge=1, description="Version of this definition (published endpoint version).")
    owner: str | None = Field(None, description="DAG owner.")
    tags: Annotated[list[str], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="DAG tags."
    )
    schedule: Annotated[
        ScheduleSpec | None, BeforeValidator(_schedule, json_schema_input_type=str | ScheduleSpec | None)
    ] = Field(None, description="null (manual only), a cron string or preset, or {cron, datasets}.")
    start_date: StartDate | None = Field(None, description="First data interval (absolute date or datetime).")
    max_active_runs: int | None = Field(None, ge=1, description="Concurrent runs of the pipeline.")
    catchup: bool = Field(False, description="Run the schedule's missed intervals since start_date.")
    endpoint: EndpointSpec | None = Field(None, description="Publish behind a pipeline endpoint.")
    defaults: Defaults = Field(default_factory=Defaults, description="Step defaults.")
    compute: Annotated[dict[str, ComputeTarget], BeforeValidator(none_to_empty_dict)] = Field(
        default_factory=dict, description="name -> compute target."
    )
    environments: Annotated[dict[str, EnvironmentSpec], BeforeValidator(none_to_empty_dict)] = Field(
        default_factory=dict, description="name -> environment."
    )
    params: Annotated[dict[str, ParamSpec], BeforeValidator(none_to_empty_dict)] = Field(
        default_factory=dict, description="name -> pipeline parameter."
    )
    steps: dict[str, SerializeAsAny[StepBase]] = Field(description="name -> step, in the order written.")

    _source_file: Path | None = PrivateAttr(None)
    _lines: dict[tuple, int] = PrivateAttr(default_factory=dict)

    # -- where it came from ----------------------------------------------------------------------

    @property
    def source_file(self) -> Path | None:
        """Absolute path of the YAML file (None when built from text without a real file)."""
        return self._source_file

    @property
    def base_dir(self) -> Path:
        """Directory relative paths of the definition are resolved against."""
        return self._source_file.parent if self._source_file is not None else Path.cwd()

    def line_of(self, *path: str | int) -> int | None:
        """Line of ``path`` (e.g. ``"steps", "train", "script"``) in the YAML file, or its nearest parent's."""
        for n in range(len(path), -1, -1):
            line = self._lines.get(tuple(path[:n]))
            if line is not None:
                return line
        return None

    # -- steps -----------------------------------------------------------------------------------

    def _step(self, step: str | StepBase) -> tuple[str, StepBase]:
        if isinstance(step, StepBase):
            for name, obj in self.steps.items():
                if obj is step:
                    return name, obj
            raise ValueError("the step object does not belong to this pipeline")
        try:
            return step, self.steps[step]
        except KeyError:
            raise KeyError(f"pipeline {self.pipeline!r} has no step {describe(step)}") from None

    @cached_property
    def _upstream(self) -> dict[str, list[str]]:
        index = {name: i for i, name in enumerate(self.steps)}
        out: dict[str, list[str]] = {}
        for name, step in self.steps.items():
            deps = set(step.after)
            deps.update(other for _, other in step.step_refs())
            for text in step.inputs.values():
                try:
                    ref = parse_input(text)
                except RefError:
                    continue
                if ref.kind == "step_output" and ref.step is not None:
                    deps.add(ref.step)
            out[name] = sorted((d for d in deps if d in index and d != name), key=index.__getitem__)
        return out

    def upstream(self, step: str | StepBase) -> list[str]:
        """Steps ``step`` waits for (data dependencies and ``after``), in the order they are written."""
        name, _ = self._step(step)
        return list(self._upstream[name])

    def downstream(self, step: str | StepBase) -> list[str]:
        """Steps waiting for ``step``, in the order they are written."""
        name, _ = self._step(step)
        return [other for other, deps in self._upstream.items() if name in deps]

    def step_order(self) -> list[str]:
        """Step names in a topological order; ties are broken by the order the steps are written."""
        return topological_order(list(self.steps), self._upstream)

    def resolved_compute(self, step: str | StepBase) -> tuple[str, Any]:
        """``(name, target)`` of the compute target the step runs on (its own, else ``defaults``)."""
        name, obj = self._step(step)
        target = obj.compute or self.defaults.compute
        if target is None or target not in self.compute:
            raise KeyError(f"step {name!r} has no compute target")
        return target, self.compute[target]

    def resolved_environment(self, step: str | StepBase) -> tuple[str, EnvironmentSpec]:
        """``(name, environment)`` the step runs in (its own, else ``defaults``)."""
        name, obj = self._step(step)
        env = obj.environment or self.defaults.environment
        if env is None or env not in self.environments:
            raise KeyError(f"step {name!r} has no environment")
        return env, self.environments[env]

    def resolved_retries(self, step: str | StepBase) -> int:
        _, obj = self._step(step)
        return obj.retries if obj.retries is not None else self.defaults.retries

    def resolved_timeout(self, step: str | StepBase) -> int | None:
        """Seconds, or None for no limit."""
        _, obj = self._step(step)
        return obj.timeout if obj.timeout is not None else self.defaults.timeout

    def params_used(self, step: str | StepBase) -> list[str]:
        """Params the step references in its arguments (and other template strings) and inputs, in
        order of first use. They are part of the step's cache key."""
        _, obj = self._step(step)
        seen: dict[str, None] = {}
        for _, text in obj.template_strings():
            try:
                refs = find_refs(text)
            except RefError:
                continue
            for ref in refs:
                if ref.kind == "params":
                    seen.setdefault(ref.name)
        for text in obj.inputs.values():
            try:
                ref = parse_input(text)
            except RefError:
                continue
            if ref.kind == "param":
                seen.setdefault(ref.name)
        return list(seen)

    def input_refs(self, step: str | StepBase) -> dict[str, Any]:
        """``{input name: InputRef}`` of the step (parsed references)."""
        _, obj = self._step(step)
        return {name: parse_input(text) for name, text in obj.inputs.items()}

    def source_dir(self, step: str | StepBase) -> Path:
        """Absolute source directory of a step that has one (``python`` steps)."""
        name, obj = self._step(step)
        rel = getattr(obj, "source_directory", None)
        if rel is None:
            raise TypeError(f"step {name!r} (type {obj.type}) has no source directory")
        return (self.base_dir / rel).resolve()

    def registered_datasets(self) -> dict[str, tuple[str, str]]:
        """``{dataset: (step, output)}`` for every output with ``register_as``."""
        return {
            out.register_as: (name, out_name)
            for name, step in self.steps.items()
            for out_name, out in step.outputs.items()
            if out.register_as
        }
