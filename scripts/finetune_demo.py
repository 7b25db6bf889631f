#!/usr/bin/env python
"""Fine-tuning released RAMiT-1 x2 on real-world degradations: the gain, measured on a seeded degraded Set14.

Starts from the released RAMiT-1 x2 weights (`../shared/reference/checkpoints/RAMiT-1_X2.pth`, trained on bicubic
inputs) and fine-tunes them with `ramit_hf.training.prepare_training` on inputs made on the fly by the Real-ESRGAN
degradation model (`--degradation realesrgan`: blur, resize, noise, JPEG, two stages). Training images: the 18
McMaster images from `../shared/testsets` and ten scikit-image sample images (`skimage.data`); none of them is in
Set14, the evaluation set. Evaluation: Set14 with its LR inputs degraded by the same model, seeded per image
(`ramit evaluate --degradation realesrgan --seed 0` makes the same inputs), PSNR/SSIM on Y with the x2 border
cropped (the paper's protocol), before and after. Also writes a picture (degraded input, released weights,
fine-tuned, ground truth) of a crop of `skimage.data.astronaut()` (NASA, public domain; held out of training).

    python scripts/finetune_demo.py                          # the full demonstration (CPU: about 20 minutes)
    python scripts/finetune_demo.py --steps 40 --images 3    # a quick version

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ramit_hf.inference import load_model, restore_tensor
from ramit_hf.protocol import Protocol, evaluate_model, load_test_set
from ramit_hf.training.degradations import RealDegradation, degraded_test_set, resolve_settings, test_rng
from ramit_hf.training.recipes import load_recipe
from ramit_hf.training.run import prepare_training

SKIMAGE_COLOR = ("chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
SKIMAGE_GRAY = ("camera", "brick", "grass", "gravel", "moon")


def write_training_images(folder: Path, shared: Path) -> int:
    """McMaster HR + scikit-image sample images (gray ones as RGB) as PNG files in `folder`."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted((shared / "testsets" / "McMaster" / "HR").glob("*.png")):
        with Image.open(path) as image:
            image.convert("RGB").save(folder / f"mcmaster_{path.stem}.png")
        count += 1
    for name in SKIMAGE_COLOR + SKIMAGE_GRAY:
        array = getattr(skimage.data, name)()
        array = np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array[..., :3]
        Image.fromarray(array).save(folder / f"skimage_{name}.png")
        count += 1
    return count


def degraded_set14(shared: Path, seed: int, images: int | None = None, names: list[str] | None = None):
    """Set14 with seeded real-world degradations (the first `images`, or the images `names`)."""
    test_set = degraded_test_set(
        load_test_set(shared / "testsets" / "Set14", Protocol("sr-x2"), make_lr=True),
        resolve_settings("realesrgan"),
        seed,
    )
    if names is not None:
        return test_set.select([test_set.names.index(name) for name in names])
    return test_set.select(range(images)) if images is not None else test_set


def score(model, test_set) -> tuple[float, float]:
    result = evaluate_model(model, test_set, progress=False)
    return result.mean_psnr, float(np.mean([image.ssim for image in result.images]))


def finetune(train_folder: Path, output: Path, checkpoint: Path, steps: int, patch: int, batch: int, lr: float):
    recipe = load_recipe(
        "sr-x2",
        {
            "name": "ramit1-x2-realesrgan-demo",
            "init_from": str(checkpoint),
            "degradation": "realesrgan",
            "learning_rate": lr,
            "warmup_epochs": 0,
            "milestones": [],
            "patch_sizes": [patch],
            "batch_sizes": [batch],
            "epochs": 1,
            "dataset_repeat": max(1.0, steps * batch / len(list(train_folder.glob("*.png")))),
            "max_steps": steps,
            "eval_steps": steps,
            "logging_steps": max(1, steps // 4),
            "dataloader_num_workers": 0,
            "save_total_limit": 1,
            "seed": 0,
        },
    )
    run = prepare_training(recipe, train_folder, None, output, overwrite=True, disable_tqdm=True)
    run.train()
    return run.model.eval()


def picture(released, tuned, path: Path, seed: int = 0, crop: tuple[int, int, int] = (40, 170, 96)) -> None:
    """Input (nearest-neighbour x2), released, fine-tuned, ground truth: a 96 x 96 HR crop of the astronaut."""
    import skimage.data

    hr = skimage.data.astronaut()
    lr = RealDegradation(resolve_settings("realesrgan"), 2)(hr, test_rng(seed, 0))
    tensor = torch.from_numpy(lr.astype(np.float32) / 255).permute(2, 0, 1)[None]
    panels = [np.repeat(np.repeat(lr, 2, axis=0), 2, axis=1)]
    with torch.no_grad():
        for model in (released, tuned):
            out = restore_tensor(model, tensor)[0].clamp(0, 1).permute(1, 2, 0).numpy()
            panels.append(np.round(out * 255).astype(np.uint8))
    panels.append(hr)
    top, left, side = crop
    tiles = [np.asarray(Image.fromarray(p[top : top + side, left : left + side]).resize((192, 192), 0)) for p in panels]
    gap = np.full((192, 4, 3), 255, np.uint8)
    row = np.concatenate([x for tile in tiles for x in (tile, gap)][:-1], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--patch", type=int, default=40, help="LR patch side")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--images", type=int, default=None, help="evaluate on the first N Set14 images only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degraded Set14")
    parser.add_argument("--picture", type=Path, default=None, help="write the before/after picture here")
    args = parser.parse_args(argv)

    checkpoint = args.shared / "reference" / "checkpoints" / "RAMiT-1_X2.pth"
    test_set = degraded_set14(args.shared, args.seed, args.images)
    released = load_model(checkpoint)
    before = score(released, test_set)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "train"
        count = write_training_images(folder, args.shared)
        started = time.perf_counter()
        tuned = finetune(folder, Path(work) / "run", checkpoint, args.steps, args.patch, args.batch, args.learning_rate)
        seconds = time.perf_counter() - started
    after = score(tuned, test_set)
    if args.picture is not None:
        picture(released, tuned, args.picture, args.seed)
    print(
        f"fine-tuning: {args.steps} steps of {args.batch} patches ({args.patch} px LR) on {count} images, "
        f"learning rate {args.learning_rate:g}, {seconds:.0f} s on {torch.get_num_threads()} CPU threads\n"
    )
    print(
        f"| RAMiT-1 x2 weights | Set14{'' if args.images is None else f' (first {len(test_set)})'} degraded "
        f"(realesrgan, seed {args.seed}): PSNR-Y | SSIM-Y |"
    )
    print("|---|---|---|")
    print(f"| released (bicubic-trained) | {before[0]:.2f} | {before[1]:.4f} |")
    print(f"| fine-tuned on real-world degradations | {after[0]:.2f} | {after[1]:.4f} |")
    print(f"| gain | {after[0] - before[0]:+.2f} dB | {after[1] - before[1]:+.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
