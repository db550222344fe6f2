"""The endpoint `income_retrain`: runs the default published version (2) or the one named in the conf."""

from airflow_mlpipe.factory.endpoints import endpoint_dag

dag = endpoint_dag(__file__, "income_retrain", "pipelines")
