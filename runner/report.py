"""`report RUN_DIR`: how far a finished run agrees with what is known about its essays.

Reads only the run folder (`results.json`, `comparisons.csv`, optional `known_grades.csv`) and writes
`report.md`, `report.html` (runner/report_html.py) and `plot.png` beside them. The statistics are small pure functions over plain lists.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from runner.estimate import dollars
from runner.inventory import essay_id_for

KNOWN_GRADES = "known_grades.csv"
LABELLED_ESSAYS = 60  # up to this many essays, the plot names each one on its axis


# --- statistics --------------------------------------------------------------------------------


def kendall_tau_b(expected: list[float], actual: list[float]) -> float:
    """Kendall's tau-b: rank agreement that does not reward ties in `expected` (equal grades) by
    ordering them after the fact; nan with fewer than two distinct values on either side."""
    if len(set(expected)) < 2 or len(set(actual)) < 2:
        return math.nan
    return float(stats.kendalltau(expected, actual, variant="b").statistic)


def spearman(expected: list[float], actual: list[float]) -> float:
    """Spearman's rank correlation with average ranks for ties; nan when either side is constant."""
    if len(set(expected)) < 2 or len(set(actual)) < 2:
        return math.nan
    return float(stats.spearmanr(expected, actual).statistic)


def quadratic_weighted_kappa(rater_a: list[int], rater_b: list[int], categories: int) -> float:
    """Cohen's kappa with quadratic weights over grade indices 0..categories-1: 1 is perfect
    agreement, 0 what chance gives with the same marginals; nan when chance already agrees fully."""
    observed = np.zeros((categories, categories))
    for a, b in zip(rater_a, rater_b, strict=True):
        observed[a, b] += 1
    index = np.arange(categories)
    weights = (index[:, None] - index[None, :]) ** 2 / max(categories - 1, 1) ** 2
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / max(observed.sum(), 1)
    disagreement = (weights * expected).sum()
    return math.nan if disagreement == 0 else float(1 - (weights * observed).sum() / disagreement)


def inversions(anchors: list[tuple[str, int, float]]) -> list[tuple[str, str]]:
    """Pairs (higher grade, lower grade) of anchors whose scores came out the other way round;
    anchors are (essay id, grade index, score)."""
    found = []
    for (id_a, grade_a, score_a), (id_b, grade_b, score_b) in combinations(anchors, 2):
        if grade_a != grade_b and (grade_a - grade_b) * (score_a - score_b) < 0:
            found.append((id_a, id_b) if grade_a > grade_b else (id_b, id_a))
    return found


def interval_95(essay: dict[str, Any]) -> tuple[float, float]:
    """An essay's 95 % interval as the service served it; score +/- 1.96 SE in results saved before
    the service served intervals."""
    if "score_low_95" in essay:
        return float(essay["score_low_95"]), float(essay["score_high_95"])
    return essay["score"] - 1.96 * essay["standard_error"], essay["score"] + 1.96 * essay["standard_error"]


def grade_bands(report: Report) -> list[tuple[str, float, float]]:
    """Each grade's score interval as the service's projection drew it from this run's anchors
    (none when grades were not projected); open ends as infinities."""
    return [
        (band["grade"], float(band.get("lower", -math.inf)), float(band.get("upper", math.inf)))
        for band in report.results.get("grade_bands", [])
    ]


# --- the run folder ----------------------------------------------------------------------------


@dataclass
class Report:
    results: dict
    comparisons: list[dict]
    known_grades: dict[str, str] = field(default_factory=dict)

    @property
    def ladder(self) -> tuple[str, ...]:
        """The grade scale's grades, lowest first, as the service answered them."""
        return tuple(self.results.get("grade_ladder", ()))

    @property
    def essays(self) -> list[dict]:
        return sorted(self.results["essays"], key=lambda e: e["rank"])

    @property
    def anchors(self) -> list[dict]:
        return [e for e in self.essays if e["is_anchor"]]


