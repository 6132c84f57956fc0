"""How a command reports a failure: one line on stderr that names the file or option."""

from __future__ import annotations

import sys

# the command being run ("facenet verify"); set by facenet.cli.main, read by ``fail``
PROG = "facenet"


def set_prog(prog: str) -> None:
    global PROG
    PROG = prog


def one_line(message: object) -> str:
    """``message`` with its line breaks folded, so an error is one line on a terminal."""
    return " ".join(str(message).split())


def describe_error(e: BaseException) -> str:
    """What went wrong, naming the file where the exception knows it."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        target = f" -> {e.filename2}" if e.filename2 else ""
        return f"{e.filename}{target}: {e.strerror}"
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    return str(e) or type(e).__name__


def fail(prog: str | None, problem: object, code: int = 1) -> int:
    """Print ``<prog>: error: <problem>`` (one line) to stderr; returns ``code``.

    ``prog`` None: the command being run (``PROG``)."""
    text = describe_error(problem) if isinstance(problem, BaseException) else str(problem)
    print(f"{prog or PROG}: error: {one_line(text)}", file=sys.stderr)
    return code
