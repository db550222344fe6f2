"""Endpoint DAGs: the seeds' published pipeline endpoint. Every definition with ``endpoint: {name: E}``
is one published version (its own DAG, ``<pipeline>_v<version>``); the endpoint DAG ``E`` runs the
default version, or the one named by ``pipeline_version`` in the conf, and ends with that run's state.

    from airflow_mlpipe.factory.endpoints import endpoint_dag

    dag = endpoint_dag(__file__, "income_retrain", "pipelines")

Parse time reads the definitions of the folder (files only; no network, database or subprocess), as the
factory does (``factory/__init__.py``): the folder's files are read with the project's safe loader
(``spec.loader.load_yaml``: alias bombs and deep nesting are refused, so a sibling file cannot hang the parse),
each published version is validated with ``load_pipeline`` and the factory's definitions-folder rule (the DAG
file's folder when the definition is below it), and the result is kept as a plain-JSON *endpoint plan* in
``MLPIPE_CACHE_DIR/plans``. Its key covers the endpoint name, the folder and the path and bytes of every YAML
file in it (any change to any of them means a new plan), this package's version, the plan format and the
builders' code: a warm parse reads the files' bytes and the plan, and loads no pydantic model.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib
import re
from typing import Any

from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.factory import (
    REGENERATE_DESCRIPTION,
    _cache_file,
    _params,
    _read_plan,
    _root_for,
    _start_date,
    _write_plan,
    param_args,
)
from airflow_mlpipe.spec.names import REGENERATE_PARAM, VERSION_PARAM, dag_id_for, might_publish

ENDPOINT_PLAN_FORMAT = 1  # bump when the endpoint plan's shape or meaning changes (as PLAN_FORMAT)


def _definition_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The YAML files of ``folder`` (``*.yaml``, ``*.yml``), sorted."""
    return sorted(p for p in [*folder.glob("*.yaml"), *folder.glob("*.yml")] if not p.is_dir())


def _unreadable(path: pathlib.Path, endpoint: str, reason: str) -> DefinitionError:
    return DefinitionError(
        f"endpoint {endpoint!r}: {path} cannot be read ({reason}) and may publish a version of it; routing "
        "without it could pick the wrong default version: fix that file (`mlpipe validate` names the line)")


