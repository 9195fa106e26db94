"""`cj-runner`: inventory essay folders, upload them, submit batches, watch them, keep the results.

Exit codes: 0 done, 1 the run failed, 2 usage error or a refused request, 3 a service unreachable or
preflight failed, 4 timed out with partial results, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from mesh_common.pricing import DEFAULT_MODELS, PriceError, PriceTable
from mesh_common.tls import TlsFiles
from mesh_common.tokens import secret
from runner import inventory as inv
from runner.client import (
    BATCH_STATES,
    PROVIDERS,
    Batch,
    BatchSpec,
    EssaySpec,
    MeshClient,
    Results,
    RunnerError,
    request_document,
)
from runner.entry import NOTHING_CHANGED
from runner.estimate import DEFAULT_RELIABILITY, Estimate, dollars, estimate
from runner.results import run_folder, write_run

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
admin = typer.Typer(help="Assignments, anchors and grade scales.", no_args_is_help=True)
app.add_typer(admin, name="admin")
console = Console(stderr=True)
out = Console()
PLACEHOLDER = "0" * 32  # dry-run storage ids: clearly not real


# `--provider`'s choices: the contract's judge providers, by name.
Provider = enum.StrEnum("Provider", {name: name for name in PROVIDERS})


def say(message: str) -> None:
    """A line for the user (on stderr), never broken by the terminal's width, so it can be searched."""
    console.print(message, soft_wrap=True, highlight=False)


def say_error(message: str) -> None:
    say(f"[red]error:[/red] {message}")


class Options:
    content_address = "127.0.0.1:50051"
    cj_address = "127.0.0.1:50052"
    token = ""
    tls = TlsFiles()


