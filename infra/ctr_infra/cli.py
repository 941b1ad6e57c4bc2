"""`ctr` command line. Each command group lives in `ctr_infra.commands.<name>` and
exposes `register(subparsers)`; the chosen subcommand's `func(args)` returns an exit code.

Every group is imported for every command: a group that cannot be imported is an error
that names it, not a command that quietly goes missing."""

from __future__ import annotations

import argparse
import importlib
import sys

from ctr.errors import DomainError

COMMAND_MODULES = ("cloud", "data", "model", "pipeline", "serve", "score", "bench",
                   "monitor", "soak", "cost")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctr", description="ctr-pipeline command line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ctr_infra.commands.{name}")
        except ImportError as err:
            raise ImportError(f"ctr: the command group {name!r} (ctr_infra.commands.{name}) "
                              f"cannot be imported: {err}", name=err.name) from err
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DomainError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
