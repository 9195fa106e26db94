"""`report.html`: one self-contained page a teacher can open, share and sort.

Warnings first, then the score plot (inline SVG: every essay a point with its id on hover, anchors
marked with their grade, the grade bands the service drew), then a table of every essay with full
ids, sortable by any column (click a header; `report.html#sort=score` opens it sorted). No file,
font or script is fetched from anywhere.
"""

from __future__ import annotations

import html
import math

from runner.report import Report, grade_bands, interval_95, run_warnings

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 960, 420, 60, 70, 20, 40

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1000px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.warnings { background: #fff4e5; border-left: 4px solid #e67e22; padding: .6em 1em; }
.warnings li { margin: .2em 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .5em; border-bottom: 1px solid #ddd; text-align: left; }
th { cursor: pointer; user-select: none; background: #f4f4f4; position: sticky; top: 0; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; } tr.anchor { background: #fdf0f0; } code { word-break: break-all; }
svg text { font: 11px system-ui, sans-serif; }
"""

# Sorts the table by a column (numbers as numbers, blanks last); the URL's #sort=key[-desc] on load.
SCRIPT = """
(function () {
  const table = document.getElementById("essays");
  const headers = Array.from(table.tHead.rows[0].cells);
  function sortBy(index, descending) {
    const rows = Array.from(table.tBodies[0].rows);
    const value = (row) => row.cells[index].dataset.value ?? row.cells[index].textContent;
    const numeric = headers[index].dataset.type === "number";
    rows.sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === "" || y === "") return (x === "") - (y === "");
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return descending ? -order : order;
    });
    rows.forEach((row) => table.tBodies[0].appendChild(row));
    headers.forEach((h, i) => h.setAttribute("aria-sort", i === index ? (descending ? "descending" : "ascending") : "none"));
  }
  headers.forEach((header, index) => header.addEventListener("click", () =>
    sortBy(index, header.getAttribute("aria-sort") === "ascending")));
  const wanted = /#sort=([a-z_]+)(-desc)?/.exec(location.hash);
  if (wanted) {
    const index = headers.findIndex((h) => h.dataset.key === wanted[1]);
    if (index >= 0) sortBy(index, Boolean(wanted[2]));
  }
  table.dataset.ready = "true";
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def plot_svg(report: Report) -> str:
    """Essays by score (lowest first) with 95 % intervals; each point's title names the essay."""
    essays = sorted(report.results["essays"], key=lambda e: e["score"])
    if not essays:
        return "<p>No essays were scored.</p>"
    low = min(interval_95(e)[0] for e in essays)
    high = max(interval_95(e)[1] for e in essays)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    span = high - low
    low, high = low - 0.05 * span, high + 0.05 * span
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (i + 0.5) * plot_w / len(essays)

    def y(score: float) -> float:
        return TOP + (high - score) / (high - low) * plot_h

    parts = [f'<svg id="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
             f'aria-label="essay scores with 95% intervals">']  # fmt: skip
    for index, (grade, lower, upper) in enumerate(grade_bands(report)):
        top, bottom = min(upper, high), max(lower, low)
        if top <= bottom:
            continue
        shade = "#e8eef8" if index % 2 else "#f2f2f2"
        parts.append(f'<rect class="band" x="{LEFT}" y="{y(top):.1f}" width="{plot_w}" '
                     f'height="{y(bottom) - y(top):.1f}" fill="{shade}"><title>grade {_e(grade)}</title></rect>')  # fmt: skip
        parts.append(f'<text x="{WIDTH - RIGHT + 6}" y="{(y(top) + y(bottom)) / 2 + 4:.1f}" '
                     f'fill="#555">{_e(grade)}</text>')  # fmt: skip
    step = 10 ** math.floor(math.log10(max(high - low, 1e-9) / 2))
    tick = math.ceil(low / step) * step
    while tick <= high:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>'
                     f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')  # fmt: skip
        tick += step
    for i, e in enumerate(essays):
        colour = "#c0392b" if e["is_anchor"] else "#2c6fbb"
        lower, upper = interval_95(e)
        label = f"{e['essay_id']}: score {e['score']:.2f} (95 % {lower:.2f} to {upper:.2f})"
        label += f", anchor {e['known_grade']}" if e["is_anchor"] else ""
        grade = (e.get("projection") or {}).get("grade")
        label += f", projected {grade}" if grade and not e["is_anchor"] else ""
        cx, cy = x(i), y(e["score"])
        parts.append(f'<g class="essay" data-essay-id="{_e(e["essay_id"])}"><title>{_e(label)}</title>'
                     f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(upper):.1f}" '
                     f'y2="{y(lower):.1f}" stroke="{colour}" stroke-width="1"/>')  # fmt: skip
        if e["is_anchor"]:
            parts.append(f'<path d="M{cx:.1f},{cy - 5:.1f} l5,5 l-5,5 l-5,-5 z" fill="{colour}"/>'
                         f'<text x="{cx:.1f}" y="{cy - 8:.1f}" text-anchor="middle" fill="{colour}">'
                         f"{_e(e['known_grade'])}</text></g>")  # fmt: skip
        else:
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{colour}"/></g>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle">essays, lowest score first '
                 "(hover a point for its essay; red diamonds are anchors)</text>")  # fmt: skip
    parts.append(f'<text transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
                 "score (logits) ± 1.96 SE</text></svg>")  # fmt: skip
    return "".join(parts)


