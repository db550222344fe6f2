"""``make stop``: stop the Airflow that ``make demo`` left running, with every process it started (its
process group, and the step processes it started in sessions of their own)."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import standalone  # noqa: E402

home = standalone.REPO / ".demo"
info = standalone.recorded(home)
if info is not None and standalone.stop(home):
    print(f"stopped airflow standalone (pid {info['pid']}, port {info['port']}, home {home}) and the processes it started")
else:
    print(f"no demo Airflow was running (home {home})")
