"""Validation data: whole images paired with their degraded inputs, scored with each task's published protocol."""

from __future__ import annotations

import numpy as np
import torch

from ..protocol.resize import imresize
from ..protocol.task_protocol import add_gaussian_noise
from .degradations import RealDegradation, degrade_test_image
from .pixels import DataError, modcrop_hw, task_channels, task_scale, to_tensor
from .sources import DecodeImages, ImageSource, check_sizes

# (crop_border, test_y_channel) of each task's published evaluation (`None` border: the SR scale)
TASK_EVAL_PROTOCOL = {
    "sr-x2": (2, True),
    "sr-x3": (3, True),
    "sr-x4": (4, True),
    "color-dn": (0, False),
    "gray-dn": (0, False),
    "lle": (0, False),
    "derain": (0, True),
}


def eval_protocol(task: str) -> tuple[int, bool]:
    """(crop_border, test_y_channel) of the task's published PSNR/SSIM: SR on luma with `scale` pixels cropped,
    deraining on luma, the others on all channels."""
    task_scale(task)
    return TASK_EVAL_PROTOCOL[task]


# --------------------------------------------------------------------------------------------------
# validation


class ValidationPairs:
    """`with_transform` function making whole-image validation pairs with the task's test protocol.

    Super-resolution: target = mod-cropped HR, input = the given LR (cropped to HR / scale) or MATLAB bicubic of the
    target. Denoising: input = target + Gaussian noise of `noise_sigma` from a generator seeded 0 for every image,
    as the original test does (`evaluation.add_gaussian_noise`). Low-light / deraining: the given pairs. With
    `degradation` (super-resolution without LR images): the real-world degradation of image `index` seeded with
    `degradation_seed`, the inputs of `ramit evaluate --degradation ... --seed <degradation_seed>`.
    """

    def __init__(self, task: str, noise_sigma: float = 25.0, degradation: dict | None = None, degradation_seed=0):
        self.task = task
        self.scale = task_scale(task)
        self.num_channels = task_channels(task)
        self.noise_sigma = noise_sigma
        self.degradation = RealDegradation(degradation, self.scale) if degradation and self.scale > 1 else None
        self.degradation_seed = degradation_seed

    def pair(self, hq: np.ndarray, lq: np.ndarray | None, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scale
        if s > 1:
            hq = modcrop_hw(hq, s)
            h, w = hq.shape[0] // s, hq.shape[1] // s
            if lq is not None:
                lq = lq[:h, :w]
            elif self.degradation is not None:
                lq = degrade_test_image(hq, self.degradation, self.degradation_seed, index)
            else:
                lq = imresize(hq, 1.0 / s)
            return to_tensor(lq), to_tensor(hq)
        target = to_tensor(hq)
        if self.task in ("color-dn", "gray-dn") and lq is None:
            return add_gaussian_noise(target, self.noise_sigma, seed=0), target
        if lq is None:
            raise DataError(f"task {self.task} needs low-quality validation images")
        return to_tensor(lq), target

    def __call__(self, batch: dict) -> dict:
        decode = DecodeImages(self.num_channels)(batch)
        lqs = decode.get("lq", [None] * len(decode["hq"]))
        indices = batch.get("index", range(len(decode["hq"])))
        pairs = [self.pair(hq, lq, int(i)) for hq, lq, i in zip(decode["hq"], lqs, indices, strict=True)]
        return {"pixel_values": [p[0] for p in pairs], "labels": [p[1] for p in pairs]}


def validation_dataset(
    source: ImageSource,
    task: str,
    noise_sigma: float = 25.0,
    max_images: int | None = None,
    degradation: dict | None = None,
):
    """Whole-image validation pairs (`pixel_values`, `labels`, CHW float32 in [0, 1]) decoded on the fly."""
    check_sizes(source, task)
    if task_scale(task) == 1 and task not in ("color-dn", "gray-dn") and not source.has_lq:
        raise DataError(f"task {task} needs low-quality validation images ({source.description} has none)")
    dataset = source.dataset
    if max_images is not None:
        dataset = dataset.select(range(min(max_images, len(dataset))))
    return dataset.with_transform(ValidationPairs(task, noise_sigma, degradation))
