"""evaluate: accuracy, AUC and F1 of the model on the held-out rows. Refuses a model whose scores are not
numbers (NaN), instead of computing metrics from them."""

import argparse
import math
import pathlib

from incomelib import LABEL, encode, load_json, predict, read_rows, save_json

from airflow_mlpipe.runtime import context

parser = argparse.ArgumentParser()
parser.add_argument("--data", type=pathlib.Path, required=True)
parser.add_argument("--model", type=pathlib.Path, required=True)
parser.add_argument("--out", type=pathlib.Path, required=True)
args = parser.parse_args()

model = load_json(args.model / "model.json")
rows = read_rows(args.data / "test.csv")
scores = [predict(model, encode(r, model["encoder"])) for r in rows]
if not rows:
    raise SystemExit(f"evaluate: no test rows in {args.data / 'test.csv'}")
bad = sum(not math.isfinite(s) for s in scores)
if bad:
    raise SystemExit(f"evaluate: the model scores {bad} of {len(rows)} rows as NaN; retrain it (lower learning_rate)")
labels = [r[LABEL] == ">50K" for r in rows]
tp = sum(s > 0.5 and y for s, y in zip(scores, labels))
fp = sum(s > 0.5 and not y for s, y in zip(scores, labels))
fn = sum(s <= 0.5 and y for s, y in zip(scores, labels))
accuracy = sum((s > 0.5) == y for s, y in zip(scores, labels)) / len(rows)
f1 = 2 * tp / max(2 * tp + fp + fn, 1)
# AUC by the rank statistic (ties counted half)
ranked = sorted(zip(scores, labels))
pos = sum(labels)
neg = len(labels) - pos
rank_sum = 0.0
i = 0
while i < len(ranked):
    j = i + 1  # at least one row per group: the loop always moves on
    while j < len(ranked) and ranked[j][0] == ranked[i][0]:
        j += 1
    avg_rank = (i + j + 1) / 2
    rank_sum += avg_rank * sum(1 for k in range(i, j) if ranked[k][1])
    i = j
auc = (rank_sum - pos * (pos + 1) / 2) / max(pos * neg, 1)
metrics = {"accuracy": accuracy, "auc": auc, "f1": f1, "test_rows": len(rows)}
for name, value in metrics.items():
    context.log_metric(name, value)
save_json(args.out / "metrics.json", metrics)
print(f"evaluate: accuracy {accuracy:.4f}, auc {auc:.4f}, f1 {f1:.4f} on {len(rows)} rows")
