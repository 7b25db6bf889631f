"""Benchmarks with the paper's test protocol: test sets, their degraded inputs, and the evaluation loop.

The protocol is the one of the original RAMiT test code (``ddp_engine_test.py``), so that a released checkpoint
gives here the numbers it gives there:

* **Ground truth** is read as 8-bit RGB (gray files are repeated to RGB); for gray denoising RGB files are reduced
  with OpenCV's ``cvtColor(..., COLOR_RGB2GRAY)`` on ``uint8`` (:func:`rgb_to_gray_opencv`).
* **Inputs**, by task:

  - super-resolution (``sr-x2/3/4``): the LR file of the test set when there is one (``<name>x<s>.png`` as in
    ``Set5/LR_bicubic/X<s>/``, or ``<name>.png``), the HR being cropped to ``LR size x scale``; otherwise the HR is
    mod-cropped to a multiple of the scale and downscaled with MATLAB-exact bicubic (:func:`ramit_hf.imresize.imresize`
    on ``uint8``, which reproduces MATLAB-made LR files bit for bit);
  - denoising (``color-dn``, ``gray-dn``): additive white Gaussian noise of level ``sigma`` (on the 0-255 scale) from
    :func:`add_gaussian_noise`: a CPU ``torch.Generator`` (Mersenne Twister) seeded with ``noise_seed`` (0, as the
    original) **anew for every image**, ``noise = randn(C, H, W) * sigma / 255`` in float32, added to the image in
    [0, 1] and neither clipped nor quantised. It equals the original's ``torch.random.manual_seed(0)`` followed by
    ``torch.randn(*img.shape) * sigma / 255``, without touching the global random state;
  - low-light enhancement and deraining (``lle``, ``derain``): a paired set, degraded ``LQ`` and clean ``HQ`` images
    with matching names.

* The model sees the input in [0, 1] (8-bit value / 255, float32), padded symmetrically (bottom/right) to a multiple
  of 32 and cropped back, through :func:`ramit_hf.inference.restore_tensor` (optionally tiled); its output is clamped
  and rounded to 8 bits by :func:`ramit_hf.metrics.to_uint8`.
* **Metrics** (:func:`ramit_hf.metrics.psnr` / :func:`~ramit_hf.metrics.ssim`): super-resolution on the Y channel
  with ``crop_border = scale``; denoising and low-light enhancement on RGB (or gray) with no border; deraining on Y
  with no border. The set's score is the mean over its images.

Test sets come from a folder (``HR/`` (or ``HQ/``, ``GT/``) with an optional ``LR*/X<s>/`` or ``LQ/`` beside it, or
a folder of images) or from a Hugging Face ``datasets`` dataset with image columns (a ``save_to_disk`` folder or a
Hub id); see :func:`load_test_set`. :func:`evaluate_model` runs a model over one and returns an
:class:`EvaluationResult`, whose JSON form (:meth:`EvaluationResult.to_dict`, schema ``ramit-hf/evaluation`` version
1) is what ``ramit evaluate`` writes and what model cards are generated from.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import write_text_atomic
from .configuration_ramit import TASK_UPSCALE, TASKS
from .image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    decode_image_bytes,
    find_subfolder,
    list_images,
    load_image,
    match_name,
    rgb_to_gray,
    save_image,
    to_channels,
    to_gray_or_rgb,
)
from .imresize import imresize, modcrop
from .inference import restore_tensor
from .metrics import psnr, ssim, to_uint8

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "EvaluationResult",
    "ImageResult",
    "Protocol",
    "Sample",
    "TestSet",
    "TestSetError",
    "add_gaussian_noise",
    "evaluate_model",
    "load_result",
    "load_test_set",
    "model_id_from_source",
    "prepare_sample",
    "read_image",
    "rgb_to_gray_opencv",
]

SCHEMA = "ramit-hf/evaluation"
SCHEMA_VERSION = 1

# Sub-folder names of a test-set folder, matched case-insensitively, in order of preference.
TARGET_FOLDERS = ("HR", "HQ", "GT", "target", "clean")
PAIRED_INPUT_FOLDERS = ("LQ", "LR", "input", "degraded")
# Column names of a `datasets` dataset, matched case-insensitively.
TARGET_COLUMNS = ("hr", "hq", "gt", "target", "clean", "ground_truth", "image")
INPUT_COLUMNS = ("lr", "lq", "input", "degraded", "noisy", "low")
NAME_COLUMNS = ("name", "file_name", "filename", "image_name", "id")

_DENOISING = ("color-dn", "gray-dn")
_PAIRED = ("lle", "derain")
_Y_CHANNEL = tuple(TASK_UPSCALE) + ("derain",)

QUANTIZATION = "output clamped to [0, 1], x255 in float32, rounded half to even to uint8 (metrics.to_uint8)"
PADDING = "symmetric (bottom/right) to a multiple of 32, output cropped (inference.restore_tensor)"
NOISE = (
    "per image: torch.Generator('cpu').manual_seed(noise_seed); noise = randn(C, H, W) * sigma / 255 (float32), "
    "added to the image in [0, 1], not clipped or quantised"
)


class TestSetError(ValueError):
    """A test set that cannot be read or does not fit the protocol; the message names the input and the problem."""

    __test__ = False  # not a pytest test class


# ----------------------------------------------------------------------------------------------
# protocol


@dataclass(frozen=True)
class Protocol:
    """How a task is benchmarked (see the module docstring); every field but `task` follows from it.

    Args:
        task: one of `ramit_hf.TASKS`.
        sigma: noise level on the 0-255 scale; required for denoising, not allowed otherwise.
        noise_seed: seed of each image's noise (denoising only).
    """

    task: str
    sigma: float | None = None
    noise_seed: int = 0

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task in _DENOISING:
            if self.sigma is None:
                raise ValueError(f"{self.task} needs a noise level sigma (the paper reports 15, 25 and 50)")
            if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)):
                raise ValueError(f"sigma must be a number, got {self.sigma!r}")
            if not (math.isfinite(self.sigma) and self.sigma > 0):
                raise ValueError(f"sigma must be a finite positive number, got {self.sigma!r}")
            # keep 15 rather than 15.0 in reports; the noise is the same either way
            object.__setattr__(self, "sigma", int(self.sigma) if float(self.sigma).is_integer() else float(self.sigma))
        elif self.sigma is not None:
            raise ValueError(f"sigma applies to denoising only, not to the task {self.task!r}")
        if isinstance(self.noise_seed, bool) or not isinstance(self.noise_seed, int) or self.noise_seed < 0:
            raise ValueError(f"noise_seed must be a non-negative integer, got {self.noise_seed!r}")

    @property
    def scale(self) -> int:
        return TASK_UPSCALE.get(self.task, 1)

    @property
    def num_channels(self) -> int:
        return 1 if self.task == "gray-dn" else 3

    @property
    def test_y_channel(self) -> bool:
        return self.task in _Y_CHANNEL

    @property
    def crop_border(self) -> int:
        return self.scale if self.task in TASK_UPSCALE else 0

    @property
    def degradation(self) -> str:
        """`"bicubic"` (super-resolution), `"gaussian-noise"` (denoising) or `"paired"` (LQ/HQ sets)."""
        if self.task in TASK_UPSCALE:
            return "bicubic"
        return "gaussian-noise" if self.task in _DENOISING else "paired"

    @property
    def metric_channel(self) -> str:
        """What PSNR/SSIM are measured on: `"Y"`, `"RGB"` or `"gray"`."""
        if self.test_y_channel:
            return "Y"
        return "gray" if self.num_channels == 1 else "RGB"

    def to_dict(self) -> dict:
        denoising = self.degradation == "gaussian-noise"
        return {
            "task": self.task,
            "scale": self.scale,
            "metric_channel": self.metric_channel,
            "test_y_channel": self.test_y_channel,
            "crop_border": self.crop_border,
            "sigma": self.sigma,
            "noise_seed": self.noise_seed if denoising else None,
            "noise": NOISE if denoising else None,
            "quantization": QUANTIZATION,
            "padding": PADDING,
        }

    def describe(self) -> str:
        """One line for tables, e.g. `"Y-channel PSNR/SSIM, crop border 4"`."""
        text = f"{self.metric_channel}{'-channel' if self.metric_channel == 'Y' else ''} PSNR/SSIM"
        text += f", crop border {self.crop_border}"
        if self.sigma is not None:
            text += f", Gaussian noise sigma {self.sigma} (seed {self.noise_seed} per image)"
        return text


# ----------------------------------------------------------------------------------------------
# images and degradations


def _decode_8bit(source, what: str) -> np.ndarray:
    """A path, a PIL image or the bytes of an image file -> ``uint8`` ``(H, W, 1)`` gray or ``(H, W, 3)`` RGB, as
    `ramit_hf.image_io` decodes it (EXIF orientation applied; alpha and palettes converted away)."""
    try:
        decoded = decode_image_bytes(source, what) if isinstance(source, bytes) else load_image(source)
    except ImageReadError as error:
        raise TestSetError(f"cannot read the image {error}") from None
    if decoded.pixels.dtype != np.uint8:
        kind = "16-bit" if decoded.pixels.dtype == np.uint16 else "floating-point"
        raise TestSetError(f"{what}: a {kind} image is not an 8-bit image; the benchmark protocol uses 8-bit images")
    return to_gray_or_rgb(decoded.pixels)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An 8-bit image file -> ``uint8`` array ``(H, W, 1)`` (gray) or ``(H, W, 3)`` (RGB; alpha and palettes
    are converted away). Raises :class:`TestSetError` for unreadable or non-8-bit files."""
    return _decode_8bit(path, str(path))


