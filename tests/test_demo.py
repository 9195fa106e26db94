"""The one-command demo: the whole mesh on embedded defaults, an ENG5 example end to end."""

from __future__ import annotations

from tests.support.tools import ROOT, run


async def test_demo_prints_ranking_and_grades_and_writes_the_run_folder() -> None:
    result = await run("bash", str(ROOT / "scripts" / "demo.sh"), timeout=300)
    assert result.code == 0, result.output[-3000:]
    assert "ENG5 demo: SSR" in result.stdout
    assert "student_30" in result.stdout and "(anchor)" in result.stdout
    assert any(grade in result.stdout for grade in ("│ A ", "│ B ", "│ C+ "))
    report_line = next(line for line in result.stdout.splitlines() if line.startswith("report: "))
    run_dir = (ROOT / report_line.removeprefix("report: ")).parent
    for name in ("request.json", "results.json", "essays.csv", "comparisons.csv", "report.md", "run.log"):
        assert (run_dir / name).stat().st_size > 0, name
    assert len((run_dir / "essays.csv").read_text().splitlines()) == 1 + 30 + 12
