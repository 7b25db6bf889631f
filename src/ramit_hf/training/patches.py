"""Training patches: `RestorationPatchDataset`, whose item `i` is one device's micro-batch of patch pairs.

The items are laid out over the whole run by a `ProgressiveSchedule` (patch and batch size per phase, the paper's
epochs). Item `i` is a pure function of `i` and the seed: the epoch's shuffling, each patch's position, flip,
rotation and noise come from generators seeded with (seed, epoch, position in the epoch). Nothing depends on global
random state or on which process loads it, which is what makes resuming exact and lets processes split the work by
item.

Conventions:

* Patch sizes are low-quality (input) sides; for super-resolution the target patch is `scale` times larger and
  starts at `scale` times the input patch's position.
* Images are kept as 8- or 16-bit arrays until the patch is cut, then scaled to float32 in [0, 1] (CHW).
* Super-resolution without given low-resolution images: the input is MATLAB-compatible bicubic downscaling of the
  mod-cropped HR image (`imresize`, rounded to 8 bits after each pass as MATLAB does). Only the region around the
  patch is resized, with a margin wider than the kernel; this gives exactly the pixels of resizing the whole image
  (tested), at the cost of the patch instead of the image.
* Denoising: Gaussian noise with sigma drawn uniformly from `noise_sigma` (0-255 scale) per patch, added to the
  input and not clipped, as the original `make_some_noise` does (it noises the whole image before cropping; the
  noise is independent per pixel, so noising the patch is the same distribution).
* Real-world degradations (`degradation`, super-resolution without given low-resolution images): the region
  around the patch, with a margin of `DEGRADATION_MARGIN` input pixels where the image has them, goes through the
  Real-ESRGAN pipeline (`training.degradations`) with a generator seeded from (seed, epoch, position), and the
  patch is cut from its interior.
* Grayscale: RGB images become 8-bit luma exactly as OpenCV's `COLOR_RGB2GRAY` computes it (the original's
  conversion).
* Augmentation: a horizontal flip with probability 1/2, then a rotation by k x 90 degrees (k uniform in 0-3), the
  same for both images.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .degradations import RealDegradation, training_rng
from .pixels import (
    augment,
    downscale_region,
    modcrop_hw,
    task_channels,
    task_scale,
    to_tensor,
)
from .schedule import ItemPlan, ProgressiveSchedule
from .sources import DecodeImages, ImageSource, check_sizes

# input pixels degraded around each patch, so that blur and resizes see image content rather than the border
DEGRADATION_MARGIN = 8

# --------------------------------------------------------------------------------------------------
# training patches


class _DecodedCache:
    """Least-recently-used decoded images, bounded in bytes (one per data-loading process)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: OrderedDict = OrderedDict()
        self.bytes = 0

    def get(self, key, load):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = load()
        size = sum(a.nbytes for a in value if a is not None)
        if size <= self.max_bytes:
            self.items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self.items.popitem(last=False)
                self.bytes -= sum(a.nbytes for a in old if a is not None)
        return value