@app.callback()
def main(
    content_address: Annotated[
        str,
        typer.Option(
            envvar="CJ_RUNNER_CONTENT_ADDRESS",
            help="host:port of the Content Service; several replicas: host:port,host:port or dns:///name:port",
        ),
    ] = Options.content_address,
    cj_address: Annotated[
        str,
        typer.Option(
            envvar="CJ_RUNNER_CJ_ADDRESS",
            help="host:port of the CJ Service; several replicas: host:port,host:port or dns:///name:port",
        ),
    ] = Options.cj_address,
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


class Interrupted:
    """What Ctrl-C means at the point a command has reached: the one line it prints then."""

    hint = ""


def command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run an async command; every failure becomes one clear message and its exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        Interrupted.hint = NOTHING_CHANGED
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is the command's to handle
        try:
            asyncio.run(function(*args, **kwargs))
        except KeyboardInterrupt:
            console.print(f"[yellow]{Interrupted.hint}[/yellow]")
            raise typer.Exit(130) from None
        except RunnerError as error:
            say_error(str(error))
            raise typer.Exit(error.exit_code) from None

    return wrapper


def connect() -> MeshClient:
    return MeshClient(Options.content_address, Options.cj_address, Options.token, Options.tls)


def user_cache_dir() -> Path:
    """The user's cache folder (XDG), so the upload cache follows the user, not the current folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cj-runner"


DEFAULT_CACHE = user_cache_dir()
Folder = Annotated[
    Path, typer.Argument(help="a folder of essays: students/ (or the essays themselves), anchors/, prompt.md")
]
BatchId = Annotated[str, typer.Argument(help="a batch's id (32 hex characters), as `cj-runner batches` lists it")]
AssignmentId = Annotated[str, typer.Argument(help="an assignment's id, as `cj-runner admin list-assignments` lists it")]
RunsDir = Annotated[Path, typer.Option(help="where run folders are written")]
CacheDir = Annotated[
    Path, typer.Option(help="where the runner remembers what it uploaded (one file per Content Service)")
]
MaxWords = Annotated[
    int, typer.Option("--max-words", min=1, help="refuse essays longer than this many words (they cost the judge most)")
]
Budget = Annotated[int, typer.Option(help="maximum comparisons; 0: the service's default")]
ProviderOption = Annotated[Provider | None, typer.Option("--provider", help="the judge; default: the service's")]
Model = Annotated[str, typer.Option(help="the judge's model; default: the provider's default")]
PriceTableFile = Annotated[
    Path | None, typer.Option(help="TOML price table (US dollars per million tokens); default: the shipped one")
]
TargetReliability = Annotated[
    float | None,
    typer.Option(help="stop once the scores' reliability (SSR) reaches this, 0.5 to 0.99 (default 0.9)"),
]
BatchApi = Annotated[
    bool,
    typer.Option("--batch-api", help="each wave as one job of the provider's batch API: about half the price, "
                 "answered within the provider's window (up to a day)"),
]  # fmt: skip
AllowDuplicates = Annotated[
    bool, typer.Option("--allow-duplicates", help="accept student essays with the same text (refused by default)")
]


def take_inventory(
    folder: Path, max_words: int = inv.DEFAULT_MAX_WORDS, allow_duplicates: bool = False, least_students: int = 2
) -> inv.Inventory:
    """The folder's inventory, its notes said; RunnerError (exit 2) naming every file that must be fixed."""
    if not folder.is_dir():
        raise RunnerError(f"{folder} is not a folder of essays", 2)
    found = inv.take(folder, max_words, allow_duplicates)
    check_inventory(found, least_students)
    return found


def check_inventory(found: inv.Inventory, least_students: int = 2) -> None:
    """Say what was converted or skipped; RunnerError (exit 2) naming every file that must be fixed."""
    folder = found.root
    for item in found.converted:
        say(f"note: {item.path.name} is not UTF-8; read as {item.encoding}")
    for path, why in found.skipped.items():
        say(f"skipped: {path.relative_to(folder)}: {why}")
    problems = [f"{path.relative_to(folder)} {why}" for path, why in found.refused.items()]
    problems += [
        f"{', '.join(p.name for p in ps)} all become essay id {i}; rename one" for i, ps in found.collisions.items()
    ]
    if problems:
        raise RunnerError(f"{len(problems)} problem(s) in {folder}, nothing was sent:\n  " + "\n  ".join(problems), 2)
    if len(found.students) < least_students:
        raise RunnerError(f"{folder} has {len(found.students)} student essay(s) ({', '.join(inv.SUPPORTED_SUFFIXES)}); "
                          f"a batch needs at least {least_students}", 2)  # fmt: skip


def inventory_table(found: inv.Inventory) -> Table:
    table = Table(title=f"{found.root}: {len(found.students)} students, {len(found.anchors)} anchors")
    table.add_column("role")
    # ids whole (they are what results name); the file names wrap instead
    table.add_column("essay id", no_wrap=True, min_width=max((len(i.essay_id) for i in found.items), default=8))
    table.add_column("file", overflow="fold")
    table.add_column("words", justify="right")
    table.add_column("encoding")
    rows = [("prompt", found.prompt)] if found.prompt else []
    rows += [("student", s) for s in found.students] + [(f"anchor {a.grade}", a) for a in found.anchors]
    for role, item in rows:
        essay_id = item.essay_id if role != "prompt" else ""
        refused = item.path in found.refused
        table.add_row(role + (" (refused)" if refused else ""), essay_id, item.path.name, f"{item.words:,}",
                      item.encoding, style="red" if refused else None)  # fmt: skip
    return table


RUBRIC_NAMES = ("rubric.md", "rubric.txt")


def cost_estimate(
    found: inv.Inventory,
    budget: int,
    provider: Provider | None,
    model: str,
    price_table: Path | None,
    batch_api: bool = False,
    anchors: int | None = None,
    instructions: str = "",
    reliability: float | None = None,
) -> tuple[Estimate, str]:
    """The run's estimate (see runner.estimate) and what it was priced for, in words. `anchors`: how
    many anchors the batch takes from its assignment (of the students' mean length); None (no
    network): the folder's anchors. The prompt, a rubric.md beside it and the assignment's
    `instructions` are sent with every comparison."""
    rubric_words = sum(len(p.read_text(errors="replace").split()) for p in (found.root / n for n in RUBRIC_NAMES)
                       if p.is_file())  # fmt: skip
    shared = (found.prompt.words if found.prompt else 0) + rubric_words + len(instructions.split())
    words = [e.words for e in found.students]
    if anchors is None:
        words += [e.words for e in found.anchors]
    elif words:
        words += [round(sum(words) / len(words))] * anchors
    if reliability is not None and not 0.5 <= reliability <= 0.99:
        raise RunnerError(f"--target-reliability must be from 0.5 to 0.99, not {reliability:g}", 2)
    shape = {"reliability": reliability or DEFAULT_RELIABILITY}
    if provider is None:
        return estimate(words, shared, budget, None, **shape), "no price: name the judge with --provider (and --model)"
    chosen = model or DEFAULT_MODELS.get(provider.value, "")
    try:
        table = PriceTable.load(price_table or "")
    except PriceError as error:
        raise RunnerError(str(error), 2) from None
    price = table.price(provider.value, chosen)
    named = f"{provider.value} {chosen}".strip()
    if price is None:
        return estimate(words, shared, budget, None, **shape), f"no price for {named} in {table.source}; add it there"
    return estimate(words, shared, budget, price, batch=batch_api, **shape), f"priced for {named}" + (
        " through its batch API" if batch_api else ""
    )


def confirm_cost(expected: float, max_cost: float) -> None:
    """Ask before a run estimated above --max-cost; refuse when there is no one to ask."""
    question = f"the estimate ({dollars(expected)}) is above --max-cost {dollars(max_cost)}; run anyway?"
    if not sys.stdin.isatty():
        raise RunnerError(f"{question.removesuffix('; run anyway?')}: nothing was sent. Raise --max-cost, "
                          f"lower --budget, or add --yes to run (the batch stops at {dollars(max_cost)})", 2)  # fmt: skip
    if not typer.confirm(question, err=True):
        raise RunnerError("nothing was sent", 1)


def estimate_line(found: Estimate, priced_for: str) -> str:
    cost = (
        f"~{dollars(found.cost_usd)} (at most {dollars(found.most_cost_usd)}), {priced_for}"
        if found.cost_usd is not None and found.most_cost_usd is not None
        else priced_for
    )
    return (
        f"estimate: {found.essays} essays, ~{found.comparisons:,} comparisons (at most {found.most_comparisons:,}, "
        f"the budget), ~{found.tokens_in:,} input and ~{found.tokens_out:,} output tokens; {cost}"
    )


def batch_spec(found: inv.Inventory, ids: dict[str, str], label: str, assignment_id: str, **options: Any) -> BatchSpec:
    """What a run of `found` asks for, its files stored under `ids` (sha256 -> storage id)."""
    return BatchSpec(
        label=label,
        assignment_id=assignment_id,
        essays=tuple(EssaySpec(s.essay_id, ids[s.sha256], s.display_name) for s in found.students),
        prompt_storage_id=ids[found.prompt.sha256] if found.prompt else "",
        prompt_name=found.prompt.path.name if found.prompt else "",
        **options,
    )


@app.command(epilog="Example: cj-runner plan essays/class-9b")
def plan(
    folder: Folder,
    budget: Budget = 0,
    provider: ProviderOption = None,
    model: Model = "",
    batch_api: BatchApi = False,
    target_reliability: TargetReliability = None,
    price_table: PriceTableFile = None,
    max_words: MaxWords = inv.DEFAULT_MAX_WORDS,
    allow_duplicates: AllowDuplicates = False,
) -> None:
    """Inventory a folder with no network: students, anchors, prompt, what is skipped and what must
    be fixed; and what a run would cost."""
    if not folder.is_dir():
        say_error(f"{folder} is not a folder")
        raise typer.Exit(2)
    found = inv.take(folder, max_words, allow_duplicates)
    out.print(inventory_table(found))
    try:
        check_inventory(found, least_students=0)
        expected = cost_estimate(found, budget, provider, model, price_table, batch_api, reliability=target_reliability)
        out.print(estimate_line(*expected), soft_wrap=True)
    except RunnerError as error:
        say_error(str(error))
        raise typer.Exit(error.exit_code) from None


@app.command("dry-run", epilog="Example: cj-runner dry-run essays/class-9b --assignment-id eng5")
def dry_run(
    folder: Folder,
    assignment_id: Annotated[str, typer.Option(help="the assignment the run would be graded against")] = "",
    label: Annotated[str, typer.Option(help="the batch's label; default: the folder's name")] = "",
    budget: Budget = 0,
    provider: ProviderOption = None,
    model: Model = "",
    batch_api: BatchApi = False,
    target_reliability: TargetReliability = None,
    price_table: PriceTableFile = None,
    max_words: MaxWords = inv.DEFAULT_MAX_WORDS,
    allow_duplicates: AllowDuplicates = False,
) -> None:
    """Build and validate the exact request `run` would send, with placeholder storage ids; print it
    with what the run would cost."""
    try:
        found = take_inventory(folder, max_words, allow_duplicates)
        items = found.students + ([found.prompt] if found.prompt else [])
        spec = batch_spec(found, {i.sha256: PLACEHOLDER for i in items}, label or folder.name, assignment_id,
                          budget=budget, provider=provider.value if provider else "", model=model,
                          batch_api=batch_api, target_reliability=target_reliability)  # fmt: skip
        request = request_document(spec)
        expected, priced_for = cost_estimate(found, budget, provider, model, price_table, batch_api,
                                             reliability=target_reliability)  # fmt: skip
    except RunnerError as error:
        say_error(str(error))
        raise typer.Exit(error.exit_code) from None
    out.print_json(
        json.dumps(
            {"note": f"storage ids are placeholders ({PLACEHOLDER})", "request": request,
             "estimate": {**dataclasses.asdict(expected), "priced_for": priced_for}}
        )
    )  # fmt: skip


@app.command(epilog="Example: cj-runner run essays/class-9b --assignment-id eng5 --budget 400 --seed 7")
@command
async def run(
    folder: Folder,
    assignment_id: Annotated[str, typer.Option(help="empty: a guest run, ranking without grades")] = "",
    expected_grade_scale: Annotated[
        str, typer.Option(help="stop unless the assignment uses this grade scale (a check, not a setting)")
    ] = "",
    label: Annotated[str, typer.Option(help="the batch's label; default: the folder's name")] = "",
    budget: Budget = 0,
    provider: ProviderOption = None,
    model: Model = "",
    temperature: Annotated[float | None, typer.Option(help="the judge's temperature, 0 to 2")] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="reproducible batch: same folder, settings and seed give the same results (slower waves)"),
    ] = None,
    decided_share: Annotated[
        float | None,
        typer.Option(help="with an assignment: stop once this share of students hold a grade (default 0.9)"),
    ] = None,
    decided_probability: Annotated[
        float | None,
        typer.Option(help="...with at least this probability (default 0.8)"),
    ] = None,
    grade_stop: Annotated[
        bool, typer.Option("--grade-stop/--no-grade-stop", help="stop once grades are decided (see above)")
    ] = True,
    target_reliability: TargetReliability = None,
    timeout: Annotated[float, typer.Option(help="seconds to watch before giving up (exit 4)")] = 3600,
    runs_dir: RunsDir = Path("runs"),
    cache_dir: CacheDir = DEFAULT_CACHE,
    new: Annotated[
        bool, typer.Option("--new", help="submit a fresh batch even if this folder's run was submitted before")
    ] = False,
    cancel_on_interrupt: Annotated[
        bool, typer.Option("--cancel-on-interrupt", help="Ctrl-C cancels the batch instead of leaving it running")
    ] = False,
    max_cost: Annotated[
        float | None,
        typer.Option(help="US dollars: ask before a run estimated above it, and stop the batch when it costs this"),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="run even when the estimate is above --max-cost")] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="ask the judge even for pairs it answered before (they are paid again)")
    ] = False,
    batch_api: Annotated[
        bool,
        typer.Option(
            "--batch-api",
            help="send each wave as one job of the provider's batch API: about half the "
            "price, answered within the provider's window (up to a day)",
        ),
    ] = False,
    price_table: PriceTableFile = None,
    max_words: MaxWords = inv.DEFAULT_MAX_WORDS,
    allow_duplicates: AllowDuplicates = False,
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
    if decided_share is not None and not 0 < decided_share <= 1:
        raise RunnerError(f"--decided-share must be more than 0 and at most 1, not {decided_share:g}", 2)
    if decided_probability is not None and not 0.5 <= decided_probability < 1:
        raise RunnerError(f"--decided-probability must be at least 0.5 and less than 1, not {decided_probability:g}", 2)
    if max_cost is not None and not 0 < max_cost <= 1_000_000:
        raise RunnerError(f"--max-cost must be more than 0 and at most 1000000 US dollars, not {max_cost:g}", 2)
    found = take_inventory(folder, max_words, allow_duplicates)
    async with connect() as mesh:
        assignment = await mesh.preflight(assignment_id, expected_grade_scale)
        anchors = len(await mesh.list_anchors(assignment_id)) if assignment else 0
        expected, priced_for = cost_estimate(found, budget, provider, model, price_table, batch_api, anchors,
                                             assignment.instructions if assignment else "", target_reliability)  # fmt: skip
        say(estimate_line(expected, priced_for))
        if max_cost is not None and expected.cost_usd is not None and expected.cost_usd > max_cost and not yes:
            confirm_cost(expected.cost_usd, max_cost)
        Interrupted.hint = (
            "interrupted while uploading; nothing is half-stored. Run the same command again to go on "
            "(files already stored are not sent again)"
        )
        items = [(s, "student") for s in found.students] + ([(found.prompt, "prompt")] if found.prompt else [])
        with Progress(
            TextColumn("uploading"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
        ) as bar:
            task = bar.add_task("upload", total=len(items))
            ids, uploaded, failures = await mesh.storage_ids_for(items, cache_dir, progress=lambda _: bar.advance(task))
        for path, reason in failures.items():
            console.print(f"[red]upload failed:[/red] {path}: {reason}")
        if failures:
            raise RunnerError(f"{len(failures)} file(s) could not be uploaded; fix them and run again")
        console.print(f"uploaded {uploaded} file(s); {len(items) - uploaded} already stored")
        spec = batch_spec(found, ids, label or folder.name, assignment_id, budget=budget, provider=provider.value if provider else "",
                          model=model, temperature=temperature, seed=seed, decided_share=decided_share,
                          decided_probability=decided_probability, grade_stop=grade_stop, max_cost_usd=max_cost,
                          no_cache=no_cache, batch_api=batch_api, target_reliability=target_reliability)  # fmt: skip
        Interrupted.hint = "interrupted before the batch was submitted; run the same command again"
        submitted = await mesh.submit_batch(spec, new)
        batch = submitted.batch
        if submitted.created:
            console.print(f"submitted batch {batch.batch_id}")
        else:
            console.print(
                f"attached to batch {batch.batch_id} ({batch.state}), submitted by an earlier run of this folder"
            )
            if batch.state in ("cancelled", "failed"):
                raise RunnerError(
                    f"batch {batch.batch_id} of an earlier run of this folder ended {batch.state}: "
                    f"{batch.state_reason}; run with --new for a fresh batch"
                )
        await finish(mesh, batch, submitted.request, runs_dir, found.known_grades, timeout, cancel_on_interrupt,
                     f"uploaded {uploaded}")  # fmt: skip


async def finish(
    mesh: MeshClient,
    batch: Batch,
    request: dict | None,
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
            cancelling = mesh.cancel_batch(batch.batch_id, "cancelled by Ctrl-C in cj-runner", timeout=10)
            await asyncio.shield(asyncio.ensure_future(cancelling))
            Interrupted.hint = f"interrupted; batch {batch.batch_id} was cancelled"
        raise
    results = await mesh.get_results(batch.batch_id)
    comparisons = await mesh.list_comparisons(batch.batch_id)
    folder_out = run_folder(runs_dir, batch.batch_id)
    write_run(folder_out, request, results, comparisons, known_grades)
    with (folder_out / "run.log").open("a") as log:
        log.write(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} batch {batch.batch_id} state {final.state} "
            f"reason {final.state_reason!r}; {note}\n"
        )
    if final.state == "completed" or timed_out:
        say_warnings(results)
        out.print(results_table(results))
    out.print(f"run folder: {folder_out}")
    if timed_out:
        raise RunnerError(
            f"watching timed out after {timeout:.0f} s; partial results in {folder_out}; "
            f"`cj-runner attach {batch.batch_id}` completes them",
            4,
        )
    if final.state != "completed":
        raise RunnerError(f"batch {batch.batch_id} ended {final.state}: {final.state_reason}")


@app.command(epilog="Example: cj-runner attach 8e915c0f4d324a86b04308aa84ec2c56")
@command
async def attach(
    batch_id: BatchId,
    runs_dir: Annotated[Path, typer.Option(help="where the batch's run folder is (or is made)")] = Path("runs"),
    timeout: Annotated[float, typer.Option(help="seconds to watch before giving up (exit 4)")] = 3600,
) -> None:
    """Watch a batch (again) to its end and (re)write its run folder, e.g. after Ctrl-C or --timeout."""
    if timeout <= 0:
        raise RunnerError("--timeout must be more than 0 seconds", 2)
    async with connect() as mesh:
        batch = await mesh.get_batch(batch_id)
        earlier = run_folder(runs_dir, batch_id)
        known = earlier / "known_grades.csv"
        await finish(mesh, batch, None, runs_dir, known if known.exists() else None, timeout, False, "attached")


def _ssr(batch: Batch) -> str:
    return "n/a" if batch.current_ssr is None else f"{batch.current_ssr:.2f}"


def _cost(batch: Batch) -> str:
    return "" if batch.cost_usd is None else f", {dollars(batch.cost_usd)}"


def _when(batch: Batch) -> str:
    return batch.created.strftime("%Y-%m-%d %H:%M") if batch.created else ""


@app.command(epilog="Example: cj-runner batches --state running")
@command
async def batches(
    state: Annotated[str, typer.Option(help="only batches in this state, e.g. running, completed")] = "",
) -> None:
    """The batches you may see: state, label, progress, created."""
    if state and state.lower() not in BATCH_STATES:
        raise RunnerError(f"unknown state {state!r}; use one of {', '.join(BATCH_STATES)}", 2)
    # Batch ids whole, never cut: they are typed back into `attach`, `status` and `cancel`.
    table = Table(Column("batch", no_wrap=True, min_width=32), "state", "label", "progress", "created")
    async with connect() as mesh:
        async for b in mesh.list_batches(state.lower()):
            table.add_row(b.batch_id, b.state, b.label, f"{b.judged}/{b.comparison_budget}", _when(b))
    out.print(table)


async def watch(mesh: MeshClient, batch: Batch, timeout: float) -> tuple[Batch, bool]:
    """The batch as it last was, and whether watching timed out before it ended."""
    latest = batch
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("judging", total=batch.comparison_budget or None)
        try:
            async with asyncio.timeout(timeout):
                async for latest in mesh.watch_batch(batch.batch_id):
                    bar.update(task, completed=latest.judged,
                               description=f"{latest.state}, wave {latest.wave}, SSR {_ssr(latest)}{_cost(latest)}")  # fmt: skip
        except TimeoutError:
            return latest, True
    return latest, False


def say_warnings(results: Results) -> None:
    """The service's warnings, before any table: what to know before trusting it."""
    for warning in results.warnings:
        say(f"[yellow]warning:[/yellow] {warning}")


def results_table(results: Results) -> Table:
    table = Table(title=f"{results.batch.label}: SSR {results.scale_separation_reliability:.2f}")
    widest = max((len(e.essay_id) for e in results.essays), default=5)
    # ids whole, whatever the terminal's width: they are what the run folder and `report` name
    table.add_column("rank", justify="right")
    table.add_column("essay", no_wrap=True, min_width=widest)
    graded = results.grades_projected or any(e.is_anchor for e in results.essays)
    columns = ("score", "SE", "95 %", "grade", "P", "confidence")[: 6 if graded else 3]  # a guest run: no grades
    for column in columns:
        table.add_column(column, justify="right" if column in ("score", "SE", "95 %", "P") else "left")
    for e in results.essays:
        grade = f"{e.known_grade} (anchor)" if e.is_anchor else e.grade or "-"
        cells = [str(e.rank), e.essay_id, f"{e.score:.2f}", f"{e.standard_error:.2f}",
                 f"{e.score_low_95:.2f} to {e.score_high_95:.2f}"]  # fmt: skip
        cells += [grade, f"{e.probability:.2f}" if e.grade else "", e.confidence] if graded else []
        table.add_row(*cells)
    return table


def _check_format(format: str, allowed: tuple[str, ...]) -> None:  # noqa: A002
    if format not in allowed:
        raise RunnerError(f"unknown format {format!r}; use {', '.join(allowed[:-1])} or {allowed[-1]}", 2)


@app.command(epilog="Example: cj-runner status 8e915c0f4d324a86b04308aa84ec2c56")
@command
async def status(
    batch_id: BatchId,
    format: Annotated[str, typer.Option(help="table, or json for machines")] = "table",  # noqa: A002
) -> None:
    """A batch's state and progress."""
    _check_format(format, ("table", "json"))
    async with connect() as mesh:
        batch = await mesh.get_batch(batch_id)
    if format == "json":
        out.print_json(json.dumps(batch.document))
        return
    table = Table(Column("field"), Column("value", no_wrap=True), show_header=False)
    rows = [
        ("batch", batch.batch_id),
        ("label", batch.label),
        ("state", batch.state + (f" ({batch.state_reason})" if batch.state_reason else "")),
        ("assignment", batch.assignment_id or "(guest run: no grades)"),
        ("essays", f"{batch.essay_count} students, {batch.anchor_count} anchors"),
        ("comparisons", f"{batch.comparisons_done} done, {batch.comparisons_failed} failed, "
                        f"budget {batch.comparison_budget}"),
        ("wave", str(batch.wave)),
        ("SSR", _ssr(batch)),
        ("cost", "not priced" if batch.cost_usd is None else dollars(batch.cost_usd)),
        ("created", _when(batch)),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@app.command(epilog="Example: cj-runner results 8e915c0f4d324a86b04308aa84ec2c56 --format csv > grades.csv")
@command
async def results(batch_id: BatchId, format: Annotated[str, typer.Option(help="table, json or csv")] = "table") -> None:  # noqa: A002
    """A batch's results."""
    _check_format(format, ("table", "json", "csv"))
    async with connect() as mesh:
        found = await mesh.get_results(batch_id)
    if format == "json":
        out.print_json(json.dumps(found.document))
    elif format == "csv":
        print("rank,essay_id,score,standard_error,grade")
        for e in found.essays:
            print(
                f"{e.rank},{e.essay_id},{e.score:.4f},{e.standard_error:.4f},{e.known_grade if e.is_anchor else e.grade}"
            )
    else:
        say_warnings(found)
        out.print(results_table(found))


@app.command(epilog="Example: cj-runner report runs/20261129T101500_8e915c0f4d324a86b04308aa84ec2c56")
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder, as `cj-runner run` printed it")],
    known_grades: Annotated[
        Path | None, typer.Option(help="CSV of essay_id (or file) and grade; default: known_grades.csv in RUN_DIR")
    ] = None,
) -> None:
    """Agreement of a finished run with its anchors and known grades: writes report.md, report.html and plot.png."""
    from runner import report as run_report  # scipy and matplotlib: loaded only for this command

    try:
        made = run_report.write(run_dir, known_grades)
    except (FileNotFoundError, ValueError, KeyError) as error:
        say_error(f"cannot report on {run_dir}: {error}")
        raise typer.Exit(2) from None
    out.print(Markdown(run_report.render(made, with_essays=False)))
    out.print(f"wrote {run_dir / 'report.md'}, {run_dir / 'report.html'} and {run_dir / 'plot.png'}")


@app.command(epilog="Example: cj-runner cancel 8e915c0f4d324a86b04308aa84ec2c56 --reason 'wrong prompt'")
@command
async def cancel(
    batch_id: BatchId, reason: Annotated[str, typer.Option(help="kept with the batch")] = "cancelled from cj-runner"
) -> None:
    """Stop a batch."""
    async with connect() as mesh:
        batch = await mesh.cancel_batch(batch_id, reason)
    out.print(f"batch {batch.batch_id}: {batch.state}")


@admin.command(
    "create-assignment",
    epilog="Example: cj-runner admin create-assignment --assignment-id eng5 --grade-scale eng5_np_legacy_9_step "
    "--prompt essays/prompt.md",
)
@command
async def create_assignment(
    assignment_id: Annotated[str, typer.Option(help="the new assignment's id, e.g. eng5-2026")],
    grade_scale: Annotated[str, typer.Option(help="its grade scale (see `cj-runner admin list-scales`)")],
    course_code: Annotated[str, typer.Option(help="the course it belongs to")] = "",
    instructions: Annotated[str, typer.Option(help="what the judge is told to look for")] = "",
    prompt: Annotated[Path | None, typer.Option(help="student prompt file, uploaded and linked")] = None,
    rubric: Annotated[Path | None, typer.Option(help="judge rubric file, uploaded and linked")] = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
) -> None:
    """Create an assignment (assessment instructions) with its prompt and rubric."""
    items = {kind: inv.read_item(path) for kind, path in (("prompt", prompt), ("rubric", rubric)) if path}
    async with connect() as mesh:
        files = [(item, kind) for kind, item in items.items()]
        ids, _, failures = await mesh.storage_ids_for(files, cache_dir) if files else ({}, 0, {})  # type: ignore[arg-type]
        if failures:
            raise RunnerError("; ".join(failures.values()))
        created = await mesh.create_assignment(
            assignment_id, grade_scale, course_code, instructions,
            prompt_storage_id=ids[items["prompt"].sha256] if "prompt" in items else "",
            rubric_storage_id=ids[items["rubric"].sha256] if "rubric" in items else "",
        )  # fmt: skip
    out.print_json(json.dumps(created.document))


@admin.command("show-assignment", epilog="Example: cj-runner admin show-assignment eng5")
@command
async def show_assignment(assignment_id: AssignmentId) -> None:
    """One assignment, as JSON."""
    async with connect() as mesh:
        found = await mesh.get_assignment(assignment_id)
    out.print_json(json.dumps(found.document))


@admin.command("list-assignments", epilog="Example: cj-runner admin list-assignments")
@command
async def list_assignments() -> None:
    """Every assignment: id, grade scale, course."""
    table = Table("assignment", "scale", "course")
    async with connect() as mesh:
        async for a in mesh.list_assignments():
            table.add_row(a.assignment_id, a.grade_scale, a.course_code)
    out.print(table)


@admin.command(
    "register-anchors", epilog="Example: cj-runner admin register-anchors essays/class-9b --assignment-id eng5"
)
@command
async def register_anchors(
    folder: Folder,
    assignment_id: Annotated[str, typer.Option(help="the assignment the anchors grade")],
    cache_dir: CacheDir = DEFAULT_CACHE,
) -> None:
    """Register the anchors of FOLDER/anchors (grades from anchors.csv or file names); idempotent."""
    found = take_inventory(folder, allow_duplicates=True, least_students=0)
    if not found.anchors:
        raise RunnerError(f"{folder}/anchors holds no anchor essays ({', '.join(inv.SUPPORTED_SUFFIXES)})", 2)
    async with connect() as mesh:
        ids, _, failures = await mesh.storage_ids_for([(a, "anchor") for a in found.anchors], cache_dir)
        if failures:
            raise RunnerError("; ".join(failures.values()))
        for anchor in found.anchors:
            created = await mesh.register_anchor(assignment_id, anchor.essay_id, anchor.grade, ids[anchor.sha256])
            out.print(f"{'registered' if created else 'updated'} {anchor.essay_id} ({anchor.grade})")


@admin.command("list-anchors", epilog="Example: cj-runner admin list-anchors eng5")
@command
async def list_anchors(assignment_id: AssignmentId) -> None:
    """An assignment's anchors: label, grade, storage id."""
    table = Table("label", "grade", "storage id")
    async with connect() as mesh:
        for a in await mesh.list_anchors(assignment_id):
            table.add_row(a.label, a.grade, a.storage_id)
    out.print(table)


@admin.command("list-scales", epilog="Example: cj-runner admin list-scales")
@command
async def list_scales() -> None:
    """The grade scales the service knows, grades low to high."""
    table = Table("scale", "grades (low to high)", "below lowest")
    async with connect() as mesh:
        for s in await mesh.list_grade_scales():
            table.add_row(s.key, " ".join(s.grades), s.below_lowest_grade or "-")
    out.print(table)


def misplaced_option(args: list[str]) -> str:
    """A hint when an option stands on the wrong side of its command ('' when none does):
    `cj-runner run DIR --token T` (an option of cj-runner itself) or `cj-runner --budget 9 run DIR`."""
    root = typer.main.get_command(app)
    own = {name: param for param in root.params for name in param.opts}
    words = iter(args)
    before: list[str] = []
    for word in words:
        name = word.split("=", 1)[0]
        if name in own:
            if not own[name].is_flag and "=" not in word:
                next(words, None)  # its value
            continue
        if word.startswith("-"):
            before.append(name)
            continue
        command = getattr(root, "commands", {}).get(word)
        if command is None and before:
            continue  # the value of an option that is not cj-runner's own
        path = [word]
        while command is not None and hasattr(command, "commands"):
            sub = next(words, "")
            path.append(sub)
            command = command.commands.get(sub)
        if command is None:
            return ""
        theirs = {name for param in command.params for name in param.opts}
        usage = f"cj-runner {' '.join(path)}"
        for option in before:
            if option in theirs:
                return f"{option} is an option of `{usage}`: put it after `{usage}`"
        for rest in words:
            if rest == "--":
                break
            option = rest.split("=", 1)[0]
            if option in own and option not in theirs:
                return f"{option} is an option of cj-runner itself: put it before the command, `cj-runner {option} ... {' '.join(path)} ...`"
        return ""
    return ""


def main_entry() -> None:
    """The `cj-runner` program: a misplaced option is named with where it goes, then typer parses."""
    hint = misplaced_option(sys.argv[1:])
    if hint:
        say_error(hint)
        raise SystemExit(2)
    app()
