"""Training and validation data for RAMiT, on Hugging Face `datasets`.

Sources are image folders or `datasets` datasets (a Hub id, a `save_to_disk` folder, or a `datasets.Dataset`) with
image columns. They become a `datasets.Dataset` whose rows hold the high-quality image (`hq`), optionally the
low-quality one (`lq`), a `name` and an `index`; images are decoded on the fly through `with_transform`, nothing is
pre-extracted.

Training (`RestorationPatchDataset`): every item is one device's micro-batch of patch pairs, laid out over the whole
run by a `ProgressiveSchedule` (patch and batch size per phase, the paper's epochs). Item `i` is a pure function of
`i` and the seed: the epoch's shuffling, each patch's position, flip, rotation and noise come from generators seeded
with (seed, epoch, position in the epoch). Nothing depends on global random state or on which process loads it,
which is what makes resuming exact and lets processes split the work by item.

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
* Grayscale: RGB images become 8-bit luma exactly as OpenCV's `COLOR_RGB2GRAY` computes it (the original's
  conversion).
* Augmentation: a horizontal flip with probability 1/2, then a rotation by k x 90 degrees (k uniform in 0-3), the
  same for both images.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .configuration_ramit import TASK_UPSCALE, TASKS
from .evaluation import add_gaussian_noise
from .image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    find_subfolder,
    load_image,
    match_name,
    rgb_to_gray,
    to_channels,
    to_gray_or_rgb,
)
from .image_io import list_images as _list_image_files
from .imresize import imresize

# sub-folder names of paired datasets (matched case-insensitively)
HQ_FOLDER_NAMES = ("hq", "hr", "gt", "high", "target", "clean", "groundtruth")
LQ_FOLDER_NAMES = ("lq", "input", "low", "rainy", "noisy", "degraded")
# column names of paired `datasets` datasets, in order of preference
HQ_COLUMNS = ("hq", "hr", "gt", "high", "target", "clean", "image")
LQ_COLUMNS = ("lq", "lr", "input", "low", "rainy", "noisy", "degraded")

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
# margin (in low-resolution pixels) around a patch when only its region is downscaled: the bicubic kernel reaches
# 2 low-resolution pixels to each side; one more keeps clear of rounding at the region's edge
_RESIZE_MARGIN = 3


class DataError(ValueError):
    """Training or validation data that cannot be used; the message names the data and the problem."""


def task_scale(task: str) -> int:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASK_UPSCALE.get(task, 1)


def task_channels(task: str) -> int:
    return 1 if task == "gray-dn" else 3


def eval_protocol(task: str) -> tuple[int, bool]:
    """(crop_border, test_y_channel) of the task's published PSNR/SSIM: SR on luma with `scale` pixels cropped,
    deraining on luma, the others on all channels."""
    task_scale(task)
    return TASK_EVAL_PROTOCOL[task]


# --------------------------------------------------------------------------------------------------
# pixels


def pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image -> HWC uint8 (or uint16 for 16-bit images) array with 1 or 3 channels; alpha is dropped.

    Decoded by `ramit_hf.image_io` (also the EXIF orientation, which `datasets` has usually applied already).
    """
    if image.mode == "F":
        image = image.convert("L")  # 32-bit float images train as 8-bit
    try:
        return to_gray_or_rgb(load_image(image).pixels)
    except ImageReadError as error:
        raise DataError(f"{getattr(image, 'filename', '') or 'an image'}: {error}") from None


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """HWC uint8/uint16/float array -> CHW float32 tensor in [0, 1] (floats are taken as already in [0, 1])."""
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype, 1.0)
    chw = np.ascontiguousarray(np.moveaxis(array, 2, 0), dtype=np.float32)
    return torch.from_numpy(chw / np.float32(scale))


def modcrop_hw(array: np.ndarray, scale: int) -> np.ndarray:
    h, w = array.shape[:2]
    return array[: h - h % scale, : w - w % scale]


