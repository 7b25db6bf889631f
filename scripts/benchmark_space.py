"""Time of the demo Space's default call: super-resolution x2 (RAMiT-slimSR) of a 512 x 512 upload, through the
image-restoration pipeline as the Space calls it (tile_size "auto"), with precision "auto", float32, and float32 with
the fused computation (whole tensors, what accelerators run) instead of the banded one, interleaved.

    python scripts/benchmark_space.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import numpy as np
import torch
from measuring import time_calls
from PIL import Image

from ramit_hf import convert_original_checkpoint
from ramit_hf.convert import processor_for
from ramit_hf.pipeline_image_restoration import ImageRestorationPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="../shared/reference/checkpoints/RAMiT-slimSR_X2.pth")
    parser.add_argument("--image", default="../shared/testsets/Set14/HR/barbara.png")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with Image.open(args.image) as image:
        upload = Image.fromarray(np.asarray(image.convert("RGB"))[:512, :512])
    pipes = {}
    for name, precision, computation in (
        ("auto", "auto", "auto"),
        ("float32", "float32", "auto"),
        ("float32, fused", "float32", "fused"),
    ):
        model = convert_original_checkpoint(args.checkpoint)
        model.set_computation(computation)
        pipes[name] = ImageRestorationPipeline(
            model=model, image_processor=processor_for(model.config), device="cpu", precision=precision
        )
        pipes[name](upload.crop((0, 0, 64, 64)))  # warm-up
    calls = {precision: partial(pipe, upload, tile_size="auto") for precision, pipe in pipes.items()}
    times = time_calls(calls, repeats=args.repeats).seconds  # interleaved round by round
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {upload.size[0]}x{upload.size[1]} upload")
    print("| precision | computation | median s | min s |")
    print("|---|---|---|---|")
    for precision, pipe in pipes.items():
        compute = pipe.compute.describe() if pipe.compute else "?"
        print(f"| {precision} | {compute} | {statistics.median(times[precision]):.2f} | {min(times[precision]):.2f} |")


if __name__ == "__main__":
    main()
