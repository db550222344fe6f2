"""train: logistic regression by full-batch gradient descent with L2, on the encoded training rows.

The L2 term is applied as a proximal (implicit) step, w <- (w - lr * grad) / (1 + lr * l2), which shrinks
the weights towards zero for every l2 >= 0 and learning rate > 0: the explicit step w - lr * (grad + l2 * w)
diverges (and ends in inf/NaN weights) as soon as lr * l2 > 2."""

import argparse
import math
import pathlib

from incomelib import LABEL, encode, load_json, predict, read_rows, save_json

from airflow_mlpipe.runtime import context

parser = argparse.ArgumentParser()
parser.add_argument("--data", type=pathlib.Path, required=True)
parser.add_argument("--learning-rate", type=float, required=True)
parser.add_argument("--epochs", type=int, required=True)
parser.add_argument("--l2", type=float, default=0.0)
parser.add_argument("--model", type=pathlib.Path, required=True)
args = parser.parse_args()
if not (args.learning_rate > 0 and math.isfinite(args.learning_rate)) or not (args.l2 >= 0 and math.isfinite(args.l2)):
    parser.error(f"--learning-rate must be > 0 and --l2 >= 0, both finite; got {args.learning_rate}, {args.l2}")
if args.epochs < 1:
    parser.error(f"--epochs must be >= 1, got {args.epochs}")

enc = load_json(args.data / "encoder.json")
rows = read_rows(args.data / "train.csv")
xs = [encode(r, enc) for r in rows]
ys = [1.0 if r[LABEL] == ">50K" else 0.0 for r in rows]
model = {"weights": [0.0] * len(xs[0]), "bias": 0.0, "encoder": enc}
n = len(xs)
for epoch in range(args.epochs):
    gw = [0.0] * len(model["weights"])
    gb = 0.0
    for x, y in zip(xs, ys):
        err = predict(model, x) - y
        gb += err
        for i, xi in enumerate(x):
            if xi:
                gw[i] += err * xi
    model["bias"] -= args.learning_rate * gb / n
    shrink = 1 + args.learning_rate * args.l2
    model["weights"] = [(w - args.learning_rate * g / n) / shrink for w, g in zip(model["weights"], gw)]
    if not all(math.isfinite(w) for w in [model["bias"], *model["weights"]]):
        raise SystemExit(f"train: the weights stopped being finite numbers at epoch {epoch}; lower --learning-rate")
    if epoch % 10 == 0 or epoch == args.epochs - 1:
        acc = sum((predict(model, x) > 0.5) == (y == 1.0) for x, y in zip(xs, ys)) / n
        context.log_metric("train_accuracy", acc, step=epoch)
        print(f"epoch {epoch}: train accuracy {acc:.4f}", flush=True)
context.log_params({"learning_rate": args.learning_rate, "epochs": args.epochs, "l2": args.l2})
save_json(args.model / "model.json", model)
print(f"train: model with {len(model['weights'])} weights written")
