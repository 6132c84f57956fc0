"""``facenet train``: train an embedding with triplet loss and online mining.

    facenet train --config configs/cpu.yaml [key.sub=value ...] [--resume]
    torchrun --nproc_per_node=N -m facenet train --config configs/paper.yaml

Exit codes: 0 done, 2 bad config, 4 diverged (NaN/inf), 5 collapsed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from facenet.commands._checks import output_dir
from facenet.config import Config, ConfigError, dump_config, load_config

# why: flags without a value that may stand anywhere, before or among the KEY=VALUE overrides
# (argparse ends a list of positionals at the first flag); the CLI moves them to the end
FLAGS_ANYWHERE = ("--resume", "--print-config")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (see configs/); defaults when omitted")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. optimiser.lr=0.1 output.dir=runs/x (values parsed as YAML)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in output.dir from its last.pt"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )


def _would_overwrite_config(path: str | None, config: Config, resume: bool) -> bool:
    """Whether the run's ``config.yaml`` is the user's own ``--config`` file (comments, settings
    left at their defaults), which writing the resolved config would replace. A run's own dump
    may be rewritten: given back to resume the run (its ``last.pt`` is there), or unchanged."""
    written = Path(config.output.dir).expanduser() / "config.yaml"
    if not path or not written.exists() or written.resolve() != Path(path).resolve():
        return False
    if resume and written.with_name("last.pt").exists():
        return False
    text = written.read_text(encoding="utf-8", errors="replace")
    try:
        return text != dump_config(load_config(path))
    except ConfigError:  # valid only with the overrides: not a run's own dump
        return True


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"facenet train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    try:  # why: a folder that cannot be made is one line now, not a traceback after set-up
        output_dir(str(Path(config.output.dir).expanduser()))
    except argparse.ArgumentTypeError as e:
        print(f"facenet train: output.dir: {e}", file=sys.stderr)
        return 2
    if _would_overwrite_config(args.config, config, args.resume):
        print(
            f"facenet train: output.dir={config.output.dir} holds the config file given "
            f"({args.config}), which the run would overwrite with its resolved config; "
            "choose another output.dir",
            file=sys.stderr,
        )
        return 2
    # why: torch loads only once a run starts (`--help` and config errors answer at once)
    from facenet.train.health import TrainingStopped
    from facenet.train.loop import train

    try:
        result = train(config, resume=args.resume)
    except TrainingStopped as e:
        print(f"facenet train: {e}", file=sys.stderr)
        return e.exit_code
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"facenet train: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        best = result.best
        msg = f"done: step {result.step}, {result.images_per_s:.0f} images/s, run {result.run_dir}"
        if best:
            msg += (
                f"; best val accuracy {best['accuracy']:.4f} at step {best['step']} "
                f"(VAL@FAR {best['val']:.4f}, AUC {best['auc']:.4f})"
            )
        print(msg)
    return 0