def _as_uint8_image(value, what: str) -> np.ndarray:
    """A decoded `datasets` cell (PIL image or array) -> uint8 (H, W, C)."""
    if isinstance(value, Image.Image):
        return _decode_8bit(value, what)
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):  # an undecoded Image cell
        if not value.get("bytes"):
            return read_image(value["path"])
        return _decode_8bit(value["bytes"], what)
    array = np.asarray(value)
    if array.dtype != np.uint8:
        raise TestSetError(f"{what}: expected an image or a uint8 array, got {type(value).__name__} of {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise TestSetError(f"{what}: expected an (H, W) or (H, W, C) image array, got shape {array.shape}")
    return to_gray_or_rgb(array)


# ``uint8`` RGB ``(H, W, 3)`` -> gray ``(H, W, 1)`` exactly as OpenCV's ``cvtColor(COLOR_RGB2GRAY)``: the name this
# module has always exported for :func:`ramit_hf.image_io.rgb_to_gray`
rgb_to_gray_opencv = rgb_to_gray


def _to_model_input(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [0, 1]: value / 255, as the original test code divides."""
    return torch.from_numpy(image.transpose(2, 0, 1).copy()) / 255  # copy: PIL's arrays are read-only


def add_gaussian_noise(image: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """The original protocol's noisy input: ``image + randn(image.shape) * sigma / 255`` (float32, unclipped).

    The noise comes from a fresh CPU generator seeded with ``seed``, so it is the same as
    ``torch.manual_seed(seed); torch.randn(*image.shape) * sigma / 255`` and the global random state is untouched.
    ``image`` is ``(C, H, W)`` float32 in [0, 1]; ``sigma`` is on the 0-255 scale.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(tuple(image.shape), generator=generator, dtype=torch.float32) * sigma / 255
    return image + noise


# ----------------------------------------------------------------------------------------------
# test sets


@dataclass
class Sample:
    """One prepared test image.

    `pixel_values`: the model input, float32 ``(C, h, w)`` (in [0, 1], except noisy inputs, which are unclipped).
    `target`: the ground truth as ``uint8 (h * scale, w * scale, C)``.
    """

    name: str
    pixel_values: torch.Tensor
    target: np.ndarray


@dataclass
class _Entry:
    name: str
    # -> (ground truth, degraded input or None), both uint8 (H, W, C) as stored
    load: Callable[[], tuple[np.ndarray, np.ndarray | None]]


def prepare_sample(
    name: str, target: np.ndarray, degraded: np.ndarray | None, protocol: Protocol, num_channels: int | None = None
) -> Sample:
    """Ground truth (+ stored degraded input) as uint8 (H, W, C) -> the :class:`Sample` the protocol measures."""
    num_channels = protocol.num_channels if num_channels is None else num_channels
    target = to_channels(target, num_channels)
    if protocol.degradation == "bicubic":
        scale = protocol.scale
        if degraded is None:
            target = modcrop(target, scale)
            if min(target.shape[:2]) == 0:
                raise TestSetError(f"{name}: the image is smaller than the scale {scale}")
            degraded = imresize(target, 1 / scale)
        else:
            degraded = to_channels(degraded, num_channels)
            height, width = degraded.shape[:2]
            if target.shape[0] < height * scale or target.shape[1] < width * scale:
                raise TestSetError(
                    f"{name}: the LR image ({width}x{height}) times {scale} is larger than the HR image "
                    f"({target.shape[1]}x{target.shape[0]})"
                )
            # the original crops the HR to the LR size times the scale
            target = target[: height * scale, : width * scale]
        pixel_values = _to_model_input(degraded)
    elif protocol.degradation == "gaussian-noise":
        pixel_values = add_gaussian_noise(_to_model_input(target), protocol.sigma, protocol.noise_seed)
    else:
        if degraded is None:
            raise TestSetError(f"{name}: the {protocol.task} protocol needs a degraded (LQ) image for every clean one")
        degraded = to_channels(degraded, num_channels)
        if degraded.shape != target.shape:
            raise TestSetError(
                f"{name}: the LQ image ({degraded.shape[1]}x{degraded.shape[0]}) and the HQ image "
                f"({target.shape[1]}x{target.shape[0]}) differ in size"
            )
        pixel_values = _to_model_input(degraded)
    return Sample(name=name, pixel_values=pixel_values, target=np.ascontiguousarray(target))


class TestSet(Sequence):
    """A benchmark set prepared for one :class:`Protocol`; images are read and degraded when indexed.

    Build one with :func:`load_test_set`. `describe()` gives the `dataset` part of an evaluation's JSON.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        name: str,
        source: str,
        entries: list[_Entry],
        protocol: Protocol,
        input_kind: str,
        input_source: str,
        split: str | None = None,
    ):
        if not entries:
            raise TestSetError(f"the test set {source} has no images")
        duplicates = sorted(n for n, count in Counter(entry.name for entry in entries).items() if count > 1)
        if duplicates:
            raise TestSetError(f"the test set {source} has several images named {', '.join(duplicates[:5])}")
        self.name = name
        self.source = source
        self.protocol = protocol
        self.input_kind = input_kind
        self.input_source = input_source
        self.split = split
        self._entries = entries

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Sample:
        if isinstance(index, slice):
            raise TypeError("TestSet does not support slicing; index one image at a time")
        entry = self._entries[index]
        target, degraded = entry.load()
        return prepare_sample(entry.name, target, degraded, self.protocol)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]

    def select(self, indices) -> "TestSet":
        """A test set of the images at `indices` (e.g. `range(2)` for a quick check), in that order."""
        entries = [self._entries[i] for i in indices]
        return TestSet(self.name, self.source, entries, self.protocol, self.input_kind, self.input_source, self.split)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "split": self.split,
            "num_images": len(self),
            "input": {"kind": self.input_kind, "source": self.input_source},
        }

    def __repr__(self) -> str:
        return f"TestSet({self.name!r}, {len(self)} images, task={self.protocol.task!r}, input={self.input_kind})"


def load_test_set(
    source: str | os.PathLike,
    protocol: Protocol,
    *,
    name: str | None = None,
    lr_dir: str | os.PathLike | None = None,
    make_lr: bool = False,
    split: str | None = None,
    hr_column: str | None = None,
    lr_column: str | None = None,
    name_column: str | None = None,
) -> TestSet:
    """A test set for `protocol` from a folder, a `datasets` folder (`save_to_disk`) or a Hub dataset id.

    Folders: `source` holds `HR/` (or `HQ/`, `GT/`, ...) or is itself a folder of images. The degraded inputs:

    * super-resolution: `lr_dir` if given; else the single `LR*/X<s>/` folder beside `HR/` (e.g.
      `Set5/LR_bicubic/X4/`); else (or with `make_lr`) bicubic downscaling of the mod-cropped HR. LR files are
      matched by name: `<name>x<s>.<ext>` or `<name>.<ext>`;
    * denoising: none are read (noise is added to the clean image);
    * low-light / deraining: `lr_dir` or the `LQ/` (or `LR/`, `input/`) folder beside `HQ/`, matched by name.

    `datasets` datasets: `split` picks a split (default: the only one, else `test`); `hr_column`, `lr_column` and
    `name_column` name the columns where the defaults (see `TARGET_COLUMNS`, `INPUT_COLUMNS`, `NAME_COLUMNS`, and
    `lr_x<s>` for super-resolution) do not find them. `name` overrides the set's name (default: the folder or
    dataset name). Raises :class:`TestSetError` naming the problem.
    """
    if not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a Protocol, got {type(protocol).__name__}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return _load_hf_dataset(text, protocol, name, split, hr_column, lr_column, name_column, make_lr)
        if any(v is not None for v in (split, hr_column, lr_column, name_column)):
            raise TestSetError(f"{text} is an image folder; split and column options apply to `datasets` datasets only")
        return _load_folder(path, text, protocol, name, lr_dir, make_lr)
    if path.exists():
        raise TestSetError(f"{text} is not a folder of images or a `datasets` folder")
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise TestSetError(f"dataset not found: {text}")
    if lr_dir is not None:
        raise TestSetError("lr_dir applies to image folders only; use lr_column for a Hub dataset")
    return _load_hf_dataset(text, protocol, name, split, hr_column, lr_column, name_column, make_lr)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _load_folder(
    path: Path, source: str, protocol: Protocol, name: str | None, lr_dir, make_lr: bool
) -> TestSet:
    if list_images(path):
        target_dir, root = path, path
        set_name = path.resolve().parent.name if path.name.lower() in (t.lower() for t in TARGET_FOLDERS) else path.name
    else:
        target_dir = find_subfolder(path, TARGET_FOLDERS)
        if target_dir is None:
            raise TestSetError(
                f"{source} has no images and no ground-truth folder (one of {', '.join(TARGET_FOLDERS)})"
            )
        root, set_name = path, path.resolve().name
    targets = list_images(target_dir)
    if not targets:
        raise TestSetError(f"{target_dir} has no images ({', '.join(IMAGE_EXTENSIONS)})")

    input_dir = _find_input_folder(root, target_dir, protocol, lr_dir, make_lr)
    if input_dir is None:
        entries = [_Entry(p.stem, _folder_loader(p, None)) for p in targets]
        kind = "gaussian-noise" if protocol.degradation == "gaussian-noise" else "imresize"
        input_source = NOISE if kind == "gaussian-noise" else "MATLAB bicubic (ramit_hf.imresize) of the HR mod-cropped"
    else:
        inputs = _index_by_stem(input_dir)
        entries = []
        for target in targets:
            match = _match_input(target.stem, inputs, protocol)
            if match is None:
                expected = f"{target.stem}x{protocol.scale} or {target.stem}" if protocol.scale > 1 else target.stem
                raise TestSetError(f"no input image for {target.name} in {input_dir} (looked for {expected}.*)")
            entries.append(_Entry(target.stem, _folder_loader(target, match)))
        kind = "lr-folder" if protocol.degradation == "bicubic" else "lq-folder"
        input_source = _relative(input_dir, root)
    return TestSet(name or set_name, source, entries, protocol, kind, input_source)


def _find_input_folder(root: Path, target_dir: Path, protocol: Protocol, lr_dir, make_lr: bool) -> Path | None:
    if protocol.degradation == "gaussian-noise":
        if lr_dir is not None:
            raise TestSetError("denoising adds noise to the clean images; lr_dir does not apply")
        return None
    if lr_dir is not None:
        if make_lr:
            raise TestSetError("choose either lr_dir or make_lr, not both")
        folder = Path(lr_dir).expanduser()
        if not folder.is_dir():
            raise TestSetError(f"input folder not found: {lr_dir}")
        return folder
    if protocol.degradation == "bicubic":
        if make_lr or root == target_dir:
            return None
        scale = protocol.scale
        found = sorted(
            p for p in root.glob("*/*") if p.is_dir() and p.parent.name.lower().startswith("lr")
            and p.name.lower() == f"x{scale}"
        )
        if len(found) > 1:
            listed = ", ".join(_relative(p, root) for p in found)
            raise TestSetError(f"{root} has several LR folders for x{scale} ({listed}); choose one with lr_dir")
        return found[0] if found else None
    if make_lr:
        raise TestSetError(f"make_lr applies to super-resolution only, not to the task {protocol.task!r}")
    folder = find_subfolder(root, PAIRED_INPUT_FOLDERS) if root != target_dir else None
    if folder is None:
        raise TestSetError(
            f"the {protocol.task} protocol needs degraded images: {root} has no "
            f"{'/'.join(PAIRED_INPUT_FOLDERS)} folder beside {target_dir.name}/ (or pass lr_dir)"
        )
    return folder


def _index_by_stem(folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in list_images(folder):
        index.setdefault(path.stem, path)
    return index


def _match_input(stem: str, inputs: dict[str, Path], protocol: Protocol) -> Path | None:
    if protocol.scale > 1:
        for candidate in (f"{stem}x{protocol.scale}", f"{stem}X{protocol.scale}"):
            if candidate in inputs:
                return inputs[candidate]
    return inputs.get(stem)


def _folder_loader(target: Path, degraded: Path | None):
    def load():
        return read_image(target), (read_image(degraded) if degraded is not None else None)

    return load


# `datasets` datasets


def _load_hf_dataset(source, protocol, name, split, hr_column, lr_column, name_column, make_lr) -> TestSet:
    try:
        import datasets
    except ImportError:
        raise TestSetError(
            f"reading the dataset {source} needs the `datasets` package: pip install 'ramit-hf[eval]'"
        ) from None
    try:
        if Path(source).expanduser().is_dir():
            loaded = datasets.load_from_disk(str(Path(source).expanduser()))
        else:
            loaded = datasets.load_dataset(source, split=split)
    except Exception as error:  # datasets raises many kinds (ConnectionError offline, DatasetNotFoundError, ...)
        raise TestSetError(f"cannot load the dataset {source!r}: {type(error).__name__}: {error}") from None
    dataset, split = _pick_split(loaded, split, source, datasets)

    features = dataset.features
    image_columns = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    for given in (hr_column, lr_column, name_column):
        if given is not None and given not in features:
            raise TestSetError(f"the dataset {source} has no column {given!r} (columns: {', '.join(features)})")
    target_column = hr_column or _pick_column(image_columns, TARGET_COLUMNS, single_ok=True)
    if target_column is None:
        raise TestSetError(
            f"cannot tell which column of {source} holds the ground truth (image columns: "
            f"{', '.join(image_columns) or 'none'}); name it with hr_column"
        )
    input_column = None
    if protocol.degradation != "gaussian-noise" and not make_lr:
        candidates = [c for c in image_columns if c != target_column]
        names = INPUT_COLUMNS
        if protocol.degradation == "bicubic":
            s = protocol.scale
            names = (f"lr_x{s}", f"lq_x{s}", f"lr_{s}x", f"x{s}") + INPUT_COLUMNS
        input_column = lr_column or _pick_column(candidates, names, single_ok=False)
    if make_lr and (protocol.degradation != "bicubic" or lr_column is not None):
        raise TestSetError("make_lr applies to super-resolution without an LR column")
    if protocol.degradation == "paired" and input_column is None:
        raise TestSetError(
            f"the {protocol.task} protocol needs degraded images, but no column of {source} is recognised as them "
            f"(image columns: {', '.join(image_columns)}); name it with lr_column"
        )
    if name_column is None:
        name_column = next((c for c in features if c.lower() in NAME_COLUMNS and _is_string(features[c])), None)

    columns = [c for c in (target_column, input_column) if c is not None]
    images = dataset.select_columns(columns)
    names = [str(n) for n in dataset[name_column]] if name_column else [f"{i:04d}" for i in range(len(dataset))]
    names = [Path(n).stem if "." in Path(n).name else n for n in names]

    def loader(index: int):
        def load():
            row = images[index]
            what = f"{source}[{index}]"
            target = _as_uint8_image(row[target_column], f"{what}[{target_column!r}]")
            degraded = _as_uint8_image(row[input_column], f"{what}[{input_column!r}]") if input_column else None
            return target, degraded

        return load

    entries = [_Entry(n, loader(i)) for i, n in enumerate(names)]
    if protocol.degradation == "gaussian-noise":
        kind, input_source = "gaussian-noise", NOISE
    elif input_column is None:
        kind, input_source = "imresize", "MATLAB bicubic (ramit_hf.imresize) of the HR mod-cropped"
    else:
        kind = "lr-column" if protocol.degradation == "bicubic" else "lq-column"
        input_source = input_column
    set_name = name or Path(source.rstrip("/")).name
    return TestSet(set_name, source, entries, protocol, kind, input_source, split=split)


def _pick_split(loaded, split, source, datasets):
    if isinstance(loaded, datasets.Dataset):
        if split is not None and loaded.split is not None and str(loaded.split) != split:
            raise TestSetError(f"the dataset {source} holds the split {loaded.split}, not {split!r}")
        return loaded, (str(loaded.split) if loaded.split is not None else split)
    if not isinstance(loaded, datasets.DatasetDict):
        raise TestSetError(f"{source} is a {type(loaded).__name__}, not a dataset of images")
    splits = list(loaded)
    if split is None:
        if len(splits) == 1:
            split = splits[0]
        elif "test" in loaded:
            split = "test"
        else:
            raise TestSetError(f"the dataset {source} has several splits ({', '.join(splits)}); choose one with split")
    if split not in loaded:
        raise TestSetError(f"the dataset {source} has no split {split!r} (splits: {', '.join(splits)})")
    return loaded[split], split


def _pick_column(columns: list[str], names: Sequence[str], single_ok: bool) -> str | None:
    found = match_name(columns, names)
    if found is None and single_ok and len(columns) == 1:
        return columns[0]
    return found


def _is_string(feature) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")


# ----------------------------------------------------------------------------------------------
# evaluation


@dataclass
class ImageResult:
    """PSNR (dB) and SSIM of one image; sizes are `[height, width]` of the model input and output."""

    name: str
    psnr: float
    ssim: float
    input_size: list[int]
    output_size: list[int]


@dataclass
class EvaluationResult:
    """One model on one test set under one protocol; :meth:`to_dict` is the stable JSON schema.

    Schema `ramit-hf/evaluation`, version 1 (keys in order)::

        schema, schema_version
        model:       id, source, variant, task, scale, num_channels, parameters
        dataset:     name, source, split, num_images, input {kind, source}
                     (kind: lr-folder | lr-column | imresize | gaussian-noise | lq-folder | lq-column)
        protocol:    task, scale, metric_channel (Y | RGB | gray), test_y_channel, crop_border, sigma, noise_seed,
                     noise, quantization, padding, tile_size, tile_overlap
        mean:        psnr (dB), ssim (arithmetic means over the images)
        images:      [{name, psnr, ssim, input_size [h, w], output_size [h, w]}, ...] in test-set order
        environment: ramit_hf, torch, transformers, numpy, python, platform, device, dtype, attention_backend
        date:        ISO 8601 UTC time the run finished
        elapsed_s:   wall time of the run in seconds

    A PSNR of identical images (infinite) is written as null.
    """

    model: dict
    dataset: dict
    protocol: dict
    images: list[ImageResult]
    environment: dict = field(default_factory=dict)
    date: str = ""
    elapsed_s: float = 0.0

    @property
    def mean_psnr(self) -> float:
        return float(np.mean([image.psnr for image in self.images]))

    @property
    def mean_ssim(self) -> float:
        return float(np.mean([image.ssim for image in self.images]))

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "model": dict(self.model),
            "dataset": dict(self.dataset),
            "protocol": dict(self.protocol),
            "mean": {"psnr": _finite(self.mean_psnr), "ssim": _finite(self.mean_ssim)},
            "images": [
                {**asdict(image), "psnr": _finite(image.psnr), "ssim": _finite(image.ssim)} for image in self.images
            ],
            "environment": dict(self.environment),
            "date": self.date,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "EvaluationResult":
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema {data.get('schema')!r})")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported {SCHEMA} schema_version {data.get('schema_version')!r} (expected 1)")
        images = [
            ImageResult(
                name=i["name"],
                psnr=math.inf if i["psnr"] is None else i["psnr"],
                ssim=i["ssim"],
                input_size=list(i["input_size"]),
                output_size=list(i["output_size"]),
            )
            for i in data["images"]
        ]
        return cls(
            model=data["model"],
            dataset=data["dataset"],
            protocol=data["protocol"],
            images=images,
            environment=data.get("environment", {}),
            date=data.get("date", ""),
            elapsed_s=data.get("elapsed_s", 0.0),
        )

    def title(self) -> str:
        model, protocol = self.model, self.protocol
        sigma = f", sigma {protocol['sigma']}" if protocol.get("sigma") is not None else ""
        return f"{model['id']} ({model['variant']}, {model['task']}) on {self.dataset['name']}{sigma}"

    def to_markdown(self) -> str:
        """A per-image table with the mean in the last row, under a line naming the model, set and protocol."""
        protocol = self.protocol
        channel = protocol["metric_channel"]
        what = f"{channel}-channel" if channel == "Y" else channel
        lines = [
            f"**{self.title()}**: {what} PSNR/SSIM, crop border {protocol['crop_border']}",
            "",
            "| image | PSNR (dB) | SSIM |",
            "| --- | ---: | ---: |",
        ]
        for image in self.images:
            lines.append(f"| {image.name} | {image.psnr:.3f} | {image.ssim:.4f} |")
        lines.append(f"| **mean ({len(self.images)})** | **{self.mean_psnr:.3f}** | **{self.mean_ssim:.4f}** |")
        return "\n".join(lines) + "\n"

    def save_json(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Writes :meth:`to_json` atomically (temporary file + rename); refuses to replace a file unless `overwrite`."""
        return write_text_atomic(path, self.to_json(), overwrite=overwrite)


def load_result(path: str | os.PathLike) -> EvaluationResult:
    """An :class:`EvaluationResult` from a JSON file written by `ramit evaluate` or `scripts/make_results.py`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the evaluation result {path}: {error}") from None
    try:
        return EvaluationResult.from_dict(data)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a valid {SCHEMA} document: missing or bad field {error}") from None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def model_id_from_source(source) -> str:
    """A short id for reports: the file stem of a checkpoint (`RAMiT-1_X4`), a folder's name, or a Hub id."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        return path.stem
    if path.is_dir():
        return path.resolve().name
    return text


def _environment(model) -> dict:
    import transformers

    from . import __version__

    parameter = next(model.parameters())
    return {
        "ramit_hf": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "device": str(parameter.device),
        "dtype": str(parameter.dtype).removeprefix("torch."),
        "attention_backend": getattr(model.config, "attention_backend", None),
    }


def _check_fits(model, test_set: TestSet) -> None:
    config, protocol = model.config, test_set.protocol
    if config.upscale != protocol.scale:
        raise ValueError(
            f"the model upscales x{config.upscale} but the {protocol.task} protocol needs x{protocol.scale}"
        )
    if config.num_channels != protocol.num_channels:
        raise ValueError(
            f"the model takes {config.num_channels}-channel images but the {protocol.task} protocol "
            f"uses {protocol.num_channels}"
        )


def _safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


@torch.no_grad()
def evaluate_model(
    model,
    test_set: TestSet,
    *,
    model_id: str | None = None,
    model_source: str | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    save_images: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> EvaluationResult:
    """Runs `model` over `test_set` with the paper's protocol and measures every image.

    Each input goes through :func:`ramit_hf.inference.restore_tensor` (symmetric padding to 32, forward, crop;
    tiled when `tile_size` is given, which changes the numbers slightly); the output is rounded to 8 bits as
    :func:`ramit_hf.metrics.to_uint8` and compared with the ground truth by :func:`ramit_hf.metrics.psnr` and
    :func:`~ramit_hf.metrics.ssim` under `test_set.protocol`. With `save_images`, each restored image is written as
    `<name>.png` to that folder (which must be empty or new unless `overwrite`). A tqdm bar on stderr shows progress
    unless `progress=False`.
    """
    _check_fits(model, test_set)
    protocol = test_set.protocol
    output_dir = None
    if save_images is not None:
        output_dir = Path(save_images)
        if output_dir.exists() and not output_dir.is_dir():
            raise FileExistsError(f"{output_dir} exists and is not a folder")
        if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{output_dir} is not empty; pass overwrite to write into it")
        output_dir.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    model.eval()
    started = time.perf_counter()
    results: list[ImageResult] = []
    bar = tqdm(total=len(test_set), desc=f"{test_set.name} {protocol.task}", unit="image", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for index in range(len(test_set)):
            sample = test_set[index]
            restored = restore_tensor(model, sample.pixel_values[None], tile_size, tile_overlap)[0]
            prediction = to_uint8(restored.permute(1, 2, 0).numpy())
            if prediction.shape != sample.target.shape:
                raise RuntimeError(
                    f"{sample.name}: the output {prediction.shape} does not match the ground truth "
                    f"{sample.target.shape}"
                )
            value_psnr = psnr(prediction, sample.target, protocol.crop_border, protocol.test_y_channel)
            value_ssim = ssim(prediction, sample.target, protocol.crop_border, protocol.test_y_channel)
            results.append(
                ImageResult(
                    name=sample.name,
                    psnr=value_psnr,
                    ssim=value_ssim,
                    input_size=list(sample.pixel_values.shape[-2:]),
                    output_size=list(prediction.shape[:2]),
                )
            )
            if output_dir is not None:
                save_image(prediction, output_dir / f"{_safe_file_name(sample.name)}.png", overwrite=True)
            bar.set_postfix_str(f"{sample.name}: {value_psnr:.2f} dB")
            bar.update()
    finally:
        bar.close()
    elapsed = time.perf_counter() - started

    config = model.config
    model_info = {
        "id": model_id or model_id_from_source(model_source or getattr(config, "_name_or_path", "") or "model"),
        "source": model_source or getattr(config, "_name_or_path", None) or None,
        "variant": config.variant,
        "task": config.task,
        "scale": config.upscale,
        "num_channels": config.num_channels,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    protocol_info = {**protocol.to_dict(), "tile_size": tile_size, "tile_overlap": tile_overlap}
    return EvaluationResult(
        model=model_info,
        dataset=test_set.describe(),
        protocol=protocol_info,
        images=results,
        environment=_environment(model),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        elapsed_s=elapsed,
    )
