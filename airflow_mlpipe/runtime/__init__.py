"""What runs inside a step process: the context API for user scripts and the launcher.

Standard library only (boto3 lazily, through the S3 datastore): this package is shipped into
images that have nothing but python3 (see ``bundle.py``). It never imports Airflow.

    from airflow_mlpipe.runtime import context
    context.params["learning_rate"]; context.inputs["data"]; context.outputs["model"]
    context.log_metric("accuracy", 0.84); context.log_params({...}); context.set_tags({...})

``context`` is a process-wide singleton; it reads ``MLPIPE_CONTEXT`` on first use and works in an
offline mode (prints, keeps values in memory) when the script is run by hand.
"""

from __future__ import annotations

from airflow_mlpipe.runtime.context import StepContext

context = StepContext()

__all__ = ["StepContext", "context"]
