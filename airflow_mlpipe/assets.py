"""Registered datasets and models as Airflow Assets.

Each dataset name is an Asset; a new version emits an event on it through an AssetAlias, so only a
*new* version (not a reused step) triggers the pipelines scheduled on that dataset. The ``x-mlpipe``
scheme keeps Asset construction free of provider discovery at DAG parse time. The URI rules live in
``spec.names`` (no Airflow: the CLI uses them).
"""

from __future__ import annotations

from typing import Any

from airflow_mlpipe.spec.names import dataset_uri, model_uri

DATASET_GROUP = "mlpipe-dataset"
MODEL_GROUP = "mlpipe-model"

__all__ = ["DATASET_GROUP", "MODEL_GROUP", "dataset_alias", "dataset_asset", "dataset_uri", "model_alias",
           "model_alias_for", "model_asset", "model_uri", "is_template"]




def dataset_asset(name: str) -> Any:
    from airflow_mlpipe.compat import Asset

    return Asset(name=f"mlpipe.dataset.{name}", uri=dataset_uri(name), group=DATASET_GROUP)


def dataset_alias(name: str) -> Any:
    from airflow_mlpipe.compat import AssetAlias

    return AssetAlias(name=f"mlpipe.dataset-alias.{name}", group=DATASET_GROUP)


def is_template(text: Any) -> bool:
    """True when ``text`` holds Jinja markers: it is only known once the task renders it."""
    return isinstance(text, str) and any(marker in text for marker in ("{{", "{%", "{#"))


def model_alias_for(name: str) -> Any:
    """The outlet alias of a model name: the model's own alias, or, for a templated name (the model is known
    only when the task runs), one alias shared by such tasks; an event on it still lands on the rendered
    model's Asset, so the pipelines scheduled on that model run."""
    if is_template(name):
        from airflow_mlpipe.compat import AssetAlias

        return AssetAlias(name="mlpipe.model-alias.templated", group=MODEL_GROUP)
    return model_alias(name)


def model_asset(name: str) -> Any:
    from airflow_mlpipe.compat import Asset

    return Asset(name=f"mlpipe.model.{name}", uri=model_uri(name), group=MODEL_GROUP)


def model_alias(name: str) -> Any:
    from airflow_mlpipe.compat import AssetAlias

    return AssetAlias(name=f"mlpipe.model-alias.{name}", group=MODEL_GROUP)
