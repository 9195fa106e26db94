"""`cj-runner report` and the results.json schema: the statistics, and the command on a real finished run."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
from huleedu.cj.v1 import assessment_pb2
from PIL import Image

from runner import report
from runner.client import RunnerError, document_of
from runner.results import write_results
from tests.runner.test_runner_cli import essays_folder, runner
from tests.support.browser import read_table, rendered
from tests.support.cj import create_assignment, register_anchor
from tests.support.tools import run, tool


def test_kendall_tau_b_does_not_reward_tied_grades() -> None:
    # two anchors share a grade: tau-b is below 1 whichever way the tie comes out (tau-a would give 1)
    assert report.kendall_tau_b([1, 2, 2, 3], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(math.sqrt(5 / 6))
    assert report.kendall_tau_b([1, 2, 3], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(report.kendall_tau_b([1, 1, 1], [1.0, 2.0, 3.0]))


def test_quadratic_weighted_kappa() -> None:
    assert report.quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3], 4) == pytest.approx(1.0)
    # with two grades every weight is 0 or 1: Cohen's kappa, (0.75 - 0.5) / (1 - 0.5) here
    assert report.quadratic_weighted_kappa([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx(0.5)
    near = report.quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 3, 3], 4)
    far = report.quadratic_weighted_kappa([0, 1, 2, 3], [3, 1, 2, 0], 4)
    assert 0.8 < near < 1.0 and far < 0


def test_inversions_name_the_anchor_pairs_out_of_grade_order() -> None:
    anchors = [("a_low", 0, -1.0), ("a_mid", 1, 2.0), ("a_high", 2, 1.0), ("a_mid2", 1, 1.5)]
    assert sorted(report.inversions(anchors)) == [("a_high", "a_mid"), ("a_high", "a_mid2")]


def test_known_grades_csv_by_file_name_or_essay_id(tmp_path) -> None:
    by_file = tmp_path / "intended_grades.csv"
    by_file.write_text("file,intended_grade\nStudent 01 – essay.txt,B\n")
    assert report.read_known_grades(by_file) == {"Student_01_essay": "B"}
    broken = tmp_path / "known_grades.csv"
    broken.write_text("essay_id,grade\ns1,\n")
    with pytest.raises(ValueError, match="line 2 needs"):
        report.read_known_grades(broken)


def test_results_json_is_refused_when_it_breaks_its_schema(tmp_path) -> None:
    results = assessment_pb2.BatchResults(
        batch=assessment_pb2.Batch(
            batch_id="a" * 32, batch_label="class 9b", state=assessment_pb2.BATCH_STATE_COMPLETED
        )
    )
    results.essays.add(essay_id="s1", score=0.5, standard_error=0.3, comparisons=4)
    write_results(tmp_path, document_of(results))
    assert json.loads((tmp_path / "results.json").read_text())["essays"][0]["essay_id"] == "s1"
    (tmp_path / "results.json").unlink()
    results.batch.batch_id = "a" * 64  # the contract analysis' checksum-for-an-id mistake
    with pytest.raises(RunnerError, match="results.schema.json at batch/batch_id: 'a{64}' does not match"):
        write_results(tmp_path, document_of(results))
    assert not (tmp_path / "results.json").exists()


async def test_report_on_a_finished_run(mesh, tmp_path) -> None:
    folder = essays_folder(tmp_path)
    (folder / "known_grades.csv").write_text(
        "file,grade\n" + "".join(f"Student {i:02d} – essay.txt,{'E-' if i < 3 else 'C-'}\n" for i in range(6))
    )
    anchors = {
        "E-": ("Anchor text E- " * 5, -2.0),
        "C-": ("Anchor text C- " * 15, 0.5),
        "A": ("Anchor text A " * 25, 4.0),
    }
    # a simulated judge with known true scores (text sha256 -> score): anchors in grade order, students spread
    truth = {hashlib.sha256(text.encode()).hexdigest(): score for text, score in anchors.values()}
    for i, path in enumerate(sorted((folder / "students").iterdir())):
        truth[hashlib.sha256(path.read_bytes()).hexdigest()] = -3.0 + 1.2 * i
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    await mesh.restart_cj(judge_provider="simulated", simulated_scores_file=str(tmp_path / "truth.json"))
    await create_assignment(mesh, "eng5-report")
    for i, (grade, (text, _)) in enumerate(anchors.items()):
        await register_anchor(mesh, "eng5-report", f"anchor_{i}", grade, text)
    runs = tmp_path / "runs"
    done = await runner(mesh, "run", str(folder), "--assignment-id", "eng5-report", "--budget", "30",
                        "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert done.code == 0, done.output
    (run_dir,) = runs.iterdir()
    assert (run_dir / "known_grades.csv").exists() and (run_dir / "plot.png").exists()
    results = json.loads((run_dir / "results.json").read_text())
    # What the report draws comes in the answer: the scale's ladder and the projection's bands.
    assert results["grade_ladder"] == ["F", "F+", "E-", "E+", "D-", "D+", "C-", "C+", "B", "A"]
    bands = results["grade_bands"]  # no anchors of the lowest grade (F+): nothing is below it
    assert [b["grade"] for b in bands] == results["grade_ladder"][1:]
    assert "lower" not in bands[0] and "upper" not in bands[-1]
    assert all(b["upper"] == c["lower"] for b, c in zip(bands[:-1], bands[1:], strict=True))
    (run_dir / "report.md").unlink()
    (run_dir / "plot.png").unlink()

    made = await run(tool("cj-runner"), "report", str(run_dir))
    assert made.code == 0, made.output
    text = (run_dir / "report.md").read_text()
    assert "Kendall tau-b" in text and "anchors with no wins" in text and "quadratic weighted kappa" in text
    assert "essays with a known grade: 6" in text and "comparisons per essay" in text
    ssr = results["scale_separation_reliability"]
    assert f"scale separation reliability (SSR): {ssr:.3f}" in text
    for essay in results["essays"]:
        if essay["is_anchor"]:
            assert f"| {essay['essay_id']} | {essay['known_grade']} |" in text
    with Image.open(run_dir / "plot.png") as picture:
        assert picture.format == "PNG" and picture.size == (1000, 550)
        assert len(picture.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20  # a drawing, not a blank page

    await check_report_html(run_dir, results)

    missing = await run(tool("cj-runner"), "report", str(tmp_path))
    assert missing.code == 2 and "results.json is missing" in missing.stderr and "Traceback" not in missing.output


async def check_report_html(run_dir, results: dict) -> None:
    """report.html as Chromium renders it: every essay in the table with its whole id, sortable, the
    anchors marked and without a projected grade, every essay a named point of the plot, the bands drawn."""
    page = run_dir / "report.html"
    dom = await rendered(page, "sort=score-desc")
    table = read_table(dom, "essays")
    assert table.attributes.get("data-ready") == "true"  # the page's script ran
    assert table.headers[:3] == ["rank", "essay", "file"] and "P(grade)" in table.headers
    by_score = sorted(results["essays"], key=lambda e: -e["score"])
    essay_column, grade_column = table.headers.index("essay"), table.headers.index("grade")
    assert [cells[essay_column] for _, cells in table.rows] == [e["essay_id"] for e in by_score]
    for (kind, cells), essay in zip(table.rows, by_score, strict=True):
        assert kind == ("anchor" if essay["is_anchor"] else "student")
        if essay["is_anchor"]:
            assert cells[grade_column] == "" and cells[table.headers.index("P(grade)")] == ""
        else:
            assert cells[grade_column] == essay["projection"]["grade"]
    ranked = read_table(await rendered(page, "sort=rank"), "essays")
    assert [int(cells[0]) for _, cells in ranked.rows] == sorted(e["rank"] for e in results["essays"])
    for essay in results["essays"]:
        assert f'data-essay-id="{essay["essay_id"]}"><title>{essay["essay_id"]}: score' in dom
    assert dom.count('class="band"') >= 2 and "http://" not in dom.replace("http://www.w3.org", "")


def test_the_runner_talks_to_the_mesh_through_its_one_typed_client() -> None:
    """The runner talks to the services through the contract only: what a report needs (grade
    ladder and bands) comes in GetBatchResults, not from the engine's code; generated code and grpc
    are imported by runner/client.py alone; nothing of the servers' plumbing is imported at all."""
    import ast
    from pathlib import Path

    runner_dir = Path(__file__).resolve().parents[2] / "runner"
    imported = set()
    for path in runner_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add((path.name, node.module.split(".")[0]))
            elif isinstance(node, ast.Import):
                imported.update((path.name, alias.name.split(".")[0]) for alias in node.names)
    assert [(f, m) for f, m in sorted(imported) if m in ("cj_svc", "content_svc", "mesh_server")] == []
    wire = ("grpc", "grpc_health", "huleedu", "google", "protovalidate", "buf")
    assert {f for f, m in imported if m in wire} == {"client.py"}