def downscale_region(hr: np.ndarray, scale: int, top: int, left: int, size: int) -> np.ndarray:
    """The `size` x `size` patch at (top, left) of `imresize(hr, 1/scale)`, computing only its neighbourhood.

    `hr` must be mod-cropped. The region is widened by a margin beyond the bicubic kernel's reach (and clamped to
    the image, where MATLAB's mirroring then sees the same border), so the patch equals that of the whole image.
    """
    lr_h, lr_w = hr.shape[0] // scale, hr.shape[1] // scale
    y0, x0 = max(0, top - _RESIZE_MARGIN), max(0, left - _RESIZE_MARGIN)
    y1, x1 = min(lr_h, top + size + _RESIZE_MARGIN), min(lr_w, left + size + _RESIZE_MARGIN)
    region = imresize(hr[y0 * scale : y1 * scale, x0 * scale : x1 * scale], 1.0 / scale)
    return region[top - y0 : top - y0 + size, left - x0 : left - x0 + size]


def augment(arrays: Sequence[np.ndarray], flip: bool, rotations: int) -> list[np.ndarray]:
    """The same horizontal flip and counter-clockwise rotation by `rotations` x 90 degrees of HWC arrays."""
    out = []
    for array in arrays:
        if flip:
            array = array[:, ::-1]
        out.append(np.rot90(array, rotations, axes=(0, 1)))
    return out


# --------------------------------------------------------------------------------------------------
# sources


