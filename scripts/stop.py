"""``make stop``: stop the Airflow that ``make demo`` left running."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import standalone  # noqa: E402

home = standalone.REPO / ".demo"
if standalone.stop(home):
    print(f"stopped airflow standalone (home {home})")
else:
    print("no demo Airflow was running")
