"""`cj-runner`: inventory essay folders, upload them, submit batches, watch them, keep the results.

Exit codes: 0 done, 1 the run failed, 2 usage error or a refused request, 3 a service unreachable or
preflight failed, 4 timed out with partial results, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import grpc
import protovalidate
import typer
from huleedu.cj.v1 import admin_pb2, assessment_pb2
from huleedu.common.v1 import common_pb2
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from mesh_common.tls import TlsFiles
from mesh_common.tokens import secret
from mesh_common.violations import describe, violations_of
from runner import inventory as inv
from runner.client import KIND, Mesh, RunnerError, describe_rpc_error, storage_ids_for
from runner.results import as_dict, run_folder, write_run

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
admin = typer.Typer(help="Assignments, anchors and grade scales.", no_args_is_help=True)
app.add_typer(admin, name="admin")
console = Console(stderr=True)
out = Console()
PLACEHOLDER = "0" * 32  # dry-run storage ids: clearly not real


class Options:
    content_address = "127.0.0.1:50051"
    cj_address = "127.0.0.1:50052"
    token = ""
    tls = TlsFiles()


@app.callback()
def main(
    content_address: Annotated[str, typer.Option(envvar="CJ_RUNNER_CONTENT_ADDRESS")] = Options.content_address,
    cj_address: Annotated[str, typer.Option(envvar="CJ_RUNNER_CJ_ADDRESS")] = Options.cj_address,
    token: Annotated[str, typer.Option(envvar="CJ_RUNNER_TOKEN", help="bearer token, when the services need one")] = "",
    token_file: Annotated[
        str, typer.Option(envvar="CJ_RUNNER_TOKEN_FILE", help="file whose first line is the bearer token")
    ] = "",
    tls_ca: Annotated[str, typer.Option(envvar="CJ_RUNNER_TLS_CA", help="PEM CA of the services' certificates")] = "",
    tls_cert: Annotated[
        str, typer.Option(envvar="CJ_RUNNER_TLS_CERT", help="PEM client certificate (mutual TLS)")
    ] = "",
    tls_key: Annotated[str, typer.Option(envvar="CJ_RUNNER_TLS_KEY", help="PEM key of --tls-cert")] = "",
) -> None:
    try:
        token = secret(token, token_file, "--token")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    Options.content_address, Options.cj_address, Options.token = content_address, cj_address, token
    Options.tls = TlsFiles(tls_cert, tls_key, tls_ca)


# A refused request (fix it and run again) exits 2; a service that cannot be reached exits 3, as in
# `run`'s preflight; anything else 1.
REFUSED = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
})  # fmt: skip
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def exit_code_of(code: grpc.StatusCode) -> int:
    return 2 if code in REFUSED else 3 if code in UNREACHABLE else 1


class Interrupted:
    """What Ctrl-C means at the point a command has reached: the one line it prints then."""

    hint = ""


def command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run an async command; every failure becomes one clear message and its exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        Interrupted.hint = "interrupted; nothing was changed"
        try:
            asyncio.run(function(*args, **kwargs))
        except KeyboardInterrupt:
            console.print(f"[yellow]{Interrupted.hint}[/yellow]")
            raise typer.Exit(130) from None
        except RunnerError as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(error.exit_code) from None
        except grpc.aio.AioRpcError as error:
            console.print(f"[red]error:[/red] {describe_rpc_error(error, 'the call')}")
            raise typer.Exit(exit_code_of(error.code())) from None
        except protovalidate.ValidationError as error:
            console.print(f"[red]error:[/red] the request is invalid: {describe(violations_of(error))}")
            raise typer.Exit(2) from None

    return wrapper


async def connect() -> Mesh:
    try:
        return Mesh(Options.content_address, Options.cj_address, Options.token, Options.tls)
    except ValueError as error:  # unreadable or incomplete TLS files
        raise RunnerError(f"{error}; check --tls-ca, --tls-cert and --tls-key", 2) from None


def take_inventory(folder: Path) -> inv.Inventory:
    if not folder.is_dir():
        raise RunnerError(f"{folder} is not a folder of essays", 2)
    found = inv.take(folder)
    if found.collisions:
        clashes = "; ".join(f"{i}: {', '.join(p.name for p in ps)}" for i, ps in found.collisions.items())
        raise RunnerError(f"file names that give the same essay id: {clashes}; rename one of each", 2)
    if len(found.students) < 2:
        raise RunnerError(f"{folder} has {len(found.students)} student essay(s) ({', '.join(inv.SUPPORTED_SUFFIXES)}); "
                          "a batch needs at least two", 2)  # fmt: skip
    return found


def inventory_table(found: inv.Inventory) -> Table:
    table = Table(title=f"{found.root}: {len(found.students)} students, {len(found.anchors)} anchors")
    for column in ("role", "essay id", "file", "words", "sha256"):
        table.add_column(column)
    rows = [("prompt", found.prompt)] if found.prompt else []
    rows += [("student", s) for s in found.students] + [(f"anchor {a.grade}", a) for a in found.anchors]
    for role, item in rows:
        table.add_row(
            role,
            item.essay_id if role != "prompt" else "",
            item.path.name,
            str(len(item.text.split())),
            item.sha256[:12],
        )
    return table


# request ids of runs are uuid5 names in this namespace, of the request they identify
RUN_NAMESPACE = uuid.UUID("5d1a0c3e-7c2b-4f0e-9a51-3f6b8e2c9d47")


def same_run_request_id(request: assessment_pb2.SubmitBatchRequest) -> str:
    """The request id of a run: a name of everything the request asks for (the essays' storage ids,
    which follow from their bytes, the prompt, assignment, judge settings, budget, label), so that
    running the same folder again is the same request, which the service answers with the same batch."""
    body = assessment_pb2.SubmitBatchRequest()
    body.CopyFrom(request)
    body.request_id = ""
    return str(uuid.uuid5(RUN_NAMESPACE, body.SerializeToString(deterministic=True).hex()))


def build_request(
    found: inv.Inventory, ids: dict[str, str], label: str, assignment_id: str, new: bool = False, **options: Any
) -> assessment_pb2.SubmitBatchRequest:
    """The SubmitBatch request of a run; `new` gives it a fresh request id (a second batch)."""
    request = assessment_pb2.SubmitBatchRequest(
        batch_label=label,
        assignment_id=assignment_id,
        essays=[
            common_pb2.EssayRef(essay_id=s.essay_id, text_storage_id=ids[s.sha256], display_name=s.path.name)
            for s in found.students
        ],
    )
    if found.prompt is not None:
        request.student_prompt_ref.CopyFrom(
            common_pb2.StorageReference(
                kind=KIND["prompt"], storage_id=ids[found.prompt.sha256], path_hint=found.prompt.path.name
            )
        )
    if options.get("budget"):
        request.comparison_budget = options["budget"]
    if options.get("provider"):
        request.judge.provider = options["provider"]
    if options.get("model"):
        request.judge.model = options["model"]
    if options.get("temperature") is not None:
        request.judge.temperature = options["temperature"]
    if options.get("seed") is not None:
        request.seed = options["seed"]
    request.request_id = str(uuid.uuid4()) if new else same_run_request_id(request)
    protovalidate.validate(request)  # checked here before it is sent
    return request


@app.command()
def plan(folder: Path) -> None:
    """Inventory a folder with no network: students, anchors, prompt, unsupported files."""
    found = inv.take(folder) if folder.is_dir() else None
    if found is None:
        console.print(f"[red]error:[/red] {folder} is not a folder")
        raise typer.Exit(2)
    out.print(inventory_table(found))
    for path in found.unsupported:
        out.print(f"unsupported (skipped): {path.name} (supported: {', '.join(inv.SUPPORTED_SUFFIXES)})")
    for essay_id, paths in found.collisions.items():
        out.print(f"[red]collision:[/red] {', '.join(p.name for p in paths)} all become essay id {essay_id}")
    if found.collisions:
        raise typer.Exit(2)


@app.command("dry-run")
def dry_run(
    folder: Path,
    assignment_id: Annotated[str, typer.Option()] = "",
    label: Annotated[str, typer.Option()] = "",
) -> None:
    """Build and validate the exact SubmitBatch request, with placeholder storage ids; print it."""
    try:
        found = take_inventory(folder)
        items = found.students + ([found.prompt] if found.prompt else [])
        request = build_request(found, {i.sha256: PLACEHOLDER for i in items}, label or folder.name, assignment_id)
    except RunnerError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(error.exit_code) from None
    except protovalidate.ValidationError as error:
        console.print(f"[red]error:[/red] the request is invalid: {describe(violations_of(error))}")
        raise typer.Exit(2) from None
    out.print_json(json.dumps({"note": f"storage ids are placeholders ({PLACEHOLDER})", "request": as_dict(request)}))


@app.command()
@command
async def run(
    folder: Path,
    assignment_id: Annotated[str, typer.Option(help="empty: a guest run, ranking without grades")] = "",
    expected_grade_scale: Annotated[str, typer.Option()] = "",
    label: Annotated[str, typer.Option()] = "",
    budget: Annotated[int, typer.Option(help="maximum comparisons; 0: the service's default")] = 0,
    provider: Annotated[str, typer.Option(help="judge: heuristic, simulated, openai, anthropic")] = "",
    model: Annotated[str, typer.Option()] = "",
    temperature: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="reproducible batch: same folder, settings and seed give the same results (slower waves)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to watch before giving up (exit 4)")] = 3600,
    runs_dir: Annotated[Path, typer.Option()] = Path("runs"),
    cache_dir: Annotated[Path, typer.Option()] = Path(".cj-cache"),
    new: Annotated[
        bool, typer.Option("--new", help="submit a fresh batch even if this folder's run was submitted before")
    ] = False,
    cancel_on_interrupt: Annotated[
        bool, typer.Option("--cancel-on-interrupt", help="Ctrl-C cancels the batch instead of leaving it running")
    ] = False,
) -> None:
    """Preflight, upload what is missing, submit, watch, and write the run folder.

    Running the same folder again (same essays, prompt, assignment and judge settings) attaches to
    the batch submitted before instead of paying for a second one; --new submits a fresh batch."""
    if timeout <= 0:
        raise RunnerError(f"--timeout must be more than 0 seconds, not {timeout:g}", 2)
    if budget < 0:
        raise RunnerError(f"--budget must be 0 (the service's default) or more, not {budget}", 2)
    if seed is not None and not 0 <= seed < 2**63:
        raise RunnerError(f"--seed must be between 0 and {2**63 - 1}, not {seed}", 2)
    if temperature is not None and not 0 <= temperature <= 2:
        raise RunnerError(f"--temperature must be between 0 and 2, not {temperature:g}", 2)
    found = take_inventory(folder)
    mesh = await connect()
    try:
        await mesh.preflight(assignment_id, expected_grade_scale)
        Interrupted.hint = (
            "interrupted while uploading; nothing is half-stored. Run the same command again to go on "
            "(files already stored are not sent again)"
        )
        items = [(s, KIND["student"]) for s in found.students] + (
            [(found.prompt, KIND["prompt"])] if found.prompt else []
        )
        with Progress(
            TextColumn("uploading"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
        ) as bar:
            task = bar.add_task("upload", total=len(items))
            ids, uploaded, failures = await storage_ids_for(
                mesh, items, cache_dir, progress=lambda _: bar.advance(task)
            )
        for path, reason in failures.items():
            console.print(f"[red]upload failed:[/red] {path}: {reason}")
        if failures:
            raise RunnerError(f"{len(failures)} file(s) could not be uploaded; fix them and run again")
        console.print(f"uploaded {uploaded} file(s); {len(items) - uploaded} already stored")
        request = build_request(found, ids, label or folder.name, assignment_id, new,
                                budget=budget, provider=provider, model=model, temperature=temperature,
                                seed=seed)  # fmt: skip
        Interrupted.hint = "interrupted before the batch was submitted; run the same command again"
        submitted = await mesh.assessment.SubmitBatch(request, metadata=mesh.metadata)
        batch = submitted.batch
        if submitted.created:
            console.print(f"submitted batch {batch.batch_id}")
        else:
            state = assessment_pb2.BatchState.Name(batch.state).removeprefix("BATCH_STATE_")
            console.print(f"attached to batch {batch.batch_id} ({state}), submitted by an earlier run of this folder")
            if batch.state in (assessment_pb2.BATCH_STATE_CANCELLED, assessment_pb2.BATCH_STATE_FAILED):
                raise RunnerError(
                    f"batch {batch.batch_id} of an earlier run of this folder ended {state}: {batch.state_reason}; "
                    "run with --new for a fresh batch"
                )
        await finish(mesh, batch, request, runs_dir, found.known_grades, timeout, cancel_on_interrupt,
                     f"uploaded {uploaded}")  # fmt: skip
    finally:
        await mesh.close()


async def finish(
    mesh: Mesh,
    batch: assessment_pb2.Batch,
    request: assessment_pb2.SubmitBatchRequest | None,
    runs_dir: Path,
    known_grades: Path | None,
    timeout: float,
    cancel_on_interrupt: bool,
    note: str = "",
) -> None:
    """Watch a batch to its end (or the timeout) and write its run folder."""
    Interrupted.hint = (
        f"interrupted; batch {batch.batch_id} keeps running. Watch it again with `cj-runner attach "
        f"{batch.batch_id}` (or run the same command again); stop it with `cj-runner cancel {batch.batch_id}`"
    )
    try:
        final, timed_out = await watch(mesh, batch, timeout)
    except asyncio.CancelledError:
        if cancel_on_interrupt:
            cancelling = mesh.assessment.CancelBatch(
                assessment_pb2.CancelBatchRequest(
                    request_id=str(uuid.uuid4()), batch_id=batch.batch_id, reason="cancelled by Ctrl-C in cj-runner"
                ),
                metadata=mesh.metadata,
                timeout=10,
            )
            await asyncio.shield(asyncio.ensure_future(cancelling))
            Interrupted.hint = f"interrupted; batch {batch.batch_id} was cancelled"
        raise
    results = (
        await mesh.assessment.GetBatchResults(assessment_pb2.GetBatchResultsRequest(batch_id=batch.batch_id))
    ).results
    comparisons = await all_comparisons(mesh, batch.batch_id)
    folder_out = run_folder(runs_dir, batch.batch_id)
    write_run(folder_out, request, results, comparisons, known_grades)
    with (folder_out / "run.log").open("a") as log:
        log.write(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} batch {batch.batch_id} state "
            f"{assessment_pb2.BatchState.Name(final.state)} reason {final.state_reason!r}; {note}\n"
        )
    out.print(results_table(results))
    out.print(f"run folder: {folder_out}")
    if timed_out:
        raise RunnerError(
            f"watching timed out after {timeout:.0f} s; partial results in {folder_out}; "
            f"`cj-runner attach {batch.batch_id}` completes them",
            4,
        )
    if final.state != assessment_pb2.BATCH_STATE_COMPLETED:
        raise RunnerError(
            f"batch {batch.batch_id} ended {assessment_pb2.BatchState.Name(final.state)}: {final.state_reason}"
        )


@app.command()
@command
async def attach(
    batch_id: str,
    runs_dir: Annotated[Path, typer.Option(help="where the batch's run folder is (or is made)")] = Path("runs"),
    timeout: Annotated[float, typer.Option(help="seconds to watch before giving up (exit 4)")] = 3600,
) -> None:
    """Watch a batch (again) to its end and (re)write its run folder, e.g. after Ctrl-C or --timeout."""
    if timeout <= 0:
        raise RunnerError("--timeout must be more than 0 seconds", 2)
    mesh = await connect()
    try:
        batch = (
            await mesh.assessment.GetBatch(assessment_pb2.GetBatchRequest(batch_id=batch_id), metadata=mesh.metadata)
        ).batch
        earlier = run_folder(runs_dir, batch_id)
        known = earlier / "known_grades.csv"
        await finish(mesh, batch, None, runs_dir, known if known.exists() else None, timeout, False, "attached")
    finally:
        await mesh.close()


@app.command()
@command
async def batches(
    state: Annotated[str, typer.Option(help="only batches in this state, e.g. running, completed")] = "",
) -> None:
    """The batches you may see: state, label, progress, created."""
    states = [n.removeprefix("BATCH_STATE_").lower() for n in assessment_pb2.BatchState.keys()[1:]]
    if state and state.lower() not in states:
        raise RunnerError(f"unknown state {state!r}; use one of {', '.join(states)}", 2)
    wanted = assessment_pb2.BatchState.Value(f"BATCH_STATE_{state.upper()}") if state else 0
    mesh = await connect()
    try:
        # Batch ids whole, never cut: they are typed back into `attach`, `status` and `cancel`.
        table = Table(Column("batch", no_wrap=True, min_width=32), "state", "label", "progress", "created")
        token = ""
        while True:
            page = await mesh.assessment.ListBatches(
                assessment_pb2.ListBatchesRequest(page_size=200, page_token=token, state=wanted),
                metadata=mesh.metadata,
            )
            for b in page.batches:
                done = b.progress.comparisons_done + b.progress.comparisons_failed
                table.add_row(
                    b.batch_id, assessment_pb2.BatchState.Name(b.state).removeprefix("BATCH_STATE_").lower(),
                    b.batch_label, f"{done}/{b.progress.comparison_budget}",
                    b.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M"),
                )  # fmt: skip
            token = page.next_page_token
            if not token:
                break
        out.print(table)
    finally:
        await mesh.close()


async def watch(mesh: Mesh, batch: assessment_pb2.Batch, timeout: float) -> tuple[assessment_pb2.Batch, bool]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("judging", total=batch.progress.comparison_budget or None)
        try:
            async with asyncio.timeout(timeout):
                async for update in mesh.assessment.WatchBatch(
                    assessment_pb2.WatchBatchRequest(batch_id=batch.batch_id), metadata=mesh.metadata
                ):
                    batch = update.batch
                    p = batch.progress
                    state = assessment_pb2.BatchState.Name(batch.state).removeprefix("BATCH_STATE_").lower()
                    bar.update(task, completed=p.comparisons_done + p.comparisons_failed,
                               description=f"{state}, wave {p.wave}, SSR {p.current_ssr:.2f}")  # fmt: skip
        except TimeoutError:
            return batch, True
    return batch, False


async def all_comparisons(mesh: Mesh, batch_id: str) -> list:
    rows, token = [], ""
    while True:
        page = await mesh.assessment.ListComparisons(
            assessment_pb2.ListComparisonsRequest(batch_id=batch_id, page_size=1000, page_token=token),
            metadata=mesh.metadata,
        )
        rows += list(page.comparisons)
        token = page.next_page_token
        if not token:
            return rows


def results_table(results: assessment_pb2.BatchResults) -> Table:
    table = Table(title=f"{results.batch.batch_label}: SSR {results.scale_separation_reliability:.2f}")
    for column in ("rank", "essay", "score", "SE", "grade", "P", "confidence"):
        table.add_column(column)
    for e in results.essays:
        top = max((g.probability for g in e.projection.probabilities), default=0.0)
        label = assessment_pb2.ConfidenceLabel.Name(e.projection.confidence_label).removeprefix("CONFIDENCE_LABEL_")
        grade = f"{e.known_grade} (anchor)" if e.is_anchor else e.projection.grade or "-"
        table.add_row(str(e.rank), e.essay_id, f"{e.score:.2f}", f"{e.standard_error:.2f}", grade,
                      f"{top:.2f}" if top else "", label if e.projection.grade else "")  # fmt: skip
    return table


@app.command()
@command
async def status(batch_id: str) -> None:
    """A batch's state and progress."""
    mesh = await connect()
    try:
        batch = (
            await mesh.assessment.GetBatch(assessment_pb2.GetBatchRequest(batch_id=batch_id), metadata=mesh.metadata)
        ).batch
        out.print_json(json.dumps(as_dict(batch)))
    finally:
        await mesh.close()


