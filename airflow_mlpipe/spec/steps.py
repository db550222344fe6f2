"""Steps: the common fields, the ``python`` step, and the registry of step types.

A new step type is one model class (a :class:`StepBase` subclass whose ``type`` is a ``Literal``)
plus one :func:`register_step_type` call in a module imported by ``airflow_mlpipe.spec``. The
loader picks the model from :data:`STEP_TYPES` by the step's ``type`` (default ``python``).
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator

from airflow_mlpipe.rules import relative_parts
from airflow_mlpipe.spec.names import (  # public here too (spec.DEFAULT_DESTINATION)
    DEFAULT_DESTINATION,
    DESTINATION_FIELDS,
)
from airflow_mlpipe.spec.types import (
    STRICT,
    Cpu,
    DatasetName,
    Duration,
    Memory,
    Scalar,
    describe,
    none_to_empty_dict,
    none_to_empty_list,
)

#: a problem found by a step's own semantic check: (path below the step, message).
StepProblem = tuple[tuple[str | int, ...], str]


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _escape_problem(value: str, path: Path, root: Path) -> str | None:
    """Why the source directory ``path`` (``value`` as written) is not inside the definitions folder
    ``root``, or None. Judged on the real path, so a symbolic link that leads out is caught too."""
    real = os.path.realpath(path)
    top = os.path.realpath(root)
    if _inside(real, top):
        return None
    what = "a definition may only snapshot code inside that folder; move the code there and name it relative to the definition"
    if _inside(os.path.normpath(os.path.abspath(path)), top):
        return (
            f"source directory '{value}' leads outside the definitions folder {top} through a symbolic link "
            f"(its real path is {real}): {what}"
        )
    return f"source directory '{value}' is outside the definitions folder {top} (it resolves to {real}): {what}"


class OutputSpec(BaseModel):
    """A step output: a directory the step writes, uploaded to ``destination`` in the workspace."""

    model_config = STRICT

    destination: str = Field(
        DEFAULT_DESTINATION,
        description="Workspace path template; placeholders {pipeline} {run_id} {step} {output}.",
    )
    register_as: DatasetName | None = Field(
        None, description="Register the output as a new version of this dataset when the step succeeds."
    )

    @field_validator("destination")
    @classmethod
    def _check_destination(cls, value: str) -> str:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(
                f"invalid destination {value!r}: {exc} (write {{{{ for a literal brace)"
            ) from exc
        for field in fields:
            if field not in DESTINATION_FIELDS:
                raise ValueError(
                    f"unknown placeholder {{{field}}} in destination: use {{pipeline}}, {{run_id}}, "
                    "{step} and {output}"
                )
        if relative_parts(value) is None:
            raise ValueError(
                f"destination {value!r} must be a relative path inside the workspace, without '..'"
            )
        return value


def _outputs(value: Any) -> Any:
    """``outputs: {model: {}}`` and ``outputs: {model: null}`` both mean an output with defaults."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: ({} if v is None else v) for k, v in value.items()}
    return value


class Resources(BaseModel):
    """Resources a step asks for; the compute target turns them into limits or requests."""

    model_config = STRICT

    cpu: Cpu | None = Field(None, description="CPUs, e.g. 2, 0.5 or '500m'.")
    memory: Memory | None = Field(None, description="Memory, e.g. '4g' or '2Gi'.")
    gpu: int | None = Field(None, ge=0, description="Number of GPUs.")


