"""get_provider_info() stays true to the code, and Airflow discovers the provider."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from airflow_mlpipe import __version__
from airflow_mlpipe.get_provider_info import get_provider_info
from tests.conftest import scaled


def _modules(info: dict) -> list[str]:
    mods = []
    for section in ("operators", "sensors", "triggers", "hooks"):
        for entry in info.get(section, []):
            mods.extend(entry.get("python-modules", []))
    return mods


def test_every_named_module_imports():
    info = get_provider_info()
    modules = _modules(info)
    assert modules, "the provider names no module at all"
    for module in modules:
        importlib.import_module(module)


def test_every_named_class_exists_and_connection_type_matches():
    info = get_provider_info()
    for conn in info["connection-types"]:
        module, _, name = conn["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == conn["connection-type"]
        assert hook.default_conn_name.startswith(conn["connection-type"])
    for section in ("triggers",):
        for entry in info.get(section, []):
            for module in entry.get("python-modules", []):
                importlib.import_module(module)


def test_provider_info_versions_and_package_name():
    info = get_provider_info()
    assert info["package-name"] == "airflow-mlpipe"
    assert info["versions"][0] == __version__


def test_operator_template_fields_are_constructor_arguments():
    import inspect

    info = get_provider_info()
    for module in _modules(info):
        mod = importlib.import_module(module)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__ or not hasattr(cls, "template_fields"):
                continue
            params = inspect.signature(cls.__init__).parameters
            for field in cls.template_fields:
                assert field in params, f"{cls.__name__}.template_fields names {field!r}, not an argument"


@pytest.mark.integration
def test_airflow_providers_list_shows_the_package(tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=scaled(120), check=True,
    ).stdout
    assert '"package_name": "airflow-mlpipe"' in out
    assert f'"version": "{__version__}"' in out
    conns = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "hooks", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=scaled(120), check=True,
    ).stdout
    assert "airflow_mlpipe.hooks.workspace.MlpipeHook" in conns