def essay_table(report: Report) -> str:
    graded = bool(report.results.get("grades_projected"))
    known = bool(report.known_grades)
    columns = [("rank", "rank", "number"), ("essay_id", "essay", "text"), ("display_name", "file", "text"),
               ("role", "role", "text"), ("score", "score", "number"), ("standard_error", "SE", "number"),
               ("interval", "95 %", "text"),
               ("comparisons", "comparisons", "number"), ("wins", "wins", "number"), ("losses", "losses", "number")]  # fmt: skip
    if known:
        columns.append(("known_grade", "known grade", "text"))
    if graded:
        columns += [("grade", "grade", "text"), ("probability", "P(grade)", "number"),
                    ("confidence", "confidence", "text")]  # fmt: skip
    head = "".join(f'<th data-key="{key}" data-type="{kind}" aria-sort="none">{_e(title)}</th>'
                   for key, title, kind in columns)  # fmt: skip
    rows = []
    for e in report.essays:
        projection = e.get("projection") or {}
        grade = projection.get("grade", "")
        probability = next((p["probability"] for p in projection.get("probabilities", []) if p["grade"] == grade), None)
        cells = {
            "rank": (e["rank"], e["rank"]), "essay_id": (f"<code>{_e(e['essay_id'])}</code>", e["essay_id"]),
            "display_name": (_e(e.get("display_name", "")), e.get("display_name", "")),
            "role": ("anchor" if e["is_anchor"] else "student", None),
            "score": (f"{e['score']:.2f}", e["score"]), "standard_error": (f"{e['standard_error']:.2f}", e["standard_error"]),
            "interval": ("{:.2f} to {:.2f}".format(*interval_95(e)), None),
            "comparisons": (e["comparisons"], e["comparisons"]), "wins": (e["wins"], e["wins"]),
            "losses": (e["losses"], e["losses"]),
            "known_grade": (_e(e["known_grade"] if e["is_anchor"] else report.known_grades.get(e["essay_id"], "")), None),
            # an anchor's grade is given, not projected: no grade, probability or confidence of its own
            "grade": ("" if e["is_anchor"] else _e(grade), None),
            "probability": ("" if e["is_anchor"] or probability is None else f"{probability:.2f}",
                            "" if e["is_anchor"] or probability is None else probability),
            "confidence": ("" if e["is_anchor"] or not grade else
                           _e(projection.get("confidence_label", "").removeprefix("CONFIDENCE_LABEL_").lower()), None),
        }  # fmt: skip
        tds = []
        for key, _, kind in columns:
            shown, value = cells[key]
            attribute = f' data-value="{_e(value)}"' if value is not None else ""
            tds.append(f"<td{attribute}{' class=num' if kind == 'number' else ''}>{shown}</td>")
        rows.append(f'<tr class="{"anchor" if e["is_anchor"] else "student"}">{"".join(tds)}</tr>')
    return f'<table id="essays"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_html(report: Report) -> str:
    results, batch = report.results, report.results["batch"]
    warnings = run_warnings(report)
    warning_block = (
        '<section class="warnings"><h2>Warnings</h2><ul>' + "".join(f"<li>{_e(w)}</li>" for w in warnings)
        + "</ul></section>" if warnings else ""
    )  # fmt: skip
    state = batch["state"].removeprefix("BATCH_STATE_").lower()
    grades = (f"projected on {_e(results['grade_scale'])}" if results.get("grades_projected")
              else "not projected (a guest run, or no usable anchors)")  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>CJ run {_e(batch["batch_label"])}</title><style>{STYLE}</style></head>
<body>
<h1>CJ run {_e(batch["batch_label"])}</h1>
{warning_block}
<p>Batch <code>{_e(batch["batch_id"])}</code>, {_e(state)}. {batch["essay_count"]} students and
{batch["anchor_count"]} anchors; scale separation reliability {results["scale_separation_reliability"]:.2f};
grades {grades}.</p>
<h2>Scores</h2>
{plot_svg(report)}
<h2>Essays</h2>
<p>Click a column's header to sort by it.</p>
{essay_table(report)}
<script>{SCRIPT}</script>
</body></html>
"""
