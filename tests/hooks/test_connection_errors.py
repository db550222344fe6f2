"""How the workspace hook reports a connection it cannot get, through Airflow's real secrets-backend chain: a
connection that does not exist is "not found" (permanent: create it), a backend that denies access says so
(permanent), and neither is reported as the other. Before, every failure read "not found". Each case runs in a
fresh process so the secrets backend configured for it is the one Airflow loads."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from airflow.secrets import BaseSecretsBackend

REPO = pathlib.Path(__file__).resolve().parents[2]

PROBE = """
import json
from airflow_mlpipe.errors import WorkspaceError
from airflow_mlpipe.hooks.workspace import MlpipeHook
try:
    MlpipeHook("mlpipe_probe").settings
except WorkspaceError as exc:
    print(json.dumps({"message": str(exc), "permanent": exc.permanent}))
"""


def _probe(tmp_path, backend: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    if backend:
        env["AIRFLOW__SECRETS__BACKEND"] = backend
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


class DenyingBackend(BaseSecretsBackend):
    """A secrets backend (Airflow's base class) that denies every connection, as Vault does without a policy."""

    def get_connection(self, conn_id):
        from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

        raise AirflowSecretsBackendAccessDenied(f"vault: permission denied reading connections/{conn_id}")


@pytest.mark.integration  # two fresh Python processes that each load Airflow and its secrets backends (~15 s)
@pytest.mark.parametrize("case", ["missing", "denied"])
def test_a_missing_connection_and_a_denied_one_are_told_apart(tmp_path, airflow_db, case):
    result = _probe(tmp_path, "tests.hooks.test_connection_errors.DenyingBackend" if case == "denied" else None)
    assert result["permanent"] is True
    if case == "missing":
        assert "'mlpipe_probe' not found" in result["message"] and "airflow connections add" in result["message"]
    else:
        assert "not found" not in result["message"], result
        assert "denied access" in result["message"] and "permission denied" in result["message"]
