"""Inventory of an essay folder, with no network: students, optional anchors, the prompt.

Layout: `DIR/prompt.md` or `DIR/prompt.txt` (optional), student essays in `DIR/students/` (or
directly in DIR), anchors in `DIR/anchors/` (optional; grades from `anchors.csv` or file names like
`B_anchor-3.txt`), known grades of students for the report in `DIR/known_grades.csv` or
`DIR/intended_grades.csv` (optional).

Everything that would waste a judge's comparisons is found here, before anything is uploaded: empty
files, files that are not text, essays over the word limit, the same essay twice. Files in another
encoding than UTF-8 are decoded (and said so); what is left out is listed with why.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from anyascii import anyascii
from charset_normalizer import from_bytes

# The one list of supported formats: inventory, extraction and docs all use it.
SUPPORTED_SUFFIXES = (".txt", ".md", ".docx")
ESSAY_ID_MAX = 36  # the contract's limit of EssayRef.essay_id
DISPLAY_NAME_MAX = 200  # the contract's limit of EssayRef.display_name
DEFAULT_MAX_WORDS = 3000
PROMPT_NAMES = ("prompt.md", "prompt.txt")
KNOWN_GRADES_NAMES = ("known_grades.csv", "intended_grades.csv")
ESSAY_FOLDERS = ("students", "anchors")
# A detector scores short texts poorly: Swedish in cp1252 scores as well as cp1250 (å read as ĺ),
# Russian in cp1251 as mac_cyrillic. Among the candidates it finds nearly as clean as its best, the
# code pages most files are written in are taken first, in this order.
PREFERRED_ENCODINGS = ("cp1252", "latin_1", "cp1251", "cp1250")
NEARLY_AS_CLEAN = 0.1  # chaos (share of suspicious characters) allowed above the best candidate's

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SEPARATORS = re.compile(r"_[_-]*_")  # `Student 01 – essay` -> `Student_01_essay`, not `Student_01_-_essay`
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


class Unreadable(ValueError):
    """A file that is not usable text; the message says why."""


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def essay_id_for(name: str, with_hash: bool = False) -> str:
    """The essay id of a file name: transliterated to ASCII (`Åsa Öberg` -> `Asa_Oberg`), then
    letters, digits, `_`, `-`; at most 36 characters. `-` and an 8-hex hash of the full name end it
    when it had to be shortened, or when asked for (to tell apart names that read the same)."""
    stem = Path(name).stem
    cleaned = _UNSAFE.sub("_", anyascii(stem))
    cleaned = _SEPARATORS.sub("_", cleaned).strip("_-") or "essay"
    if len(cleaned) <= ESSAY_ID_MAX and not with_hash:
        return cleaned
    return f"{cleaned[: ESSAY_ID_MAX - 9].rstrip('_-')}-{_short_hash(stem)}"


def display_name_for(name: str) -> str:
    """The file name, shortened in the middle to the contract's limit (the extension kept)."""
    if len(name) <= DISPLAY_NAME_MAX:
        return name
    suffix = Path(name).suffix[:20]
    keep = DISPLAY_NAME_MAX - len(suffix) - 1
    return f"{name[:keep]}…{suffix}"


def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a text file's bytes: UTF-8 (with or without BOM) as it is, else what a
    detector finds (UTF-16 and UTF-32 by their BOM, cp1252, latin-1, ...). Unreadable if none fits."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    matches = list(from_bytes(data))
    if not matches:
        raise Unreadable("is not text in any encoding we can detect; save it as UTF-8 text")
    best = matches[0]
    close = [m for m in matches if m.chaos <= best.chaos + NEARLY_AS_CLEAN]
    chosen = next((m for name in PREFERRED_ENCODINGS for m in close if m.encoding == name), best)
    return str(chosen), codecs.lookup(chosen.encoding).name


def extract_text(path: Path) -> tuple[str, str]:
    """(plain text, encoding) of a supported file; .docx paragraphs are kept as paragraphs."""
    if path.suffix.lower() == ".docx":
        try:
            with zipfile.ZipFile(path) as archive:
                root = ElementTree.fromstring(archive.read("word/document.xml"))
        except (zipfile.BadZipFile, KeyError, ElementTree.ParseError):
            raise Unreadable("is not a Word document (.docx) that can be read; save it again from Word") from None
        paragraphs = ["".join(t.text or "" for t in p.iter(f"{_W}t")) for p in root.iter(f"{_W}p")]
        return "\n\n".join(p for p in paragraphs if p.strip()), "utf-8"
    return decode(path.read_bytes())


@dataclass
class Item:
    essay_id: str
    path: Path
    text: str
    sha256: str
    grade: str = ""
    encoding: str = "utf-8"  # what the file was written in; the text is sent as UTF-8

    @property
    def content(self) -> bytes:
        return self.text.encode("utf-8")

    @property
    def words(self) -> int:
        return len(self.text.split())

    @property
    def display_name(self) -> str:
        return display_name_for(self.path.name)