@app.command()
@command
async def results(batch_id: str, format: Annotated[str, typer.Option(help="table, json or csv")] = "table") -> None:  # noqa: A002
    """A batch's results."""
    mesh = await connect()
    try:
        found = (
            await mesh.assessment.GetBatchResults(
                assessment_pb2.GetBatchResultsRequest(batch_id=batch_id), metadata=mesh.metadata
            )
        ).results
    finally:
        await mesh.close()
    if format == "json":
        out.print_json(json.dumps(as_dict(found)))
    elif format == "csv":
        print("rank,essay_id,score,standard_error,grade")
        for e in found.essays:
            print(
                f"{e.rank},{e.essay_id},{e.score:.4f},{e.standard_error:.4f},{e.known_grade if e.is_anchor else e.projection.grade}"
            )
    elif format == "table":
        out.print(results_table(found))
    else:
        raise RunnerError(f"unknown format {format!r}; use table, json or csv", 2)


@app.command()
def report(
    run_dir: Path,
    known_grades: Annotated[
        Path | None, typer.Option(help="CSV of essay_id (or file) and grade; default: known_grades.csv in RUN_DIR")
    ] = None,
) -> None:
    """Agreement of a finished run with its anchors and known grades: writes report.md and plot.png."""
    from runner import report as run_report  # scipy and matplotlib: loaded only for this command

    try:
        made = run_report.write(run_dir, known_grades)
    except (FileNotFoundError, ValueError, KeyError) as error:
        console.print(f"[red]error:[/red] cannot report on {run_dir}: {error}")
        raise typer.Exit(2) from None
    out.print(Markdown(run_report.render(made)))
    out.print(f"wrote {run_dir / 'report.md'} and {run_dir / 'plot.png'}")


