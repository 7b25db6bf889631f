"""The basics of training data: its error type, each task's scale and channels, and pixel helpers (arrays from
images, tensors, mod-crops, region downscaling, augmentation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..configuration_ramit import TASK_UPSCALE, TASKS
from ..image_io import load_image, to_gray_or_rgb
from ..image_processing_ramit import stored_float_to_unit
from ..protocol.resize import imresize

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


# --------------------------------------------------------------------------------------------------
# pixels


def pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image -> HWC uint8 (or uint16 for 16-bit images) array with 1 or 3 channels; alpha is dropped.

    Decoded by `ramit_hf.image_io` (also the EXIF orientation, which `datasets` has usually applied already).
    """
    try:
        pixels = load_image(image).pixels
        if pixels.dtype.kind == "f":  # 32-bit float images train as 8-bit, on the scale the pipeline reads them
            pixels = np.round(stored_float_to_unit(pixels) * 255).astype(np.uint8)
    except ValueError as error:  # unreadable files (ImageReadError) and float values out of range
        raise DataError(f"{getattr(image, 'filename', '') or 'an image'}: {error}") from None
    return to_gray_or_rgb(pixels)


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
