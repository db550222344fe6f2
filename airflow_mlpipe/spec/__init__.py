"""Pipeline definitions: pydantic models of the YAML format, safe loading with line numbers, the
step graph and the JSON Schema. Pure: imports no Airflow (the CLI and DAG parsing stay fast).

A new step type: subclass :class:`StepBase` (``type: Literal["name"]``) and call
:func:`register_step_type` in a module imported below.
"""

from __future__ import annotations

from airflow_mlpipe.spec.api import json_schema, load_pipeline, load_pipeline_text, load_pipelines_text
from airflow_mlpipe.spec.compute import (
    COMPUTE_TYPES,
    DockerCompute,
    EnvironmentSpec,
    KubernetesCompute,
    LocalCompute,
    Toleration,
)
from airflow_mlpipe.spec.params import (
    PARAM_TYPES,
    RESERVED_PARAMS,
    ParamSpec,
    param_json_schema,
    path_problems,
)
from airflow_mlpipe.spec.pipeline import Defaults, EndpointSpec, PipelineSpec, ScheduleSpec
from airflow_mlpipe.spec.problems import Problem
from airflow_mlpipe.spec.refs import (
    InputRef,
    Ref,
    RefError,
    escape,
    find_refs,
    format_value,
    parse_dataset_ref,
    parse_input,
    parse_template,
    substitute,
)
from airflow_mlpipe.spec.steps import (
    DEFAULT_DESTINATION,
    STEP_TYPES,
    OutputSpec,
    PythonStep,
    Resources,
    StepBase,
    register_step_type,
)
from airflow_mlpipe.spec.steps_ml import BatchScoreStep, CompareStep, RegisterModelStep  # registers them

__all__ = [
    "BatchScoreStep",
    "CompareStep",
    "RegisterModelStep",
    "COMPUTE_TYPES",
    "DEFAULT_DESTINATION",
    "PARAM_TYPES",
    "RESERVED_PARAMS",
    "STEP_TYPES",
    "Defaults",
    "DockerCompute",
    "EndpointSpec",
    "EnvironmentSpec",
    "InputRef",
    "KubernetesCompute",
    "LocalCompute",
    "OutputSpec",
    "ParamSpec",
    "PipelineSpec",
    "Problem",
    "PythonStep",
    "Ref",
    "RefError",
    "Resources",
    "ScheduleSpec",
    "StepBase",
    "Toleration",
    "escape",
    "find_refs",
    "format_value",
    "json_schema",
    "load_pipeline",
    "load_pipeline_text",
    "load_pipelines_text",
    "param_json_schema",
    "parse_dataset_ref",
    "parse_input",
    "parse_template",
    "path_problems",
    "register_step_type",
    "substitute",
]
