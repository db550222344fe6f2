"""Step builders: one class per step type, registered by name. A builder turns a validated step into the
keyword arguments of its operator class; the factory instantiates it and ``mlpipe compile`` writes the
same call as Python source, so both paths build the very same tasks.

Later step types register here (``register_builder("batch_score", BatchScoreBuilder())``); the factory
never branches on a step's type.
"""

from __future__ import annotations

import datetime
from typing import Any

OPERATOR_MODULE = "airflow_mlpipe.operators.step"


class StepBuilder:
    """Builds the task of a ``python`` step: an MlpipeStepOperator."""

    operator_module = OPERATOR_MODULE
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
            "outputs": {k: _dump(v) if v is not None else {} for k, v in (step.outputs or {}).items()},
            "environment": environment,
            "compute": compute,
            "allow_reuse": step.allow_reuse,
            "params_used": spec.params_used(name),
            "param_types": {p: param.type for p, param in spec.params.items()},
            "pipeline": spec.pipeline,
        }
        if step.resources is not None:
            kwargs["compute_resources"] = _dump(step.resources)
        if step.hash_paths:
            kwargs["hash_paths"] = list(step.hash_paths)
        retries, timeout = spec.resolved_retries(name), spec.resolved_timeout(name)
        if retries is not None:
            kwargs["retries"] = retries
        if timeout is not None:
            kwargs["execution_timeout"] = datetime.timedelta(seconds=timeout)
        if getattr(step, "description", None):
            kwargs["doc_md"] = step.description
        return kwargs


def _dump(model: Any) -> dict[str, Any]:
    if model is None:
        return {}
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", exclude_none=True)
    return dict(model)


BUILDERS: dict[str, StepBuilder] = {}


def register_builder(step_type: str, builder: StepBuilder) -> None:
    BUILDERS[step_type] = builder


def builder_for(step_type: str) -> StepBuilder:
    try:
        return BUILDERS[step_type]
    except KeyError:
        raise ValueError(f"no task builder registered for step type {step_type!r}") from None


register_builder("python", StepBuilder())
