"""What both services' command lines share: running a server until a signal, reporting where it listens."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from mesh_server import logs
from mesh_server.database import NotMigrated
from mesh_server.settings import ServiceSettings

Settings = TypeVar("Settings", bound=ServiceSettings)


def run_service(start: Callable[[], Awaitable[Any]], ready_file: Path | None, name: str) -> None:
    """Start a service app, announce its addresses, serve until SIGTERM/SIGINT."""

    async def main() -> None:
        try:
            app = await start()
        except (NotMigrated, ValueError) as error:  # ValueError: unusable settings (TLS files, tokens)
            print(f"{name}: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        addresses = {"address": app.address, "metrics_port": app.metrics_port}
        print(f"{name} listening on {app.address}", file=sys.stderr, flush=True)
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            temp = ready_file.with_suffix(".tmp")
            temp.write_text(json.dumps(addresses))
            temp.replace(ready_file)
        try:
            await app.server.wait_for_signal()
        finally:
            await app.stop()

    asyncio.run(main())


def started_by(module: str) -> Callable[[Any], Awaitable[Any]]:
    """The `start(settings)` of an app module, imported only when the service is served, so that
    its other commands (migrate, check) start faster."""

    async def start(settings: Any) -> Any:
        return await importlib.import_module(module).start(settings)

    return start


def serve_command(
    app: typer.Typer,
    settings_type: type[Settings],
    env_prefix: str,
    name: str,
    start: Callable[[Settings], Awaitable[Any]],
    help_text: str,
) -> None:
    """Add `serve` to `app`: one option per field of `settings_type` (`--field-name`, booleans as
    `--field-name/--no-field-name`, environment variable `<env_prefix>FIELD_NAME`, the field's help),
    and --ready-file. The settings are declared once, in the dataclass."""
    hints = get_type_hints(settings_type)
    parameters = []
    for field in fields(settings_type):
        flag = "--" + field.name.replace("_", "-")
        declared = f"{flag}/--no-{flag[2:]}" if hints[field.name] is bool else flag
        option = typer.Option(declared, envvar=f"{env_prefix}{field.name.upper()}", help=field.metadata.get("help"))
        parameters.append(
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default,
                annotation=Annotated[hints[field.name], option],
            )
        )  # fmt: skip
    ready = typer.Option(help="write the bound addresses here as JSON once serving")
    parameters.append(
        inspect.Parameter(
            "ready_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Path | None, ready]
        )
    )

    def serve(**given: Any) -> None:
        ready_file = given.pop("ready_file")
        settings = settings_type(**given)
        logs.configure(settings.log_level, settings.log_json)
        run_service(lambda: start(settings), ready_file, name)

    serve.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    serve.__doc__ = help_text
    app.command("serve")(serve)
