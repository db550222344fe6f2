"""Generate census-income style data (the seeds' "income prediction" sample) with a known, learnable
relationship. Nothing can be downloaded here, so the data is synthetic but shaped like the Adult set.

    python make_data.py --rows 20000 --region us --seed 1 --out data/us.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import pathlib
import random

WORKCLASS = ["Private", "Self-emp", "Federal-gov", "Local-gov", "State-gov"]
EDUCATION = [("HS-grad", 9), ("Some-college", 10), ("Bachelors", 13), ("Masters", 14), ("Doctorate", 16),
             ("11th", 7), ("Assoc-voc", 11)]
MARITAL = ["Married-civ-spouse", "Never-married", "Divorced", "Separated", "Widowed"]
OCCUPATION = ["Exec-managerial", "Prof-specialty", "Craft-repair", "Sales", "Adm-clerical", "Other-service",
              "Machine-op-inspct", "Tech-support"]
COUNTRIES = {"us": ["United-States"], "non_us": ["Mexico", "Philippines", "Germany", "India", "Canada", "China"]}
COLUMNS = ["age", "workclass", "education", "education_num", "marital_status", "occupation", "sex",
           "capital_gain", "hours_per_week", "native_country", "income"]


def row(rng: random.Random, region: str) -> list:
    age = max(17, min(90, int(rng.gauss(39, 13))))
    education, edu_num = rng.choice(EDUCATION)
    marital = rng.choices(MARITAL, weights=[45, 33, 14, 4, 4])[0]
    occupation = rng.choice(OCCUPATION)
    sex = rng.choices(["Male", "Female"], weights=[67, 33])[0]
    hours = max(1, min(99, int(rng.gauss(41, 12))))
    gain = int(rng.expovariate(1 / 8000)) if rng.random() < 0.08 else 0
    z = (-9.2 + 0.045 * age + 0.33 * edu_num + (1.3 if marital == "Married-civ-spouse" else 0)
         + (0.8 if occupation in ("Exec-managerial", "Prof-specialty") else 0) + 0.03 * hours
         + (0.00025 * gain) + (0.3 if sex == "Male" else 0))
    if region == "non_us":  # another population: lower base rate, education pays more, noisier labels
        z += -0.6 + 0.08 * (edu_num - 10) + rng.gauss(0, 1.2)
    z += rng.gauss(0, 0.8)
    label = ">50K" if rng.random() < 1 / (1 + math.exp(-z)) else "<=50K"
    return [age, rng.choice(WORKCLASS), education, edu_num, marital, occupation, sex, gain, hours,
            rng.choice(COUNTRIES[region]), label]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--region", choices=sorted(COUNTRIES), default="us")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--no-label", action="store_true", help="omit the income column (data to score)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS[:-1] if args.no_label else COLUMNS)
        for _ in range(args.rows):
            values = row(rng, args.region)
            writer.writerow(values[:-1] if args.no_label else values)
    print(f"wrote {args.rows} {args.region} rows to {args.out}")


if __name__ == "__main__":
    main()
