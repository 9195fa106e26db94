"""The `cj-runner` program's entry point.

It imports nothing heavy before it has taken over Ctrl-C: the CLI's imports take about half a second,
and a Ctrl-C in them (or in typer's parsing) would otherwise end in a traceback or in silence. Until a
command starts its work, Ctrl-C prints one line and exits 130; nothing has been changed by then.
"""

import os
import signal
import sys

NOTHING_CHANGED = "interrupted; nothing was changed"


def _interrupted_before_work(signum: int, frame: object) -> None:
    sys.stderr.write(f"{NOTHING_CHANGED}\n")
    sys.stderr.flush()
    os._exit(130)  # no cleanup to run: no command has begun


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted_before_work)
    from runner.cli import main_entry

    main_entry()
