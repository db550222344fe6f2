"""Endpoint DAGs: the seeds' published pipeline endpoint. Every definition with ``endpoint: {name: E}``
is one published version (its own DAG, ``<pipeline>_v<version>``); the endpoint DAG ``E`` runs the
default version, or the one named by ``pipeline_version`` in the conf, and ends with that run's state.

    from airflow_mlpipe.factory.endpoints import endpoint_dag

    dag = endpoint_dag(__file__, "income_retrain", "pipelines")

Parse time reads the definitions of the folder (files only; no network, database or subprocess).
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.factory import REGENERATE_DESCRIPTION, _start_date, param_args
from airflow_mlpipe.spec.names import REGENERATE_PARAM, VERSION_PARAM, dag_id_for, might_publish

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def published_versions(folder: pathlib.Path, endpoint: str) -> list[Any]:
    """Validated specs of the definitions in ``folder`` published under ``endpoint``, by version."""
    from airflow_mlpipe.spec import load_pipeline

    specs = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        text = path.read_text(encoding="utf-8")
        try:
            raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            if might_publish(text, endpoint):
                # it may be a version of this endpoint: routing without it could pick the wrong default
                raise DefinitionError(
                    f"endpoint {endpoint!r}: {path} cannot be read ({str(exc).splitlines()[0]}) and may publish a "
                    "version of it; fix that file (`mlpipe validate` names the line)") from exc
            continue  # another pipeline's broken file is reported by its own DAG file, not here
        if isinstance(raw, dict) and isinstance(raw.get("endpoint"), dict) and raw["endpoint"].get("name") == endpoint:
            specs.append(load_pipeline(path))
    by_version: dict[int, Any] = {}
    for spec in specs:
        if spec.version in by_version:
            raise DefinitionError(
                f"endpoint {endpoint!r}: version {spec.version} is published twice ({by_version[spec.version].source_file}"
                f" and {spec.source_file}); give each definition its own version"
            )
        by_version[spec.version] = spec
    if not by_version:
        raise DefinitionError(f"endpoint {endpoint!r}: no definition in {folder} publishes it (endpoint: {{name: {endpoint}}})")
    defaults = [v for v, s in by_version.items() if s.endpoint.default]
    if len(defaults) > 1:
        raise DefinitionError(f"endpoint {endpoint!r}: versions {sorted(defaults)} all say default: true; keep one")
    return [by_version[v] for v in sorted(by_version)]


def endpoint_dag(anchor: str | pathlib.Path, endpoint: str, folder: str | pathlib.Path = "pipelines") -> Any:
    from airflow_mlpipe.compat import DAG, Param
    from airflow_mlpipe.operators.endpoint import MlpipeEndpointOperator

    path = pathlib.Path(folder)
    if not path.is_absolute():
        path = pathlib.Path(anchor).resolve().parent / path
    specs = published_versions(path, endpoint)
    default = next((s.version for s in specs if s.endpoint.default), specs[-1].version)
    versions = {s.version: dag_id_for(s) for s in specs}
    params: dict[str, Any] = {
        VERSION_PARAM: Param(
            None, type=["null", "integer"], enum=[None, *versions], title=VERSION_PARAM,
            description=f"Published version to run; empty runs the endpoint's default (version {default} in the "
            "definitions, unless changed with `mlpipe endpoints set-default`).",
        )
    }
    for spec in sorted(specs, key=lambda s: s.version != default):  # the default version's wording wins
        for name, (_, kwargs) in param_args(spec).items():
            if name in params or name == REGENERATE_PARAM:
                continue
            kwargs = dict(kwargs)
            json_type = kwargs.pop("type", None)
            kwargs.pop("enum", None) if json_type is None else None
            if "enum" in kwargs:  # null (not given: the version's default) is a choice too
                kwargs["enum"] = [*kwargs["enum"], None]
            params[name] = Param(None, type=[json_type, "null"] if json_type else None, **kwargs) if json_type \
                else Param(None, **kwargs)
    params[REGENERATE_PARAM] = Param(False, type="boolean", title=REGENERATE_PARAM, description=REGENERATE_DESCRIPTION)
    default_spec = next(s for s in specs if s.version == default)
    with DAG(
        dag_id=endpoint,
        description=f"Endpoint {endpoint}: runs published version {default} by default, or pipeline_version",
        doc_md=f"Published versions: {', '.join(f'{v} ({d})' for v, d in versions.items())}. Default: {default}.\n\n"
        + (default_spec.description or ""),
        schedule=None,
        start_date=_start_date(default_spec.start_date),  # as the pipelines' DAGs: naive means UTC
        catchup=False,
        tags=sorted({"mlpipe", "endpoint", *default_spec.tags}),
        params=params,
        default_args={"owner": default_spec.owner or "airflow"},
    ) as dag:
        MlpipeEndpointOperator(
            task_id="run_pipeline",
            endpoint=endpoint,
            versions=versions,
            default_version=default,
            version_params={s.version: sorted(s.params) for s in specs},
        )
    return dag