class StepBase(BaseModel):
    """Fields every step type has. Subclasses set ``type`` to a ``Literal`` and may override the hooks."""

    model_config = STRICT

    #: whether this step type runs on a compute target with an environment.
    needs_compute: ClassVar[bool] = True

    type: str = Field(description="Step type (registered in STEP_TYPES).")
    description: str | None = Field(None, description="What the step does (shown in the UI).")
    tags: Annotated[list[str], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="Free-form tags recorded on the step's runs."
    )
    inputs: Annotated[dict[str, str], BeforeValidator(none_to_empty_dict)] = Field(
        default_factory=dict,
        description="name -> reference (dataset, model, param or another step's output).",
    )
    outputs: Annotated[dict[str, OutputSpec], BeforeValidator(_outputs)] = Field(
        default_factory=dict, description="name -> output settings ({} or null for the defaults)."
    )
    after: Annotated[list[str], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="Steps that must finish first although no data flows from them."
    )
    compute: str | None = Field(None, description="Compute target name (default: defaults.compute).")
    environment: str | None = Field(None, description="Environment name (default: defaults.environment).")
    allow_reuse: bool = Field(True, description="Reuse a previous run's outputs when nothing changed.")
    retries: int | None = Field(None, ge=0, description="Retries (default: defaults.retries).")
    timeout: Duration | None = Field(
        None, description="Time limit, e.g. 600, '10m', '1h30m' (default: defaults.timeout)."
    )
    resources: Resources | None = Field(None, description="cpu / memory / gpu for this step.")

    # -- hooks used by the validator ---------------------------------------------------------

    def template_strings(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """``(path below the step, string)`` for every string that may hold ``${...}`` references."""
        return iter(())

    def check(self, base_dir: Path | None, root: Path | None = None) -> list[StepProblem]:
        """Type-specific checks (files...). ``base_dir`` is the YAML file's directory, or None when
        the filesystem must not be checked; ``root`` the definitions folder (real path) that the files a
        step snapshots must stay inside (None: not checked)."""
        return []

    def step_refs(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """``(path below the step, step name)`` for type-specific fields that name other steps (a
        compare step's ``candidate``...). The validator checks them; they order the graph like ``after``."""
        return iter(())


class PythonStep(StepBase):
    """``python <script> <arguments>`` run from a snapshot of ``source_directory``."""

    type: Literal["python"] = Field("python", description="python (the default)")
    script: str = Field(description="Script to run, relative to source_directory.")
    source_directory: str = Field(
        ".",
        description="Directory snapshotted for the step, relative to the YAML file's directory; it must "
        "resolve inside the definitions folder (the folder of the DAG file that loads the definition).",
    )
    arguments: Annotated[list[Scalar], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="argv after the script; strings may hold ${...} references."
    )
    hash_paths: Annotated[list[str], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list,
        description="Globs (relative to source_directory) that alone make the snapshot hash; default: all files.",
    )
    permanent_exit_codes: Annotated[list[Annotated[int, Field(ge=1, le=255)]], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list,
        description="Exit codes of the script that no retry can fix (e.g. [2], a usage error): the task fails at "
        "once instead of being retried.",
    )

    @field_validator("script")
    @classmethod
    def _check_script(cls, value: str) -> str:
        parts = relative_parts(value)
        if parts is None or not value.strip():
            raise ValueError(
                f"script {describe(value)} must be a path relative to source_directory, without '..'"
            )
        return value

    def template_strings(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        for i, arg in enumerate(self.arguments):
            if isinstance(arg, str):
                yield ("arguments", i), arg

    def check(self, base_dir: Path | None, root: Path | None = None) -> list[StepProblem]:
        if base_dir is None:
            return []
        src = base_dir / self.source_directory
        if root is not None:
            escape = _escape_problem(self.source_directory, src, root)
            if escape:
                return [(("source_directory",), escape)]
        if not src.is_dir():
            return [
                (
                    ("source_directory",),
                    f"source directory '{self.source_directory}' not found (looked in {src})",
                )
            ]
        script = src / PurePosixPath(self.script)
        if not script.is_file():
            return [
                (
                    ("script",),
                    f"script '{self.script}' not found in source directory '{self.source_directory}' ({src})",
                )
            ]
        return []


STEP_TYPES: dict[str, type[StepBase]] = {}


def register_step_type(name: str, model: type[StepBase]) -> type[StepBase]:
    """Register ``model`` as the step type ``name`` (used as a decorator-friendly function: returns
    ``model``). Raises ``TypeError``/``ValueError`` on misuse."""
    if not isinstance(model, type) or not issubclass(model, StepBase):
        raise TypeError(f"step type {name!r}: {model!r} is not a StepBase subclass")
    existing = STEP_TYPES.get(name)
    if existing is not None and existing is not model:
        raise ValueError(f"step type {name!r} is already registered to {existing.__qualname__}")
    STEP_TYPES[name] = model
    return model


register_step_type("python", PythonStep)

# The built-in ML step types register themselves when their module loads; loading it here keeps the
# registry complete wherever it is read (steps_ml imports this module, which is whole by this line).
from airflow_mlpipe.spec import steps_ml  # noqa: E402,F401