@dataclass
class Inventory:
    root: Path
    students: list[Item] = field(default_factory=list)
    anchors: list[Item] = field(default_factory=list)
    prompt: Item | None = None
    known_grades: Path | None = None
    skipped: dict[Path, str] = field(default_factory=dict)  # left out, and why (not an error)
    refused: dict[Path, str] = field(default_factory=dict)  # each makes the folder unusable until fixed
    collisions: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def items(self) -> list[Item]:
        return ([self.prompt] if self.prompt else []) + self.students + self.anchors

    @property
    def converted(self) -> list[Item]:
        """Items decoded from another encoding than UTF-8."""
        return [item for item in self.items if item.encoding != "utf-8"]


def read_item(path: Path, grade: str = "") -> Item:
    """One file as an item; Unreadable (saying why) when it is not usable text."""
    try:
        text, encoding = extract_text(path)
    except OSError as error:
        raise Unreadable(f"cannot be read: {error.strerror}") from None
    if "\x00" in text:
        raise Unreadable("holds NUL characters, so it is not a text file; save it as UTF-8 text")
    if not text.strip():
        raise Unreadable("is empty (no words); remove it or put the essay in it")
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Item(essay_id_for(path.name), path, text, sha256, grade, encoding)


def _files(folder: Path, inventory: Inventory, top: bool) -> list[Path]:
    found = []
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if path.is_dir():
            if not (top and path.name in ESSAY_FOLDERS):
                inventory.skipped[path] = "a folder: essays are read from students/ and anchors/ only"
            continue
        if path.name in PROMPT_NAMES or path.name in KNOWN_GRADES_NAMES or path.name == "anchors.csv":
            continue
        if path.suffix.lower() in SUPPORTED_SUFFIXES:
            found.append(path)
        else:
            inventory.skipped[path] = f"unsupported format (supported: {', '.join(SUPPORTED_SUFFIXES)})"
    return found


def _anchor_grades(folder: Path) -> dict[str, str]:
    table = folder / "anchors.csv"
    if not table.exists():
        return {}
    with table.open(newline="", encoding="utf-8") as handle:
        return {row["file"]: row["grade"] for row in csv.DictReader(handle)}


def _read(inventory: Inventory, paths: list[Path], grades: dict[str, str] | None = None) -> list[Item]:
    items = []
    for path in paths:
        try:
            grade = "" if grades is None else grades.get(path.name) or path.stem.split("_", 1)[0]
            items.append(read_item(path, grade))
        except Unreadable as why:
            inventory.refused[path] = str(why)
    return items


def _tell_apart(items: list[Item]) -> dict[str, list[Path]]:
    """Give names that read the same (`Åsa.txt`, `Asa.txt`) ids with their hash; what still clashes."""
    by_id: dict[str, list[Item]] = {}
    for item in items:
        by_id.setdefault(item.essay_id, []).append(item)
    for clashing in (group for group in by_id.values() if len(group) > 1):
        for item in clashing:
            item.essay_id = essay_id_for(item.path.name, with_hash=True)
    seen: dict[str, list[Path]] = {}
    for item in items:
        seen.setdefault(item.essay_id, []).append(item.path)
    return {essay_id: paths for essay_id, paths in seen.items() if len(paths) > 1}


def take(root: Path, max_words: int = DEFAULT_MAX_WORDS, allow_duplicates: bool = False) -> Inventory:
    """Everything in `root` and what is wrong with it (see the module's docstring)."""
    inventory = Inventory(root)
    for name in PROMPT_NAMES:
        if (root / name).exists():
            prompt = _read(inventory, [root / name])
            inventory.prompt = prompt[0] if prompt else None
            break
    inventory.known_grades = next((root / n for n in KNOWN_GRADES_NAMES if (root / n).exists()), None)
    nested = (root / "students").is_dir()
    students_dir = root / "students" if nested else root
    inventory.students = _read(inventory, _files(students_dir, inventory, top=not nested))
    if nested:  # what else lies beside students/ is listed as skipped
        for path in _files(root, inventory, top=True):
            inventory.skipped[path] = "beside students/: student essays are read from students/ only"
    anchors_dir = root / "anchors"
    if anchors_dir.is_dir():
        inventory.anchors = _read(inventory, _files(anchors_dir, inventory, top=False), _anchor_grades(anchors_dir))
    for item in inventory.students + inventory.anchors:
        if item.words > max_words:
            inventory.refused[item.path] = (
                f"has {item.words:,} words, more than the limit of {max_words:,}; shorten it or raise --max-words"
            )
    if not allow_duplicates:
        by_text: dict[str, list[Item]] = {}
        for item in inventory.students:
            by_text.setdefault(item.sha256, []).append(item)
        for same in (group for group in by_text.values() if len(group) > 1):
            first, *others = same
            for item in others:
                inventory.refused[item.path] = (
                    f"has the same text as {first.path.name}; remove one, or pass --allow-duplicates"
                )
    inventory.collisions = _tell_apart(inventory.students + inventory.anchors)
    return inventory
