"""cj-runner driven as a user would, against real servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc
from huleedu.cj.v1 import admin_pb2

from runner.inventory import essay_id_for
from tests.support.cj import create_assignment, register_anchor
from tests.support.tools import run, tool

LEGACY = ["F+", "E-", "E+", "D-", "D+", "C-", "C+", "B", "A"]


def essays_folder(root: Path, n: int = 6) -> Path:
    folder = root / "class-9b"
    (folder / "students").mkdir(parents=True)
    (folder / "prompt.md").write_text("# Task\nDescribe a journey that changed you.")
    for i in range(n):
        (folder / "students" / f"Student {i:02d} – essay.txt").write_text(f"My journey number {i}. " * (10 + 3 * i))
    return folder


async def runner(mesh, *args: str, cwd_env: dict | None = None):
    return await run(
        tool("cj-runner"), "--content-address", mesh.content_app.address, "--cj-address", mesh.cj_app.address, *args,
        timeout=120,
    )  # fmt: skip


def test_essay_ids_sanitized_truncated_with_hash() -> None:
    assert essay_id_for("Anna Svensson (1).docx") == "Anna_Svensson_1"
    assert essay_id_for("Åsa Öberg.txt") == "Asa_Oberg"  # transliterated, not dropped
    assert essay_id_for("山田花子.txt") == "ShanTianHuaZi"  # not the placeholder `essay`
    long = essay_id_for("x" * 80 + ".txt")
    assert len(long) == 36 and long[-9] == "-" and all(c in "0123456789abcdef" for c in long[-8:])
    assert essay_id_for("x" * 80 + "a.txt") != essay_id_for("x" * 80 + "b.txt")


async def test_plan_and_dry_run_on_a_fixture_folder(tmp_path) -> None:
    folder = essays_folder(tmp_path)
    (folder / "students" / "notes.pdf").write_bytes(b"%PDF")
    planned = await run(tool("cj-runner"), "plan", str(folder))
    assert planned.code == 0, planned.output
    assert "skipped: students/notes.pdf: unsupported format" in planned.stderr
    assert "Student_00_essay" in planned.stdout
    dry = await run(tool("cj-runner"), "dry-run", str(folder), "--assignment-id", "eng5")
    assert dry.code == 0, dry.output
    request = json.loads(dry.stdout)["request"]
    assert len(request["essays"]) == 6 and request["student_prompt_ref"]["storage_id"] == "0" * 32
    # names that read the same are told apart by a hash of the whole name, not refused
    (folder / "students" / "Student 00_essay.md").write_text("same id after sanitizing")
    dry = await run(tool("cj-runner"), "dry-run", str(folder))
    assert dry.code == 0, dry.output
    ids = [e["essay_id"] for e in json.loads(dry.stdout)["request"]["essays"]]
    told_apart = [i for i in ids if i.startswith("Student_00_essay-")]
    assert len(told_apart) == 2 and len(set(told_apart)) == 2 and "Student_01_essay" in ids


async def test_run_end_to_end_prompt_id_cache_and_stale_cache(mesh, tmp_path) -> None:
    await create_assignment(mesh, "eng5-r")
    for i, grade in enumerate(["E-", "C-", "A"]):
        await register_anchor(mesh, "eng5-r", f"anchor_{i}", grade, f"Anchor text {grade} " * (5 + 10 * i))
    folder = essays_folder(tmp_path)
    runs = tmp_path / "runs"
    cache = tmp_path / "cache"
    first = await runner(mesh, "run", str(folder), "--assignment-id", "eng5-r", "--budget", "30",
                         "--runs-dir", str(runs), "--cache-dir", str(cache))  # fmt: skip
    assert first.code == 0, first.output
    assert "uploaded 7 file(s)" in first.stderr
    (run_dir,) = runs.iterdir()
    for name in ("request.json", "results.json", "essays.csv", "comparisons.csv", "report.md", "run.log"):
        assert (run_dir / name).stat().st_size > 0, name
    request = json.loads((run_dir / "request.json").read_text())
    prompt_sha = hashlib.sha256((folder / "prompt.md").read_bytes()).hexdigest()
    from huleedu.content.v1 import content_pb2

    found = await mesh.content.FindByChecksum(content_pb2.FindByChecksumRequest(sha256s=[prompt_sha]))
    assert (
        request["student_prompt_ref"]["storage_id"] == found.matches[0].storage_id
    )  # the service's id, not a checksum
    second = await runner(mesh, "run", str(folder), "--assignment-id", "eng5-r", "--budget", "10",
                          "--runs-dir", str(runs), "--cache-dir", str(cache))  # fmt: skip
    assert second.code == 0, second.output
    assert "uploaded 0 file(s)" in second.stderr
    # wipe the Content Service's store and restart it: the stale cache is detected, files re-uploaded
    storage = mesh.content_app.settings
    await mesh.content_app.stop()
    shutil.rmtree(storage.storage_dir)
    from mesh_server import database

    await asyncio.to_thread(database.downgrade, "content", storage.database_url)
    from tests.conftest import start_content

    port = mesh.content_app.address.rsplit(":", 1)[1]
    restarted = await start_content(storage.database_url, storage.storage_dir, listen=f"127.0.0.1:{port}")
    try:
        # the CJ Service reports NOT_SERVING while its Content Service is away; wait until it sees it again
        health = health_pb2_grpc.HealthStub(mesh.channels[0])
        async with asyncio.timeout(15):
            while (  # noqa: ASYNC110 - polling a server
                await health.Check(health_pb2.HealthCheckRequest())
            ).status != health_pb2.HealthCheckResponse.SERVING:
                await asyncio.sleep(0.2)
        # a guest run: the CJ Service's anchors now point at content that was wiped
        third = await runner(
            mesh, "run", str(folder), "--budget", "10", "--runs-dir", str(runs), "--cache-dir", str(cache)
        )
        assert third.code == 0, third.output
        assert "uploaded 7 file(s)" in third.stderr
    finally:
        await restarted.stop()


async def test_unknown_assignment_fails_preflight_without_uploading(mesh, tmp_path) -> None:
    folder = essays_folder(tmp_path)
    result = await runner(
        mesh, "run", str(folder), "--assignment-id", "missing-one", "--cache-dir", str(tmp_path / "c")
    )
    assert result.code == 3, result.output
    assert "create-assignment" in result.stderr and "Traceback" not in result.output
    import hashlib

    from huleedu.content.v1 import content_pb2

    sha = hashlib.sha256((folder / "prompt.md").read_bytes()).hexdigest()
    found = await mesh.content.FindByChecksum(content_pb2.FindByChecksumRequest(sha256s=[sha]))
    assert list(found.matches) == []


async def test_watch_timeout_exits_4_with_partial_results(mesh, tmp_path) -> None:
    await mesh.restart_cj(judge_provider="simulated", simulated_latency_ms=300, batch_concurrency=1)
    folder = essays_folder(tmp_path)
    result = await runner(mesh, "run", str(folder), "--timeout", "2", "--runs-dir", str(tmp_path / "runs"),
                          "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    assert result.code == 4, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "results.json").read_text())["batch"]["state"] == "BATCH_STATE_RUNNING"


async def test_admin_commands(mesh, tmp_path) -> None:
    folder = tmp_path / "anchors-set"
    (folder / "anchors").mkdir(parents=True)
    for grade in ("B", "E-"):
        (folder / "anchors" / f"{grade}_sample.txt").write_text(f"anchor graded {grade}")
    prompt = tmp_path / "prompt.md"
    prompt.write_text("Write about winter.")
    created = await runner(mesh, "admin", "create-assignment", "--assignment-id", "w1", "--grade-scale",
                           "eng5_np_legacy_9_step", "--prompt", str(prompt), "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    assert created.code == 0, created.output
    for _ in range(2):  # idempotent
        registered = await runner(mesh, "admin", "register-anchors", str(folder), "--assignment-id", "w1",
                                  "--cache-dir", str(tmp_path / "c"))  # fmt: skip
        assert registered.code == 0, registered.output
    anchors = (await mesh.admin.ListAnchors(admin_pb2.ListAnchorsRequest(assignment_id="w1"))).anchors
    assert sorted((a.label, a.grade) for a in anchors) == [("B_sample", "B"), ("E-_sample", "E-")]
    shown = await runner(mesh, "admin", "show-assignment", "w1")
    assert json.loads(shown.stdout)["student_prompt_storage_id"]
    bad = await runner(mesh, "admin", "create-assignment", "--assignment-id", "w2", "--grade-scale", "nope")
    assert bad.code == 2 and "swedish_8_anchor" in bad.stderr and "Traceback" not in bad.output


async def test_a_rerun_repairs_content_that_was_lost_or_damaged(mesh, tmp_path) -> None:
    """Blobs lost (an interrupted upload, a restored backup) or damaged on disk: the runner's cache
    and FindByChecksum no longer vouch for them, so the rerun uploads them again and the run works."""
    from huleedu.content.v1 import content_pb2

    from tests.support.blobs import damage

    folder = essays_folder(tmp_path, n=4)
    args = ["run", str(folder), "--budget", "8", "--runs-dir", str(tmp_path / "runs")]
    first = await runner(mesh, *args, "--cache-dir", str(tmp_path / "cache"))
    assert first.code == 0, first.output
    files = sorted((folder / "students").iterdir())
    digests = [hashlib.sha256(path.read_bytes()).hexdigest() for path in files[:2]]
    found = await mesh.content.FindByChecksum(content_pb2.FindByChecksumRequest(sha256s=digests))
    await damage(mesh.content_app, found.matches[0].storage_id, "deleted")
    await damage(mesh.content_app, found.matches[1].storage_id, "flipped byte")
    for cache in ("cache", "fresh-cache"):  # with the runner's cache of storage ids, and without
        if cache == "fresh-cache":
            await damage(mesh.content_app, found.matches[0].storage_id, "truncated")
            await damage(mesh.content_app, found.matches[1].storage_id, "deleted")
        again = await runner(mesh, *args, "--cache-dir", str(tmp_path / cache))
        assert again.code == 0, again.output
        assert "uploaded 2 file(s)" in again.stderr
        stat = await mesh.content.Stat(
            content_pb2.StatRequest(storage_ids=[m.storage_id for m in found.matches], verify=True)
        )
        assert len(stat.found) == 2 and list(stat.damaged) == []


async def batch_ids(mesh) -> list[str]:
    from huleedu.cj.v1 import assessment_pb2

    listed = await mesh.assessment.ListBatches(assessment_pb2.ListBatchesRequest())
    return [b.batch_id for b in listed.batches]


async def until(condition: Callable[[], bool], limit: float = 30) -> None:
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def stored_blobs(mesh) -> int:
    return sum(1 for p in mesh.content_app.store.blobs.root.rglob("*") if p.is_file() and not p.name.startswith("."))


async def interrupted(
    mesh, args: list[str], after: float = 0.0, once: Callable[[int], bool] | None = None
) -> tuple[int, str]:
    """Run cj-runner and send it SIGINT (Ctrl-C) once `once(pid)` holds, `after` seconds later;
    (exit code, output)."""
    import signal

    process = await asyncio.create_subprocess_exec(
        tool("cj-runner"), "--content-address", mesh.content_app.address, "--cj-address", mesh.cj_app.address,
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    if once is not None:
        await until(lambda: process.returncode is not None or once(process.pid))
    await asyncio.sleep(after)
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, stdout.decode() + stderr.decode()


def importing_the_cli(pid: int) -> bool:
    """Whether the runner's process has begun loading grpc, one of the CLI's first imports (Linux)."""
    try:
        return "cygrpc" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


async def test_ctrl_c_while_the_runner_starts_prints_one_line_and_changes_nothing(mesh, tmp_path) -> None:
    folder = essays_folder(tmp_path, n=3)
    args = ["run", str(folder), "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    code, output = await interrupted(mesh, args, once=importing_the_cli)
    assert code == 130, output
    assert output.strip() == "interrupted; nothing was changed"
    assert await batch_ids(mesh) == [] and stored_blobs(mesh) == 0


async def test_a_rerun_attaches_to_its_batch_and_ctrl_c_while_judging_leaves_it_running(mesh, tmp_path) -> None:
    await mesh.restart_cj(judge_provider="simulated", simulated_latency_ms=200, batch_concurrency=2)
    folder = essays_folder(tmp_path, n=6)
    args = ["run", str(folder), "--budget", "40", "--runs-dir", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    code, output = await interrupted(mesh, args, after=2.5)
    assert code == 130, output
    (batch_id,) = await batch_ids(mesh)
    assert f"cj-runner attach {batch_id}" in output and f"cj-runner cancel {batch_id}" in output
    assert "Traceback" not in output
    again = await runner(mesh, *args)  # the same folder again: the same batch, not a second one
    assert again.code == 0, again.output
    assert f"attached to batch {batch_id}" in again.output
    assert await batch_ids(mesh) == [batch_id]
    assert len(list((tmp_path / "runs").iterdir())) == 1  # one run folder for the one batch
    fresh = await runner(mesh, *args, "--new")
    assert fresh.code == 0 and "submitted batch" in fresh.output
    assert len(await batch_ids(mesh)) == 2


async def test_ctrl_c_during_upload_then_rerun_gives_one_batch_and_every_essay_readable(mesh, tmp_path) -> None:
    from huleedu.content.v1 import content_pb2

    folder = essays_folder(tmp_path, n=3)
    for i in range(200):  # enough files for the upload to take a while
        (folder / "students" / f"Extra {i:03d}.txt").write_text(f"Another essay, number {i}. " * (200 + i))
    args = ["run", str(folder), "--budget", "10", "--runs-dir", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    # Ctrl-C once the first essay is stored, then a rerun's Ctrl-C wherever it lands
    code, output = await interrupted(mesh, args, once=lambda pid: stored_blobs(mesh) > 0)
    assert code == 130, output
    assert "run the same command again" in output.lower() or "keeps running" in output, output
    code, output = await interrupted(mesh, args, after=1.0)
    assert code in (0, 130), output
    assert "Traceback" not in output
    result = await runner(mesh, *args)
    assert result.code == 0, result.output
    assert len(await batch_ids(mesh)) == 1
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "students").iterdir()]
    found = await mesh.content.FindByChecksum(content_pb2.FindByChecksumRequest(sha256s=digests))
    assert len(found.matches) == len(digests)
    got = await mesh.content.BatchGet(
        content_pb2.BatchGetRequest(storage_ids=[m.storage_id for m in found.matches][:1000])
    )
    assert len(got.items) + len(got.deferred_storage_ids) == len(digests)


async def test_numbers_are_checked_before_anything_is_sent(mesh, tmp_path) -> None:
    folder = essays_folder(tmp_path, n=3)
    for option, value in (("--timeout", "-5"), ("--budget", "-1"), ("--temperature", "3")):
        result = await runner(mesh, "run", str(folder), option, value, "--cache-dir", str(tmp_path / "cache"))
        assert result.code == 2 and option in result.output, result.output
    assert await batch_ids(mesh) == []
    listed = await runner(mesh, "batches", "--state", "sleeping")
    assert listed.code == 2 and "unknown state" in listed.output
    # errors say what the runner was doing and which command helps, never an RPC's name
    unknown = await runner(mesh, "status", "f" * 32)
    assert unknown.code == 2, unknown.output
    assert f"reading batch {'f' * 32} failed: not found" in unknown.stderr
    assert "`cj-runner batches` lists the batches you may see" in unknown.stderr and "ListBatches" not in unknown.output


async def test_content_service_gone_mid_upload_stops_the_run_at_once_with_one_message(mesh, tmp_path) -> None:
    folder = essays_folder(tmp_path, n=3)
    for i in range(3000):  # small files: they go up in BatchUpload calls of 200
        (folder / "students" / f"Extra {i:04d}.txt").write_text(f"Another essay, number {i}. " * (200 + i // 6))
    process = await asyncio.create_subprocess_exec(
        tool("cj-runner"), "--content-address", mesh.content_app.address, "--cj-address", mesh.cj_app.address,
        "run", str(folder), "--cache-dir", str(tmp_path / "cache"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await until(lambda: stored_blobs(mesh) > 0)  # stop the Content Service once the upload is under way
    await mesh.content_app.stop()
    started = asyncio.get_running_loop().time()
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    output = stdout.decode() + stderr.decode()
    assert process.returncode == 3, output
    assert asyncio.get_running_loop().time() - started < 15
    assert output.count("stopped answering") == 1 and mesh.content_app.address in output
    assert "Traceback" not in output


async def test_swapped_addresses_are_named_by_the_preflight(mesh, tmp_path) -> None:
    result = await run(
        tool("cj-runner"), "--content-address", mesh.cj_app.address, "--cj-address", mesh.content_app.address,
        "run", str(essays_folder(tmp_path, n=3)), "--cache-dir", str(tmp_path / "cache"), timeout=60,
    )  # fmt: skip
    assert result.code == 3, result.output
    assert "swap --content-address and --cj-address" in result.output


def without_times_and_ids(value):
    """A results.json with what differs between two runs of the same request left out."""
    if isinstance(value, dict):
        return {k: without_times_and_ids(v) for k, v in value.items()
                if not (k.endswith(("_time", "_ms")) or k.endswith("_id") and k != "essay_id")}  # fmt: skip
    if isinstance(value, list):
        return [without_times_and_ids(v) for v in value]
    return value


async def test_the_same_seed_gives_the_same_results(mesh, tmp_path) -> None:
    await mesh.restart_cj(judge_provider="heuristic", batch_concurrency=8)
    await create_assignment(mesh, "eng5-seed")
    for i, grade in enumerate(["E-", "C-", "B", "A"]):
        await register_anchor(mesh, "eng5-seed", f"anchor_{i}", grade, f"Anchor text {grade}. " * (5 + 12 * i))
    folder = essays_folder(tmp_path, n=12)
    outputs = []
    for attempt in range(2):
        runs = tmp_path / f"runs{attempt}"
        result = await runner(mesh, "run", str(folder), "--assignment-id", "eng5-seed", "--seed", "7", "--new",
                              "--budget", "60", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
        assert result.code == 0, result.output
        (run_dir,) = runs.iterdir()
        outputs.append(json.loads((run_dir / "results.json").read_text()))
        assert json.loads((run_dir / "request.json").read_text())["seed"] == "7"
    assert without_times_and_ids(outputs[0]) == without_times_and_ids(outputs[1])


async def test_the_upload_cache_lives_in_the_users_cache_folder(mesh, tmp_path) -> None:
    folder = essays_folder(tmp_path, n=2)
    cache_home = tmp_path / "xdg-cache"
    created = await run(
        tool("cj-runner"), "--content-address", mesh.content_app.address, "--cj-address", mesh.cj_app.address,
        "admin", "create-assignment", "--assignment-id", "xdg", "--grade-scale", "eng5_np_legacy_9_step",
        "--prompt", str(folder / "prompt.md"), env={"XDG_CACHE_HOME": str(cache_home)},
    )  # fmt: skip
    assert created.code == 0, created.output
    (cached,) = (cache_home / "cj-runner").glob("uploads-*.json")
    assert len(json.loads(cached.read_text())) == 1


async def test_a_cj_service_that_cannot_use_its_content_service_is_named_by_the_preflight(mesh, tmp_path) -> None:
    from tests.conftest import start_cj

    lost = await start_cj(f"sqlite:///{tmp_path}/lost.db", "127.0.0.1:1")  # no Content Service there
    try:
        result = await run(
            tool("cj-runner"), "--content-address", mesh.content_app.address, "--cj-address", lost.address,
            "run", str(essays_folder(tmp_path, n=2)), "--cache-dir", str(tmp_path / "cache"), timeout=60,
        )  # fmt: skip
    finally:
        await lost.stop()
    assert result.code == 3, result.output
    assert f"cj-svc at {lost.address} is not serving" in result.stderr
    assert "--content-address" in result.stderr and "--content-token" in result.stderr


async def test_small_files_go_up_together_and_large_ones_stream(mesh, tmp_path) -> None:
    from prometheus_client import REGISTRY

    def calls(method: str) -> float:
        return sum(
            REGISTRY.get_sample_value(
                "grpc_server_started_total",
                {"grpc_type": kind, "grpc_service": "huleedu.content.v1.ContentService", "grpc_method": method},
            )
            or 0.0
            for kind in ("unary", "client_stream")
        )

    folder = essays_folder(tmp_path, n=6)
    (folder / "students" / "Long essay.txt").write_text("A long essay about one journey. " * 9000)  # 288 KB
    before = {method: calls(method) for method in ("BatchUpload", "Upload")}
    done = await runner(mesh, "run", str(folder), "--budget", "6", "--max-words", "60000", "--runs-dir", str(tmp_path / "runs"),
                        "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert done.code == 0, done.output
    assert "uploaded 8 file(s)" in done.stderr  # six essays, the long one, the prompt
    assert calls("BatchUpload") - before["BatchUpload"] == 1
    assert calls("Upload") - before["Upload"] == 1


async def test_the_grade_stop_options_travel_in_the_request_and_bad_ones_are_refused_first(mesh, tmp_path) -> None:
    await create_assignment(mesh, "eng5-g")
    for i, grade in enumerate(["E-", "C-", "A"]):
        await register_anchor(mesh, "eng5-g", f"anchor_{i}", grade, f"Anchor text {grade} " * (5 + 10 * i))
    folder = essays_folder(tmp_path)
    common = ["--assignment-id", "eng5-g", "--budget", "30", "--runs-dir", str(tmp_path / "runs"),
              "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    for option, value, says in (
        ("--decided-share", "1.5", "--decided-share must be more than 0 and at most 1, not 1.5"),
        ("--decided-probability", "0.3", "--decided-probability must be at least 0.5 and less than 1, not 0.3"),
    ):
        refused = await runner(mesh, "run", str(folder), *common, option, value)
        assert refused.code == 2 and says in refused.stderr, refused.output
        assert "uploaded" not in refused.output  # refused before anything was sent
    done = await runner(mesh, "run", str(folder), *common, "--decided-share", "0.5", "--decided-probability", "0.6")
    assert done.code == 0, done.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    request = json.loads((run_dir / "request.json").read_text())
    assert request["grade_stop"] == {"share": 0.5, "probability": 0.6, "off": False}
