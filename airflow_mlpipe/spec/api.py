"""Entry points: load a definition file or text into a validated :class:`PipelineSpec`, and the
JSON Schema of the format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, create_model

from airflow_mlpipe.spec.loader import load_yaml
from airflow_mlpipe.spec.pipeline import PipelineSpec
from airflow_mlpipe.spec.problems import Collector
from airflow_mlpipe.spec.steps import STEP_TYPES
from airflow_mlpipe.spec.validate import build_spec


def definitions_root(definition: str | os.PathLike[str]) -> Path:
    """The definitions folder of the definition file ``definition``, by default: the folder above the
    definition's own folder, which is the DAGs folder in the usual layout ``<dags>/pipelines/NAME.yaml``.
    Every step's source directory must resolve (real path, symbolic links followed) inside it, so a
    definition cannot snapshot ``/etc``. The factory passes the DAG file's folder instead."""
    return Path(os.path.realpath(definition)).parent.parent


def load_pipeline(
    path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
) -> PipelineSpec:
    """Load and validate the pipeline definition at ``path``.

    ``root`` is the definitions folder source directories must stay inside (default:
    :func:`definitions_root` of ``path``). Raises ``DefinitionError`` listing every problem of the file
    (``str()`` is the whole report, ``.problems`` the :class:`~airflow_mlpipe.spec.problems.Problem` list).
    """
    shown = os.fspath(path)
    source = Path(path).resolve()
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        col = Collector(shown, {})
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        col.add((), f"cannot read the file: {reason}")
        col.raise_if_any()
        raise  # pragma: no cover - raise_if_any always raises here
    return _load_text(text, shown, source.parent, source, Path(root) if root is not None else definitions_root(source))


def load_pipelines_text(
    text: str,
    filename: str = "<string>",
    *,
    base_dir: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> PipelineSpec:
    """Validate a definition given as text (tests, the REST layer). ``filename`` names it in
    messages. Files (scripts, requirements) are checked only when ``base_dir`` is given; it is also
    what relative paths resolve against, and the definition counts as a file in it for ``root`` (see
    :func:`load_pipeline`)."""
    base = Path(base_dir).resolve() if base_dir is not None else None
    source = base / Path(filename).name if base is not None else None
    if source is not None and root is None:
        root = definitions_root(source)
    return _load_text(text, filename, base, source, Path(root) if root is not None else None)


#: singular alias.
load_pipeline_text = load_pipelines_text


def _load_text(
    text: str, shown: str, base_dir: Path | None, source: Path | None, root: Path | None
) -> PipelineSpec:
    doc = load_yaml(text)
    col = Collector(shown, doc.lines)
    for line, path, message in doc.problems:
        col.add(path, message, line=line)
    return build_spec(doc.data, col, base_dir, source, root)


def definition_model() -> type[BaseModel]:
    """``PipelineSpec`` with ``steps`` typed as the union of the registered step types."""
    models = tuple(STEP_TYPES.values())
    step_type: Any = models[0] if len(models) == 1 else Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007
    return create_model(
        "PipelineDefinition",
        __base__=PipelineSpec,
        steps=(dict[str, step_type], Field(description="name -> step, in the order written.")),
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the pipeline definition format."""
    schema = definition_model().model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "airflow-mlpipe pipeline definition"
    return schema
