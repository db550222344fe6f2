"""MlpipeEndpointOperator: the task of an endpoint DAG (the seeds' published pipeline endpoint).

It picks the published version to run (``pipeline_version`` in the conf, else the endpoint's default:
the override set with ``mlpipe endpoints set-default`` in the workspace, else the definitions' default),
refuses an unknown version with the list of published ones, passes the rest of the conf through, and
ends with that run's state (it triggers the version's DAG and waits for it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

from airflow_mlpipe.errors import ConfError
from airflow_mlpipe.operators.common import fail_fast
from airflow_mlpipe.spec.names import REGENERATE_PARAM, VERSION_PARAM
from airflow_mlpipe.workspace.endpoints import default_override, set_default  # noqa: F401 - public here too

if TYPE_CHECKING:
    from airflow_mlpipe.compat import Context

class MlpipeEndpointOperator(TriggerDagRunOperator):
    """Run a published version of an endpoint and wait for it; the task ends with that run's state.

    :param endpoint: the endpoint name.
    :param versions: published version -> the DAG id of that version.
    :param default_version: the default from the definitions.
    :param version_params: published version -> its declared param names (the conf is checked against them).
    """

    template_fields = ()

    def __init__(
        self,
        *,
        endpoint: str,
        versions: Mapping[int | str, str],
        default_version: int,
        version_params: Mapping[int | str, list[str]],
        mlpipe_conn_id: str = "mlpipe_default",
        poke_interval: int = 2,
        **kwargs: Any,
    ) -> None:
        self.endpoint = endpoint
        self.versions = {int(v): dag_id for v, dag_id in versions.items()}
        self.default_version = int(default_version)
        self.version_params = {int(v): list(names) for v, names in version_params.items()}
        self.mlpipe_conn_id = mlpipe_conn_id
        super().__init__(
            trigger_dag_id=self.versions[self.default_version],
            wait_for_completion=True,
            poke_interval=poke_interval,
            fail_when_dag_is_paused=True,
            deferrable=False,
            **kwargs,
        )

    def choose(self, conf: Mapping[str, Any], override: int | None) -> tuple[int, dict[str, Any]]:
        """(version, conf to pass on) or ConfError naming the published versions / declared params."""
        requested = conf.get(VERSION_PARAM)
        published = sorted(self.versions)
        if requested in (None, ""):
            version = override if override is not None else self.default_version
            if version not in self.versions:
                raise ConfError(f"endpoint {self.endpoint!r}: its default version {version} is not published "
                                f"(published: {published}); fix it with `mlpipe endpoints set-default`")
        else:
            try:
                version = int(requested)
            except (TypeError, ValueError):
                raise ConfError(f"endpoint {self.endpoint!r}: {VERSION_PARAM} must be a version number, "
                                f"got {requested!r}; published versions: {published}") from None
            if version not in self.versions:
                raise ConfError(f"endpoint {self.endpoint!r} has no published version {version}; "
                                f"published versions: {published}")
        passed = {k: v for k, v in conf.items() if k != VERSION_PARAM and v is not None}
        allowed = set(self.version_params.get(version, [])) | {REGENERATE_PARAM}
        unknown = sorted(set(passed) - allowed)
        if unknown:
            raise ConfError(f"endpoint {self.endpoint!r} version {version} has no param(s) {unknown}; "
                            f"its params: {sorted(allowed)}")
        return version, passed

    @fail_fast
    def execute(self, context: Context) -> Any:
        from airflow_mlpipe.hooks.workspace import MlpipeHook

        conf = dict(context["dag_run"].conf or {})
        override = default_override(MlpipeHook(self.mlpipe_conn_id).get_workspace(), self.endpoint)
        version, passed = self.choose(conf, override)  # a ConfError fails the task without a retry
        self.trigger_dag_id = self.versions[version]
        self.conf = passed
        self.log.info("endpoint %s: running version %s (DAG %s) with conf %s", self.endpoint, version,
                      self.trigger_dag_id, passed)
        context["ti"].xcom_push(key="endpoint_version", value={"version": version, "dag_id": self.trigger_dag_id})
        return super().execute(context)