@app.command()
@command
async def cancel(batch_id: str, reason: Annotated[str, typer.Option()] = "cancelled from cj-runner") -> None:
    """Stop a batch."""
    mesh = await connect()
    try:
        batch = (
            await mesh.assessment.CancelBatch(
                assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=batch_id, reason=reason),
                metadata=mesh.metadata,
            )
        ).batch
        out.print(f"batch {batch.batch_id}: {assessment_pb2.BatchState.Name(batch.state)}")
    finally:
        await mesh.close()


@admin.command("create-assignment")
@command
async def create_assignment(
    assignment_id: Annotated[str, typer.Option()],
    grade_scale: Annotated[str, typer.Option()],
    course_code: Annotated[str, typer.Option()] = "",
    instructions: Annotated[str, typer.Option()] = "",
    prompt: Annotated[Path | None, typer.Option(help="student prompt file, uploaded and linked")] = None,
    rubric: Annotated[Path | None, typer.Option(help="judge rubric file, uploaded and linked")] = None,
    cache_dir: Annotated[Path, typer.Option()] = Path(".cj-cache"),
) -> None:
    """Create an assignment (assessment instructions) with its prompt and rubric."""
    mesh = await connect()
    try:
        items = {kind: inv.read_item(path) for kind, path in (("prompt", prompt), ("rubric", rubric)) if path}
        files = [(item, KIND[kind]) for kind, item in items.items()]
        ids, _, failures = await storage_ids_for(mesh, files, cache_dir) if files else ({}, 0, {})
        if failures:
            raise RunnerError("; ".join(failures.values()))
        request = admin_pb2.CreateAssignmentRequest(
            request_id=str(uuid.uuid4()), assignment_id=assignment_id, grade_scale=grade_scale, course_code=course_code,
            instructions=instructions,
            student_prompt_storage_id=ids[items["prompt"].sha256] if "prompt" in items else "",
            judge_rubric_storage_id=ids[items["rubric"].sha256] if "rubric" in items else "",
        )  # fmt: skip
        created = (await mesh.admin.CreateAssignment(request, metadata=mesh.metadata)).assignment
        out.print_json(json.dumps(as_dict(created)))
    finally:
        await mesh.close()


