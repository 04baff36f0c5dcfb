"""`intriguing`: one command, one subcommand per task. Each subcommand lives in core/commands/<name>.py
and exposes `register(subparsers, common)`; user-facing errors exit 2 with one line on stderr."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from core import config
from core.errors import IntriguingError

COMMANDS = (
    "models",
    "datasets",
    "evaluate",
    "train",
    "dashboard",
    "units",
    "featvis",
    "inside",
    "unitsdoc",
    "defences",
    "attack",
    "audit",
    "report",
    "leaderboard",
    "reproduce",
    "sweep",
    "figure",
    "smooth",
    "certify",
)


def common_parser() -> argparse.ArgumentParser:
    """Flags every subcommand accepts (SUPPRESS so a subcommand never overwrites a top-level value)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", default=argparse.SUPPRESS, help="MNIST root (else $INTRIGUING_DATA_DIR)"
    )
    common.add_argument("--torch-home", default=argparse.SUPPRESS, help="TORCH_HOME holding hub/checkpoints")
    common.add_argument(
        "--device", default=argparse.SUPPRESS, help="torch device (default: cuda if present, else cpu)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="intriguing",
        parents=[common],
        description="A laboratory for 'Intriguing properties of neural networks' (Szegedy et al., 2014).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"core.commands.{name}").register(sub, common)
    return parser


def emit(result: object, as_json: bool, text: str | None = None) -> None:
    """Print a result: JSON when asked (machine-readable, stdout only), else the human text."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(text if text is not None else result)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra

    config.set_locations(getattr(args, "data_dir", None), getattr(args, "torch_home", None))
    try:
        args.device = config.resolve_device(getattr(args, "device", None))
        return int(args.func(args) or 0)
    except IntriguingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`intriguing ... --json | head`): end quietly, as `cat` would, and keep
        # Python from reporting the failed flush of stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
