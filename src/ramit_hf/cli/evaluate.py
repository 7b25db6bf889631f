"""`ramit evaluate`: PSNR/SSIM of a model on a test set with the paper's protocol."""

from __future__ import annotations

import argparse
import sys

from .common import add_device_arguments, add_model_arguments, add_tiling_arguments, check_device, fail


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="benchmark a model on a test set (PSNR/SSIM with the paper's protocol)",
        description="Benchmark a RAMiT model on a test set with the protocol of the original test code: "
        "super-resolution on Y with crop border = scale (LR from the set's LR folder, else MATLAB bicubic), "
        "denoising on RGB/gray with seeded Gaussian noise, low-light on RGB and deraining on Y from LQ/HQ pairs. "
        "Prints per-image and mean PSNR/SSIM as a Markdown table (or JSON with --json).",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--dataset",
        required=True,
        help="test-set folder (HR/ [+ LR*/X<s>/] or HQ/ + LQ/, or a folder of images), a `datasets` "
        "save_to_disk folder, or a Hub dataset id",
    )
    parser.add_argument("--sigma", type=float, help="denoising: noise level on the 0-255 scale (the paper: 15, 25, 50)")
    parser.add_argument("--noise-seed", type=int, default=0, help="denoising: seed of each image's noise (default 0)")
    parser.add_argument("--lr-dir", help="folder of the degraded inputs (default: found beside HR/ or HQ/)")
    parser.add_argument(
        "--make-lr",
        action="store_true",
        help="super-resolution: make the LR with bicubic imresize even if the set has LR images",
    )
    parser.add_argument(
        "--degradation",
        help="super-resolution: make each LR input with real-world degradations (realesrgan, or a settings .yaml) "
        "instead of bicubic, seeded per image with --seed",
    )
    parser.add_argument("--seed", type=int, default=0, help="--degradation: seed of the degraded inputs (default 0)")
    parser.add_argument("--split", help="`datasets` split (default: the only one, else 'test')")
    parser.add_argument("--hr-column", help="`datasets` column of the ground truth")
    parser.add_argument("--lr-column", help="`datasets` column of the degraded input")
    parser.add_argument("--name-column", help="`datasets` column of the image names")
    parser.add_argument("--dataset-name", help="name of the set in reports (default: folder or dataset name)")
    add_tiling_arguments(parser, auto=False)
    add_device_arguments(parser, device=None, dtype=None)
    parser.add_argument("--save-images", metavar="DIR", help="write the restored images as <name>.png to DIR")
    parser.add_argument("--output", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--json", action="store_true", help="print the JSON results instead of the Markdown table")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file / fill a used DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from ..inference import ModelLoadError, load_model
    from ..protocol import Protocol, TestSetError, evaluate_model, load_test_set

    if args.output and not args.overwrite:
        from pathlib import Path

        if Path(args.output).exists():
            return fail("evaluate", f"{args.output} exists; pass --overwrite to replace it")
    try:
        check_device(args.device)
        model = load_model(args.model, device=args.device, dtype=args.dtype, task=args.task)
    except (ModelLoadError, FileNotFoundError, ValueError, OSError, RuntimeError) as error:
        return fail("evaluate", error)
    task = model.config.task
    if args.task is not None and args.task != task:
        return fail("evaluate", f"{args.model} is a {task} model, not {args.task}")
    if task in ("color-dn", "gray-dn") and args.sigma is None:
        return fail(
            "evaluate", f"{args.model} is a {task} model: pass --sigma (the noise level; the paper uses 15, 25 and 50)"
        )
    try:
        protocol = Protocol(task, sigma=args.sigma, noise_seed=args.noise_seed)
        test_set = load_test_set(
            args.dataset,
            protocol,
            name=args.dataset_name,
            lr_dir=args.lr_dir,
            make_lr=args.make_lr or args.degradation is not None,
            split=args.split,
            hr_column=args.hr_column,
            lr_column=args.lr_column,
            name_column=args.name_column,
        )
        if args.degradation is not None:
            from ..training.degradations import degraded_test_set, resolve_settings

            test_set = degraded_test_set(test_set, resolve_settings(args.degradation), args.seed)
        result = evaluate_model(
            model,
            test_set,
            model_source=args.model,
            tile_size=args.tile,
            tile_overlap=args.tile_overlap,
            save_images=args.save_images,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (TestSetError, ValueError, FileExistsError) as error:
        return fail("evaluate", error)
    except OSError as error:  # --save-images onto a full disk, a read-only folder
        return fail("evaluate", f"cannot write the restored images: {error}")
    except torch.OutOfMemoryError:
        return fail("evaluate", "out of memory; try --tile 256 (or a smaller tile)")

    if args.output:
        try:
            result.save_json(args.output, overwrite=args.overwrite)
        except (FileExistsError, OSError) as error:
            return fail("evaluate", error)
    if args.json:
        sys.stdout.write(result.to_json())
    else:
        print(result.to_markdown())
        if args.output:
            print(f"results -> {args.output}")
    return 0
