"""The `ramit` command: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module in this package providing `add_parser(subparsers)`; imported only when used
COMMANDS = {
    "convert": "convert",
    "restore": "restore",
    "evaluate": "evaluate",
    "train": "train",
    "push": "push",
    "export": "export",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ramit", description="RAMiT image restoration")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, module in COMMANDS.items():
        if chosen is None or name == chosen:
            importlib.import_module(f"ramit_hf.cli.{module}").add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=f"(see: ramit {name} --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..inference import tune_cpu_allocator

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    tune_cpu_allocator()  # this process is ours: keep freed memory for the next tensor (docs/performance.md)
    return args.run(args) or 0
