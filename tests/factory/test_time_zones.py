"""A pipeline's time zone is its start_date's, wherever a cron is read: a cron alone (Airflow reads it in the DAG's
time zone), a cron with datasets (before: always UTC), the compiled DAG, and the endpoint DAG (before: its
start_date was passed without a time zone, so Airflow read it in its own default zone)."""

from __future__ import annotations

import datetime
import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _retrain(folder: pathlib.Path, start: str, schedule: str) -> pathlib.Path:
    path = folder / "pipelines" / "income_retrain.yaml"
    text = path.read_text()
    text = text.replace('schedule:\n  cron: "@weekly"\n  datasets: [income_raw]\n', schedule, 1)
    text = text.replace("start_date: 2026-01-01\n", f"start_date: {start}\n", 1)
    path.write_text(text)
    return path


@pytest.mark.parametrize("start, offset", [("2026-01-01", 0), ("2026-01-01T06:00:00+02:00", 7200)])
def test_a_cron_with_datasets_is_read_in_the_dags_time_zone(folder, start, offset):
    from airflow_mlpipe.factory import load_dag
    from airflow_mlpipe.factory.compile import compile_source
    from airflow_mlpipe.spec import load_pipeline

    both = 'schedule:\n  cron: "0 3 * * *"\n  datasets: [income_raw]\n'
    path = _retrain(folder, start, both)
    dag = load_dag(folder / "x.py", "pipelines/income_retrain.yaml")
    assert dag.timezone.utcoffset(datetime.datetime(2026, 6, 1)) == datetime.timedelta(seconds=offset)
    cron_tz = _zone(dag.timetable.timetable.timezone)
    assert cron_tz.utcoffset(datetime.datetime(2026, 6, 1)) == datetime.timedelta(seconds=offset)

    alone = load_dag(folder / "x.py", str(_retrain(_fresh(folder), start, 'schedule: "0 3 * * *"\n')))
    assert _zone(alone.timetable.timezone).utcoffset(datetime.datetime(2026, 6, 1)) == datetime.timedelta(seconds=offset)

    source = compile_source(load_pipeline(path, root=folder), folder)
    namespace: dict = {"__file__": str(folder / "compiled.py"), "__name__": "compiled"}
    exec(compile(source, "compiled.py", "exec"), namespace)  # noqa: S102 - our own generated DAG source
    compiled = namespace["dag"]
    assert _zone(compiled.timetable.timetable.timezone).utcoffset(datetime.datetime(2026, 6, 1)) == \
        datetime.timedelta(seconds=offset)


def _zone(value):
    import pendulum

    return pendulum.timezone(value) if isinstance(value, str) else value


def _fresh(folder: pathlib.Path) -> pathlib.Path:
    other = folder.parent / f"other-{len(list(folder.parent.iterdir()))}"
    shutil.copytree(REPO / "dags_examples", other, ignore=shutil.ignore_patterns("__pycache__"))
    return other


def test_the_endpoint_dag_starts_in_utc_like_its_versions(folder):
    from airflow_mlpipe.factory import load_dag
    from airflow_mlpipe.factory.endpoints import endpoint_dag

    endpoint = endpoint_dag(folder / "x.py", "income_retrain", "pipelines")
    version = load_dag(folder / "x.py", "pipelines/income_retrain.yaml")
    assert endpoint.start_date.tzinfo is not None
    assert endpoint.start_date == version.start_date == datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