@dataclass
class ImageSource:
    """Images for one split: `dataset` has columns `hq`, optionally `lq` (both `datasets.Image`), `name` and `index`;
    `sizes[i]` is ((hq height, width), (lq height, width) or None)."""

    dataset: object
    sizes: list
    description: str

    @property
    def has_lq(self) -> bool:
        return "lq" in self.dataset.column_names

    def __len__(self) -> int:
        return len(self.dataset)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; a `DataError` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = _list_image_files(folder)
    if not files:
        raise DataError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def folder_layout(folder: str | os.PathLike, task: str) -> tuple[Path, Path | None]:
    """(high-quality folder, low-quality folder or None) of a dataset folder.

    Recognised layouts: `HQ/` + `LQ/` (also GT/target/high + input/low/...); for super-resolution `HR/` +
    `LR_bicubic/X<s>/` (any `LR*/X<s>/`); otherwise the folder itself holds the high-quality images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}")
    hq = find_subfolder(folder, HQ_FOLDER_NAMES)
    if hq is None:
        return folder, None
    scale = task_scale(task)
    if scale > 1:
        candidates = sorted(p for p in folder.glob(f"LR*/X{scale}") if p.is_dir())
        preferred = [p for p in candidates if p.parent.name == "LR_bicubic"]
        if len(candidates) > 1 and not preferred:
            raise DataError(
                f"{folder} has several low-resolution x{scale} folders ({', '.join(str(p) for p in candidates)}); "
                "name one with --train-lq / --val-lq"
            )
        return hq, (preferred or candidates or [None])[0]
    return hq, find_subfolder(folder, LQ_FOLDER_NAMES)


def pair_files(hq_files: Sequence[Path], lq_files: Sequence[Path], scale: int) -> list[tuple[Path, Path]]:
    """Match low-quality to high-quality files by name: the same stem, or `<stem>x<scale>` for super-resolution
    (the DIV2K / benchmark convention). Every file must find its partner."""
    lq_by_stem = {p.stem: p for p in lq_files}
    pairs, missing = [], []
    for hq in hq_files:
        match = lq_by_stem.pop(hq.stem, None)
        if match is None and scale > 1:
            match = lq_by_stem.pop(f"{hq.stem}x{scale}", None)
        if match is None:
            missing.append(hq.name)
        else:
            pairs.append((hq, match))
    if missing or lq_by_stem:
        parts = []
        if missing:
            parts.append(f"no low-quality image for {_listing(missing)}")
        if lq_by_stem:
            parts.append(f"no high-quality image for {_listing([p.name for p in lq_by_stem.values()])}")
        where = f"{hq_files[0].parent} and {lq_files[0].parent}" if hq_files and lq_files else "the pair folders"
        raise DataError(f"low/high-quality names do not match in {where}: " + "; ".join(parts))
    return pairs


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _image_size(value) -> tuple[int, int]:
    """(height, width) of an undecoded `datasets.Image` value or a PIL image, reading only the header."""
    if isinstance(value, Image.Image):
        return value.height, value.width
    source = value.get("bytes") or value.get("path")
    import io

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return image.height, image.width


def _from_files(hq_files, lq_files, names) -> object:
    import datasets

    columns = {"hq": [str(p) for p in hq_files]}
    features = {"hq": datasets.Image()}
    if lq_files is not None:
        columns["lq"] = [str(p) for p in lq_files]
        features["lq"] = datasets.Image()
    columns["name"] = list(names)
    columns["index"] = list(range(len(names)))
    features.update(name=datasets.Value("string"), index=datasets.Value("int64"))
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], source: str):
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{source} has no column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    return match_name(columns, candidates)


def _from_datasets(dataset, source: str, hq_column, lq_column):
    import datasets

    columns = dataset.column_names
    hq = _pick_column(columns, hq_column, HQ_COLUMNS, source)
    if hq is None:
        raise DataError(
            f"{source} has no high-quality image column (looked for {', '.join(HQ_COLUMNS)}; columns: "
            f"{', '.join(columns)}): pass --hq-column"
        )
    lq = _pick_column(columns, lq_column, LQ_COLUMNS, source)
    for column in filter(None, (hq, lq)):
        if not isinstance(dataset.features[column], datasets.Image):
            raise DataError(f"column {column!r} of {source} is not an image column ({dataset.features[column]})")
    keep = [hq] + ([lq] if lq else [])
    names = [str(i) for i in range(len(dataset))]
    out = dataset.select_columns(keep).rename_columns({hq: "hq", **({lq: "lq"} if lq else {})})
    out = out.add_column("name", names).add_column("index", list(range(len(dataset))))
    return out


def load_source(
    data,
    lq: str | os.PathLike | None = None,
    *,
    task: str,
    split: str = "train",
    hq_column: str | None = None,
    lq_column: str | None = None,
) -> ImageSource:
    """The images of `data`: a folder (see `folder_layout`), a `datasets` dataset, a `save_to_disk` folder or a Hub
    dataset id, with low-quality images from `lq` (a folder) or the dataset's low-quality column when given.

    Raises `DataError` for an empty folder, names that do not pair up, or a missing image column.
    """
    import datasets

    scale = task_scale(task)
    description = str(data)
    if isinstance(data, datasets.DatasetDict):
        data = data[split]
    if isinstance(data, datasets.Dataset):
        dataset = _from_datasets(data, "the given dataset", hq_column, lq_column)
        description = "a datasets.Dataset"
    elif Path(data).is_dir() and not (Path(data) / "dataset_info.json").is_file() and not (
        Path(data) / "dataset_dict.json"
    ).is_file():
        hq_dir, lq_dir = folder_layout(data, task)
        lq_dir = Path(lq) if lq is not None else lq_dir
        hq_files = list_images(hq_dir)
        if lq_dir is not None:
            pairs = pair_files(hq_files, list_images(lq_dir), scale)
            dataset = _from_files([h for h, _ in pairs], [l for _, l in pairs], [h.stem for h, _ in pairs])
            description = f"{hq_dir} + {lq_dir}"
        else:
            dataset = _from_files(hq_files, None, [p.stem for p in hq_files])
            description = str(hq_dir)
    else:
        path = Path(data)
        try:
            if path.is_dir():
                loaded = datasets.load_from_disk(str(path))
            elif _looks_local(str(data)):
                raise DataError(f"data not found: {data}")
            else:
                loaded = datasets.load_dataset(str(data), split=split)
        except DataError:
            raise
        except Exception as error:  # datasets raises many error types for missing / malformed sources
            raise DataError(f"cannot load the dataset {data!r}: {error}") from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{data} has no split {split!r} (splits: {', '.join(loaded)})")
            loaded = loaded[split]
        dataset = _from_datasets(loaded, str(data), hq_column, lq_column)
        if lq is not None:
            raise DataError("--train-lq/--val-lq take folders; for a dataset name its low-quality column instead")
    if len(dataset) == 0:
        raise DataError(f"{description} holds no images")
    return ImageSource(dataset=dataset, sizes=_scan_sizes(dataset), description=description)


def _looks_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.count("/") > 1


def _scan_sizes(dataset) -> list:
    import datasets

    raw = dataset.cast_column("hq", datasets.Image(decode=False))
    if "lq" in dataset.column_names:
        raw = raw.cast_column("lq", datasets.Image(decode=False))
    sizes = []
    for row in raw:
        try:
            hq = _image_size(row["hq"])
            lq = _image_size(row["lq"]) if "lq" in row else None
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read image {row['name']!r}: {error}") from None
        sizes.append((hq, lq))
    return sizes


def check_sizes(source: ImageSource, task: str, patch_size: int | None = None) -> None:
    """Raise `DataError` for pairs whose sizes do not fit together, or images smaller than `patch_size` (an input
    patch side), naming every offending image (up to 10)."""
    scale = task_scale(task)
    mismatched, small = [], []
    names = source.dataset["name"]
    for name, (hq, lq) in zip(names, source.sizes):
        if lq is not None:
            if scale == 1 and lq != hq:
                mismatched.append(f"{name} (HQ {hq[1]}x{hq[0]}, LQ {lq[1]}x{lq[0]})")
            elif scale > 1 and any(l not in (h // scale, math.ceil(h / scale)) for h, l in zip(hq, lq)):
                mismatched.append(
                    f"{name} (HR {hq[1]}x{hq[0]}, LR {lq[1]}x{lq[0]}; expected {hq[1] // scale}x{hq[0] // scale})"
                )
        input_side = min(hq) // scale
        if patch_size is not None and input_side < patch_size:
            small.append(f"{name} ({hq[1]}x{hq[0]})")
    if mismatched:
        raise DataError(f"image sizes do not match in {source.description}: {_listing(mismatched, 10)}")
    if small:
        need = f"{patch_size * scale} px" + (f" (input patches of {patch_size} px at x{scale})" if scale > 1 else "")
        raise DataError(
            f"images smaller than the training patch in {source.description}: {_listing(small, 10)}; every side must "
            f"be at least {need} (drop them, or lower patch_sizes)"
        )


class DecodeImages:
    """`with_transform` function: decoded HWC uint8/uint16 arrays with the task's channels (`hq`, `lq`)."""

    def __init__(self, num_channels: int):
        self.num_channels = num_channels

    def __call__(self, batch: dict) -> dict:
        out = {key: value for key, value in batch.items() if key not in ("hq", "lq")}
        for key in ("hq", "lq"):
            if key in batch:
                out[key] = [to_channels(pil_to_array(image), self.num_channels) for image in batch[key]]
        return out