@admin.command("show-assignment")
@command
async def show_assignment(assignment_id: str) -> None:
    mesh = await connect()
    try:
        found = await mesh.admin.GetAssignment(
            admin_pb2.GetAssignmentRequest(assignment_id=assignment_id), metadata=mesh.metadata
        )
        out.print_json(json.dumps(as_dict(found.assignment)))
    finally:
        await mesh.close()


@admin.command("list-assignments")
@command
async def list_assignments() -> None:
    mesh = await connect()
    try:
        token, table = "", Table("assignment", "scale", "course")
        while True:
            page = await mesh.admin.ListAssignments(
                admin_pb2.ListAssignmentsRequest(page_token=token), metadata=mesh.metadata
            )
            for a in page.assignments:
                table.add_row(a.assignment_id, a.grade_scale, a.course_code)
            token = page.next_page_token
            if not token:
                break
        out.print(table)
    finally:
        await mesh.close()


@admin.command("register-anchors")
@command
async def register_anchors(
    folder: Path,
    assignment_id: Annotated[str, typer.Option()],
    cache_dir: Annotated[Path, typer.Option()] = Path(".cj-cache"),
) -> None:
    """Register the anchors of FOLDER/anchors (grades from anchors.csv or file names); idempotent."""
    found = inv.take(folder)
    if not found.anchors:
        raise RunnerError(f"{folder}/anchors holds no anchor essays ({', '.join(inv.SUPPORTED_SUFFIXES)})", 2)
    mesh = await connect()
    try:
        ids, uploaded, failures = await storage_ids_for(mesh, [(a, KIND["anchor"]) for a in found.anchors], cache_dir)
        if failures:
            raise RunnerError("; ".join(failures.values()))
        for anchor in found.anchors:
            response = await mesh.admin.RegisterAnchor(
                admin_pb2.RegisterAnchorRequest(request_id=str(uuid.uuid4()), assignment_id=assignment_id,
                                                label=anchor.essay_id, grade=anchor.grade, storage_id=ids[anchor.sha256]),
                metadata=mesh.metadata,
            )  # fmt: skip
            out.print(f"{'registered' if response.created else 'updated'} {anchor.essay_id} ({anchor.grade})")
    finally:
        await mesh.close()


@admin.command("list-anchors")
@command
async def list_anchors(assignment_id: str) -> None:
    mesh = await connect()
    try:
        anchors = (
            await mesh.admin.ListAnchors(
                admin_pb2.ListAnchorsRequest(assignment_id=assignment_id), metadata=mesh.metadata
            )
        ).anchors
        table = Table("label", "grade", "storage id")
        for a in anchors:
            table.add_row(a.label, a.grade, a.storage_id)
        out.print(table)
    finally:
        await mesh.close()


@admin.command("list-scales")
@command
async def list_scales() -> None:
    mesh = await connect()
    try:
        scales = (
            await mesh.admin.ListGradeScales(admin_pb2.ListGradeScalesRequest(), metadata=mesh.metadata)
        ).grade_scales
        table = Table("scale", "grades (low to high)", "below lowest")
        for s in scales:
            table.add_row(s.key, " ".join(g.label for g in s.grades), s.below_lowest_grade or "-")
        out.print(table)
    finally:
        await mesh.close()
