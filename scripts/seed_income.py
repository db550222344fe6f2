"""Seed a workspace with the income example's data (synthetic, generated here: nothing is downloaded):

- dataset ``income_raw``: US census-style rows (the default training data of income_retrain)
- workspace path ``data/income/non_us.csv``: non-US rows (the seeds' "retrain on non-US data")
- dataset ``income_to_score``: unlabelled rows for income_batch_score

    python scripts/seed_income.py file:///path/to/workspace [--us-rows N] [--non-us-rows N] [--score-rows N]
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
MAKE_DATA = REPO / "dags_examples" / "src" / "income" / "make_data.py"


def generate(out: pathlib.Path, rows: int, region: str, seed: int, label: bool = True) -> pathlib.Path:
    cmd = [sys.executable, str(MAKE_DATA), "--rows", str(rows), "--region", region, "--seed", str(seed),
           "--out", str(out)]
    subprocess.run([*cmd, *([] if label else ["--no-label"])], check=True, capture_output=True)
    return out


def seed(workspace_uri: str, us_rows: int = 12000, non_us_rows: int = 12000, score_rows: int = 20000,
         **s3_options) -> dict:
    from airflow_mlpipe.workspace.core import Workspace

    ws = Workspace.from_uri(workspace_uri, **s3_options)
    with tempfile.TemporaryDirectory(prefix="mlpipe-seed-") as tmp:
        tmp_path = pathlib.Path(tmp)
        raw = ws.datasets.register(
            "income_raw", generate(tmp_path / "raw" / "us.csv", us_rows, "us", 1).parent,
            description=f"{us_rows} US census-style rows (synthetic)",
        )
        non_us = generate(tmp_path / "non_us.csv", non_us_rows, "non_us", 2)
        ws.datastore.upload_file(non_us, "data/income/non_us.csv")
        to_score = ws.datasets.register(
            "income_to_score", generate(tmp_path / "score" / "rows.csv", score_rows, "us", 3, label=False).parent,
            description=f"{score_rows} unlabelled rows to score (synthetic)",
        )
    return {"income_raw": raw.version, "non_us_path": "data/income/non_us.csv", "income_to_score": to_score.version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("--us-rows", type=int, default=12000)
    parser.add_argument("--non-us-rows", type=int, default=12000)
    parser.add_argument("--score-rows", type=int, default=20000)
    args = parser.parse_args()
    print(seed(args.workspace, args.us_rows, args.non_us_rows, args.score_rows))


if __name__ == "__main__":
    main()