def _publishes(path: pathlib.Path, endpoint: str) -> bool:
    """Whether the definition at ``path`` says ``endpoint: {name: <endpoint>}``, read with the project's safe
    loader. A file that cannot be read and may publish the endpoint (``might_publish``) is a DefinitionError;
    another pipeline's unreadable file is skipped (its own DAG file reports it)."""
    from airflow_mlpipe.spec.loader import load_yaml

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False  # removed since the folder was listed
    except OSError as exc:
        raise _unreadable(path, endpoint, exc.strerror or str(exc)) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if might_publish(raw.decode("utf-8", errors="replace"), endpoint):
            raise _unreadable(path, endpoint, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
        return False
    doc = load_yaml(text)
    if doc.data is None and doc.problems:
        if might_publish(text, endpoint):
            line, _, message = doc.problems[0]
            raise _unreadable(path, endpoint, f"line {line}: {message}" if line else message)
        return False
    published = doc.data.get("endpoint") if isinstance(doc.data, dict) else None
    return isinstance(published, dict) and published.get("name") == endpoint


def published_versions(folder: pathlib.Path, endpoint: str, anchor_folder: pathlib.Path | None = None) -> list[Any]:
    """Validated specs of the definitions in ``folder`` published under ``endpoint``, by version. With
    ``anchor_folder`` (the endpoint DAG file's folder) a definition below it is validated with it as its
    definitions folder, as ``load_dag`` does; other definitions with ``load_pipeline``'s default."""
    from airflow_mlpipe.spec import load_pipeline

    paths = [path for path in _definition_files(folder) if _publishes(path, endpoint)]  # read them all first
    by_version: dict[int, Any] = {}
    for path in paths:
        root = _root_for(path.resolve(), anchor_folder) if anchor_folder is not None else None
        spec = load_pipeline(path, root=root)
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


def _endpoint_params(specs: list[Any], default: int) -> dict[str, Any]:
    """name -> (default, ``Param`` keyword arguments), as ``param_args``: ``pipeline_version`` (null or a
    published version), every version's params with null allowed (null: that version's default; the default
    version's wording wins), and ``regenerate_outputs``."""
    params: dict[str, Any] = {
        VERSION_PARAM: (None, {
            "type": ["null", "integer"], "enum": [None, *(s.version for s in specs)], "title": VERSION_PARAM,
            "description": f"Published version to run; empty runs the endpoint's default (version {default} in the "
            "definitions, unless changed with `mlpipe endpoints set-default`).",
        })
    }
    for spec in sorted(specs, key=lambda s: s.version != default):
        for name, (_, kwargs) in param_args(spec).items():
            if name in params or name == REGENERATE_PARAM:
                continue
            kwargs = dict(kwargs)
            json_type = kwargs.pop("type", None)
            if json_type is None:
                kwargs.pop("enum", None)
            else:
                kwargs["type"] = [json_type, "null"]
                if "enum" in kwargs:  # null (not given: the version's default) is a choice too
                    kwargs["enum"] = [*kwargs["enum"], None]
            params[name] = (None, kwargs)
    params[REGENERATE_PARAM] = (
        False, {"type": "boolean", "title": REGENERATE_PARAM, "description": REGENERATE_DESCRIPTION})
    return params


def endpoint_plan(endpoint: str, specs: list[Any]) -> dict[str, Any]:
    """Everything the endpoint DAG is built from, as plain JSON data, from its published versions' specs."""
    default = next((s.version for s in specs if s.endpoint.default), specs[-1].version)
    default_spec = next(s for s in specs if s.version == default)
    versions = [[s.version, dag_id_for(s)] for s in specs]
    return {
        "format": ENDPOINT_PLAN_FORMAT,
        "endpoint": endpoint,
        "versions": versions,
        "default": default,
        "version_params": [[s.version, sorted(s.params)] for s in specs],
        "params": _endpoint_params(specs, default),
        "dag": {
            "dag_id": endpoint,
            "description": f"Endpoint {endpoint}: runs published version {default} by default, or pipeline_version",
            "doc_md": f"Published versions: {', '.join(f'{v} ({d})' for v, d in versions)}. Default: {default}.\n\n"
            + (default_spec.description or ""),
            "start_date": _start_date(default_spec.start_date).isoformat(),  # as the pipelines': naive means UTC
            "tags": sorted({"mlpipe", "endpoint", *default_spec.tags}),
            "default_args": {"owner": default_spec.owner or "airflow"},
        },
    }


def build_endpoint_from_plan(plan: dict[str, Any]) -> Any:
    """The endpoint DAG of an endpoint plan (see :func:`endpoint_plan`): one task that runs the chosen version."""
    from airflow_mlpipe.compat import DAG
    from airflow_mlpipe.operators.endpoint import MlpipeEndpointOperator

    kwargs = dict(plan["dag"])
    kwargs["start_date"] = datetime.datetime.fromisoformat(kwargs["start_date"])
    with DAG(**kwargs, schedule=None, catchup=False, params=_params(plan["params"])) as dag:
        MlpipeEndpointOperator(
            task_id="run_pipeline",
            endpoint=plan["endpoint"],
            versions={version: dag_id for version, dag_id in plan["versions"]},
            default_version=plan["default"],
            version_params={version: names for version, names in plan["version_params"]},
        )
    return dag


_SOURCE_DIGEST: dict[str, str] = {}


def _source_digest() -> str:
    """This module's source: an edited endpoint builder (an editable install keeps the version) means a new
    plan. Read once per process."""
    if __file__ not in _SOURCE_DIGEST:
        try:
            _SOURCE_DIGEST[__file__] = hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()
        except OSError:
            _SOURCE_DIGEST[__file__] = "unreadable"
    return _SOURCE_DIGEST[__file__]


def _endpoint_plan_file(endpoint: str, folder: pathlib.Path, anchor_folder: pathlib.Path) -> pathlib.Path:
    """Where the endpoint plan is kept: keyed on the endpoint, the folders and the path and bytes of every YAML
    file in ``folder`` (any change to any of them means a new plan), besides what ``_cache_file`` adds."""
    parts = [b"endpoint", endpoint.encode(), str(folder).encode(), str(anchor_folder).encode(), _source_digest().encode()]
    for path in _definition_files(folder):
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = "unreadable"  # the cold parse reports it, or skips it if it is another pipeline's
        parts += [str(path).encode(), str(path.resolve()).encode(), digest.encode()]
    stem = re.sub(r"[^\w.-]", "_", endpoint)[:64]  # a file name whatever the endpoint's name
    return _cache_file(f"endpoint-{stem}", parts, ENDPOINT_PLAN_FORMAT)


def endpoint_dag(anchor: str | pathlib.Path, endpoint: str, folder: str | pathlib.Path = "pipelines") -> Any:
    """The endpoint DAG ``endpoint`` of the definitions in ``folder`` (relative to the folder of ``anchor``,
    usually ``__file__``), built from its cached plan, or from the validated definitions on a first parse."""
    anchor_folder = pathlib.Path(anchor).resolve().parent
    path = (anchor_folder / folder).resolve()  # an absolute ``folder`` stays itself
    plan_file = _endpoint_plan_file(endpoint, path, anchor_folder)
    plan = _read_plan(plan_file, ENDPOINT_PLAN_FORMAT)
    if plan is None:
        plan = json.loads(json.dumps(endpoint_plan(endpoint, published_versions(path, endpoint, anchor_folder))))
        _write_plan(plan_file, plan)
    return build_endpoint_from_plan(plan)
