"""Fit the offline judge's weights (cj_svc/judges/heuristic.py) on the project's example essays.

Ridge regression of each essay's grade step on its standardised features, over examples/eng5's
students (intended_grades.csv) and anchors (anchors/anchors.csv), grades on eng5_np_legacy_9_step,
each weight kept to the sign writing assessment gives its feature (more errors or repetition never
help). The features the examples cannot teach (they have no spelling errors, and their sentences
are not ordered by meaning) keep the judge's FIXED weights. Prints MEANS, SDS and WEIGHTS to paste
into the judge; nothing in tests/ is used.
Run: .venv/bin/python scripts/fit_offline_judge.py [--ridge 4]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scipy.optimize import nnls  # noqa: E402

from cj_svc.engine.scales import get_scale  # noqa: E402
from cj_svc.judges.heuristic import FIXED, SIGNS, WEIGHTS, features  # noqa: E402

EXAMPLES = ROOT / "examples" / "eng5"


def graded_essays() -> list[tuple[str, int]]:
    ladder = get_scale("eng5_np_legacy_9_step").grades
    with (EXAMPLES / "intended_grades.csv").open() as handle:
        grades = {row["file"]: row["intended_grade"] for row in csv.DictReader(handle)}
    with (EXAMPLES / "anchors" / "anchors.csv").open() as handle:
        anchors = {row["file"]: row["grade"] for row in csv.DictReader(handle)}
    essays = [((EXAMPLES / "students" / f).read_text(), ladder.index(g)) for f, g in grades.items()]
    return essays + [((EXAMPLES / "anchors" / f).read_text(), ladder.index(g)) for f, g in anchors.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ridge", type=float, default=4.0)
    args = parser.parse_args()
    prompt = (EXAMPLES / "prompt.md").read_text()
    essays = graded_essays()
    names = [name for name in WEIGHTS if name not in FIXED]
    table = np.array([[features(text, prompt)[name] for name in names] for text, _ in essays])
    grade = np.array([g for _, g in essays], float)
    means, sds = table.mean(axis=0), np.maximum(table.std(axis=0), 1e-4)
    signs = np.array([SIGNS[name] for name in names], float)
    z = (table - means) / sds * signs
    # ridge with every weight of its sign: non-negative least squares on rows augmented by sqrt(ridge) I
    rows = np.vstack([z, np.sqrt(args.ridge) * np.eye(len(names))])
    target = np.concatenate([grade - grade.mean(), np.zeros(len(names))])
    magnitudes, _ = nnls(rows, target)
    predicted = z @ magnitudes + grade.mean()
    residual = float(np.std(grade - predicted))
    print(f"{len(essays)} essays; correlation of fitted and intended grade {np.corrcoef(predicted, grade)[0, 1]:.3f}; "
          f"residual SD {residual:.3f} grade steps")  # fmt: skip
    # P(A is the better essay) = Phi(d / (sqrt 2 residual)), about sigmoid(1.702 d / (sqrt 2 residual))
    print(f"SLOPE = {1.702 / (np.sqrt(2) * residual):.3f}")
    fitted = dict(zip(names, zip(means, sds, signs * magnitudes, strict=True), strict=True))
    every = {name: fitted.get(name, FIXED.get(name)) for name in WEIGHTS}
    print("MEANS =", {n: round(float(v[0]), 4) for n, v in every.items()})
    print("SDS =", {n: round(float(v[1]), 4) for n, v in every.items()})
    print("WEIGHTS =", {n: round(float(v[2]), 3) for n, v in every.items()})


if __name__ == "__main__":
    main()
