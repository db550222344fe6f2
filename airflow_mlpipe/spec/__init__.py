"""Pipeline definitions: pydantic models of the YAML format, safe loading with line numbers, the
step graph and the JSON Schema. Pure: imports no Airflow (the CLI and DAG parsing stay fast).

This ``__init__`` imports nothing eagerly; each public name loads its module on first access. A task
process that only reads a step's ``${...}`` references (``spec.refs``) must not pay for the pydantic
models (about 130 ms per task).

A new step type: subclass :class:`StepBase` (``type: Literal["name"]``) and call
:func:`register_step_type`. ``spec.steps`` loads the built-in ones (``steps_ml``) itself, so the
registry is complete wherever it is read.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "api": ("definitions_root", "json_schema", "load_pipeline", "load_pipeline_text", "load_pipelines_text"),
    "compute": ("COMPUTE_TYPES", "DockerCompute", "EnvironmentSpec", "KubernetesCompute", "LocalCompute",
                "Toleration"),
    "params": ("PARAM_TYPES", "RESERVED_PARAMS", "ParamSpec", "param_json_schema", "path_problems"),
    "pipeline": ("Defaults", "EndpointSpec", "PipelineSpec", "ScheduleSpec"),
    "problems": ("Problem",),
    "refs": ("InputRef", "Ref", "RefError", "escape", "find_refs", "format_value", "parse_dataset_ref",
             "parse_input", "parse_template", "substitute"),
    "steps": ("DEFAULT_DESTINATION", "STEP_TYPES", "OutputSpec", "PythonStep", "Resources", "StepBase",
              "register_step_type"),
    "steps_ml": ("BatchScoreStep", "CompareStep", "RegisterModelStep"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
