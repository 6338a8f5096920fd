"""Entry point: parse arguments, run one subcommand, turn user errors into one line and exit 2."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Sequence

from compress import __version__
from compress.cli import apply as apply_cmd
from compress.cli import curvature as curvature_cmd
from compress.cli import env as env_cmd
from compress.cli import demo as demo_cmd
from compress.cli import eval as eval_cmd
from compress.cli import export as export_cmd
from compress.cli import plan as plan_cmd
from compress.cli import report as report_cmd
from compress.cli import validate as validate_cmd
from compress.cli.flags import flag_map, missing_extra, with_flags
from compress.errors import CompressError, MissingDependencyError

SUBCOMMANDS = (eval_cmd, curvature_cmd, plan_cmd, validate_cmd, apply_cmd, export_cmd, report_cmd, demo_cmd, env_cmd)


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    parent.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parent.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compress", description="Curvature-driven model compression for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"compress {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parent = common_options()
    for command in SUBCOMMANDS:
        command.add_parser(subparsers, parent)
    for name, subparser in subparsers.choices.items():
        subparser.set_defaults(flags=flag_map(subparser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import torch

        torch.manual_seed(args.seed)
        return int(args.run(args) or 0)
    except CompressError as exc:
        return _user_error(args, exc)
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:
            return _internal_error(args, exc)
        return _user_error(args, MissingDependencyError(f"compress {args.command}", extra, str(exc)))
    except KeyboardInterrupt:
        print(f"compress {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line, the traceback on request
        return _internal_error(args, exc)


def _user_error(args: argparse.Namespace, exc: CompressError) -> int:
    """One line naming the problem (parameter names shown as this command's flags), exit status 2."""
    if args.debug:
        traceback.print_exc()
    print(f"compress {args.command}: error: {with_flags(str(exc), args.flags)}", file=sys.stderr)
    return CompressError.exit_code


def _internal_error(args: argparse.Namespace, exc: BaseException) -> int:
    if args.debug:
        traceback.print_exc()
    print(f"compress {args.command}: internal error: {type(exc).__name__}: {exc}; "
          "rerun with --debug for the traceback", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
