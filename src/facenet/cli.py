"""``facenet <command>``: adapts argv to library calls and holds no logic.

Each command lives in ``facenet.commands.<module>`` with two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``facenet --help`` stays instant (no torch import).

No traceback reaches a user: a bad argument is one line naming the option (exit 2); a failure
while running is one line naming the file or option (exit 1); a bug is one line asking for a
report (exit 70). ``FACENET_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence

from facenet.commands._errors import describe_error, fail, one_line, set_prog

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("facenet.commands.demo", "run the whole system end to end on real photos"),
    "models": ("facenet.commands.models", "list the model family with params and FLOPs"),
    "export": ("facenet.commands.export", "export a model or checkpoint to ONNX or TorchScript"),
    "align": ("facenet.commands.align", "detect and crop faces: folder-per-identity in and out"),
    "eval": ("facenet.commands.eval", "LFW-protocol verification, VAL@FAR, ROC and sweeps"),
    "convert": ("facenet.commands.convert", "convert published FaceNet weights into our models"),
    "train": ("facenet.commands.train", "train an embedding with triplet loss and online mining"),
    "embed": ("facenet.commands.embed", "embed every face in photos to a file"),
    "verify": ("facenet.commands.verify", "are two photos the same person?"),
    "gallery": ("facenet.commands.gallery", "enroll, remove and list identities in a gallery"),
    "identify": ("facenet.commands.identify", "who is in this photo? (open-set)"),
    "cluster": ("facenet.commands.cluster", "group the faces of a photo collection by person"),
    "serve": ("facenet.commands.serve", "the HTTP API: embed, verify, identify, gallery"),
    "keys": ("facenet.commands.keys", "create, list and revoke API keys of facenet serve"),
}

EXIT_FAILURE = 1  # the command ran and failed (bad file, no face, ...)
EXIT_USAGE = 2  # bad arguments or config
EXIT_BUG = 70  # an unexpected exception: a bug to report (BSD's EX_SOFTWARE)
EXIT_INTERRUPTED = 130  # Ctrl-C


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _available() -> dict[str, tuple[str, str]]:
    """Commands whose module exists in this installation."""
    return {
        name: entry
        for name, entry in COMMANDS.items()
        if importlib.util.find_spec(entry[0]) is not None
    }


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported to add its arguments."""
    parser = Parser(
        prog="facenet",
        description="FaceNet face embeddings: train, evaluate, verify, identify, cluster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in _available().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def quiet_openmp_threads() -> None:
    """Let PyTorch's idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``),
    unless the environment already chooses; only before torch is imported (it reads the variable
    once, when it loads OpenMP).

    why: cold start. Spinning threads fight whatever else runs on a small machine: on 2 busy
    cores a first MTCNN detection took ~1 s with spinning threads and ~0.03 s without, an
    Inception-ResNet-v1 forward 0.3 s against 0.08 s. The thread count, and so every result, is
    unchanged.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def freeze_imported_objects() -> None:
    """Move every object alive now (modules, classes, functions: what the imports made) out of
    the garbage collector's sight for the rest of the process.

    why: cold start. After ``import torch`` a process holds ~170,000 tracked objects; each full
    collection walks them all (~0.1 s on 2 cores), a few run during a command and more while
    Python shuts down: ~0.3 s during ``facenet verify`` and 0.5-0.8 s at exit, against ~0.2 s
    at exit once frozen. Only for the ``facenet`` process itself: a caller of ``main(argv)``
    (tests) keeps its collector as it is.
    """
    gc.freeze()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.showwarning`` for the command line: ``facenet CMD: warning: text``."""
    from facenet.commands._errors import PROG

    print(f"{PROG}: warning: {one_line(message)}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facenet`` command; returns the exit code."""
    as_program = argv is None  # the facenet process itself, not a caller of main(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_openmp_threads()  # before a command module imports torch
    command = next((a for a in argv if not a.startswith("-")), None)
    available = _available()
    try:
        parser = build_parser(command if command in available else None)  # imports the command
    except KeyboardInterrupt:  # Ctrl-C while torch imports: no traceback either
        print("\nfacenet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if command in available:  # flags a command lets stand anywhere go last (no values)
        anywhere = getattr(sys.modules.get(available[command][0]), "FLAGS_ANYWHERE", ())
        argv = [a for a in argv if a not in anywhere] + [a for a in argv if a in anywhere]
    if as_program:
        freeze_imported_objects()
    if not argv:
        parser.print_help()
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return 2
    prog = f"facenet {args.command}"
    set_prog(prog)
    module = None
    try:
        module = importlib.import_module(available[args.command][0])
        with warnings.catch_warnings():
            if not os.environ.get("FACENET_DEBUG"):
                # why: a warning is one line naming the command, as errors are, not Python's
                # two-line form quoting the library's source line
                warnings.showwarning = _one_line_warning
            return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # why: `facenet ... | head` closed the pipe; nothing is wrong, and Python's own
        # flush at exit must not print a traceback either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:
        if os.environ.get("FACENET_DEBUG"):
            raise
        if isinstance(e, (OSError, ValueError, KeyError, ImportError, RuntimeError)) or (
            type(e).__module__.startswith("facenet")
        ):
            # why: for verify and identify exit 1 is an answer ("different", "unknown")
            return fail(prog, e, getattr(module, "EXIT_NO_ANSWER", EXIT_FAILURE))
        print(
            f"{prog}: internal error: {type(e).__name__}: {one_line(describe_error(e))} "
            "(a bug: FACENET_DEBUG=1 shows the traceback; please report it)",
            file=sys.stderr,
        )
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
