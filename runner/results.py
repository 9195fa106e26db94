"""The per-run folder: request, results (checked against a JSON Schema), CSVs, report, plot, log."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from functools import cache
from pathlib import Path

import jsonschema

from runner.client import Comparison, Results, RunnerError

RESULTS_SCHEMA = Path(__file__).parent / "schemas" / "results.schema.json"


def run_folder(base: Path, batch_id: str) -> Path:
    """The batch's run folder: the one an earlier run or attach made, else a new one."""
    earlier = sorted(base.glob(f"*_{batch_id}")) if base.is_dir() else []
    if earlier:
        return earlier[-1]
    folder = base / f"{time.strftime('%Y%m%dT%H%M%S')}_{batch_id}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_run(
    folder: Path,
    request: dict | None,
    results: Results,
    comparisons: list[Comparison],
    known_grades: Path | None = None,
) -> None:
    """Everything a run leaves behind; known grades (if the essay folder had them) go with it so
    `report` can be run again on the folder alone. Without a request (`attach` of a batch this
    folder did not submit) request.json is left as it is."""
    if request is not None:
        (folder / "request.json").write_text(json.dumps(request, indent=2, ensure_ascii=False))
    write_results(folder, results.document)
    with (folder / "essays.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "essay_id", "display_name", "is_anchor", "score", "standard_error", "score_low_95",
                         "score_high_95", "wins", "losses",
                         "known_grade", "projected_grade", "grade_probability", "confidence"])  # fmt: skip
        for e in results.essays:
            writer.writerow([e.rank, e.essay_id, e.display_name, e.is_anchor, f"{e.score:.4f}", f"{e.standard_error:.4f}",
                             f"{e.score_low_95:.4f}", f"{e.score_high_95:.4f}",
                             e.wins, e.losses, e.known_grade, e.grade, f"{e.probability:.3f}" if e.grade else "",
                             e.confidence.upper()])  # fmt: skip
    with (folder / "comparisons.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["comparison_id", "wave", "essay_a", "essay_b", "winner", "confidence", "error_code", "attempts"]
        )
        for c in comparisons:
            writer.writerow([c.comparison_id, c.wave, c.essay_a, c.essay_b, c.winner.upper() or "UNSPECIFIED",
                             c.confidence, c.error_code, c.attempts])  # fmt: skip
    from runner import report  # numpy, scipy and matplotlib: loaded only when a report is written

    if known_grades is not None:
        shutil.copyfile(known_grades, folder / report.KNOWN_GRADES)
    report.write(folder)


@cache
def _results_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(RESULTS_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    return validator(schema, format_checker=validator.FORMAT_CHECKER)


def write_results(folder: Path, results: dict) -> None:
    """Write results.json only if it matches the schema, and atomically, so a reader never sees a
    file that breaks its own contract."""
    errors = sorted(_results_validator().iter_errors(results), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise RunnerError(f"results.json would not match {RESULTS_SCHEMA.name} at {where}: {errors[0].message}")
    temporary = folder / ".results.json.tmp"
    temporary.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(temporary, folder / "results.json")
