"""Generate a synthetic, reproducible classification table (CSV) for the quickstart pipeline."""

import argparse
import csv
import math
import pathlib
import random

from airflow_mlpipe.runtime import context

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--out", type=pathlib.Path, required=True)
args = parser.parse_args()

rng = random.Random(args.seed)
weights = [1.5, -2.0, 0.75]
positives = 0
with open(args.out / "table.csv", "w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(["x1", "x2", "x3", "label"])
    for _ in range(args.rows):
        xs = [rng.gauss(0, 1) for _ in weights]
        z = sum(w * x for w, x in zip(weights, xs)) + rng.gauss(0, 0.5)
        label = 1 if 1 / (1 + math.exp(-z)) > 0.5 else 0
        positives += label
        writer.writerow([f"{x:.6f}" for x in xs] + [label])

context.log_metric("rows", args.rows)
context.log_metric("positive_rate", positives / args.rows)
print(f"wrote {args.rows} rows to {args.out / 'table.csv'}")
