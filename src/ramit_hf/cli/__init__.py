"""The `ramit` command: one sub-command per module in this package.

Ctrl-C and SIGTERM (`kill`, `docker stop`, a scheduler's preemption) end a command the same way: the file being
written is removed (every write goes to a hidden temporary file that the interrupted write deletes, see
`ramit_hf.atomic`), one line says so on stderr, and the exit status is 130 (Ctrl-C) or 143 (SIGTERM), as a shell
reports them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator

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


class Terminated(BaseException):
    """SIGTERM, raised where the program is (as Ctrl-C raises KeyboardInterrupt), so that the same clean-ups run."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    from ..inference import tune_cpu_allocator

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    tune_cpu_allocator()  # this process is ours: keep freed memory for the next tensor (docs/performance.md)
    stopped = "stopped; files already written are complete and nothing half-written was left"
    try:
        with _sigterm_as_exception():
            return args.run(args) or 0
    except KeyboardInterrupt:
        print(f"ramit {args.command}: interrupted (Ctrl-C): {stopped}", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated:
        print(f"ramit {args.command}: terminated (SIGTERM): {stopped}", file=sys.stderr)
        return 128 + signal.SIGTERM
