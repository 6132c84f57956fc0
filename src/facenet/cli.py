"""``facenet <command>``: adapts argv to library calls and holds no logic.

Each command lives in ``facenet.commands.<module>`` with two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``facenet --help`` stays instant (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

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
}


def _available() -> dict[str, tuple[str, str]]:
    """Commands whose module exists in this installation."""
    return {
        name: entry
        for name, entry in COMMANDS.items()
        if importlib.util.find_spec(entry[0]) is not None
    }


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="facenet",
        description="FaceNet face embeddings: train, evaluate, verify, identify, cluster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in _available().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facenet`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    available = _available()
    parser = build_parser(command if command in available else None)
    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(available[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
