"""Test images as the protocol measures them: 8-bit decoding, degradation, and the `Sample` a model is scored on.

Ground truth is read as 8-bit RGB (gray files are repeated to RGB); for gray denoising RGB files are reduced with
OpenCV's ``cvtColor(..., COLOR_RGB2GRAY)`` on ``uint8`` (:func:`rgb_to_gray_opencv`).

`TestSet` is a sequence of such samples, read and degraded when indexed.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..image_io import ImageReadError, decode_image_bytes, load_image, rgb_to_gray, to_channels, to_gray_or_rgb
from .resize import imresize, modcrop
from .task_protocol import Protocol, add_gaussian_noise


class TestSetError(ValueError):
    """A test set that cannot be read or does not fit the protocol; the message names the input and the problem."""

    __test__ = False  # not a pytest test class


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


def as_uint8_image(value, what: str) -> np.ndarray:
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
class ImageEntry:
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
            if (target.shape[0] // scale, target.shape[1] // scale) != (height, width):
                cropped = f"{target.shape[1] // scale * scale}x{target.shape[0] // scale * scale}"
                raise TestSetError(
                    f"{name}: the LR image ({width}x{height}) times {scale} does not match the HR image "
                    f"({target.shape[1]}x{target.shape[0]}, {cropped} cropped to a multiple of {scale}): not an "
                    f"x{scale} pair, so it is not scored"
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
        entries: list[ImageEntry],
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

    def select(self, indices) -> TestSet:
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