def read_known_grades(path: Path) -> dict[str, str]:
    """essay id -> grade from a CSV with a `file` or `essay_id` column and a `grade` or
    `intended_grade` column; file names go through the same essay id function as the upload."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    known = {}
    for number, row in enumerate(rows, start=2):
        name = row.get("essay_id") or (essay_id_for(row["file"]) if row.get("file") else "")
        grade = (row.get("grade") or row.get("intended_grade") or "").strip()
        if not name or not grade:
            raise ValueError(f"{path}: line {number} needs an essay_id (or file) and a grade (or intended_grade)")
        known[name] = grade
    return known


def load(folder: Path, known_grades: Path | None = None) -> Report:
    results_path = folder / "results.json"
    if not results_path.exists():
        raise FileNotFoundError(f"{folder} is not a run folder: results.json is missing")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    comparisons_path = folder / "comparisons.csv"
    comparisons = []
    if comparisons_path.exists():
        with comparisons_path.open(newline="", encoding="utf-8") as handle:
            comparisons = list(csv.DictReader(handle))
    known_path = known_grades or folder / KNOWN_GRADES
    known = read_known_grades(known_path) if known_path.exists() else {}
    return Report(results, comparisons, known)


FEW_SEPARATED = 0.7  # SSR below this: the rank order is not reliable enough to act on


def run_warnings(report: Report) -> list[str]:
    """What a reader must know before trusting the table, worst first: the service's own warnings,
    then what this folder shows (unfinished batch, failed comparisons, and low reliability and anchors
    out of order where the service did not diagnose the batch: a guest run, or an older results.json)."""
    r, batch = report.results, report.results["batch"]
    diagnosed = "anchor_diagnostics" in r  # the service's warnings then say both
    found = [f"{w.get('message', '')}" for w in r.get("warnings", [])]
    state = batch["state"].removeprefix("BATCH_STATE_").lower()
    if state != "completed":
        found.append(f"the batch is {state}" + (f" ({batch['state_reason']})" if batch["state_reason"] else "")
                     + ": these results are partial")  # fmt: skip
    ssr = r["scale_separation_reliability"]
    if r["essays"] and ssr < FEW_SEPARATED and not diagnosed:
        found.append(f"scale separation reliability is {ssr:.2f} (below {FEW_SEPARATED}): the order of essays is not "
                     "reliable; more comparisons would help")  # fmt: skip
    progress = batch.get("progress") or {}
    failed, done = progress.get("comparisons_failed", 0), progress.get("comparisons_done", 0)
    if failed and failed >= 0.1 * (failed + done):
        found.append(f"{failed} of {failed + done} comparisons failed (see comparisons.csv)")
    wrong = [] if diagnosed else inversions(_rankable_anchors(report))
    if wrong:
        found.append(f"{len(wrong)} anchor pair(s) out of grade order (listed under Anchors): the anchors may not fit "
                     "this prompt or this judge")  # fmt: skip
    if r.get("projection_note") and batch.get("assignment_id") and not r.get("warnings"):
        found.append(f"grade projection: {r['projection_note']}")
    return found


def _rankable_anchors(report: Report) -> list[tuple[str, int, float]]:
    """(essay id, grade index, score) of the anchors whose grade is on the scale."""
    ladder = report.ladder
    return [(a["essay_id"], ladder.index(a["known_grade"]), a["score"]) for a in report.anchors
            if a["known_grade"] in ladder]  # fmt: skip


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def anchor_section(report: Report) -> list[str]:
    anchors = report.anchors
    if not anchors:
        return ["## Anchors", "", "No anchors in this run.", ""]
    rankable = _rankable_anchors(report)
    unknown = [a["essay_id"] for a in anchors if a["known_grade"] not in report.ladder]
    tau = kendall_tau_b([g for _, g, _ in rankable], [s for _, _, s in rankable])
    lines = ["## Anchors: expected vs CJ order", "",
             f"- Kendall tau-b (anchor grade vs CJ score): {_fmt(tau)} over {len(rankable)} anchors"]  # fmt: skip
    zero = [a["essay_id"] for a in anchors if a["wins"] == 0]
    lines.append(f"- anchors with no wins: {', '.join(zero) or 'none'}")
    if unknown:
        lines.append(f"- anchors whose grade is not on the scale (left out above): {', '.join(unknown)}")
    wrong = inversions(rankable)
    lines.append(f"- anchor pairs out of grade order: {len(wrong) or 'none'}")
    if wrong:
        by_id = {a["essay_id"]: a for a in anchors}
        lines += ["", "| higher grade | its score | lower grade | its score |", "|---|---:|---|---:|"]
        for hi, lo in wrong:
            lines.append(f"| {hi} ({by_id[hi]['known_grade']}) | {by_id[hi]['score']:.2f} | "
                         f"{lo} ({by_id[lo]['known_grade']}) | {by_id[lo]['score']:.2f} |")  # fmt: skip
    lines += ["", "| CJ rank | anchor | grade | expected anchor rank | actual anchor rank | score | wins | losses |",
              "|---:|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for a in anchors:
        lines.append(f"| {a['rank']} | {a['essay_id']} | {a['known_grade']} | {a['expected_anchor_rank']} | "
                     f"{a['actual_anchor_rank']} | {a['score']:.2f} | {a['wins']} | {a['losses']} |")  # fmt: skip
    return lines + [""]


def agreement_section(report: Report) -> list[str]:
    if not report.known_grades:
        return ["## Agreement with known grades", "", f"No {KNOWN_GRADES} in the run folder.", ""]
    ladder = report.ladder
    pairs = [(report.known_grades[e["essay_id"]], e) for e in report.essays
             if not e["is_anchor"] and e["essay_id"] in report.known_grades]  # fmt: skip
    off_scale = sorted({grade for grade, _ in pairs if grade not in ladder})
    scored = [(ladder.index(grade), e) for grade, e in pairs if grade in ladder]
    lines = ["## Agreement with known grades", "", f"- essays with a known grade: {len(pairs)}"]
    if off_scale:
        lines.append(f"- known grades not on the scale {report.results.get('grade_scale') or '(none)'}, "
                     f"left out: {', '.join(off_scale)}")  # fmt: skip
    lines.append(f"- Spearman (known grade vs CJ score): "
                 f"{_fmt(spearman([g for g, _ in scored], [e['score'] for _, e in scored]))}")  # fmt: skip
    projected = [(g, ladder.index(e["projection"]["grade"])) for g, e in scored
                 if e.get("projection", {}).get("grade") in ladder]  # fmt: skip
    if projected:
        exact = sum(a == b for a, b in projected) / len(projected)
        adjacent = sum(abs(a - b) <= 1 for a, b in projected) / len(projected)
        kappa = quadratic_weighted_kappa([a for a, _ in projected], [b for _, b in projected], len(ladder))
        lines += [f"- projected grade: exact {exact:.0%}, adjacent (within one grade) {adjacent:.0%}, "
                  f"quadratic weighted kappa {_fmt(kappa)} over {len(projected)} essays"]  # fmt: skip
    else:
        lines.append("- no projected grades to compare (guest run, or grades not projected)")
    return lines + [""]


def judge_cost(usage: dict) -> str:
    """The judge's recorded cost in words."""
    if "cost_usd" not in usage:
        return "not known (the judge's model has no price in the CJ Service's price table)"
    return f"{dollars(usage['cost_usd'])} (US dollars, by the CJ Service's price table)"


