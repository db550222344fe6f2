"""A step operator's ``compute=`` and ``environment=`` checked by the models of the YAML format.

One source of truth for compute settings: ``spec/compute.py`` describes every setting a compute target reads
(``tests/compute/test_settings_source.py`` keeps the targets and the models in step). The factory's steps
were validated by those models already; a hand-written step's dicts are validated here, when the operator is
built, so a misspelt key (``cpu`` for ``cpus``, ``imgae``) fails the DAG file's import with the task and the
field named, instead of being ignored at run time. The dicts are kept as given (the models fill no defaults
into them): what a target receives, and so the cache key, does not depend on the door.

Importing the models costs about 15 ms once per process (pydantic is loaded by Airflow already).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_mlpipe.errors import DefinitionError

#: the label of a ``compute:`` or ``environments:`` entry: the factory passes it along; not a setting
LABEL = "name"


def check_step_settings(task_id: str, compute: Mapping[str, Any] | None,
                        environment: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(compute, environment)`` as plain dicts (compute defaults to ``{"type": "local"}``), or a
    DefinitionError naming every problem: ``task 'train': compute.cpu: unknown field 'cpu' (did you mean 'cpus'?)``."""
    compute = dict(compute) if compute else {"type": "local"}
    environment = dict(environment or {})
    from airflow_mlpipe.spec.compute import EnvironmentSpec

    problems = [*_compute_problems(compute), *_problems("environment", environment, EnvironmentSpec)]
    if problems:
        raise DefinitionError(
            f"task {task_id!r}: " + "; ".join(problems) + ". The settings are those of the YAML format's compute "
            "and environments entries (docs/yaml-reference.md).")
    return compute, environment


def _compute_problems(compute: dict[str, Any]) -> list[str]:
    from airflow_mlpipe.spec.compute import COMPUTE_TYPES

    kind = compute.get("type", "local")
    model = COMPUTE_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        from airflow_mlpipe.spec.values import did_you_mean

        return [f"compute.type: {kind!r} is not a compute type; use one of {', '.join(sorted(COMPUTE_TYPES))}"
                f"{did_you_mean(str(kind), COMPUTE_TYPES)}"]
    return _problems("compute", {"type": kind, **compute}, model)


def _problems(where: str, settings: dict[str, Any], model: Any) -> list[str]:
    """What ``model`` refuses in ``settings`` (its label aside), one line per field, worded as ``mlpipe
    validate`` words a YAML definition's problems (``spec.problems.translate``, imported on an error only)."""
    from pydantic import ValidationError

    label = settings.get(LABEL)
    problems = [] if label is None or isinstance(label, str) else [f"{where}.{LABEL}: must be a string"]
    try:
        model.model_validate({k: v for k, v in settings.items() if k != LABEL})
    except ValidationError as exc:
        from airflow_mlpipe.spec.problems import format_path, translate

        for error in exc.errors():
            path, message, hint = translate(model, error, (where,))
            problems.append(f"{format_path(path)}: {message}" + (f" (did you mean {hint!r}?)" if hint else ""))
    return problems
