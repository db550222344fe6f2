"""Train a logistic-regression classifier by gradient descent (pure Python) and evaluate it."""

import argparse
import csv
import json
import math
import pathlib

from airflow_mlpipe.runtime import context

parser = argparse.ArgumentParser()
parser.add_argument("--data", type=pathlib.Path, required=True)
parser.add_argument("--learning-rate", type=float, required=True)
parser.add_argument("--epochs", type=int, required=True)
parser.add_argument("--model", type=pathlib.Path, required=True)
args = parser.parse_args()

with open(args.data / "table.csv", newline="") as fh:
    rows = [[float(v) for v in row] for row in list(csv.reader(fh))[1:]]
split = int(len(rows) * 0.8)
train, test = rows[:split], rows[split:]
n_features = len(rows[0]) - 1
w = [0.0] * n_features
b = 0.0


def predict(xs):
    z = b + sum(wi * xi for wi, xi in zip(w, xs))
    return 1 / (1 + math.exp(-max(min(z, 30), -30)))


for epoch in range(args.epochs):
    gw = [0.0] * n_features
    gb = 0.0
    for row in train:
        err = predict(row[:-1]) - row[-1]
        gb += err
        for i in range(n_features):
            gw[i] += err * row[i]
    b -= args.learning_rate * gb / len(train)
    w = [wi - args.learning_rate * g / len(train) for wi, g in zip(w, gw)]
    if epoch % 10 == 0 or epoch == args.epochs - 1:
        loss = -sum(
            r[-1] * math.log(max(predict(r[:-1]), 1e-12)) + (1 - r[-1]) * math.log(max(1 - predict(r[:-1]), 1e-12))
            for r in train
        ) / len(train)
        context.log_metric("train_loss", loss, step=epoch)
        print(f"epoch {epoch}: loss {loss:.4f}", flush=True)

accuracy = sum((predict(r[:-1]) > 0.5) == (r[-1] == 1) for r in test) / max(len(test), 1)
context.log_metric("accuracy", accuracy)
(args.model / "model.json").write_text(json.dumps({"weights": w, "bias": b}, indent=2))
print(f"accuracy on {len(test)} held-out rows: {accuracy:.4f}")
