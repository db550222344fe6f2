"""Workspace maintenance: delete intermediate step outputs older than N days that no registered dataset or
model version, alias history, live cache entry or running run needs (nothing is ever deleted automatically otherwise, as in the
seeds). A dry run unless the `dry_run` param is switched off. Registered versions are never deleted."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param, task

with DAG(
    dag_id="mlpipe_maintenance",
    description="Garbage-collect intermediate outputs of the ML pipeline workspace",
    schedule="@weekly",
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["mlpipe", "maintenance"],
    params={
        "older_than_days": Param(30, type="number", minimum=0, description="Only outputs older than this."),
        "dry_run": Param(True, type="boolean", description="Report what would be deleted, delete nothing."),
    },
) as dag:

    @task
    def collect_garbage(params: dict | None = None) -> dict:
        from airflow_mlpipe.hooks.workspace import MlpipeHook

        ws = MlpipeHook().get_workspace()
        report = ws.gc(older_than_days=float(params["older_than_days"]), dry_run=bool(params["dry_run"]))
        print(report.summary())  # counts and bytes per kind, the 10 largest outputs, the time taken
        return {"dry_run": report.dry_run, "bytes": report.bytes, "seconds": round(report.seconds, 3),
                "summary": report.by_kind(), "largest": report.largest(10)}

    collect_garbage()
