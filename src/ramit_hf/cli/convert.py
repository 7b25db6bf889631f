"""`ramit convert`: an original RAMiT checkpoint -> a Hugging Face model folder."""

from __future__ import annotations

import argparse

from ..configuration_ramit import TASKS, VARIANTS
from .common import fail, write_errors


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert an original RAMiT .pth checkpoint to a from_pretrained folder",
        description="Convert an original RAMiT checkpoint (e.g. RAMiT-1_X2.pth) to a folder that "
        "RamitForImageRestoration.from_pretrained and pipeline('image-restoration') load.",
    )
    parser.add_argument("checkpoint", help="original .pth file")
    parser.add_argument("output_dir", help="folder to write (config.json, model.safetensors, preprocessor config)")
    parser.add_argument("--variant", choices=VARIANTS, help="default: inferred from the file name and the weights")
    parser.add_argument("--task", choices=TASKS, help="default: inferred from the file name or the weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..convert import CheckpointError, convert_original_checkpoint, save_model_folder

    try:
        model = convert_original_checkpoint(args.checkpoint, variant=args.variant, task=args.task)
    except (CheckpointError, FileNotFoundError) as error:
        return fail("convert", error)
    try:
        folder = save_model_folder(model, args.output_dir, overwrite=args.overwrite)
    except FileExistsError as error:
        return fail("convert", error)
    except write_errors() as error:  # a full disk, a quota, a file size limit, a read-only folder
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return fail("convert", f"cannot write {args.output_dir}: {reason}; nothing was written")
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    print(f"{config.variant} {config.task} ({params:,} parameters) -> {folder}")
    return 0
