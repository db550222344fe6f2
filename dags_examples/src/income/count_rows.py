"""report: count the rows of the merged scores (and of the input) so a run proves none was lost."""

import argparse
import pathlib

from incomelib import csv_files

from airflow_mlpipe.runtime import context

parser = argparse.ArgumentParser()
parser.add_argument("--scores", type=pathlib.Path, required=True)
parser.add_argument("--data", type=pathlib.Path, required=True)
args = parser.parse_args()


def rows(path: pathlib.Path) -> int:
    total = 0
    for file in csv_files(path):
        with open(file, "rb") as fh:
            total += sum(1 for _ in fh) - 1  # minus the header
    return total


scored, expected = rows(args.scores), rows(args.data)
context.log_metric("scored_rows", scored)
context.log_metric("input_rows", expected)
print(f"{scored} scored rows for {expected} input rows")
if scored != expected:
    raise SystemExit(f"row count mismatch: {scored} scored, {expected} in the input")