def _results(graded: bool, essays: list[dict]) -> dict:
    batch = {"batch_id": "b" * 32, "batch_label": "9b", "state": "BATCH_STATE_COMPLETED", "state_reason": "",
             "assignment_id": "eng5" if graded else "", "essay_count": 3, "anchor_count": 2,
             "progress": {"comparisons_done": 20, "comparisons_failed": 0}}  # fmt: skip
    return {"batch": batch, "essays": essays, "scale_separation_reliability": 0.9, "position_bias": 0.0,
            "position_bias_standard_error": 0.1, "grade_scale": "abc" if graded else "",
            "grades_projected": graded, "projection_note": "", "grade_ladder": ["C", "B", "A"] if graded else [],
            "grade_bands": []}  # fmt: skip


def _essay(
    rank: int, essay_id: str, score: float, anchor_grade: str = "", grade: str = "", interval: tuple | None = None
) -> dict:
    """An essay of results.json; without `interval`, as saved before the service served intervals."""
    projection = {"grade": grade, "probabilities": [{"grade": grade, "probability": 0.8}] if grade else [],
                  "confidence_label": "CONFIDENCE_LABEL_HIGH" if grade else "CONFIDENCE_LABEL_UNSPECIFIED"}  # fmt: skip
    return {"rank": rank, "essay_id": essay_id, "display_name": f"{essay_id}.txt", "is_anchor": bool(anchor_grade),
            "score": score, "standard_error": 0.3, "comparisons": 8, "wins": 4, "losses": 4,
            "known_grade": anchor_grade, "expected_anchor_rank": 0, "actual_anchor_rank": 0, "projection": projection,
            **({} if interval is None else {"score_low_95": interval[0], "score_high_95": interval[1]})}  # fmt: skip


