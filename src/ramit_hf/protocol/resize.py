"""MATLAB-compatible bicubic resizing, in numpy (reference) and torch (batched, any device).

The super-resolution literature makes its low-resolution test images with MATLAB's
``imresize(hr, 1/s, 'bicubic')``; matching published PSNR/SSIM needs the same pixels. This module
reproduces that function, including the details that other bicubic resizers do differently:

* kernel: Keys cubic with ``a = -0.5``;
* antialiasing when downscaling: the kernel is stretched by ``1/scale`` (and scaled by ``scale``),
  so it covers ``4/scale`` input pixels;
* output size ``ceil(in_size * scale)``; the sampling position of output pixel ``x`` (1-based) is
  ``u = x/scale + 0.5*(1 - 1/scale)`` (pixel centres aligned, as MATLAB does);
* borders: taps falling outside the image are mirrored symmetrically (``..., 1, 0, 0, 1, ...``),
  weights are normalised to sum to 1 for every output pixel;
* two separable 1-D passes, the dimension with the smaller scale first (height first when equal);
* ``uint8`` input is converted back to ``uint8`` after *each* pass (round half away from zero, clip to
  [0, 255]), as MATLAB does; float input is never rounded.

:func:`imresize` (numpy, float64 arithmetic) is the reference. :func:`imresize_torch` runs the same
arithmetic in the same order on tensors, so in 8-bit mode it gives the same pixels, bit for bit.
"""

from __future__ import annotations

import math
from functools import lru_cache
from numbers import Real

import numpy as np
import torch

__all__ = ["contributions", "cubic", "imresize", "imresize_torch", "modcrop", "output_size"]

# Taps of the unscaled cubic kernel (it is non-zero on (-2, 2)).
_KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``), on float64."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1.0)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1.0) & (ax <= 2.0))
    return inner + outer


def _check_scale(scale) -> tuple[float, float]:
    """Returns ``(scale_h, scale_w)`` from a positive number or a pair of them."""
    if isinstance(scale, (tuple, list)):
        if len(scale) != 2:
            raise ValueError(f"scale must be a number or a (height, width) pair, got {scale!r}")
        pair = tuple(scale)
    else:
        pair = (scale, scale)
    for s in pair:
        if isinstance(s, bool) or not isinstance(s, Real) or not math.isfinite(s) or s <= 0:
            raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    return float(pair[0]), float(pair[1])


def output_size(in_size: int, scale: float) -> int:
    """MATLAB's output length for a scale factor: ``ceil(in_size * scale)``."""
    return math.ceil(in_size * scale)


