from airflow_mlpipe.factory import load_dag

dag = load_dag(__file__, "pipelines/income_batch_score.yaml")
