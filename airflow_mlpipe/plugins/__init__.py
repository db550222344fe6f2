"""The Airflow plugin shipped with the provider: installing the package is enough to load it.

``MlpipePlugin`` adds one root middleware to the API server, ``ConfCheckMiddleware``
(``plugins/conf_check.py``): a run of an mlpipe pipeline whose conf its steps would refuse is refused when it
is triggered (HTTP 400), through the REST API, the UI's trigger form and backfills alike.

How Airflow finds it. Airflow 3.3 loads the plugins named in a provider's info (``get_provider_info.py``,
"plugins") only with ``[core] lazy_discover_providers = False``; with the default (True) it loads those of
the ``airflow.plugins`` entry point (pyproject.toml). Both name it, and ``entry_point_plugin`` is the plugin
only when the provider-info route is off, so it is loaded once either way (a second copy would be skipped
and reported as a plugin import error).

Airflow imports this module in every process that loads plugins (task processes too): keep it light.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_mlpipe.plugins.conf_check import ConfCheckMiddleware

__all__ = ["MlpipePlugin", "entry_point_plugin"]


class MlpipePlugin(AirflowPlugin):
    """airflow-mlpipe's plugin: the trigger-time conf check of mlpipe pipelines."""

    name = "mlpipe"
    fastapi_root_middlewares = [
        {
            "name": "mlpipe trigger-time conf check",
            "middleware": ConfCheckMiddleware,
            "args": [],
            "kwargs": {},
        }
    ]


def _entry_point_plugin() -> type[MlpipePlugin] | None:
    from airflow import settings

    return MlpipePlugin if settings.LAZY_LOAD_PROVIDERS else None


#: what the ``airflow.plugins`` entry point names (see the module docstring)
entry_point_plugin = _entry_point_plugin()
