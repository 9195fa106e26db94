"""Inventory of an essay folder, with no network: students, optional anchors, the prompt.

Layout: `DIR/prompt.md` or `DIR/prompt.txt` (optional), student essays in `DIR/students/` (or
directly in DIR), anchors in `DIR/anchors/` (optional; grades from `anchors.csv` or file names like
`B_anchor-3.txt`), known grades of students for the report in `DIR/known_grades.csv` or
`DIR/intended_grades.csv` (optional).
"""

from __future__ import annotations

import csv
import hashlib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

# The one list of supported formats: inventory, extraction and docs all use it.
SUPPORTED_SUFFIXES = (".txt", ".md", ".docx")
ESSAY_ID_MAX = 36
PROMPT_NAMES = ("prompt.md", "prompt.txt")
KNOWN_GRADES_NAMES = ("known_grades.csv", "intended_grades.csv")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def essay_id_for(name: str) -> str:
    """The essay id of a file name: letters, digits, `_`, `-`; at most 36 characters, the last 9
    being `-` and an 8-hex hash of the full name when it had to be shortened."""
    stem = Path(name).stem
    cleaned = _UNSAFE.sub("_", stem).strip("_-") or "essay"
    if len(cleaned) <= ESSAY_ID_MAX:
        return cleaned
    digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
    return f"{cleaned[: ESSAY_ID_MAX - 9].rstrip('_-')}-{digest}"


def extract_text(path: Path) -> str:
    """Plain text of a supported file; .docx paragraphs are kept as paragraphs."""
    if path.suffix.lower() == ".docx":
        with zipfile.ZipFile(path) as archive:
            root = ElementTree.fromstring(archive.read("word/document.xml"))
        paragraphs = ["".join(t.text or "" for t in p.iter(f"{_W}t")) for p in root.iter(f"{_W}p")]
        return "\n\n".join(p for p in paragraphs if p.strip())
    return path.read_text(encoding="utf-8", errors="replace")


@dataclass
class Item:
    essay_id: str
    path: Path
    text: str
    sha256: str
    grade: str = ""

    @property
    def content(self) -> bytes:
        return self.text.encode("utf-8")


@dataclass
class Inventory:
    root: Path
    students: list[Item] = field(default_factory=list)
    anchors: list[Item] = field(default_factory=list)
    prompt: Item | None = None
    known_grades: Path | None = None
    unsupported: list[Path] = field(default_factory=list)
    collisions: dict[str, list[Path]] = field(default_factory=dict)


def read_item(path: Path, grade: str = "") -> Item:
    text = extract_text(path)
    return Item(essay_id_for(path.name), path, text, hashlib.sha256(text.encode("utf-8")).hexdigest(), grade)


def _files(folder: Path, inventory: Inventory) -> list[Path]:
    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.name in PROMPT_NAMES or path.name in KNOWN_GRADES_NAMES or path.name == "anchors.csv":
            continue
        if path.suffix.lower() in SUPPORTED_SUFFIXES:
            found.append(path)
        else:
            inventory.unsupported.append(path)
    return found


def _anchor_grades(folder: Path) -> dict[str, str]:
    table = folder / "anchors.csv"
    if not table.exists():
        return {}
    with table.open(newline="", encoding="utf-8") as handle:
        return {row["file"]: row["grade"] for row in csv.DictReader(handle)}


def take(root: Path) -> Inventory:
    inventory = Inventory(root)
    for name in PROMPT_NAMES:
        if (root / name).exists():
            inventory.prompt = read_item(root / name)
            break
    inventory.known_grades = next((root / n for n in KNOWN_GRADES_NAMES if (root / n).exists()), None)
    students_dir = root / "students" if (root / "students").is_dir() else root
    inventory.students = [read_item(p) for p in _files(students_dir, inventory)]
    anchors_dir = root / "anchors"
    if anchors_dir.is_dir():
        grades = _anchor_grades(anchors_dir)
        for path in _files(anchors_dir, inventory):
            grade = grades.get(path.name) or path.stem.split("_", 1)[0]
            inventory.anchors.append(read_item(path, grade))
    seen: dict[str, list[Path]] = {}
    for item in inventory.students + inventory.anchors:
        seen.setdefault(item.essay_id, []).append(item.path)
    inventory.collisions = {essay_id: paths for essay_id, paths in seen.items() if len(paths) > 1}
    return inventory
