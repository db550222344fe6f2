# The Airflow image of the distributed shape (docker-compose.yaml): Airflow 3.3 with airflow-mlpipe.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml README.md /opt/mlpipe/
COPY --chown=airflow:root airflow_mlpipe /opt/mlpipe/airflow_mlpipe
RUN pip install --no-cache-dir "/opt/mlpipe[celery]" "apache-airflow==3.3.2"
