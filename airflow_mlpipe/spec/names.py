"""Naming rules written once: the reserved run parameters, how a pipeline becomes a DAG id, and the Asset URIs
of registered datasets and models. Standard library only: the factory's warm parse, the task process, the CLI
and the plugin import it without pydantic or Airflow."""

from __future__ import annotations

import re
from typing import Any

from airflow_mlpipe.rules import DEFAULT_DESTINATION, DESTINATION_FIELDS  # the output layout rule lives there

REGENERATE_PARAM = "regenerate_outputs"
"""The run switch every pipeline DAG has: recompute every step, ignoring results that could be reused."""

VERSION_PARAM = "pipeline_version"
"""The endpoint DAG's parameter that picks a published version of the pipeline."""


__all__ = ["DEFAULT_DESTINATION", "DESTINATION_FIELDS", "REGENERATE_PARAM", "VERSION_PARAM", "dag_id_for",
           "dataset_uri", "might_publish", "model_uri", "pipeline_dag_id"]


def pipeline_dag_id(pipeline: str, version: int | None, published: bool) -> str:
    """A published pipeline (one with ``endpoint:``) is DAG ``<pipeline>_v<version>``; others ``<pipeline>``.
    The DAG id is also the pipeline's name in the workspace (run records, cache explanations)."""
    return f"{pipeline}_v{version}" if published else pipeline


def dag_id_for(spec: Any) -> str:
    """:func:`pipeline_dag_id` of a loaded definition (anything with ``pipeline``, ``version``, ``endpoint``)."""
    return pipeline_dag_id(spec.pipeline, spec.version, spec.endpoint is not None)


def dataset_uri(name: str) -> str:
    """The Asset URI of a registered dataset (the ``x-mlpipe`` scheme needs no provider discovery at parse)."""
    return f"x-mlpipe://datasets/{name}"


def model_uri(name: str) -> str:
    """The Asset URI of a registered model."""
    return f"x-mlpipe://models/{name}"


def might_publish(text: str, endpoint: str | None = None) -> bool:
    """Whether a definition that cannot be read may publish ``endpoint`` (any endpoint when None): its text has a
    top-level ``endpoint:`` key and, for a given endpoint, names it. The endpoint DAG and ``mlpipe endpoints``
    refuse to route around such a file: without it they could pick the wrong default version."""
    if not re.search(r"^endpoint\s*:", text, re.M):
        return False
    return endpoint is None or re.search(
        rf"\bname\s*:\s*['\"]?{re.escape(endpoint)}['\"]?(?![\w.-])", text) is not None
