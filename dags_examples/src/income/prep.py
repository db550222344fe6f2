"""prep: clean the raw census rows, fit the feature encoder, split train/test (deterministic)."""

import argparse
import csv
import pathlib
import random

from incomelib import CATEGORICAL, LABEL, NUMERIC, fit_encoder, read_rows, save_json

from airflow_mlpipe.runtime import context

parser = argparse.ArgumentParser()
parser.add_argument("--raw", type=pathlib.Path, required=True)
parser.add_argument("--test-fraction", type=float, default=0.2)
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--out", type=pathlib.Path, required=True)
args = parser.parse_args()

rows = [r for r in read_rows(args.raw) if all(r.get(c, "").strip() not in ("", "?") for c in NUMERIC + CATEGORICAL)]
random.Random(args.seed).shuffle(rows)
cut = int(len(rows) * (1 - args.test_fraction))
train, test = rows[:cut], rows[cut:]
if not train or not test:
    raise SystemExit(f"prep: {len(rows)} usable rows in {args.raw}: too few to split into train and test; "
                     "give training data with more rows")
columns = NUMERIC + CATEGORICAL + [LABEL]
for name, part in (("train", train), ("test", test)):
    with open(args.out / f"{name}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(part)
save_json(args.out / "encoder.json", fit_encoder(train))
context.log_metric("train_rows", len(train))
context.log_metric("test_rows", len(test))
context.log_metric("positive_rate", sum(r[LABEL] == ">50K" for r in rows) / max(len(rows), 1))
print(f"prep: {len(train)} train rows, {len(test)} test rows")
