"""Step builders: one class per step type, registered by name. A builder turns a validated step into the
keyword arguments of its operator class; the factory instantiates it and ``mlpipe compile`` writes the
same call as Python source, so both paths build the very same tasks.

A step type registers here (``register_builder("batch_score", BatchScoreBuilder())``); the factory never
branches on a step's type.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow_mlpipe.spec.names import dag_id_for


def encode(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Operator keyword arguments -> JSON data (a timedelta becomes ``{"$seconds": N}``)."""
    return {k: {"$seconds": v.total_seconds()} if isinstance(v, datetime.timedelta) else v for k, v in kwargs.items()}


def decode(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`encode`."""
    return {
        k: datetime.timedelta(seconds=v["$seconds"]) if isinstance(v, dict) and set(v) == {"$seconds"} else v
        for k, v in data.items()
    }


def _dump(model: Any) -> dict[str, Any]:
    if model is None:
        return {}
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", exclude_none=True)
    return dict(model)


def _common(spec: Any, name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"pipeline": dag_id_for(spec)}
    retries, timeout = spec.resolved_retries(name), spec.resolved_timeout(name)
    if retries is not None:
        kwargs["retries"] = retries
    if timeout is not None:
        kwargs["execution_timeout"] = datetime.timedelta(seconds=timeout)
    step = spec.steps[name]
    if getattr(step, "description", None):
        kwargs["doc_md"] = step.description
    return kwargs


class StepBuilder:
    """Builds the task of a ``python`` step: an MlpipeStepOperator."""

    operator_module = "airflow_mlpipe.operators.step"
    operator_class = "MlpipeStepOperator"

    def load_class(self) -> type:
        import importlib

        return getattr(importlib.import_module(self.operator_module), self.operator_class)

    def kwargs(self, spec: Any, name: str, step: Any) -> dict[str, Any]:
        compute_name, target = spec.resolved_compute(name)
        env_name, env = spec.resolved_environment(name)
        environment = _dump(env)
        if environment.get("requirements_file"):
            base = spec.source_file.parent
            environment["requirements_file"] = str((base / environment["requirements_file"]).resolve())
        compute = _dump(target)
        compute["name"] = compute_name
        environment["name"] = env_name
        if compute.get("type") in ("docker", "kubernetes") and not compute.get("image"):
            compute["image"] = environment.get("image")
        kwargs: dict[str, Any] = {
            "task_id": name,
            "script": step.script,
            "source_directory": str(spec.source_dir(name)),
            "arguments": list(step.arguments or []),
            "inputs": dict(step.inputs or {}),
            "outputs": {k: _dump(v) for k, v in (step.outputs or {}).items()},
            "environment": environment,
            "compute": compute,
            "allow_reuse": step.allow_reuse,
        }
        if step.resources is not None:
            kwargs["compute_resources"] = _dump(step.resources)
        if step.hash_paths:
            kwargs["hash_paths"] = list(step.hash_paths)
        if step.permanent_exit_codes:
            kwargs["permanent_exit_codes"] = sorted(set(step.permanent_exit_codes))
        kwargs.update(_common(spec, name))
        return kwargs

    def describe(self, spec: Any, name: str, step: Any) -> dict[str, Any]:
        """What ``create_from`` needs to build the step's task(s), as JSON data (the factory's cached plan)."""
        return encode(self.kwargs(spec, name, step))

    def create_from(self, data: dict[str, Any]) -> Any:
        """The task (or task group) of the step, inside the DAG context the factory opened."""
        return self.load_class()(**decode(data))

    def source(self, spec: Any, name: str, step: Any, var: str, render: Any) -> list[str]:
        """Python source lines (indented for a ``with DAG(...)`` body) building what ``create`` builds.
        ``render(kwargs)`` writes keyword arguments as source."""
        return [f"    {var} = {self.operator_class}(", *render(self.kwargs(spec, name, step), 8), "    )"]

    def imports(self) -> list[str]:
        return [f"from {self.operator_module} import {self.operator_class}"]


class RegisterModelBuilder(StepBuilder):
    operator_module = "airflow_mlpipe.operators.model"
    operator_class = "MlpipeRegisterModelOperator"

    def kwargs(self, spec: Any, name: str, step: Any) -> dict[str, Any]:
        kwargs = {
            "task_id": name,
            "model_name": step.model_name,
            "inputs": dict(step.inputs),
            "metrics_from": list(step.metrics_from),
            "aliases": list(step.aliases),
        }
        kwargs.update(_common(spec, name))
        return kwargs


class CompareBuilder(StepBuilder):
    operator_module = "airflow_mlpipe.operators.model"
    operator_class = "MlpipeCompareOperator"

    def kwargs(self, spec: Any, name: str, step: Any) -> dict[str, Any]:
        candidate = spec.steps[step.candidate]
        kwargs = {
            "task_id": name,
            "candidate": step.candidate,
            "metric": step.metric,
            "direction": step.direction,
            "margin": step.margin,
            "alias": step.alias,
            "model_name": getattr(candidate, "model_name", None),
        }
        kwargs.update(_common(spec, name))
        return kwargs


class BatchScoreBuilder(StepBuilder):
    """A TaskGroup: the step's script mapped over its partitions (dynamic task mapping), then a merge."""

    merge_module = "airflow_mlpipe.operators.batch"
    merge_class = "MlpipeMergeOperator"

    def partition_kwargs(self, spec: Any, name: str, step: Any) -> dict[str, Any]:
        kwargs = super().kwargs(spec, name, step)
        kwargs["task_id"] = "partition"
        kwargs["partitions"] = step.partitions
        # each partition writes its own outputs (step name NAME.partition-pN); the merge registers them
        kwargs["outputs"] = {k: {kk: vv for kk, vv in v.items() if kk != "register_as"}
                             for k, v in kwargs["outputs"].items()}
        kwargs.pop("doc_md", None)
        return kwargs

    def merge_kwargs(self, spec: Any, name: str, step: Any) -> dict[str, Any]:
        return {
            "task_id": "merge",
            "partitioned_task_id": f"{name}.partition",
            "step": name,
            "outputs": {k: _dump(v) for k, v in (step.outputs or {}).items()},
            "partitions": step.partitions,
            "pipeline": dag_id_for(spec),
            "allow_reuse": step.allow_reuse,
        }

    def describe(self, spec: Any, name: str, step: Any) -> dict[str, Any]:
        return {
            "group_id": name,
            "tooltip": getattr(step, "description", None) or "",
            "partitions": step.partitions,
            "partition": encode(self.partition_kwargs(spec, name, step)),
            "merge": encode(self.merge_kwargs(spec, name, step)),
        }

    def create_from(self, data: dict[str, Any]) -> Any:
        import importlib

        from airflow_mlpipe.compat import TaskGroup

        merge_cls = getattr(importlib.import_module(self.merge_module), self.merge_class)
        with TaskGroup(group_id=data["group_id"], tooltip=data["tooltip"]) as group:
            parts = self.load_class().partial(**decode(data["partition"])).expand(
                partition=list(range(data["partitions"]))
            )
            parts >> merge_cls(**decode(data["merge"]))
        return group

    def source(self, spec: Any, name: str, step: Any, var: str, render: Any) -> list[str]:
        return [
            f"    with TaskGroup(group_id={name!r}) as {var}:",
            f"        {var}_parts = {self.operator_class}.partial(",
            *render(self.partition_kwargs(spec, name, step), 12),
            f"        ).expand(partition={list(range(step.partitions))!r})",
            f"        {var}_parts >> {self.merge_class}(",
            *render(self.merge_kwargs(spec, name, step), 12),
            "        )",
        ]

    def imports(self) -> list[str]:
        return [*super().imports(), f"from {self.merge_module} import {self.merge_class}",
                "from airflow.sdk import TaskGroup"]


BUILDERS: dict[str, StepBuilder] = {}


def register_builder(step_type: str, builder: StepBuilder) -> None:
    BUILDERS[step_type] = builder


def builder_for(step_type: str) -> StepBuilder:
    try:
        return BUILDERS[step_type]
    except KeyError:
        raise ValueError(f"no task builder registered for step type {step_type!r}") from None


register_builder("python", StepBuilder())
register_builder("register_model", RegisterModelBuilder())
register_builder("compare", CompareBuilder())
register_builder("batch_score", BatchScoreBuilder())
