"""Shared helpers of the income example: reading CSV inputs (a file or a folder of CSVs), feature
encoding and a small logistic-regression model in pure Python (no packages to install)."""

from __future__ import annotations

import csv
import json
import math
import pathlib

NUMERIC = ["age", "education_num", "capital_gain", "hours_per_week"]
CATEGORICAL = ["workclass", "marital_status", "occupation", "sex"]
LABEL = "income"


def csv_files(path: pathlib.Path) -> list[pathlib.Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.csv") if p.is_file())
    if not files:
        raise SystemExit(f"no CSV file under {path}")
    return files


def read_rows(path: pathlib.Path) -> list[dict]:
    rows: list[dict] = []
    for file in csv_files(path):
        with open(file, newline="") as fh:
            rows.extend(csv.DictReader(fh))
    return rows


def fit_encoder(rows: list[dict]) -> dict:
    enc: dict = {"numeric": {}, "categorical": {}}
    for col in NUMERIC:
        values = [float(r[col]) for r in rows]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0
        enc["numeric"][col] = [mean, std]
    for col in CATEGORICAL:
        enc["categorical"][col] = sorted({r[col] for r in rows})
    return enc


def encode(row: dict, enc: dict) -> list[float]:
    xs = [(float(row[c]) - m) / s for c, (m, s) in enc["numeric"].items()]
    for col, levels in enc["categorical"].items():
        xs.extend(1.0 if row[col] == level else 0.0 for level in levels)
    return xs


def sigmoid(z: float) -> float:
    """1 / (1 + e^-z), with z clipped to [-30, 30]; NaN stays NaN (callers check)."""
    if math.isnan(z):
        return z
    return 1 / (1 + math.exp(-max(min(z, 30.0), -30.0)))


def predict(model: dict, xs: list[float]) -> float:
    return sigmoid(model["bias"] + sum(w * x for w, x in zip(model["weights"], xs)))


def save_json(path: pathlib.Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def load_json(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())
