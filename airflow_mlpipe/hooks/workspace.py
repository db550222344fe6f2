"""MlpipeHook: the workspace named by an Airflow connection of type ``mlpipe``.

Connection fields:
- extra ``workspace``: the root URI, ``file:///abs/dir`` or ``s3://bucket/prefix`` (required)
- login / password: S3 access key id / secret (optional: else boto3's usual chain)
- extra ``endpoint_url``: an S3-compatible endpoint (MinIO, moto, Ceph...); extra ``region_name``

Example: ``AIRFLOW_CONN_MLPIPE_DEFAULT='{"conn_type": "mlpipe", "extra": {"workspace": "file:///srv/ws"}}'``
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_mlpipe.compat import BaseHook
from airflow_mlpipe.errors import WorkspaceError

if TYPE_CHECKING:
    from airflow_mlpipe.workspace.core import Workspace


class MlpipeHook(BaseHook):
    """Opens the workspace (datastore, registries, cache, run records) of an ``mlpipe`` connection."""

    conn_name_attr = "mlpipe_conn_id"
    default_conn_name = "mlpipe_default"
    conn_type = "mlpipe"
    hook_name = "ML pipeline workspace"

    def __init__(self, mlpipe_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlpipe_conn_id = mlpipe_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "host"],
            "relabeling": {"login": "S3 access key id", "password": "S3 secret access key"},
            "placeholders": {
                "workspace": "file:///srv/mlpipe or s3://bucket/prefix",
                "endpoint_url": "http://minio:9000 (leave empty for AWS)",
            },
        }

    @cached_property
    def settings(self) -> dict[str, Any]:
        """Workspace URI and S3 options from the connection (credentials included: never log this)."""
        try:
            conn = self.get_connection(self.mlpipe_conn_id)
        except Exception as exc:
            from airflow_mlpipe.compat import AirflowNotFoundException

            if isinstance(exc, AirflowNotFoundException):  # missing stays missing on a retry: permanent
                raise WorkspaceError(
                    f"connection {self.mlpipe_conn_id!r} not found: create it with "
                    f"`airflow connections add {self.mlpipe_conn_id} --conn-type mlpipe "
                    "--conn-extra '{\"workspace\": \"file:///path/to/workspace\"}'` "
                    f"or set AIRFLOW_CONN_{self.mlpipe_conn_id.upper()} ({type(exc).__name__}: {exc})",
                    permanent=True,
                ) from exc
            if isinstance(exc, PermissionError):  # AirflowSecretsBackendAccessDenied: a backend said no
                raise WorkspaceError(
                    f"connection {self.mlpipe_conn_id!r}: the secrets backend denied access ({type(exc).__name__}: "
                    f"{exc}); grant this deployment read access to it, or point the task at another connection",
                    permanent=True,
                ) from exc
            # a secrets backend or metadata DB that did not answer is not a missing connection: it may answer
            # on the next try (transient), and the message says what really failed
            raise WorkspaceError(
                f"connection {self.mlpipe_conn_id!r} could not be read ({type(exc).__name__}: {exc}): the secrets "
                "backend or the metadata database did not answer; the task is retried. If it persists, check the "
                "[secrets] backend configuration and that `airflow connections get "
                f"{self.mlpipe_conn_id}` works",
                permanent=False,
            ) from exc
        return self.settings_from_connection(conn, self.mlpipe_conn_id)

    @staticmethod
    def settings_from_connection(conn: Any, conn_id: str) -> dict[str, Any]:
        extra = conn.extra_dejson or {}
        uri = extra.get("workspace") or conn.host
        if not uri:
            raise WorkspaceError(
                f"connection {conn_id!r} has no workspace URI: set its extra field "
                "'workspace' to file:///abs/dir or s3://bucket/prefix",
                permanent=True,
            )
        options: dict[str, Any] = {}
        if uri.startswith("s3://"):
            if conn.login:
                options["aws_access_key_id"] = conn.login
            if conn.password:
                options["aws_secret_access_key"] = conn.password
            for key in ("endpoint_url", "region_name", "aws_session_token", "max_concurrency"):
                if extra.get(key):
                    options[key] = extra[key]
        return {"uri": uri, "options": options}

    @classmethod
    def workspace_from_connection(cls, conn: Any, conn_id: str) -> Workspace:
        from airflow_mlpipe.workspace.core import Workspace

        settings = cls.settings_from_connection(conn, conn_id)
        return Workspace.from_uri(settings["uri"], **settings["options"])

    def get_workspace(self) -> Workspace:
        from airflow_mlpipe.workspace.core import Workspace

        return Workspace.from_uri(self.settings["uri"], **self.settings["options"])

    def step_env(self) -> dict[str, str]:
        """Environment variables a step process needs to find the workspace (region, endpoint): no secret."""
        return self._as_env({"region_name": "AWS_DEFAULT_REGION", "endpoint_url": "MLPIPE_S3_ENDPOINT_URL"})

    def step_credentials(self) -> dict[str, str]:
        """The workspace's S3 credentials as the environment variables a step process reads (see
        ``StepRequest.credentials``: a pod never gets them as plain values)."""
        return self._as_env({"aws_access_key_id": "AWS_ACCESS_KEY_ID",
                             "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
                             "aws_session_token": "AWS_SESSION_TOKEN"})

    def _as_env(self, mapping: dict[str, str]) -> dict[str, str]:
        opts = self.settings["options"]
        return {var: str(opts[opt]) for opt, var in mapping.items() if opts.get(opt)}

    def test_connection(self) -> tuple[bool, str]:
        try:
            ws = self.get_workspace()
            ws.datastore.exists("runs/.probe")
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"workspace {self.settings['uri']} is reachable"
