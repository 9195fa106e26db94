"""Every command and option says what it is for, and every command's help ends with an example."""

from __future__ import annotations

import pytest
import typer.main
from typer.core import TyperGroup

from runner.cli import app
from tests.support.tools import run, tool


def commands() -> list[tuple[str, typer.main.TyperCommand]]:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    found = []
    for name, command in root.commands.items():
        if isinstance(command, TyperGroup):
            found += [(f"{name} {sub}", subcommand) for sub, subcommand in command.commands.items()]
        else:
            found.append((name, command))
    return found


def test_every_command_and_option_has_help() -> None:
    assert len(commands()) >= 15
    root = typer.main.get_command(app)
    for where, command in [("cj-runner", root), *commands()]:
        assert (command.help or "").strip(), f"{where} has no help"
        for param in command.params:
            assert getattr(param, "help", None), f"{where}: {param.name} has no help"


@pytest.mark.parametrize("name", [name for name, _ in commands()])
async def test_help_ends_with_an_example(name: str) -> None:
    shown = await run(tool("cj-runner"), *name.split(), "--help", env={"COLUMNS": "200"})
    assert shown.code == 0, shown.output
    last = [line.strip() for line in shown.stdout.splitlines() if line.strip()][-1]
    assert last.startswith(f"Example: cj-runner {name}"), (name, last)
    assert shown.stdout.index("Options") < shown.stdout.index("Example:")


async def test_an_option_on_the_wrong_side_of_its_command_is_named_with_where_it_goes(tmp_path) -> None:
    after = await run(tool("cj-runner"), "run", str(tmp_path), "--token", "secret")
    assert after.code == 2 and "--token is an option of cj-runner itself: put it before the command" in after.stderr
    before = await run(tool("cj-runner"), "--budget", "9", "run", str(tmp_path))
    assert (
        before.code == 2 and "--budget is an option of `cj-runner run`: put it after `cj-runner run`" in before.stderr
    )
    nested = await run(tool("cj-runner"), "admin", "list-anchors", "eng5", "--cj-address", "127.0.0.1:1")
    assert nested.code == 2 and "--cj-address is an option of cj-runner itself" in nested.stderr
