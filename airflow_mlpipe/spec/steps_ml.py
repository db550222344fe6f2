"""The model-lifecycle step types: ``register_model``, ``compare`` (champion/challenger) and
``batch_score`` (partitioned scoring). Each is one model class plus one registration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from airflow_mlpipe.spec.steps import PythonStep, StepBase, StepProblem, register_step_type
from airflow_mlpipe.spec.types import DatasetName, Name, none_to_empty_list


class RegisterModelStep(StepBase):
    """Register the folder given as input ``model`` as a new version of model ``model_name``, with the
    metrics logged by the ``metrics_from`` steps, the run's params and the lineage of its inputs."""

    needs_compute = False

    type: Literal["register_model"] = Field(description="register_model")
    model_name: DatasetName = Field(description="Registered model name.")
    metrics_from: Annotated[list[Name], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="Steps whose logged metrics are attached to the version."
    )
    aliases: Annotated[list[Name], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="Aliases moved to the new version unconditionally (e.g. staging)."
    )

    def check(self, base_dir: Path | None, root: Path | None = None) -> list[StepProblem]:
        if "model" not in self.inputs:
            return [(("inputs",), "a register_model step needs an input named 'model' (the model folder)")]
        return []

    def step_refs(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        for i, step in enumerate(self.metrics_from):
            yield ("metrics_from", i), step


class CompareStep(StepBase):
    """Champion/challenger: promote the version registered by ``candidate`` to ``alias`` only if its
    ``metric`` beats the alias holder's by ``margin``; record the decision with both values."""

    needs_compute = False

    type: Literal["compare"] = Field(description="compare")
    candidate: Name = Field(description="The register_model step whose new version is the challenger.")
    metric: str = Field(description="Metric to compare, as logged by the candidate's metrics_from steps.")
    direction: Literal["max", "min"] = Field("max", description="max: higher is better; min: lower is better.")
    margin: float = Field(0.0, ge=0, description="How much better the candidate must be to be promoted.")
    alias: Name = Field("production", description="The alias the champion holds.")

    def step_refs(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        yield ("candidate",), self.candidate


class BatchScoreStep(PythonStep):
    """Score a dataset in ``partitions`` parallel tasks (Airflow dynamic task mapping), then merge the
    partitions' outputs into one output (and one dataset version with ``register_as``). The script gets
    its share through ``${run.partition}`` and ``${run.partitions}``."""

    type: Literal["batch_score"] = Field(description="batch_score")  # type: ignore[assignment]
    partitions: int = Field(4, ge=1, le=512, description="Number of partitions scored in parallel.")


register_step_type("register_model", RegisterModelStep)
register_step_type("compare", CompareStep)
register_step_type("batch_score", BatchScoreStep)