@lru_cache(maxsize=512)
def contributions(in_size: int, out_size: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Taps of a 1-D MATLAB bicubic resize: ``(indices, weights)``, both of shape ``(out_size, taps)``.

    ``out[i] = sum_k weights[i, k] * in[indices[i, k]]`` (summed in order of ``k``). Indices are
    0-based and already mirrored into ``[0, in_size)``; taps whose weight is zero for every output
    are dropped. Cached per ``(in_size, out_size, scale, antialias)``; the arrays are read-only.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in_size={in_size}, out_size={out_size}")
    stretch = antialias and scale < 1.0
    kernel_width = _KERNEL_WIDTH / scale if stretch else _KERNEL_WIDTH

    # MATLAB's formulas, in its 1-based coordinates.
    x = np.arange(1, out_size + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if stretch else cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)

    # Symmetric mirroring: index sequence 1..n, n..1 repeated (0-based here).
    mirror = np.concatenate([np.arange(in_size), np.arange(in_size - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_size)]

    keep = np.any(weights != 0.0, axis=0)
    indices = np.ascontiguousarray(indices[:, keep])
    weights = np.ascontiguousarray(weights[:, keep])
    indices.setflags(write=False)
    weights.setflags(write=False)
    return indices, weights


def _pass_order(scale_h: float, scale_w: float) -> tuple[int, int]:
    """Passes as MATLAB orders them: smaller scale first, height first on a tie (0 = H, 1 = W)."""
    return (1, 0) if scale_w < scale_h else (0, 1)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crops the bottom/right of an ``HW`` or ``HWC`` image so both sides are multiples of ``scale``."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"modcrop scale must be a positive integer, got {scale!r}")
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"modcrop expects an HW or HWC image, got shape {image.shape}")
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def _round_to_uint8_levels_np(values: np.ndarray) -> np.ndarray:
    """MATLAB's double -> uint8 conversion, kept in float64: clip to [0, 255], round half away from zero."""
    clipped = np.clip(values, 0.0, 255.0)
    floor = np.floor(clipped)
    # `clipped - floor` is exact, so ties are detected exactly (floor(v + 0.5) is not always right).
    return floor + (clipped - floor >= 0.5)


def _resize_axis_np(array: np.ndarray, axis: int, indices: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One 1-D pass along ``axis`` of a float64 array; the taps are accumulated in order."""
    moved = np.moveaxis(array, axis, 0)
    shape = (-1,) + (1,) * (moved.ndim - 1)
    out = moved[indices[:, 0]] * weights[:, 0].reshape(shape)
    for k in range(1, indices.shape[1]):
        out += moved[indices[:, k]] * weights[:, k].reshape(shape)
    return np.moveaxis(out, 0, axis)


def imresize(image: np.ndarray, scale, *, antialias: bool = True) -> np.ndarray:
    """MATLAB ``imresize(image, scale, 'bicubic')`` on an ``HW`` or ``HWC`` numpy image.

    Args:
        image: ``uint8`` or float array, ``(H, W)`` or ``(H, W, C)``; channels are resized independently.
        scale: factor (``1/4`` downscales by 4, ``2`` upscales), or a ``(scale_h, scale_w)`` pair.
        antialias: MATLAB's ``'Antialiasing'`` option (default true); only matters when downscaling.

    Returns:
        Array of the input's dtype and layout, of size ``ceil(H*scale_h) x ceil(W*scale_w)``.
        ``uint8`` input is rounded back to ``uint8`` after each 1-D pass, as MATLAB does; float input
        is computed in float64 and cast back to its dtype without rounding.
    """
    scale_h, scale_w = _check_scale(scale)
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HW or HWC image, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"imresize got an empty image of shape {array.shape}")
    is_uint8 = array.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"imresize supports uint8 and float images, got dtype {array.dtype}")

    work = array.astype(np.float64)
    scales = (scale_h, scale_w)
    for axis in _pass_order(scale_h, scale_w):
        in_size = work.shape[axis]
        indices, weights = contributions(in_size, output_size(in_size, scales[axis]), scales[axis], antialias)
        work = _resize_axis_np(work, axis, indices, weights)
        if is_uint8:
            work = _round_to_uint8_levels_np(work)
    return work.astype(array.dtype)


# ----------------------------------------------------------------------------------------------
# torch


@lru_cache(maxsize=512)
def _contributions_torch(
    in_size: int, out_size: int, scale: float, antialias: bool, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`contributions` as tensors on ``device``, transposed to ``(taps, out_size)`` for per-tap use."""
    indices, weights = contributions(in_size, out_size, scale, antialias)
    idx = torch.from_numpy(np.ascontiguousarray(indices.T)).to(device)
    # Weights are made in float64 and rounded once to the compute dtype.
    wts = torch.from_numpy(np.ascontiguousarray(weights.T)).to(device=device, dtype=dtype)
    return idx, wts


def _round_to_uint8_levels_torch(values: torch.Tensor) -> torch.Tensor:
    """Same as :func:`_round_to_uint8_levels_np`, on a tensor."""
    clipped = values.clamp(0.0, 255.0)
    floor = torch.floor(clipped)
    return floor + (clipped - floor >= 0.5).to(values.dtype)


def _resize_dim_torch(x: torch.Tensor, dim: int, idx: torch.Tensor, wts: torch.Tensor) -> torch.Tensor:
    """One 1-D pass along ``dim``: a gather per tap, multiplied and accumulated in tap order.

    Separate multiply and add (no fused multiply-add, no matmul) keep the arithmetic identical to the
    numpy reference, which is what makes 8-bit rounding agree exactly.
    """
    shape = [1] * x.ndim
    shape[dim] = -1
    out = x.index_select(dim, idx[0]).mul_(wts[0].view(shape))
    term = torch.empty_like(out)  # reused buffer: in-place ops halve the time on CPU
    for k in range(1, idx.shape[0]):
        torch.index_select(x, dim, idx[k], out=term)
        out.add_(term.mul_(wts[k].view(shape)))
    return out


def imresize_torch(
    x: torch.Tensor,
    scale,
    *,
    antialias: bool = True,
    round_uint8: bool = False,
    data_range: float = 1.0,
) -> torch.Tensor:
    """MATLAB bicubic :func:`imresize` on a ``(B, C, H, W)`` or ``(C, H, W)`` tensor, on its device.

    Args:
        x: ``uint8`` or float tensor.
        scale: factor or ``(scale_h, scale_w)`` pair, as in :func:`imresize`.
        antialias: MATLAB's ``'Antialiasing'`` option.
        round_uint8: for float input, reproduce MATLAB on the 8-bit version of the image: ``x`` is
            taken as values in ``[0, data_range]``, mapped to 8-bit levels (``round(x*255/data_range)``),
            resized in float64 with rounding after each pass exactly like ``uint8`` input, and mapped
            back to ``[0, data_range]`` in ``x``'s dtype. ``uint8`` input always behaves this way.
        data_range: the value of white for float input with ``round_uint8`` (1.0 or 255.0).

    Returns:
        Tensor of ``x``'s dtype, layout and device. ``uint8`` input (or ``round_uint8``) is computed
        in float64 and equals :func:`imresize` bit for bit (needs a device with float64). Plain float
        input is computed in its own precision (float32 for half/bfloat16) without rounding.
    """
    scale_h, scale_w = _check_scale(scale)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"imresize_torch expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ValueError(f"imresize_torch expects a (B, C, H, W) or (C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"imresize_torch got an empty tensor of shape {tuple(x.shape)}")
    is_uint8 = x.dtype == torch.uint8
    if not (is_uint8 or x.dtype.is_floating_point):
        raise TypeError(f"imresize_torch supports uint8 and float tensors, got dtype {x.dtype}")
    if not (isinstance(data_range, Real) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite positive number, got {data_range!r}")

    quantize = is_uint8 or round_uint8
    if quantize:
        work = x.to(torch.float64)
        if not is_uint8:
            work = _round_to_uint8_levels_torch(work * (255.0 / data_range))
    else:
        compute_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        work = x.to(compute_dtype)

    scales = (scale_h, scale_w)
    for axis in _pass_order(scale_h, scale_w):
        dim = x.ndim - 2 + axis
        in_size = work.shape[dim]
        idx, wts = _contributions_torch(
            in_size, output_size(in_size, scales[axis]), scales[axis], antialias, work.device, work.dtype
        )
        work = _resize_dim_torch(work, dim, idx, wts)
        if quantize:
            work = _round_to_uint8_levels_torch(work)

    if quantize and not is_uint8:
        work = work * (data_range / 255.0)
    return work.to(x.dtype)