def test_report_md_leads_with_warnings_and_shows_only_columns_that_mean_something() -> None:
    # anchors out of grade order: A scored below C
    essays = [_essay(1, "anchor_c", 1.0, "C"), _essay(2, "s1", 0.5, grade="B", interval=(0.1, 1.4)),
              _essay(3, "anchor_a", -1.0, "A")]  # fmt: skip
    text = report.render(report.Report(_results(True, essays), []))
    assert text.index("## Warnings") < text.index("## Summary")
    assert "1 anchor pair(s) out of grade order" in text
    assert "| anchor_a (A) | -1.00 | anchor_c (C) | 1.00 |" in text  # the inversions as a table
    # no P(projected) for anchors; an interval saved before the service served them: score +/- 1.96 SE
    assert "| 1 | anchor_c | 1.00 | 0.30 | 0.41 to 1.59 | 8 | 4 | 4 | C (anchor) |  |  |  |" in text
    assert "| 2 | s1 | 0.50 | 0.30 | 0.10 to 1.40 | 8 | 4 | 4 |  | B | 0.80 | high |" in text  # as served

    guest = report.render(report.Report(_results(False, [_essay(1, "s1", 0.5), _essay(2, "s2", -0.5)]), []))
    assert "## Warnings" not in guest and "projected" not in guest.split("## Essays")[1]
    assert "| rank | essay | score | SE | 95 % | comparisons | wins | losses |\n" in guest


ANCHOR_GRADES = ["E-", "E+", "D-", "D+", "C-", "C+", "B", "A"]


