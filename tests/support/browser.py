"""A real headless browser (Debian's Chromium) reading a page as a user's browser would render it."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.support.tools import run


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("Chromium is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip("SKIPPED LOUDLY: the report.html test needs Chromium: apt-get install chromium")
    return found


async def rendered(page: Path, fragment: str = "") -> str:
    """The page's DOM after its scripts ran, as Chromium serializes it (`page` an absolute path)."""
    url = page.as_uri() + (f"#{fragment}" if fragment else "")
    result = await run(chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url, timeout=90)
    assert result.code == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


class Table(HTMLParser):
    """Header texts and rows (cell texts, row class) of the table with the given id."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.cell = table_id, False, None
        self.headers: list[str] = []
        self.rows: list[tuple[str, list[str]]] = []
        self.attributes: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "table" and attributes.get("id") == self.table_id:
            self.inside, self.attributes = True, attributes
        elif self.inside and tag == "tr" and attributes.get("class"):
            self.rows.append((attributes["class"], []))
        elif self.inside and tag in ("td", "th"):
            self.cell = ""

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            (self.rows[-1][1] if tag == "td" else self.headers).append(self.cell.strip())
            self.cell = None


def read_table(dom: str, table_id: str) -> Table:
    table = Table(table_id)
    table.feed(dom)
    return table
