"""bfloat16 against float32 on real images, for every released super-resolution checkpoint.

For each checkpoint: Set5 PSNR-Y with the paper's protocol in float32 and in bfloat16 (the inference path
`ramit restore --dtype auto` picks on CPUs with native bfloat16), and the relative L2 difference of the outputs on
centre crops of every Set5 and Set14 LR image. Prints one Markdown table.

    python scripts/bf16_quality.py                      # ../shared/reference/checkpoints, ../shared/testsets
    python scripts/bf16_quality.py --crop 128 --full-bf16
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from ramit_hf import convert_original_checkpoint
from ramit_hf.forward import restore_whole
from ramit_hf.inference import Compute
from ramit_hf.protocol import Protocol, evaluate_model, load_test_set

SR_CHECKPOINTS = ("RAMiT-1_X2", "RAMiT-1_X3", "RAMiT-1_X4", "RAMiT-slimSR_X2", "RAMiT-slimSR_X3", "RAMiT-slimSR_X4")


def crops(test_set, size: int) -> list[torch.Tensor]:
    out = []
    for sample in test_set:
        image = sample.pixel_values
        top, left = max(0, (image.shape[1] - size) // 2), max(0, (image.shape[2] - size) // 2)
        out.append(image[:, top : top + size, left : left + size])
    return out


def relative_l2(model_a, model_b, images: list[torch.Tensor]) -> float:
    """The largest relative L2 difference between the two models' outputs over the images."""
    worst = 0.0
    for image in images:
        a, b = restore_whole(model_a, image[None]), restore_whole(model_b, image[None])
        worst = max(worst, ((a - b).norm() / a.norm()).item())
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="../shared/reference/checkpoints")
    parser.add_argument("--testsets", default="../shared/testsets")
    parser.add_argument("--crop", type=int, default=96, help="side of the LR centre crops for the relative L2")
    parser.add_argument("--full-bf16", action="store_true", help="also every layer in bfloat16 (model.to(bfloat16))")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {"bf16": Compute(torch.bfloat16, "banded", "measured")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, crops {args.crop}x{args.crop}")
    print("| checkpoint | path | Set5 PSNR fp32 | Set5 PSNR bf16 | difference dB | max rel. L2 (Set5+Set14 crops) |")
    print("|---|---|---|---|---|---|")
    for name in SR_CHECKPOINTS:
        reference = convert_original_checkpoint(Path(args.checkpoints) / f"{name}.pth").eval()
        protocol = Protocol(f"sr-x{reference.config.upscale}")
        set5 = load_test_set(Path(args.testsets) / "Set5", protocol)
        set14 = load_test_set(Path(args.testsets) / "Set14", protocol)
        images = crops(set5, args.crop) + crops(set14, args.crop)
        base = evaluate_model(reference, set5, progress=False).mean_psnr
        candidates = {"bf16 body (auto)": variants["bf16"].apply(copy.deepcopy(reference))}
        if args.full_bf16:
            candidates["bf16 everywhere"] = copy.deepcopy(reference).to(torch.bfloat16)
        for label, model in candidates.items():
            psnr = evaluate_model(model, set5, progress=False).mean_psnr
            error = relative_l2(reference, model, images)
            print(f"| {name} | {label} | {base:.3f} | {psnr:.3f} | {psnr - base:+.3f} | {error:.1e} |", flush=True)


if __name__ == "__main__":
    main()