async def _run_with_anchors(mesh, tmp_path, true_scores: list[float]) -> tuple[object, dict, str]:
    """A run of 8 students (true scores 0 to 3.5) against anchors of ANCHOR_GRADES with these true
    scores: (the runner's outcome, results.json, report.md)."""
    folder = essays_folder(tmp_path, n=8)
    anchors = {
        grade: (f"Anchor for another task, grade {grade}. " * (4 + i), true_scores[i])
        for i, grade in enumerate(ANCHOR_GRADES)
    }
    truth = {hashlib.sha256(text.encode()).hexdigest(): score for text, score in anchors.values()}
    for i, path in enumerate(sorted((folder / "students").iterdir())):
        truth[hashlib.sha256(path.read_bytes()).hexdigest()] = 0.5 * i
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    await mesh.restart_cj(judge_provider="simulated", simulated_scores_file=str(tmp_path / "truth.json"))
    await create_assignment(mesh, "other-prompt")
    for i, (grade, (text, _)) in enumerate(anchors.items()):
        await register_anchor(mesh, "other-prompt", f"anchor_{i}", grade, text)
    runs = tmp_path / "runs"
    done = await runner(mesh, "run", str(folder), "--assignment-id", "other-prompt", "--budget", "80", "--seed", "3",
                        "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert done.code == 0, done.output
    (run_dir,) = runs.iterdir()
    return done, json.loads((run_dir / "results.json").read_text()), (run_dir / "report.md").read_text()


def _warnings_section(report_md: str) -> str:
    assert report_md.index("## Warnings") < report_md.index("## Summary")  # report.md starts with them
    return report_md.split("## Warnings", 1)[1].split("## Summary", 1)[0].lstrip()


async def test_anchors_from_another_prompt_are_warned_about_and_cap_confidence(mesh, tmp_path) -> None:
    """Anchors whose true scores ignore their grades, all weaker than every student (as anchors
    written for another prompt would be): the service warns, caps confidence, and the runner says so."""
    # true scores that barely follow the grades (tau about 0.3), every one far below every student
    done, results, report_md = await _run_with_anchors(mesh, tmp_path, [-3.3, -3.5, -3.1, -3.4, -3.0, -3.3, -2.9, -3.2])
    # the runner prints the warnings before the table
    assert "warning: grades are not reliable" in done.stderr
    assert results["grades_reliable"] is False
    codes = [w["code"] for w in results["warnings"]]
    diagnostics = results["anchor_diagnostics"]
    assert diagnostics["anchor_win_share"] < 0.1 and diagnostics["students_above_anchors"] == 8
    students = [e for e in results["essays"] if not e["is_anchor"]]
    warned = _warnings_section(report_md)
    # Anchors that lose every comparison say little about their order among themselves: the
    # service either projects grades with capped confidence, or projects none because the anchors'
    # scores do not rise with their grades. Both say first why the grades are not to be trusted.
    if results["grades_projected"]:
        assert codes[0] == "RESULT_WARNING_CODE_ANCHORS_DO_NOT_FIT"
        assert warned.startswith("- grades are not reliable")
        for essay in students:  # capped: no grade claimed with more than about half the certainty, all LOW
            assert essay["projection"]["confidence_label"] == "CONFIDENCE_LABEL_LOW"
            assert max(p["probability"] for p in essay["projection"]["probabilities"]) <= 0.56
    else:
        assert codes[:2] == ["RESULT_WARNING_CODE_GRADES_NOT_PROJECTED", "RESULT_WARNING_CODE_ANCHORS_DO_NOT_FIT"]
        assert "do not rise with their grades" in results["projection_note"]
        assert all("projection" not in e for e in students)
        assert warned.startswith("- no grades: the anchors' scores do not rise")
        assert "- grades are not reliable" in warned
    assert warned.count("out of grade order") <= 1  # the service's warning, not the report's again


async def test_anchors_out_of_grade_order_cap_the_confidence_of_projected_grades(mesh, tmp_path) -> None:
    """Anchors among the students, rising overall but in reverse within each half of the scale
    (Kendall tau 0.14): grades are projected, every one capped and LOW, and the runner and report.md
    say why first."""
    # the halves 4 logits apart: with 3.2 the fitted anchors' scores of a loaded run once fell just
    # short of rising with their grades, and no grades were projected
    done, results, report_md = await _run_with_anchors(mesh, tmp_path, [2.4, 1.6, 0.8, 0.0, 6.4, 5.6, 4.8, 4.0])
    assert "warning: grades are not reliable" in done.stderr
    assert results["grades_projected"] is True and results["grades_reliable"] is False
    assert results["warnings"][0]["code"] == "RESULT_WARNING_CODE_ANCHORS_DO_NOT_FIT"
    assert results["anchor_diagnostics"]["kendall_tau"] < 0.5
    for essay in [e for e in results["essays"] if not e["is_anchor"]]:
        assert essay["projection"]["confidence_label"] == "CONFIDENCE_LABEL_LOW"
        assert max(p["probability"] for p in essay["projection"]["probabilities"]) <= 0.56
    assert _warnings_section(report_md).startswith("- grades are not reliable")
