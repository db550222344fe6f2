"""Registered datasets and models as Airflow Assets.

Each dataset name is an Asset; a new version emits an event on it through an AssetAlias, so only a
*new* version (not a reused step) triggers the pipelines scheduled on that dataset. The ``x-mlpipe``
scheme keeps Asset construction free of provider discovery at DAG parse time. The URI helpers import
no Airflow (the CLI uses them).
"""

from __future__ import annotations

from typing import Any

DATASET_GROUP = "mlpipe-dataset"
MODEL_GROUP = "mlpipe-model"


def dataset_uri(name: str) -> str:
    return f"x-mlpipe://datasets/{name}"


def model_uri(name: str) -> str:
    return f"x-mlpipe://models/{name}"


def dataset_asset(name: str) -> Any:
    from airflow_mlpipe.compat import Asset

    return Asset(name=f"mlpipe.dataset.{name}", uri=dataset_uri(name), group=DATASET_GROUP)


def dataset_alias(name: str) -> Any:
    from airflow_mlpipe.compat import AssetAlias

    return AssetAlias(name=f"mlpipe.dataset-alias.{name}", group=DATASET_GROUP)


def model_asset(name: str) -> Any:
    from airflow_mlpipe.compat import Asset

    return Asset(name=f"mlpipe.model.{name}", uri=model_uri(name), group=MODEL_GROUP)


def model_alias(name: str) -> Any:
    from airflow_mlpipe.compat import AssetAlias

    return AssetAlias(name=f"mlpipe.model-alias.{name}", group=MODEL_GROUP)
