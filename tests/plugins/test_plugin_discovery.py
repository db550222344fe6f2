"""Airflow finds the provider's plugin by itself, once, whichever way it discovers providers: with the
default ``[core] lazy_discover_providers = True`` through the ``airflow.plugins`` entry point, with False
through the provider info (get_provider_info.py). Checked in fresh Airflow processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures.entry_points import plugin_pythonpath

PROBE = """
import json
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
print(json.dumps({
    "plugins": [p.name for p in plugins],
    "errors": errors,
    "middlewares": [f"{m['middleware'].__module__}.{m['middleware'].__name__}"
                    for m in plugins_manager.get_fastapi_plugins()[1]],
}))
"""


@pytest.mark.integration
@pytest.mark.parametrize("lazy", ["True", "False"])
def test_the_plugin_is_loaded_once(lazy, tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": lazy, "PYTHONPATH": plugin_pythonpath(tmp_path / "ep")}
    # cwd outside the checkout: `python -c` puts its cwd on sys.path, and the checkout's .egg-info (written
    # by the editable install) would then declare the entry point a second time, as no Airflow process sees it
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300,
                         check=True, cwd=tmp_path).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found["plugins"].count("mlpipe") == 1, found
    assert found["errors"] == {}, found
    assert found["middlewares"].count("airflow_mlpipe.plugins.conf_check.ConfCheckMiddleware") == 1, found


def test_the_provider_info_names_the_plugin_class():
    import importlib

    from airflow_mlpipe.get_provider_info import get_provider_info

    (entry,) = get_provider_info()["plugins"]
    module, _, name = entry["plugin-class"].rpartition(".")
    plugin = getattr(importlib.import_module(module), name)
    assert plugin.name == entry["name"] == "mlpipe"
