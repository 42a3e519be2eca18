"""Running a click command as a function: ``run_command(cmd, argv) -> exit code``.

Why: every command of the project (``tradegraph …``, ``python -m TRAINING.train``) must answer a usage or
input error with one clear line and exit code 2, never a traceback, and tests call the commands as
functions. click's standalone mode prints usage blocks and calls ``sys.exit``; this wrapper keeps click's
parsing and help, and turns the errors it is given into one line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

USAGE_EXIT = 2


def run_command(command: click.Command, argv: Sequence[str] | None, prog: str,
                user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Invoke ``command`` on ``argv`` (default ``sys.argv[1:]``); return its exit code.

    A click usage error or one of ``user_errors`` prints ``<prog>: error: <message>`` and returns 2; the
    command's own integer return value (or 0) is its exit code; anything else propagates (a bug shows).
    """
    try:
        rv = command.main(args=list(sys.argv[1:] if argv is None else argv), prog_name=prog,
                          standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 1
    except click.ClickException as exc:
        print(f"{prog}: error: {exc.format_message()}", file=sys.stderr)
        return USAGE_EXIT
    except user_errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return USAGE_EXIT
    return int(rv) if isinstance(rv, int) and not isinstance(rv, bool) else 0
