"""Tiled restoration: a large image restored in overlapping tiles and blended without seams.

Peak memory then follows the tile size, not the image size (only the output canvas grows with the image). Each tile
goes through `forward.restore_whole`, i.e. the paper's protocol (symmetric padding to the model's multiple,
forward, crop), so a tile is restored exactly as a whole image of that size would be.

Blending: every tile's output is weighted by a separable window that is 1 inside and falls off with a raised cosine
(sin^2) across the overlap on each side that has a neighbour (never at the image border), and the sum is divided by
the sum of the windows. Two neighbouring ramps add up to exactly 1, so a seam would need the two tiles to disagree,
and where they do the result fades from one to the other over the whole overlap. Because the tile grid is a product
of row and column positions, the normaliser is the product of two 1-D sums: no full-size weight buffer is needed.

RAMiT's channel self-attention compares channels over the whole (tile) image, so a tile's result also depends on
content far from it: tiled and whole-image outputs differ a little everywhere, not only near seams, by an amount that
depends on the content (45-60 dB PSNR between them on small crops, less on large strongly textured images), while
their PSNR against the ground truth is as good or better (scripts/benchmark_memory.py --quality, docs/inference.md).
"""

from __future__ import annotations

import math
import warnings

import torch

from .forward import model_placement, restore_whole

# The largest tile "auto" picks: RAMiT-1 needs about 1.4 GB over the model for 512 x 512 on CPU (measured by
# scripts/benchmark_memory.py), which fits a GPU with a few GiB as well. Also the default for an explicit tiling call.
DEFAULT_TILE_SIZE = 512
# 32 input pixels: the span of one window at RAMiT's coarsest stage (8 px windows at 1/4 resolution).
DEFAULT_TILE_OVERLAP = 32
# "auto" restores images up to this many pixels whole, larger ones in tiles of at most DEFAULT_TILE_SIZE.
AUTO_TILE_MAX_PIXELS = 512 * 512
# Tile sides "auto" picks are multiples of this (RAMiT's padding multiple), so interior tiles need no padding.
_TILE_MULTIPLE = 32
# The smallest tile side used: every tile is padded to the padding multiple and overlaps its neighbours by up to
# half its side, so smaller tiles save no memory and multiply the work (--tile 7 on 144 x 144: 1296 tiles of 32 x 32).
MIN_TILE_SIZE = 64


def tile_floor_message(tile_size: int) -> str | None:
    """Why an explicit tile side below `MIN_TILE_SIZE` is raised to it, or None for a side that is kept."""
    if 0 < tile_size < MIN_TILE_SIZE:
        return (
            f"tile size {tile_size} raised to {MIN_TILE_SIZE}: every tile is padded to {_TILE_MULTIPLE} pixels and "
            f"overlaps its neighbours, so tiles below {MIN_TILE_SIZE} pixels save no memory and take many times longer"
        )
    return None


def resolve_tile_size(tile_size: int | str | None, height: int, width: int) -> int | None:
    """The tile size to restore a `height` x `width` image with, or None for the whole image at once.

    `tile_size`: `"auto"` (whole while the image padded to the padding multiple holds at most `AUTO_TILE_MAX_PIXELS`
    pixels, else `auto_tile_size`: a 1 x 100000 strip is padded to 32 rows, so it is tiled along its length), `0` or
    `None` (always whole), or a positive tile side in input pixels (raised to `MIN_TILE_SIZE`, with a warning).
    """
    if tile_size == "auto":
        padded = -(-height // _TILE_MULTIPLE) * _TILE_MULTIPLE * (-(-width // _TILE_MULTIPLE) * _TILE_MULTIPLE)
        return auto_tile_size(height, width) if padded > AUTO_TILE_MAX_PIXELS else None
    if tile_size is None or tile_size == 0:
        return None
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 0:
        raise ValueError(f"tile_size must be 'auto', 0 (no tiling) or a positive number of pixels, got {tile_size!r}")
    message = tile_floor_message(tile_size)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=2)
        return MIN_TILE_SIZE
    return tile_size


def auto_tile_size(height: int, width: int, overlap: int = DEFAULT_TILE_OVERLAP) -> int:
    """The tile side "auto" uses: of the multiples of 32 from 128 to `DEFAULT_TILE_SIZE`, the one whose tiles cover
    the image with the fewest pixels in all (the larger side on ties: more context per tile).

    E.g. 600 x 600 -> 320 (2 x 2 tiles, 1.14x the pixels of the image, where fixed 512-px tiles would do 2.9x);
    4000 x 3000 -> 480 (9 x 7 tiles, 1.21x).
    """
    best, best_cost = DEFAULT_TILE_SIZE, None
    for side in range(DEFAULT_TILE_SIZE, 4 * _TILE_MULTIPLE - 1, -_TILE_MULTIPLE):
        cost = 1
        for length in (height, width):
            tile = min(side, length)
            cost *= len(tile_starts(length, tile, min(overlap, tile - 1))) * tile
        if best_cost is None or cost < best_cost:
            best, best_cost = side, cost
    return best


