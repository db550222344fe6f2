"""A second start on the home of a running Airflow (what a second ``make demo`` does) reuses it: same
process, no second ``airflow standalone``. The concurrent-start race is in tests/test_standalone.py."""

from __future__ import annotations

import pathlib
import time

import pytest

from tests.conftest import scaled
from tests.e2e.conftest import _standalone_module

pytestmark = [pytest.mark.integration]


def standalone_processes(home: pathlib.Path) -> set[int]:
    """Pids of the ``airflow standalone`` processes whose AIRFLOW_HOME is in ``home`` (other people's
    Airflows on this machine do not count)."""
    standalone = _standalone_module()
    marker = f"AIRFLOW_HOME={home / 'airflow'}".encode()
    found = set()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = standalone.cmdline(int(entry.name))
        if argv[-1:] != ["standalone"]:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            found.add(int(entry.name))
    return found


def test_a_second_start_on_the_same_home_reuses_the_running_airflow(airflow_standalone):
    standalone = _standalone_module()
    home = airflow_standalone["home"]
    before = standalone_processes(home)
    assert airflow_standalone["pid"] in before
    messages: list[str] = []
    started = time.monotonic()
    again = standalone.start(home, airflow_standalone["dags"], port=standalone.free_port(),
                             workspace=airflow_standalone["workspace_uri"], timeout=scaled(120),
                             on_wait=messages.append)
    assert again["reused"] is True
    assert again["pid"] == airflow_standalone["pid"] and again["url"] == airflow_standalone["url"]
    assert again["password"] == airflow_standalone["password"]
    assert any(m.startswith(f"Airflow is already running in {home} (pid {again['pid']}") for m in messages)
    assert time.monotonic() - started < scaled(30)
    assert standalone_processes(home) == before