class RestorationPatchDataset(torch.utils.data.Dataset):
    """Micro-batches of random (input, target) patch pairs for a whole training run.

    Item `i` is `{"pixel_values": (B, C, P, P), "labels": (B, C, P*s, P*s)}` with B and P from the schedule; it
    depends only on `i`, the seed and the images (see the module docstring), so any process can make any item and
    a resumed run sees exactly the patches the interrupted one would have. Use it with a sequential sampler and a
    data-loader batch size of 1 (`RamitTrainer` does both) and `collate_batches`.

    Args:
        source: the training images (`load_source`).
        schedule: the run's `ProgressiveSchedule`; its `samples_per_epoch` is usually `int(len(source) * repeat)`.
        task: one of `TASKS`; sets the scale, the channels and the pairing.
        seed: seed of the shuffling and of every patch's randomness.
        noise_sigma: `(low, high)` Gaussian noise sigma range (0-255 scale) added to inputs, or None.
        augment: random flip and 90-degree rotations.
        image_cache_mb: decoded images kept per process (0: decode for every patch).
        trace_dir: if set, each process appends what it served to `trace_dir/rank<r>.jsonl`.
        degradation: real-world degradation settings (`training.degradations`) for super-resolution inputs made
            from the HR images, instead of bicubic downscaling.
    """

    def __init__(
        self,
        source: ImageSource,
        schedule: ProgressiveSchedule,
        task: str,
        seed: int = 0,
        noise_sigma: Sequence[float] | None = None,
        augment: bool = True,
        image_cache_mb: int = 1024,
        trace_dir: str | os.PathLike | None = None,
        degradation: dict | None = None,
    ):
        self.scale = task_scale(task)
        self.task = task
        self.schedule = schedule
        self.seed = int(seed)
        self.noise_sigma = tuple(noise_sigma) if noise_sigma is not None else None
        self.augment = augment
        self.num_images = len(source)
        self.names = list(source.dataset["name"])
        check_sizes(source, task, schedule.max_patch_size())
        self.images = source.dataset.with_transform(DecodeImages(task_channels(task)))
        self.has_lq = source.has_lq
        self.cache = _DecodedCache(image_cache_mb * 2**20)
        self.trace_dir = Path(trace_dir) if trace_dir is not None else None
        self._orders: OrderedDict = OrderedDict()
        self.degradation = RealDegradation(degradation, self.scale) if degradation and self.scale > 1 else None

    def __len__(self) -> int:
        return self.schedule.num_items

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Image index of every sample position of an epoch: a seeded shuffle of `samples_per_epoch` positions,
        taken modulo the number of images (the original's `idx % len(files)` over a repeated dataset)."""
        if epoch not in self._orders:
            order = np.random.default_rng((self.seed, 1, epoch)).permutation(self.schedule.samples_per_epoch)
            self._orders[epoch] = order % self.num_images
            if len(self._orders) > 2:
                self._orders.popitem(last=False)
        return self._orders[epoch]

    def _decoded(self, row: int) -> tuple[np.ndarray, np.ndarray | None]:
        def load():
            item = self.images[row]
            hq = item["hq"]
            if self.scale > 1:
                hq = modcrop_hw(hq, self.scale)
            return hq, item.get("lq")

        return self.cache.get(row, load)

    def sample(self, epoch: int, position: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(input patch, target patch, image index) of one sample position of an epoch."""
        row = int(self.epoch_order(epoch)[position])
        rng = np.random.default_rng((self.seed, 2, epoch, position))
        hq, lq = self._decoded(row)
        s, p = self.scale, patch_size
        if s > 1:
            lr_h, lr_w = hq.shape[0] // s, hq.shape[1] // s
            if lq is not None:
                lr_h, lr_w = min(lr_h, lq.shape[0]), min(lr_w, lq.shape[1])
            top, left = int(rng.integers(0, lr_h - p + 1)), int(rng.integers(0, lr_w - p + 1))
            target = hq[top * s : (top + p) * s, left * s : (left + p) * s]
            if lq is not None:
                inp = lq[top : top + p, left : left + p]
            elif self.degradation is not None:
                inp = self._degraded_region(hq, top, left, p, training_rng(self.seed, epoch, position))
            else:
                inp = downscale_region(hq, s, top, left, p)
        else:
            top = int(rng.integers(0, hq.shape[0] - p + 1))
            left = int(rng.integers(0, hq.shape[1] - p + 1))
            target = hq[top : top + p, left : left + p]
            inp = (lq if lq is not None else hq)[top : top + p, left : left + p]
        if self.augment:
            flip, rotations = bool(rng.integers(0, 2)), int(rng.integers(0, 4))
            inp, target = augment((inp, target), flip, rotations)
        inp, target = to_tensor(inp), to_tensor(target)
        if self.noise_sigma is not None:
            sigma = rng.uniform(*self.noise_sigma)
            noise = rng.standard_normal(inp.shape, dtype=np.float32) * np.float32(sigma / 255.0)
            inp = inp + torch.from_numpy(noise)
        return inp, target, row

    def _degraded_region(self, hq: np.ndarray, top: int, left: int, size: int, rng) -> np.ndarray:
        assert self.degradation is not None
        s, m = self.scale, DEGRADATION_MARGIN
        y0, x0 = max(0, top - m), max(0, left - m)
        y1, x1 = min(hq.shape[0] // s, top + size + m), min(hq.shape[1] // s, left + size + m)
        region = self.degradation(hq[y0 * s : y1 * s, x0 * s : x1 * s], rng)
        return region[top - y0 : top - y0 + size, left - x0 : left - x0 + size]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        plan = self.schedule.item(index)
        samples = [self.sample(plan.epoch, position, plan.patch_size) for position in plan.positions]
        if self.trace_dir is not None:
            self._trace(index, plan, [row for _, _, row in samples])
        return {
            "pixel_values": torch.stack([inp for inp, _, _ in samples]),
            "labels": torch.stack([target for _, target, _ in samples]),
        }

    def _trace(self, index: int, plan: ItemPlan, rows: list[int]) -> None:
        rank = int(os.environ.get("RANK", "0"))
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "item": index,
            "step": plan.step,
            "epoch": plan.epoch,
            "patch_size": plan.patch_size,
            "positions": [plan.positions.start, plan.positions.stop],
            "images": [self.names[r] for r in rows],
        }
        with open(self.trace_dir / f"rank{rank}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")


def collate_batches(features: list[dict]) -> dict[str, torch.Tensor]:
    """Data-loader collate function: micro-batch items (4-D) are concatenated, single images (3-D) stacked."""
    out = {}
    for key in features[0]:
        values = [f[key] for f in features]
        out[key] = torch.cat(values) if values[0].ndim == 4 else torch.stack(values)
    return out