def render(report: Report, with_essays: bool = True) -> str:
    """report.md; without the essays' table for a terminal (its ids would be cut to fit)."""
    r, batch = report.results, report.results["batch"]
    per_essay = [e["comparisons"] for e in r["essays"]]
    usage = r.get("judge_usage") or {"provider": "", "model": "", "calls": 0, "tokens_in": 0, "tokens_out": 0,
                                     "mean_latency_ms": 0.0}  # fmt: skip
    progress = batch.get("progress") or {"comparisons_done": 0, "comparisons_failed": 0}
    warned = run_warnings(report)
    warning_lines = ["## Warnings", "", *(f"- {w}" for w in warned), ""] if warned else []
    lines = [
        f"# CJ run {batch['batch_label']}",
        "",
        *warning_lines,
        "## Summary",
        "",
        f"- batch `{batch['batch_id']}`, {batch['state'].removeprefix('BATCH_STATE_').lower()}"
        + (f": {batch['state_reason']}" if batch["state_reason"] else ""),
        f"- essays: {batch['essay_count']} students, {batch['anchor_count']} anchors; comparisons "
        f"{progress['comparisons_done']} done, {progress['comparisons_failed']} failed",
        f"- comparisons per essay: min {min(per_essay, default=0)}, median "
        f"{statistics.median(per_essay) if per_essay else 0:g}, max {max(per_essay, default=0)}",
        f"- scale separation reliability (SSR): {_fmt(r['scale_separation_reliability'])}",
        f"- position bias: {r['position_bias']:+.2f} logits (SE {r['position_bias_standard_error']:.2f}); "
        f"self-consistency: {_fmt(r.get('self_consistency'), 2)}",
        f"- judge: {' '.join(p for p in (usage['provider'] or 'n/a', usage['model']) if p)}, {usage['calls']} calls, "
        + (
            f"{usage['tokens_in']} tokens in ({usage.get('tokens_cached', 0)} from the provider's prompt cache), "
            f"{usage['tokens_out']} out"
            if int(usage["tokens_in"])
            else "no tokens (the judge reports none)"
        )
        + f", mean latency {usage['mean_latency_ms']:.0f} ms",
        f"- cost: {judge_cost(usage)}; {usage.get('cached_answers', 0)} answers reused from earlier judgements "
        "(no call, no cost)",
        f"- grades: {'projected on ' + r['grade_scale'] if r['grades_projected'] else 'not projected'}"
        + (f" ({r['projection_note']})" if r["projection_note"] else ""),
        "",
        *anchor_section(report),
        *agreement_section(report),
    ]
    if not with_essays:
        return "\n".join(lines) + "\n"
    lines += ["## Essays", ""]
    graded, known = bool(r.get("grades_projected")), bool(report.known_grades)
    # a guest run has no grade columns; anchors' grades are given, never projected
    header = ["rank", "essay", "score", "SE", "95 %", "comparisons", "wins", "losses"]
    header += ["known grade"] if known or report.anchors else []
    header += ["projected", "P(projected)", "confidence"] if graded else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" if h in ("essay", "known grade", "projected",
              "confidence") else "---:" for h in header) + "|"]  # fmt: skip
    for e in report.essays:
        projection = e.get("projection") or {}
        grade = "" if e["is_anchor"] else projection.get("grade", "")
        probability = next((p["probability"] for p in projection.get("probabilities", []) if p["grade"] == grade), None)
        low, high = interval_95(e)
        cells = [str(e["rank"]), e["essay_id"], f"{e['score']:.2f}", f"{e['standard_error']:.2f}",
                 f"{low:.2f} to {high:.2f}", str(e["comparisons"]), str(e["wins"]), str(e["losses"])]  # fmt: skip
        if known or report.anchors:
            cells.append(
                e["known_grade"] + " (anchor)" if e["is_anchor"] else report.known_grades.get(e["essay_id"], "")
            )
        if graded:
            confidence = projection.get("confidence_label", "").removeprefix("CONFIDENCE_LABEL_").lower()
            cells += [grade, "" if probability is None else f"{probability:.2f}", confidence if grade else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: Report, path: Path) -> None:
    """Essays by score with their 95 % intervals, anchors marked with their grade, the projection's grade bands shaded."""
    essays = sorted(report.results["essays"], key=lambda e: e["score"])
    figure = Figure(figsize=(10, 5.5), dpi=100)
    axes = figure.add_subplot()
    bottom = min((interval_95(e)[0] for e in essays), default=-1.0)
    top = max((interval_95(e)[1] for e in essays), default=1.0)
    if top - bottom < 1e-9:  # one essay, or all alike: an axis of some height all the same
        bottom, top = bottom - 1, top + 1
    margin = 0.05 * (top - bottom)
    for i, (grade, low, high) in enumerate(grade_bands(report)):
        if high < bottom or low > top:
            continue
        axes.axhspan(max(low, bottom - margin), min(high, top + margin), color="tab:blue" if i % 2 else "tab:gray",
                     alpha=0.1, lw=0)  # fmt: skip
        if min(high, top) - max(low, bottom) >= 0.04 * (top - bottom):  # room for its label without overlap
            axes.text(1.01, (max(low, bottom) + min(high, top)) / 2, grade, transform=axes.get_yaxis_transform(),
                      ha="left", va="center", fontsize=9, color="dimgray")  # fmt: skip
    for is_anchor, colour, marker, name in ((False, "tab:blue", "o", "students"), (True, "tab:red", "D", "anchors")):
        xs = [i for i, e in enumerate(essays) if e["is_anchor"] == is_anchor]
        if xs:
            below_above = [[essays[i]["score"] - interval_95(essays[i])[0] for i in xs],
                           [interval_95(essays[i])[1] - essays[i]["score"] for i in xs]]  # fmt: skip
            axes.errorbar(xs, [essays[i]["score"] for i in xs], yerr=below_above,
                          fmt=marker, color=colour, ecolor=colour, elinewidth=0.8, capsize=2, ms=4, label=name)  # fmt: skip
    for i, e in enumerate(essays):
        if e["is_anchor"]:
            axes.annotate(e["known_grade"], (i, e["score"]), textcoords="offset points", xytext=(0, 7),
                          ha="center", fontsize=8, color="tab:red")  # fmt: skip
    axes.set_ylim(bottom - margin, top + margin)
    if len(essays) <= LABELLED_ESSAYS:
        axes.set_xticks(range(len(essays)), [e["essay_id"] for e in essays], rotation=90, fontsize=7)
    axes.set_xlabel("essays, lowest score first" + ("" if len(essays) <= LABELLED_ESSAYS else " (ids in report.html)"))
    axes.set_ylabel("Bradley-Terry score (logits) ± 1.96 SE")
    batch = report.results["batch"]
    axes.set_title(f"{batch['batch_label']}: SSR {report.results['scale_separation_reliability']:.2f}")
    axes.legend(loc="upper left")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


def write(folder: Path, known_grades: Path | None = None) -> Report:
    """Write `report.md`, `report.html` and `plot.png` into a run folder; returns what they were made from."""
    from runner.report_html import render_html

    report = load(folder, known_grades)
    (folder / "report.md").write_text(render(report), encoding="utf-8")
    (folder / "report.html").write_text(render_html(report), encoding="utf-8")
    plot(report, folder / "plot.png")
    return report
