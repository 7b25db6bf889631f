"""What every image reader gives (`DecodedImage`), how it fails (`ImageReadError`) and the checks it makes before
decoding: the pixel budget, read from the header, and one frame only.

Decoded pixels are numpy arrays, (H, W) for gray or (H, W, C) with C = 2 (gray + alpha), 3 (RGB) or 4 (RGBA), of
dtype uint8 or uint16 (16-bit PNG, TIFF and PNM files keep all 16 bits) or float32 (float TIFFs and PIL mode "F", as
stored: `image_processing_ramit.stored_float_to_unit` brings them to [0, 1]), with the EXIF orientation applied (rows
top to bottom as a viewer shows them). `DecodedImage.mode` names the layout as PIL does ("L", "LA", "RGB", "RGBA").

This file ships with the pipeline to Hub folders (through `image_io`), so it imports nothing from the rest of the
package but `image_metadata` and `pixel_budget`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .image_metadata import ImageMetadata
from .pixel_budget import MAX_PIXELS_ENV, max_pixels_for

MODE_OF_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


class ImageReadError(ValueError):
    """An input that cannot be read as an image; the message names the input and the problem."""


@dataclass
class DecodedImage:
    """Pixels of one image (see the module docstring for the layout), its PIL-style mode, where it came from and
    what its file says about itself (`metadata`)."""

    pixels: np.ndarray
    mode: str
    source: str
    metadata: ImageMetadata = field(default_factory=ImageMetadata)

    @property
    def bit_depth(self) -> int:
        """Bits per channel as decoded: 8, 16, or 32 for float pixels."""
        if self.pixels.dtype.kind == "f":
            return 32
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL reports it."""
        return self.pixels.shape[1], self.pixels.shape[0]


def check_budget(width: int, height: int, name: str, max_pixels: int | None) -> None:
    budget = max_pixels_for() if max_pixels is None else max_pixels
    if budget and width * height > budget:
        raise ImageReadError(
            f"{name}: {width}x{height} = {width * height:,} pixels is more than the pixel budget of {budget:,} "
            f"(what this machine can decode and hold); raise it with --max-pixels / max_pixels= / {MAX_PIXELS_ENV} "
            "(0 for no limit) if there is memory for it"
        )


def check_single_frame(image: Image.Image, name: str) -> None:
    check_frames(getattr(image, "n_frames", 1), name)


def check_frames(frames: int, name: str) -> None:
    if frames > 1:
        raise ImageReadError(
            f"{name}: an animated or multi-page image ({frames} frames); only still images are restored, and "
            "restoring the first frame alone would drop the others: save the frames as separate images first"
        )


@contextlib.contextmanager
def pillow_bomb_check_off():
    """Pillow's decompression-bomb check off, where the pixel budget is checked instead (from the header)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


__all__ = [
    "MODE_OF_CHANNELS",
    "DecodedImage",
    "ImageReadError",
    "check_budget",
    "check_frames",
    "check_single_frame",
    "pillow_bomb_check_off",
]
