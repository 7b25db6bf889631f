"""Sub-commands of the `ramit` command line, and what they share: error reporting and common arguments.

Each sub-command module has `add_parser(subparsers)` (which sets `run` with `parser.set_defaults(run=run)`) and
`run(args) -> int`, the exit status. A bad input ends a command with :func:`fail`: one line
`ramit <command>: error: <message>` on stderr and exit status 2 (argparse's status for bad arguments).
"""

from __future__ import annotations

import argparse
import sys

from ..configuration_ramit import TASKS

# the precisions `inference.load_model(dtype=...)` takes (kept here as names so that parsing imports no torch)
DTYPE_CHOICES = ("float32", "bfloat16", "float16")


def fail(command: str, error) -> int:
    """Report `error` (an exception or a message) as `ramit <command>: error: ...` on stderr; returns 2."""
    print(f"ramit {command}: error: {error}", file=sys.stderr)
    return 2


def write_errors() -> tuple[type[BaseException], ...]:
    """What a write that fails midway raises (a full disk, a quota, a file size limit): OSError, and safetensors' own
    error for weights."""
    from safetensors import SafetensorError

    return (OSError, SafetensorError)


def check_device(device: str | None) -> None:
    """Raise ValueError, naming `device` (a --device value) and what this machine has, unless it can run a model:
    an unknown name, the meta device (it holds no data), or an accelerator this machine lacks ('auto' and None
    pass)."""
    if device in (None, "auto"):
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"--device {device}: not a device name (e.g. cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "meta":
        raise ValueError(f"--device {device}: the meta device holds no data, so no image can be restored on it")
    if parsed.type == "cpu":
        return
    backend = getattr(torch, parsed.type, None)  # torch.cuda, torch.mps, torch.xpu, ...
    if backend is None or not getattr(backend, "is_available", lambda: False)():
        raise ValueError(
            f"--device {device}: this machine has no {parsed.type} device (torch.{parsed.type}.is_available() is "
            "False); use --device cpu"
        )
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(
            f"--device {device}: this machine has {count} {parsed.type} device{'s' if count != 1 else ''} "
            f"({parsed.type}:0 to {parsed.type}:{count - 1})"
        )


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return number


def max_pixels(value: str) -> int:
    """A pixel budget: a whole number of pixels, 0 for no limit (as `image_io.check_max_pixels` takes it)."""
    from ..pixel_budget import check_max_pixels

    try:
        return check_max_pixels(value, "--max-pixels")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def tile_size(value: str) -> int | str:
    """'auto', 0 (never tile) or a positive tile side, as `tiling.resolve_tile_size` takes them; a side below
    `tiling.MIN_TILE_SIZE` is raised to it, with a line saying so."""
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of pixels, got {value!r}") from None
    if size < 0:
        raise argparse.ArgumentTypeError(f"the tile size must be 'auto', 0 or positive, got {size}")
    return _tile_floor(size)


def positive_tile_size(value: str) -> int:
    """A positive tile side (`--tile` where tiling is off by default), raised to `tiling.MIN_TILE_SIZE` as
    `tile_size` raises it."""
    return _tile_floor(positive_int(value))


def _tile_floor(size: int) -> int:
    from ..tiling import MIN_TILE_SIZE, tile_floor_message

    message = tile_floor_message(size)
    if message is None:
        return size
    print(f"ramit: --tile {size}: {message}", file=sys.stderr)
    return MIN_TILE_SIZE


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model` (required) and `--task`: the model to load with `inference.load_model(args.model, task=args.task)`."""
    parser.add_argument("--model", required=True, help="model folder, Hub id, or original .pth checkpoint")
    parser.add_argument(
        "--task", choices=TASKS, help="the model's task (needed only for a .pth whose name does not tell)"
    )


def add_tiling_arguments(parser: argparse.ArgumentParser, auto: bool) -> None:
    """`--tile SIZE` and `--tile-overlap PIXELS` (input pixels), as `restore_tensor` / the pipeline take them.

    `auto=True`: `--tile` defaults to 'auto' (only large images are tiled) and 0 never tiles. `auto=False`: images
    are restored whole unless `--tile` is given (benchmarks: tiling changes the numbers a little).
    """
    if auto:
        parser.add_argument(
            "--tile",
            type=tile_size,
            default="auto",
            metavar="SIZE",
            help="tile side in input pixels; 'auto' (default) restores images above 512x512 pixels in equal tiles of "
            "at most 512 pixels, 0 never tiles",
        )
    else:
        parser.add_argument(
            "--tile",
            type=positive_tile_size,
            metavar="SIZE",
            help="restore in tiles of SIZE pixels (changes the numbers)",
        )
    parser.add_argument("--tile-overlap", type=non_negative_int, metavar="PIXELS", help="overlap of tiles (default 32)")


def add_device_arguments(parser: argparse.ArgumentParser, device: str | None, dtype: str | None) -> None:
    """`--device` and `--dtype`, as `inference.load_model` takes them, with these defaults.

    `device`: 'auto' (a GPU if there is one; the command resolves it) or None (the model stays on the CPU).
    `dtype`: None keeps the precision the model is loaded in (float32 for original checkpoints).
    """
    where = "a GPU if any" if device == "auto" else "cpu"
    parser.add_argument("--device", default=device, help=f"torch device, e.g. cpu, cuda, cuda:1 (default: {where})")
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES + (("auto",) if dtype == "auto" else ()),
        default=dtype,
        help=f"model precision (default {dtype or 'float32'}"
        + ("; auto: bfloat16 on CPUs with native bfloat16, else float32" if dtype == "auto" else "")
        + "; float16 is meant for GPUs: on CPU it is much slower)",
    )


__all__ = [
    "DTYPE_CHOICES",
    "add_device_arguments",
    "add_model_arguments",
    "add_tiling_arguments",
    "check_device",
    "fail",
    "non_negative_int",
    "positive_int",
    "tile_size",
    "write_errors",
]
