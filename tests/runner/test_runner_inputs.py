"""What a teacher's folder really holds, checked before anything costs money: empty files, other
encodings, overlong essays, the same essay twice, subfolders, names in other scripts, long names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runner.client import MeshClient
from runner.inventory import decode, take
from tests.runner.test_runner_cli import runner
from tests.support.tools import run, tool

SWEDISH = "Det var en gång en elev som skrev om sin resa till fjällen. Där såg hon många älgar och åt blåbär. "
LONG_NAME = "x" * 246 + ".txt"  # 250 characters: more than a display name may have


def hostile_folder(root: Path) -> Path:
    """Every way a real folder goes wrong, and the files that are fine beside them."""
    students = root / "hostile" / "students"
    (students / "drafts").mkdir(parents=True)
    (students / "empty.txt").write_text("")
    (students / "blank.md").write_text("  \n\t\n")
    (students / "latin.txt").write_bytes((SWEDISH * 5).encode("latin-1"))
    (students / "utf16.txt").write_bytes(("A journey told in UTF-16, with åäö. " * 10).encode("utf-16"))
    (students / "long.txt").write_text("word " * 5000)
    (students / "one.txt").write_text("Identical essay text here. " * 10)
    (students / "two.txt").write_text("Identical essay text here. " * 10)
    (students / "Åsa Öberg.txt").write_text("Åsa writes about Öland. " * 10)
    (students / "Åsa Åberg.txt").write_text("Another Åsa writes about Åland. " * 10)
    (students / LONG_NAME).write_text("An essay with a very long file name. " * 10)
    (students / "drafts" / "draft.txt").write_text("a draft in a subfolder")
    (students / "binary.txt").write_bytes(bytes(range(256)) * 4)
    return root / "hostile"


REFUSED = {
    "empty.txt": "is empty",
    "blank.md": "is empty",
    "binary.txt": "is not text",
    "long.txt": "has 5,000 words, more than the limit of 3,000",
    "two.txt": "has the same text as one.txt",
}


def remove_refused(folder: Path) -> None:
    for name in REFUSED:
        (folder / "students" / name).unlink()


def test_encodings_are_detected_and_utf8_is_kept_as_it_is() -> None:
    assert decode((SWEDISH * 3).encode("latin-1")) == (SWEDISH * 3, "cp1252")
    assert decode("Smart “quotes” — and åäö, said twice. ".encode("cp1252") * 3)[1] == "cp1252"
    assert decode("Hej, åäö".encode("utf-16")) == ("Hej, åäö", "utf-16")
    russian = "Привет! Я написал сочинение о путешествии в горы. " * 2
    assert decode(russian.encode("cp1251")) == (russian, "cp1251")
    polish = "Wczoraj poszedłem do szkoły i napisałem wypracowanie o podróży w góry, zażółć gęślą jaźń. " * 2
    assert decode(polish.encode("cp1250")) == (polish, "cp1250")
    assert decode("\ufeffHej, åäö".encode()) == ("Hej, åäö", "utf-8")  # a BOM is dropped


def test_the_inventory_names_every_problem(tmp_path) -> None:
    found = take(hostile_folder(tmp_path))
    refused = {path.name: why for path, why in found.refused.items()}
    assert refused.keys() == REFUSED.keys()
    for name, why in REFUSED.items():
        assert why in refused[name], (name, refused[name])
    assert {p.name: why for p, why in found.skipped.items()} == {
        "drafts": "a folder: essays are read from students/ and anchors/ only"
    }
    by_name = {s.path.name: s for s in found.students}
    assert by_name["latin.txt"].text == SWEDISH * 5 and by_name["latin.txt"].encoding == "cp1252"
    assert by_name["utf16.txt"].encoding == "utf-16"
    assert by_name["Åsa Öberg.txt"].essay_id == "Asa_Oberg" and by_name["Åsa Åberg.txt"].essay_id == "Asa_Aberg"
    long = by_name[LONG_NAME]
    assert len(long.display_name) == 200 and long.display_name.endswith("….txt") and len(long.essay_id) == 36
    lenient = take(tmp_path / "hostile", max_words=6000, allow_duplicates=True)
    assert {p.name for p in lenient.refused} == {"empty.txt", "blank.md", "binary.txt"}


async def test_plan_and_dry_run_name_the_problems_before_anything_is_sent(tmp_path) -> None:
    folder = hostile_folder(tmp_path)
    for command in ("plan", "dry-run"):
        result = await run(tool("cj-runner"), command, str(folder))
        assert result.code == 2, result.output
        assert "5 problem(s)" in result.stderr and "Traceback" not in result.output
        for name, why in REFUSED.items():
            assert f"students/{name} {why}" in result.stderr, (command, name)
        assert "note: latin.txt is not UTF-8; read as cp1252" in result.stderr
        assert "note: utf16.txt is not UTF-8; read as utf-16" in result.stderr
        assert "skipped: students/drafts: a folder" in result.stderr
    remove_refused(folder)
    dry = await run(tool("cj-runner"), "dry-run", str(folder))
    assert dry.code == 0, dry.output
    essays = {e["essay_id"]: e["display_name"] for e in json.loads(dry.stdout)["request"]["essays"]}
    assert {"Asa_Oberg", "Asa_Aberg", "latin", "utf16", "one"} < essays.keys()
    assert max(len(name) for name in essays.values()) == 200


async def test_a_refused_folder_uploads_nothing_and_the_fixed_one_runs(mesh, tmp_path) -> None:
    folder = hostile_folder(tmp_path)
    texts = [p.read_bytes() for p in (folder / "students").glob("*.txt") if p.name != "binary.txt"]
    cache = ("--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"))
    refused = await runner(mesh, "run", str(folder), "--budget", "10", *cache)
    assert refused.code == 2 and "5 problem(s)" in refused.stderr, refused.output
    async with MeshClient(mesh.content_app.address, mesh.cj_app.address) as client:
        assert await client.find_by_checksum(hashlib.sha256(t).hexdigest() for t in texts) == {}
        remove_refused(folder)
        done = await runner(mesh, "run", str(folder), "--budget", "10", *cache)
        assert done.code == 0, done.output
        (run_dir,) = (tmp_path / "runs").iterdir()
        results = json.loads((run_dir / "results.json").read_text())
        assert {e["essay_id"] for e in results["essays"]} >= {"Asa_Oberg", "Asa_Aberg", "latin", "utf16"}
        # what was stored is the decoded text, as UTF-8: the latin-1 essay reads as it was written
        stored = await client.find_by_checksum([hashlib.sha256((SWEDISH * 5).encode()).hexdigest()])
        assert len(stored) == 1
