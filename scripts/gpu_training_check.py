#!/usr/bin/env python
"""One GPU check of RAMiT training: speed, memory and what a few hundred steps learn.

Trains RAMiT x2 (the `sr-x2` recipe's model, patches of 64 px, 32 per step as the paper has per GPU) from scratch
for `--steps` steps in fp32 and in bf16, then briefly with gradient checkpointing and with torch.compile, through
the real pipeline (`ramit_hf.training.prepare_training`: data from folders, `RamitTrainer`). For each run it prints
steps/s (after the first 10 steps) and peak GPU memory, both as scripts/measuring.py measures them; for the fp32 and
bf16 runs also PSNR-Y on Set5 x2 (the paper's protocol, evaluated in fp32) next to MATLAB bicubic upscaling.
Training images: Set14 + McMaster HR from ../shared/testsets (LR made on the fly with MATLAB-compatible bicubic);
validation: Set5 with its MATLAB LR files.

    python scripts/gpu_training_check.py            # on the GPU machine, from the repo root, ../shared beside it
    python scripts/gpu_training_check.py --smoke    # a few tiny CPU steps: checks that the script works

Prints a Markdown table. The learning rate follows the paper's linear scaling (4e-4 per 64 patches -> 2e-4 for
32) with a 20-step warm-up and no halving: a short run, not the paper's 500 epochs.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))  # for measuring, also when a test loads this file by path

from measuring import peak_memory, synchronize

from ramit_hf.inference import restore_tensor
from ramit_hf.protocol.metrics import psnr, to_uint8
from ramit_hf.protocol.resize import imresize, modcrop
from ramit_hf.training.recipes import load_recipe
from ramit_hf.training.run import prepare_training

TINY_MODEL = {"model": {"embed_dim": 16, "depths": [1, 1, 1, 2], "fusion_expand_groups": 1}}


class StepTimer(TrainerCallback):
    """Wall time from the end of step `skip` to the end of training (compilation and warm-up excluded), the device
    synchronised at the end of each step."""

    def __init__(self, skip: int):
        self.skip = skip
        self.start = self.end = None
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        synchronize("cuda" if torch.cuda.is_available() else "cpu")
        if state.global_step == self.skip:
            self.start = time.perf_counter()
        elif state.global_step > self.skip:
            self.end = time.perf_counter()
            self.steps = state.global_step - self.skip

    @property
    def steps_per_second(self) -> float | None:
        return self.steps / (self.end - self.start) if self.start and self.end and self.steps else None


def link_images(folders: list[Path], target: Path) -> Path:
    """One folder of symbolic links to the images of several folders (names prefixed to stay unique)."""
    target.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() == ".png":
                (target / f"{folder.parent.name}_{image.name}").symlink_to(image.resolve())
    return target


def set5_pairs(shared: Path, names: list[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR, HR mod-cropped) uint8 pairs of Set5 x2 (or of the named images), from its MATLAB-made LR files."""
    pairs = []
    for hr_path in sorted((shared / "testsets/Set5/HR").glob("*.png")):
        if names is not None and hr_path.stem not in names:
            continue
        hr = modcrop(np.asarray(Image.open(hr_path).convert("RGB")), 2)
        lr = np.asarray(Image.open(shared / f"testsets/Set5/LR_bicubic/X2/{hr_path.stem}x2.png").convert("RGB"))
        pairs.append((lr, hr))
    return pairs


@torch.no_grad()
def set5_psnr(model, pairs) -> float:
    """Mean PSNR-Y (2 px border) of the model on Set5 x2, fp32 weights and activations."""
    model = model.float().eval()
    device = next(model.parameters()).device
    scores = []
    for lr, hr in pairs:
        x = torch.from_numpy(np.array(lr)).permute(2, 0, 1)[None].float().div(255).to(device)
        out = restore_tensor(model, x)[0].permute(1, 2, 0).cpu().numpy()
        scores.append(psnr(to_uint8(out), hr, crop_border=2, test_y_channel=True))
    return float(np.mean(scores))


def bicubic_psnr(pairs) -> float:
    return float(np.mean([psnr(imresize(lr, 2), hr, crop_border=2, test_y_channel=True) for lr, hr in pairs]))


def train_once(name, train_dir, work, steps, overrides, pairs, measure_quality=True) -> dict:
    # one checkpoint, at the end: the runs measure training, not saving
    recipe = load_recipe("sr-x2", {**overrides, "max_steps": steps, "eval_steps": steps})
    timer = StepTimer(skip=min(10, steps - 1))
    run = prepare_training(
        recipe, train_dir, None, work / name.replace(" ", "_"), overwrite=True, callbacks=[timer], disable_tqdm=True
    )
    gc.collect()  # the previous run's trainer, optimizer and data loaders must not count in this run's peak
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
    with peak_memory("cuda") if cuda else nullcontext() as allocated:
        run.trainer.train()
    memory = allocated.peak / 2**30 if allocated is not None else None
    quality = set5_psnr(run.trainer.model, pairs) if measure_quality else None
    return {
        "run": name,
        "steps": steps,
        "steps_per_second": timer.steps_per_second,
        "memory_gib": memory,
        "psnr": quality,
    }


def fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="steps of the fp32 and bf16 runs (default 300)")
    parser.add_argument("--extra-steps", type=int, default=60, help="steps of the checkpointing / compile runs")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"), help="folder holding testsets/")
    parser.add_argument("--workers", type=int, default=8, help="data-loading processes")
    parser.add_argument("--no-extras", action="store_true", help="skip the gradient checkpointing / compile runs")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 4 steps, CPU: checks the script runs")
    args = parser.parse_args(argv)

    shared = Path(args.shared)
    if not (shared / "testsets/Set5/LR_bicubic/X2").is_dir():
        print(f"error: {shared}/testsets/Set5 not found (pass --shared)", file=sys.stderr)
        return 2
    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA device; use --smoke for a CPU check of the script", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="ramit-gpu-check-"))
    try:
        train_dir = link_images([shared / "testsets/Set14/HR", shared / "testsets/McMaster/HR"], work / "train")
        pairs = set5_pairs(shared, ["butterfly"] if args.smoke else None)
        # 32 training images x 10 = 320 patches per epoch: 10 steps per epoch at 32 patches per step
        common = {
            "dataset_repeat": 10,
            "warmup_epochs": 2,
            "milestones": [],
            "patch_sizes": [64],
            "batch_sizes": [32],
            "dataloader_num_workers": args.workers,
            "logging_steps": 50,
        }
        steps, extra_steps = args.steps, args.extra_steps
        if args.smoke:
            common.update(
                TINY_MODEL,
                patch_sizes=[24],
                batch_sizes=[4],
                dataset_repeat=1,
                warmup_epochs=0,
                dataloader_num_workers=min(args.workers, 2),
            )
            steps = extra_steps = 4
        steps_per_epoch = len(list(train_dir.iterdir())) * common["dataset_repeat"] // common["batch_sizes"][0]
        common["epochs"] = max(-(-max(steps, extra_steps) // steps_per_epoch), 1)

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        started = time.perf_counter()
        rows = [
            {
                "run": "bicubic (MATLAB)",
                "steps": None,
                "steps_per_second": None,
                "memory_gib": None,
                "psnr": bicubic_psnr(pairs),
            }
        ]
        rows.append(train_once("fp32", train_dir, work, steps, common, pairs))
        rows.append(train_once("bf16", train_dir, work, steps, {**common, "bf16": True}, pairs))
        if not args.no_extras and not args.smoke:
            extras = (
                ("bf16 + gradient checkpointing", {"gradient_checkpointing": True}),
                ("bf16 + torch.compile", {"torch_compile": True}),
            )
            for name, extra in extras:
                if time.perf_counter() - started > 360:
                    rows.append(
                        {
                            "run": f"{name} (skipped: time)",
                            "steps": None,
                            "steps_per_second": None,
                            "memory_gib": None,
                            "psnr": None,
                        }
                    )
                    continue
                try:
                    rows.append(
                        train_once(
                            name,
                            train_dir,
                            work,
                            extra_steps,
                            {**common, "bf16": True, **extra},
                            pairs,
                            measure_quality=False,
                        )
                    )
                except Exception as error:  # report and go on: one failing path should not hide the others
                    rows.append(
                        {
                            "run": f"{name} (failed: {type(error).__name__}: {error})"[:160],
                            "steps": None,
                            "steps_per_second": None,
                            "memory_gib": None,
                            "psnr": None,
                        }
                    )

        print()
        print(
            f"RAMiT x2 training check on {device}, torch {torch.__version__}"
            + (" (SMOKE: tiny model, not a measurement)" if args.smoke else "")
        )
        print(
            f"patches {common['patch_sizes'][0]} px x {common['batch_sizes'][0]} per step; Set5 x2 PSNR-Y "
            f"({len(pairs)} images), 2 px border"
        )
        print()
        print("| run | steps | steps/s | peak GPU memory (GiB) | Set5 x2 PSNR-Y (dB) |")
        print("|---|---:|---:|---:|---:|")
        for row in rows:
            print(
                f"| {row['run']} | {row['steps'] or '-'} | {fmt(row['steps_per_second'])} | "
                f"{fmt(row['memory_gib'])} | {fmt(row['psnr'])} |"
            )
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
