"""The same building blocks without YAML: a hand-written DAG (TaskFlow style for the glue) that waits for a
new version of the raw income data, retrains, registers the model and promotes it if it beats production.
It shares the workspace, the step cache and the run records with the YAML pipelines."""

from __future__ import annotations

import datetime
import pathlib

from airflow.sdk import DAG, Param, task

from airflow_mlpipe.operators.model import MlpipeCompareOperator, MlpipeRegisterModelOperator
from airflow_mlpipe.operators.step import MlpipeStepOperator
from airflow_mlpipe.sensors.workspace import MlpipeDatasetSensor

SRC = str(pathlib.Path(__file__).resolve().parent / "src" / "income")
PLAIN = {"python": "python3", "requirements": []}

with DAG(
    dag_id="income_handwritten",
    description="Hand-written: wait for new income_raw data, retrain, register, promote if better",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["example", "mlpipe", "handwritten"],
    params={
        "epochs": Param(20, type="integer", minimum=1, maximum=500, description="Passes over the training data."),
        "regenerate_outputs": Param(False, type="boolean", description="Recompute every step."),
    },
) as dag:
    wait = MlpipeDatasetSensor(task_id="wait_for_data", name="income_raw", after_version=0, poll_interval=30,
                               timeout=6 * 3600, deferrable=True)
    prep = MlpipeStepOperator(
        task_id="prep", script="prep.py", source_directory=SRC, environment=PLAIN,
        arguments=["--raw", "${inputs.raw}", "--out", "${outputs.prepared}"],
        inputs={"raw": "income_raw:latest"}, outputs={"prepared": {}},
    )
    train = MlpipeStepOperator(
        task_id="train", script="train.py", source_directory=SRC, environment=PLAIN,
        arguments=["--data", "${inputs.data}", "--learning-rate", "0.5", "--epochs", "${params.epochs}",
                   "--model", "${outputs.model}"],
        inputs={"data": prep.output_ref("prepared")}, outputs={"model": {}},  # prep >> train, written once
    )
    evaluate = MlpipeStepOperator(
        task_id="evaluate", script="evaluate.py", source_directory=SRC, environment=PLAIN,
        arguments=["--data", "${inputs.data}", "--model", "${inputs.model}", "--out", "${outputs.report}"],
        inputs={"data": prep.output_ref("prepared"), "model": train.output_ref("model")},
        outputs={"report": {}},
    )
    register = MlpipeRegisterModelOperator(
        task_id="register", model_name="income_handwritten", inputs={"model": train.output_ref("model")},
        metrics_from=["evaluate"],
    )
    promote = MlpipeCompareOperator(
        task_id="promote", candidate="register", metric="auc", margin=0.005, alias="production",
        model_name="income_handwritten",
    )

    @task
    def summary(decision: dict) -> str:
        """Plain TaskFlow glue reading the compare step's XCom."""
        return f"income_handwritten v{decision['model']['version']}: {decision['model']['decision']}"

    wait >> prep  # the data edges (prep -> train -> evaluate, train -> register) come from output_ref
    evaluate >> register >> promote  # register reads evaluate's metrics; promote reads register's model
    summary(promote.output)