def default_overlap(tile_size: int) -> int:
    """`DEFAULT_TILE_OVERLAP`, or half the tile for tiles too small for it."""
    return min(DEFAULT_TILE_OVERLAP, tile_size // 2)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering `length`, neighbours overlapping by at least `overlap`.

    The last tile is aligned to the end, so every tile has the full size (or the whole length when it is shorter than
    a tile) and tiles can be batched; the last overlap may therefore be larger than `overlap`.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    return [*list(range(0, length - tile, stride)), length - tile]


def blend_window(length: int, ramp: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """A 1-D window of `length` ones, with raised-cosine ramps of `ramp` samples at the faded ends.

    The ramp is sin^2 at sample centres, so it never reaches 0 (every pixel keeps a positive weight) and a fade-out
    laid over a fade-in of the same length sums to exactly 1.
    """
    window = torch.ones(length, dtype=torch.float64)
    ramp = min(ramp, length)
    if ramp > 0:
        rising = torch.sin(0.5 * math.pi * (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp) ** 2
        if fade_in:
            window[:ramp] *= rising
        if fade_out:
            window[length - ramp :] *= rising.flip(0)
    return window


@torch.no_grad()
def restore_tiled(
    model,
    pixel_values: torch.Tensor,
    tile_size: int,
    tile_overlap: int | None = None,
    batch_size: int | None = None,
    progress: bool | None = False,
) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] -> (B, C, H * s, W * s) restored in overlapping tiles, unclamped, float32.

    Args:
        model: a `RamitForImageRestoration` (any device and dtype; tiles are moved to it one batch at a time, the
            full image and output stay on `pixel_values`' device).
        pixel_values: the images, with the model's number of channels.
        tile_size: tile side in input pixels (a multiple of 32 wastes no padding). Images smaller than a tile along
            an axis are taken whole along that axis.
        tile_overlap: input pixels shared by neighbouring tiles; default `DEFAULT_TILE_OVERLAP` (at most half a
            tile). Must be smaller than `tile_size`.
        batch_size: tiles per forward pass; default 1 on CPU (batching does not speed it up there) and as many
            tiles as `AUTO_TILE_MAX_PIXELS` holds elsewhere.
        progress: show a tqdm bar over the tiles (`None`: only when stderr is a terminal).
    """
    tile_overlap = default_overlap(tile_size) if tile_overlap is None else tile_overlap
    _check_tiling(pixel_values, tile_size, tile_overlap)
    batch, channels, height, width = pixel_values.shape
    scale = model.config.upscale
    tile_h, tile_w = min(tile_size, height), min(tile_size, width)
    rows, cols = tile_starts(height, tile_h, tile_overlap), tile_starts(width, tile_w, tile_overlap)
    if len(rows) == len(cols) == 1:
        return restore_whole(model, pixel_values)

    ramp = tile_overlap * scale
    row_windows = [blend_window(tile_h * scale, ramp, y > 0, y + tile_h < height) for y in rows]
    col_windows = [blend_window(tile_w * scale, ramp, x > 0, x + tile_w < width) for x in cols]
    row_norm = _window_sum(row_windows, rows, height * scale, scale)
    col_norm = _window_sum(col_windows, cols, width * scale, scale)

    device = pixel_values.device
    output = torch.zeros(batch, channels, height * scale, width * scale, dtype=torch.float32, device=device)
    tiles = [(b, i, j) for b in range(batch) for i in range(len(rows)) for j in range(len(cols))]
    if batch_size is None:
        on_cpu = model_placement(model)[0].type == "cpu"
        batch_size = 1 if on_cpu else max(1, AUTO_TILE_MAX_PIXELS // (tile_h * tile_w))
    chunks = [tiles[start : start + batch_size] for start in range(0, len(tiles), batch_size)]
    if progress is not False:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="tiles", unit="batch", leave=False, disable=None if progress is None else False)
    for chunk in chunks:
        crops = torch.stack(
            [pixel_values[b, :, rows[i] : rows[i] + tile_h, cols[j] : cols[j] + tile_w] for b, i, j in chunk]
        )
        restored = restore_whole(model, crops)
        for (b, i, j), tile in zip(chunk, restored, strict=True):
            weight = (row_windows[i][:, None] * col_windows[j][None, :]).to(device, torch.float32)
            y, x = rows[i] * scale, cols[j] * scale
            output[b, :, y : y + tile_h * scale, x : x + tile_w * scale].addcmul_(tile, weight)
    norm = (row_norm[:, None] * col_norm[None, :]).to(device, torch.float32)
    return output.div_(norm)


def _window_sum(windows: list[torch.Tensor], starts: list[int], length: int, scale: int) -> torch.Tensor:
    total = torch.zeros(length, dtype=torch.float64)
    for window, start in zip(windows, starts, strict=True):
        total[start * scale : start * scale + len(window)] += window
    return total


def _check_tiling(pixel_values: torch.Tensor, tile_size: int, tile_overlap: int) -> None:
    if pixel_values.ndim != 4:
        shape = tuple(pixel_values.shape)
        raise ValueError(f"pixel_values must be (batch, channels, height, width), got shape {shape}")
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive number of pixels, got {tile_size!r}")
    if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, int) or tile_overlap < 0:
        raise ValueError(f"tile_overlap must be a non-negative number of pixels, got {tile_overlap!r}")
    if tile_overlap >= tile_size:
        raise ValueError(f"tile_overlap ({tile_overlap}) must be smaller than tile_size ({tile_size})")


__all__ = [
    "AUTO_TILE_MAX_PIXELS",
    "DEFAULT_TILE_OVERLAP",
    "DEFAULT_TILE_SIZE",
    "MIN_TILE_SIZE",
    "auto_tile_size",
    "blend_window",
    "resolve_tile_size",
    "restore_tiled",
    "tile_floor_message",
    "tile_starts",
]
