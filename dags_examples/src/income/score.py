"""score: batch inference of one partition. Each CSV file is split into ``partitions`` byte ranges
aligned on line boundaries, so partition i parses only its share and the partitions together cover
every input row exactly once."""

import argparse
import csv
import io
import os
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


def my_lines(path: pathlib.Path):
    """(header, lines of this partition's byte range) of one CSV file."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        header = fh.readline()
        body = fh.tell()
        span = size - body
        start = body + span * args.partition // args.partitions
        end = body + span * (args.partition + 1) // args.partitions
        if start > body:  # a line belongs to the partition whose range holds its first byte
            fh.seek(start - 1)
            if fh.read(1) != b"\n":
                fh.readline()
        else:
            fh.seek(start)
        lines = []
        while fh.tell() < end:
            line = fh.readline()
            if not line:
                break
            lines.append(line)
    return header.decode(), b"".join(lines).decode()


model = load_json(args.model / "model.json")
enc = model["encoder"]
scored = positives = 0
with open(args.out / f"part-{args.partition:05d}.csv", "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["file", "score", "prediction"])
    for file in csv_files(args.data):
        header, text = my_lines(file)
        for row in csv.DictReader(io.StringIO(header + text)):
            score = predict(model, encode(row, enc))
            label = ">50K" if score > args.threshold else "<=50K"
            positives += label == ">50K"
            writer.writerow([file.name, f"{score:.5f}", label])
            scored += 1
context.log_metric("rows_scored", scored)
context.log_metric("predicted_positive_rate", positives / max(scored, 1))
print(f"partition {args.partition}/{args.partitions}: scored {scored} rows")