# --------------------------------------------------------------------------------------------------
# the schedule: which patches each step trains on


@dataclass(frozen=True)
class Phase:
    """One phase of a progressive schedule: epochs [start_epoch, end_epoch), steps [start_step, end_step)."""

    index: int
    start_epoch: int
    end_epoch: int
    patch_size: int
    batch_size: int
    total_batch: int
    steps_per_epoch: int
    start_step: int
    end_step: int


@dataclass(frozen=True)
class ItemPlan:
    """What item `i` of a `RestorationPatchDataset` holds: `positions` of epoch `epoch`'s shuffled samples."""

    step: int
    epoch: int
    patch_size: int
    positions: range


class ProgressiveSchedule:
    """The paper's epochs laid out as optimizer steps, with patch and batch sizes changing between phases.

    An epoch has `samples_per_epoch` patches; in phase p an optimizer step takes `total_batch = batch_size[p] x
    world_size x gradient_accumulation_steps` of them, so an epoch has `samples_per_epoch // total_batch` steps
    (the remainder is dropped, as a data loader with `drop_last` would). Step `s` is made of `world_size x
    gradient_accumulation_steps` consecutive micro-batch items; the data loader of process r takes items r, r + N,
    ... (the order `accelerate` shards a sequential sampler in).
    """

    def __init__(
        self,
        samples_per_epoch: int,
        epochs: int,
        phase_epochs: Sequence[int] = (0,),
        patch_sizes: Sequence[int] = (64,),
        batch_sizes: Sequence[int] = (32,),
        world_size: int = 1,
        gradient_accumulation_steps: int = 1,
        max_steps: int | None = None,
    ):
        if not len(phase_epochs) == len(patch_sizes) == len(batch_sizes):
            raise ValueError("phase_epochs, patch_sizes and batch_sizes need one entry per phase")
        self.samples_per_epoch = int(samples_per_epoch)
        self.epochs = int(epochs)
        self.world_size = int(world_size)
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self.micro_per_step = self.world_size * self.gradient_accumulation_steps
        phases, step = [], 0
        bounds = [e for e in phase_epochs if e < epochs] + [epochs]
        for index, (start, end) in enumerate(itertools.pairwise(bounds)):
            total = batch_sizes[index] * self.micro_per_step
            per_epoch = self.samples_per_epoch // total
            if per_epoch < 1:
                raise DataError(
                    f"an epoch of {self.samples_per_epoch} patches does not fill one step of {total} patches "
                    f"(phase {index + 1}); raise dataset_repeat or add images"
                )
            steps = per_epoch * (end - start)
            phases.append(Phase(index, start, end, patch_sizes[index], batch_sizes[index], total, per_epoch, step,
                                step + steps))
            step += steps
        self.phases = phases
        self.total_steps = step
        if max_steps is not None and max_steps > self.total_steps:
            raise DataError(f"max_steps {max_steps} is beyond the schedule's {self.total_steps} steps")
        self.num_steps = self.total_steps if max_steps is None else int(max_steps)
        self._phase_starts = [p.start_step for p in phases]

    def __repr__(self) -> str:
        phases = ", ".join(
            f"epochs {p.start_epoch}-{p.end_epoch}: patch {p.patch_size} x {p.total_batch} ({p.steps_per_epoch} "
            "steps/epoch)" for p in self.phases
        )
        return f"ProgressiveSchedule({self.num_steps} of {self.total_steps} steps; {phases})"

    @property
    def num_items(self) -> int:
        return self.num_steps * self.micro_per_step

    def phase_at(self, step: int) -> Phase:
        return self.phases[bisect.bisect_right(self._phase_starts, step) - 1]

    def position(self, step: int) -> tuple[Phase, int, int]:
        """(phase, epoch, step within the epoch) of optimizer step `step` (0-based)."""
        phase = self.phase_at(step)
        epochs_in, step_in = divmod(step - phase.start_step, phase.steps_per_epoch)
        return phase, phase.start_epoch + epochs_in, step_in

    def epoch_at(self, step: int) -> float:
        """Fractional epoch at the start of `step`, as the original's learning-rate schedule counts it."""
        phase, epoch, step_in = self.position(step)
        return epoch + step_in / phase.steps_per_epoch

    def step_at_epoch(self, epoch: float) -> int:
        """The first step of epoch `epoch` (the number of steps before it)."""
        if epoch >= self.epochs:
            return self.total_steps
        for phase in self.phases:
            if epoch < phase.end_epoch:
                return phase.start_step + math.ceil((epoch - phase.start_epoch) * phase.steps_per_epoch)
        return self.total_steps

    def epoch_end_steps(self, every: int) -> list[int]:
        """Steps (counted as `global_step` after them) that end epochs `every`, 2 x `every`, ..."""
        return [self.step_at_epoch(e) for e in range(every, self.epochs + 1, every)]

    def max_patch_size(self) -> int:
        """The largest patch the run reaches (phases past `num_steps` are never trained)."""
        return max(p.patch_size for p in self.phases if p.start_step < self.num_steps)

    def item(self, index: int) -> ItemPlan:
        step, slot = divmod(index, self.micro_per_step)
        if not 0 <= step < self.num_steps:
            raise IndexError(f"item {index} is outside the schedule's {self.num_items} items")
        phase, epoch, step_in = self.position(step)
        start = step_in * phase.total_batch + slot * phase.batch_size
        return ItemPlan(step, epoch, phase.patch_size, range(start, start + phase.batch_size))


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
        record = {"item": index, "step": plan.step, "epoch": plan.epoch, "patch_size": plan.patch_size,
                  "positions": [plan.positions.start, plan.positions.stop], "images": [self.names[r] for r in rows]}
        with open(self.trace_dir / f"rank{rank}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------------
# validation


class ValidationPairs:
    """`with_transform` function making whole-image validation pairs with the task's test protocol.

    Super-resolution: target = mod-cropped HR, input = the given LR (cropped to HR / scale) or MATLAB bicubic of the
    target. Denoising: input = target + Gaussian noise of `noise_sigma` from a generator seeded 0 for every image,
    as the original test does (`evaluation.add_gaussian_noise`). Low-light / deraining: the given pairs.
    """

    def __init__(self, task: str, noise_sigma: float = 25.0):
        self.task = task
        self.scale = task_scale(task)
        self.num_channels = task_channels(task)
        self.noise_sigma = noise_sigma

    def pair(self, hq: np.ndarray, lq: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scale
        if s > 1:
            hq = modcrop_hw(hq, s)
            h, w = hq.shape[0] // s, hq.shape[1] // s
            lq = lq[:h, :w] if lq is not None else imresize(hq, 1.0 / s)
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
        pairs = [self.pair(hq, lq) for hq, lq in zip(decode["hq"], lqs)]
        return {"pixel_values": [p[0] for p in pairs], "labels": [p[1] for p in pairs]}


def validation_dataset(source: ImageSource, task: str, noise_sigma: float = 25.0, max_images: int | None = None):
    """Whole-image validation pairs (`pixel_values`, `labels`, CHW float32 in [0, 1]) decoded on the fly."""
    check_sizes(source, task)
    if task_scale(task) == 1 and task not in ("color-dn", "gray-dn") and not source.has_lq:
        raise DataError(f"task {task} needs low-quality validation images ({source.description} has none)")
    dataset = source.dataset
    if max_images is not None:
        dataset = dataset.select(range(min(max_images, len(dataset))))
    return dataset.with_transform(ValidationPairs(task, noise_sigma))


def collate_batches(features: list[dict]) -> dict[str, torch.Tensor]:
    """Data-loader collate function: micro-batch items (4-D) are concatenated, single images (3-D) stacked."""
    out = {}
    for key in features[0]:
        values = [f[key] for f in features]
        out[key] = torch.cat(values) if values[0].ndim == 4 else torch.stack(values)
    return out


__all__ = [
    "DataError",
    "DecodeImages",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "ItemPlan",
    "Phase",
    "ProgressiveSchedule",
    "RestorationPatchDataset",
    "TASK_EVAL_PROTOCOL",
    "ValidationPairs",
    "augment",
    "check_sizes",
    "collate_batches",
    "downscale_region",
    "eval_protocol",
    "folder_layout",
    "list_images",
    "load_source",
    "pair_files",
    "pil_to_array",
    "rgb_to_gray",
    "task_channels",
    "task_scale",
    "to_channels",
    "to_tensor",
    "validation_dataset",
]
