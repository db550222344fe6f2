"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Keep it a plain function returning data: Airflow calls it at start-up. ``tests/test_provider_info.py``
checks that every module and class named here exists.
"""

from __future__ import annotations

from airflow_mlpipe import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-mlpipe",
        "name": "ML pipelines (airflow-mlpipe)",
        "description": "ML pipelines for Apache Airflow 3: steps on local, Docker and Kubernetes compute, "
        "versioned datasets and models, step reuse, pipeline parameters, YAML pipeline definitions.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "ML pipelines",
                "external-doc-url": "https://pypi.org/project/airflow-mlpipe/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "ML pipelines",
                "python-modules": [
                    "airflow_mlpipe.operators.step",
                    "airflow_mlpipe.operators.model",
                    "airflow_mlpipe.operators.batch",
                    "airflow_mlpipe.operators.endpoint",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "ML pipelines", "python-modules": ["airflow_mlpipe.sensors.workspace", "airflow_mlpipe.sensors.run"]}
        ],
        "triggers": [
            {"integration-name": "ML pipelines", "python-modules": ["airflow_mlpipe.triggers.workspace"]}
        ],
        "hooks": [{"integration-name": "ML pipelines", "python-modules": ["airflow_mlpipe.hooks.workspace"]}],
        # loaded from here with [core] lazy_discover_providers = False, else through the airflow.plugins
        # entry point (pyproject.toml); see airflow_mlpipe/plugins/__init__.py
        "plugins": [{"name": "mlpipe", "plugin-class": "airflow_mlpipe.plugins.MlpipePlugin"}],
        "connection-types": [
            {
                "hook-class-name": "airflow_mlpipe.hooks.workspace.MlpipeHook",
                "hook-name": "ML pipeline workspace",
                "connection-type": "mlpipe",
                "conn-fields": {
                    "workspace": {
                        "label": "Workspace URI",
                        "schema": {"type": ["string", "null"]},
                        "description": "file:///abs/dir or s3://bucket/prefix",
                    },
                    "endpoint_url": {
                        "label": "S3 endpoint URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "For S3-compatible stores (MinIO, Ceph); empty for AWS.",
                    },
                    "region_name": {"label": "S3 region", "schema": {"type": ["string", "null"]}},
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "host"],
                    "relabeling": {"login": "S3 access key id", "password": "S3 secret access key"},
                    "placeholders": {"workspace": "file:///srv/mlpipe or s3://bucket/prefix"},
                },
            }
        ],
    }
