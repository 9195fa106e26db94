"""The per-run folder: request, results, CSVs, a report and a log."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from google.protobuf import json_format
from huleedu.cj.v1 import assessment_pb2


def as_dict(message) -> dict:  # type: ignore[no-untyped-def]
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def run_folder(base: Path, batch_id: str) -> Path:
    folder = base / f"{time.strftime('%Y%m%dT%H%M%S')}_{batch_id}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_run(
    folder: Path, request: assessment_pb2.SubmitBatchRequest, results: assessment_pb2.BatchResults, comparisons: list
) -> None:
    (folder / "request.json").write_text(json.dumps(as_dict(request), indent=2, ensure_ascii=False))
    (folder / "results.json").write_text(json.dumps(as_dict(results), indent=2, ensure_ascii=False))
    with (folder / "essays.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "essay_id", "display_name", "is_anchor", "score", "standard_error", "wins", "losses",
                         "known_grade", "projected_grade", "grade_probability", "confidence"])  # fmt: skip
        for e in results.essays:
            p = e.projection
            top = max((g.probability for g in p.probabilities), default=0.0)
            label = assessment_pb2.ConfidenceLabel.Name(p.confidence_label).removeprefix("CONFIDENCE_LABEL_")
            writer.writerow([e.rank, e.essay_id, e.display_name, e.is_anchor, f"{e.score:.4f}", f"{e.standard_error:.4f}",
                             e.wins, e.losses, e.known_grade, p.grade, f"{top:.3f}", label if p.grade else ""])  # fmt: skip
    with (folder / "comparisons.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["comparison_id", "wave", "essay_a", "essay_b", "winner", "confidence", "error_code", "attempts"]
        )
        for c in comparisons:
            writer.writerow([c.comparison_id, c.wave, c.essay_a_id, c.essay_b_id,
                             assessment_pb2.Winner.Name(c.winner).removeprefix("WINNER_"), c.confidence,
                             c.error_code, c.attempts])  # fmt: skip
    (folder / "report.md").write_text(report(results))


def report(results: assessment_pb2.BatchResults) -> str:
    batch = results.batch
    lines = [
        f"# CJ run {batch.batch_label}",
        "",
        f"- batch: `{batch.batch_id}`, state {assessment_pb2.BatchState.Name(batch.state).removeprefix('BATCH_STATE_')}",
        f"- essays: {batch.essay_count} students, {batch.anchor_count} anchors; comparisons: "
        f"{batch.progress.comparisons_done} done, {batch.progress.comparisons_failed} failed",
        f"- scale separation reliability: {results.scale_separation_reliability:.3f}",
        f"- position bias: {results.position_bias:+.2f} logits (SE {results.position_bias_standard_error:.2f})",
        f"- grades: {'projected on ' + results.grade_scale if results.grades_projected else 'not projected'}"
        + (f" ({results.projection_note})" if results.projection_note else ""),
        "",
        "| rank | essay | score | SE | grade | P(grade) |",
        "|---:|---|---:|---:|---|---:|",
    ]
    for e in results.essays:
        top = max((g.probability for g in e.projection.probabilities), default=0.0)
        grade = e.known_grade + " (anchor)" if e.is_anchor else e.projection.grade
        lines.append(f"| {e.rank} | {e.essay_id} | {e.score:.2f} | {e.standard_error:.2f} | {grade} | {top:.2f} |")
    return "\n".join(lines) + "\n"
