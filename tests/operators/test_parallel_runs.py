"""Eight runs of one pipeline at the same time, each with its own params, keep separate and correct
outputs in one shared workspace.

Eight ``airflow dags test`` processes (the real CLI) start together on the same DAGs folder and the same
workspace, each with a different ``rows``/``seed`` conf. SQLite does not take eight concurrent writers
(``database is locked``), so each process gets its own copy of one freshly migrated metadata DB (never the suite's own DB): the
Airflow side of each run is private, the workspace (run records, outputs, cache, dataset registry) is
shared, which is what this test is about. Marked ``integration``: eight Airflow CLI processes (each
starts the in-process execution API, about 10 s of CPU) take about 100 s on 2 cores. Then, for every run: its record holds its params, its prep
output has exactly its row count, and its train step read its own prep output (by digest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import scaled
from tests.operators.kit import EXAMPLES, local_target, make_dags_folder, private_airflow_home

RUNS = 8


@pytest.mark.integration  # eight Airflow processes: about 100 s on 2 cores
@pytest.mark.timeout(600)
def test_eight_concurrent_runs_keep_their_outputs(tmp_path):
    text = (EXAMPLES / "pipelines" / "quickstart.yaml").read_text().replace("mlpipe_quickstart", "qs_parallel")
    dags = make_dags_folder(tmp_path / "dags", {"quickstart": text}, copy_quickstart_sources=True)
    target = local_target(tmp_path / "ws")
    confs = [{"rows": 100 + 37 * i, "seed": i, "epochs": 2} for i in range(RUNS)]
    procs = []
    for i, conf in enumerate(confs):
        home = private_airflow_home(tmp_path / f"home{i}", tmp_path / "template")
        env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
                   AIRFLOW_CONN_MLPIPE_DEFAULT=target.connection())
        log = open(tmp_path / f"run{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen([sys.executable, "-m", "airflow", "dags", "test", "qs_parallel", "-c",
                                        json.dumps(conf)], env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for i, (proc, log) in enumerate(procs):
        code = proc.wait(timeout=scaled(500))
        log.close()
        assert code == 0, (tmp_path / f"run{i}.log").read_text()[-3000:]

    ws = target.open()
    runs = ws.runs.list_runs("qs_parallel", limit=100)
    assert len(runs) == RUNS and len({r["run_id"] for r in runs}) == RUNS
    by_seed = {r["params"]["seed"]: r for r in runs}
    assert sorted(by_seed) == list(range(RUNS))
    output_keys = set()
    for conf in confs:
        record = ws.runs.get_run("qs_parallel", by_seed[conf["seed"]]["run_id"])
        assert record["conf"] == conf and record["params"]["rows"] == conf["rows"]
        prep, train = record["steps"]["prep"], record["steps"]["train"]
        assert prep["status"] == train["status"] == "succeeded"
        assert prep["reused"] is False and prep["metrics"]["rows"] == conf["rows"]
        table = prep["outputs"]["table"]
        lines = ws.datastore.read_bytes(table["key"] + "/table.csv").decode().splitlines()
        assert len(lines) == conf["rows"] + 1
        assert train["inputs"]["table"]["digest"] == table["digest"]
        assert ws.verify_output(train["outputs"]["model"]["key"], train["outputs"]["model"]["digest"])
        output_keys |= {table["key"], train["outputs"]["model"]["key"]}
    assert len(output_keys) == 2 * RUNS
    # eight different tables registered: eight versions of the dataset, each with its own digest
    versions = ws.datasets.list_versions("quickstart_table")
    assert len(versions) == RUNS and len({v.digest for v in versions}) == RUNS
