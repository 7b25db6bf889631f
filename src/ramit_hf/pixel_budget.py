"""The pixel budget: the largest image (width x height) the readers decode, checked from the file's header before
anything is decoded (see docs/reliability.md).

This file ships with the pipeline to Hub folders (through `image_io`): it imports only the standard library.
"""

from __future__ import annotations

import os
from pathlib import Path

# The pixel budget (see `max_pixels_for`): the environment variable that overrides it, the share of memory it may
# take, and bytes per pixel held: input (decoded 16-bit RGBA, then float32) and output (per output pixel: the float32
# canvas, the clamped copy, the 16-bit image handed to the encoder).
MAX_PIXELS_ENV = "RAMIT_MAX_PIXELS"
MEMORY_SHARE = 0.5
_BYTES_PER_PIXEL = {"input": 8 + 16, "output": 12 + 12 + 6}


def max_pixels_for(scale: int = 1) -> int:
    """The default pixel budget: the largest input (width x height) this machine can decode and hold with its
    restored output (x `scale` per side), in `MEMORY_SHARE` of its memory; `RAMIT_MAX_PIXELS` overrides it (0: none).

    Restoration itself runs in tiles, so the model's memory does not grow with the image; what grows is the decoded
    input and the output canvas (float32 while tiles are blended, then 8 or 16 bits), `_BYTES_PER_PIXEL` per pixel.
    """
    text = os.environ.get(MAX_PIXELS_ENV)
    if text is not None:
        return check_max_pixels(text, MAX_PIXELS_ENV)
    per_input_pixel = _BYTES_PER_PIXEL["input"] + scale * scale * _BYTES_PER_PIXEL["output"]
    return int(_memory_bytes() * MEMORY_SHARE) // per_input_pixel


def check_max_pixels(value, what: str = "max_pixels") -> int:
    """A pixel budget as given by a user (int or text): a non-negative integer, 0 meaning no limit."""
    try:
        number = int(str(value).replace("_", ""))
    except ValueError:
        raise ValueError(f"{what} must be a whole number of pixels (0 for no limit), got {value!r}") from None
    if number < 0:
        raise ValueError(f"{what} must be a whole number of pixels (0 for no limit), got {value!r}")
    return number


def _memory_bytes() -> int:
    """Physical memory, or the container's limit (cgroup v2 / v1) where that is lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


__all__ = ["MAX_PIXELS_ENV", "MEMORY_SHARE", "check_max_pixels", "max_pixels_for"]
