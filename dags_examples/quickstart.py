"""The quickstart pipeline (pipelines/quickstart.yaml), built by the airflow-mlpipe DAG factory."""

from airflow_mlpipe.factory import load_dag

dag = load_dag(__file__, "pipelines/quickstart.yaml")
