"""`ramit train`: train or fine-tune RAMiT with one of the paper's recipes (or your own recipe file)."""

from __future__ import annotations

import argparse
import sys

from .common import fail

EPILOG = """\
examples:
  ramit train --recipe sr-x2 --train-data DIV2K/ --val-data Set5/ --output-dir runs/sr-x2
  ramit train --recipe sr-x2 --init-from RAMiT_X2.pth --train-data my_photos/ --val-data my_val_photos/ \\
      --learning-rate 1e-5 --epochs 5 --warmup-epochs 0 --milestones [] --eval-every-epochs 1
  ramit train --recipe sr-x2 ... --degradation realesrgan --ema-decay 0.999   # real-world inputs, EMA weights
  ramit train --recipe color-dn ... --val-data CBSD68/ Kodak24/ --keep-best --best-metric cbsd68_s25_psnr
  ramit train --recipe sr-x3 --init-from runs/sr-x2 --train-data DIV2K/ --val-data Set5/
  ramit train --recipe sr-x2 ... --set max_steps=50 --set model.drop_path_rate=0.1
  ramit train --recipe sr-x2 ... --output-dir runs/sr-x2 --resume          # continue from the last checkpoint
  torchrun --nproc_per_node 2 scripts/train.py --recipe color-dn ...       # data-parallel, same options

Data folders: a folder of images (super-resolution makes its LR input with MATLAB-compatible bicubic, denoising
adds noise), or a dataset folder with HR/ + LR_bicubic/X<s>/ or HQ/ + LQ/ sub-folders, or --train-lq; a Hugging
Face dataset id or save_to_disk folder with image columns also works (--hq-column / --lq-column).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    # one declaration per option: long, but flat; splitting it would only scatter the command's options
    from ..training.recipes import RECIPE_NAMES, Recipe

    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune RAMiT with the paper's recipes",
        description="Train RAMiT with a recipe holding the paper's settings (patches, batch, learning-rate schedule) "
        "on image folders or Hugging Face datasets; checkpoints are from_pretrained folders.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--recipe", default="sr-x2", help=f"built-in recipe ({', '.join(RECIPE_NAMES)}) or a .yaml/.json recipe file"
    )
    parser.add_argument("--train-data", help="training images: folder, dataset folder, or Hugging Face dataset id")
    parser.add_argument("--train-lq", help="folder of low-quality training inputs, paired by name")
    parser.add_argument(
        "--val-data",
        nargs="+",
        help="validation images (same forms as --train-data); several sets are each validated and logged",
    )
    parser.add_argument("--val-lq", help="folder of low-quality validation inputs, paired by name")
    parser.add_argument("--output-dir", help="run folder (checkpoints, final model); default ./ramit-<recipe>")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue the run in --output-dir from its last complete checkpoint (or this one)",
    )
    parser.add_argument("--overwrite", action="store_true", help="start over in a non-empty --output-dir")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a recipe field (repeatable), e.g. max_steps=50 or model.drop_path_rate=0.1",
    )
    parser.add_argument("--hq-column", help="high-quality image column of a dataset (default: hq/hr/gt/.../image)")
    parser.add_argument("--lq-column", help="low-quality image column of a dataset (default: lq/lr/input/...)")
    parser.add_argument("--train-split", default="train", help="split of a dataset for training (default: train)")
    parser.add_argument("--val-split", default="validation", help="split of a dataset for validation")
    parser.add_argument("--report-to", default="none", help="Trainer loggers (e.g. tensorboard, wandb); default none")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")

    fields = parser.add_argument_group(
        "recipe fields", "each overrides the recipe's value; values are read as YAML (64,96 or [64, 96]; true; null)"
    )
    for name in Recipe.field_names():
        if name == "model":
            continue  # a mapping: --set model.<field>=<value>
        flag = "--" + name.replace("_", "-")
        kind = Recipe.field_kind(name).removeprefix("opt_")
        if kind == "bool":
            fields.add_argument(
                flag,
                dest=f"field_{name}",
                nargs="?",
                const="true",
                default=None,
                metavar="BOOL",
                help=Recipe.field_doc(name),
            )
        else:
            metavar = "LIST" if kind.endswith("list") else kind.upper()
            fields.add_argument(flag, dest=f"field_{name}", default=None, metavar=metavar, help=Recipe.field_doc(name))
    parser.set_defaults(run=run)
    return parser


def collect_overrides(args: argparse.Namespace) -> list[str]:
    """`--set` overrides followed by per-field flags (which win), as `field=value` strings."""
    overrides = list(args.overrides)
    for key, value in vars(args).items():
        if key.startswith("field_") and value is not None:
            overrides.append(f"{key.removeprefix('field_')}={value}")
    return overrides


def run(args: argparse.Namespace) -> int:
    from ..convert import CheckpointError
    from ..inference import ModelLoadError
    from ..training.pixels import DataError
    from ..training.recipes import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe, collect_overrides(args))
        if args.print_recipe:
            import yaml

            print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
            return 0
        if args.train_data is None:
            raise RecipeError("--train-data is required")
        from ..training.run import TrainingSetupError, prepare_training

        run = prepare_training(
            recipe,
            args.train_data,
            args.val_data[0] if args.val_data and len(args.val_data) == 1 else args.val_data,
            args.output_dir,
            train_lq=args.train_lq,
            val_lq=args.val_lq,
            hq_column=args.hq_column,
            lq_column=args.lq_column,
            train_split=args.train_split,
            val_split=args.val_split,
            resume=args.resume,
            overwrite=args.overwrite,
            report_to=args.report_to,
        )
    except (RecipeError, DataError, ModelLoadError, CheckpointError, FileNotFoundError) as error:
        return fail("train", error)
    except TrainingSetupError as error:  # imported in the `try` (the trainer loads only when training)
        return fail("train", error)
    main_process = run.trainer.is_world_process_zero()
    if main_process:
        print(run.summary(), flush=True)
    metrics = run.train()
    if main_process:
        from ..training.card import final_metrics

        step, table = final_metrics(run.trainer.state, run.best_metric is not None)
        measured = "; ".join(
            f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()) for name, values in table.items()
        )
        kept = "best" if run.best_metric else "final"
        print(
            f"saved {run.output_dir} after {run.trainer.state.global_step} steps "
            f"({metrics.get('train_runtime', 0):.0f} s)" + (f"; {kept} step {step}: {measured}" if table else "")
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`ramit train` as a script entry point (for `torchrun scripts/train.py ...`)."""
    from . import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])
