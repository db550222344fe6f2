"""score: batch inference of one partition. Rows are split by position (row i goes to partition
i % partitions), so the partitions together cover every input row exactly once."""

import argparse
import csv
import pathlib

from incomelib import csv_files, encode, load_json, predict

from airflow_mlpipe.runtime import context

parser = argparse.ArgumentParser()
parser.add_argument("--model", type=pathlib.Path, required=True)
parser.add_argument("--data", type=pathlib.Path, required=True)
parser.add_argument("--out", type=pathlib.Path, required=True)
parser.add_argument("--partition", type=int, default=0)
parser.add_argument("--partitions", type=int, default=1)
parser.add_argument("--threshold", type=float, default=0.5)
args = parser.parse_args()

model = load_json(args.model / "model.json")
enc = model["encoder"]
scored = positives = 0
out_file = args.out / f"part-{args.partition:05d}.csv"
with open(out_file, "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["row", "score", "prediction"])
    index = 0
    for file in csv_files(args.data):
        with open(file, newline="") as fh:
            for row in csv.DictReader(fh):
                if index % args.partitions == args.partition:
                    score = predict(model, encode(row, enc))
                    label = ">50K" if score > args.threshold else "<=50K"
                    positives += label == ">50K"
                    writer.writerow([index, f"{score:.5f}", label])
                    scored += 1
                index += 1
context.log_metric("rows_scored", scored)
context.log_metric("predicted_positive_rate", positives / max(scored, 1))
print(f"partition {args.partition}/{args.partitions}: scored {scored} of {index} rows")
