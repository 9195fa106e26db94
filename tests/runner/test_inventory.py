"""Inventory without network: formats, .docx paragraphs, anchors' grades."""

from __future__ import annotations

import zipfile
from pathlib import Path

from runner.inventory import SUPPORTED_SUFFIXES, extract_text, take

DOCUMENT = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:r><w:t>First paragraph, </w:t></w:r><w:r><w:t>in two runs.</w:t></w:r></w:p>
<w:p><w:r><w:t>Second paragraph: åäö.</w:t></w:r></w:p>
<w:p></w:p>
</w:body></w:document>"""


def write_docx(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", DOCUMENT)


def test_docx_paragraphs_are_kept(tmp_path) -> None:
    write_docx(tmp_path / "essay.docx")
    assert extract_text(tmp_path / "essay.docx") == ("First paragraph, in two runs.\n\nSecond paragraph: åäö.", "utf-8")


def test_a_broken_docx_is_refused_by_name(tmp_path) -> None:
    (tmp_path / "students").mkdir()
    (tmp_path / "students" / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    found = take(tmp_path)
    assert [(p.name, why) for p, why in found.refused.items()] == [
        ("broken.docx", "is not a Word document (.docx) that can be read; save it again from Word")
    ]


def test_inventory_reads_every_supported_format_and_anchor_grades(tmp_path) -> None:
    (tmp_path / "students").mkdir()
    (tmp_path / "anchors").mkdir()
    (tmp_path / "prompt.txt").write_text("Write about the sea.")
    (tmp_path / "students" / "a.txt").write_text("plain text")
    (tmp_path / "students" / "b.md").write_text("# markdown")
    write_docx(tmp_path / "students" / "c.docx")
    (tmp_path / "students" / "d.rtf").write_text("{\\rtf1}")
    (tmp_path / "anchors" / "B_strong.txt").write_text("graded by file name")
    (tmp_path / "anchors" / "weak.txt").write_text("graded by the csv")
    (tmp_path / "anchors" / "anchors.csv").write_text("file,grade\nweak.txt,E-\n")
    found = take(tmp_path)
    assert SUPPORTED_SUFFIXES == (".txt", ".md", ".docx")
    assert [s.essay_id for s in found.students] == ["a", "b", "c"]
    assert [p.name for p in found.skipped] == ["d.rtf"]
    assert found.prompt is not None and found.prompt.text == "Write about the sea."
    assert sorted((a.essay_id, a.grade) for a in found.anchors) == [("B_strong", "B"), ("weak", "E-")]
    assert all(len(s.sha256) == 64 for s in found.students)
