"""airflow-mlpipe: ML pipelines on Apache Airflow 3.

This module must stay importable without Airflow: the step runtime ships a copy of
``airflow_mlpipe/__init__.py`` + ``airflow_mlpipe/runtime`` + ``airflow_mlpipe/workspace/datastore.py``
into images that only have python3.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
