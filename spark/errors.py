"""How every command fails: bad input the user can fix (exit code 2) or a run that failed (exit code 1; 75 for a
run that stopped before its job's time limit, which the same command continues).

Each error the project raises on purpose derives from one of the two classes, so every CLI (``spark prepare``,
``pretrain``, ``finetune``, ``detect``, ``report`` and the ``python -m`` entry points behind them) reports it the
same way, as one line naming the key or file, through :func:`run_command`. Anything else is a bug and keeps its
traceback (exit code 1).
"""
from __future__ import annotations

import sys
from typing import Callable

BAD_INPUT = 2
RUN_FAILED = 1


class InputError(Exception):
    """Bad params, data or weights: the message is one line naming the key, file or command to fix."""

    exit_code = BAD_INPUT


class RunError(Exception):
    """A run that started on good input and failed (e.g. a loss that became NaN)."""

    exit_code = RUN_FAILED


def run_command(prog: str, command: Callable[[], object]) -> int:
    """Run ``command``; return 0, or print ``prog: error: ...`` and return the error's exit code
    (:data:`BAD_INPUT`, :data:`RUN_FAILED`, or a subclass's own)."""
    try:
        command()
    except (InputError, RunError) as err:
        print(f"{prog}: error: {_message(err)}", file=sys.stderr)
        return err.exit_code
    return 0


def _message(err: Exception) -> str:
    """The error's own line; a DataLoader worker's error arrives wrapped in the worker's traceback."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text
