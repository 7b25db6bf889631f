"""PSNR and SSIM as the image-restoration literature computes them (numpy reference + batched torch).

Conventions (what published RAMiT / SwinIR / BasicSR numbers use):

* Images are compared as **8-bit values in [0, 255]**: ``uint8`` arrays, or floats already rounded to
  integers. A model's float output in [0, 1] must be rounded to 8 bits first (:func:`to_uint8`:
  clamp to [0, 1], multiply by 255 in the output's own precision, round half to even), exactly as
  the original RAMiT test code saves its results.
* Layout ``HWC`` or ``HW`` (gray); colour images are in **RGB** order.
* ``crop_border``: that many pixels are removed from every side before measuring (SR papers crop
  ``scale`` pixels).
* ``test_y_channel``: colour images are measured on the luma channel of ITU-R BT.601 as MATLAB's
  ``rgb2ycbcr`` computes it on ``im2double`` data, scaled back to [0, 255] and not rounded:
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``. Gray images are used as they are.
* All arithmetic is float64.
* PSNR: ``20 log10(255 / sqrt(MSE))``, ``inf`` for identical images; over all channels together.
* SSIM: Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), ``C1 = (0.01*255)^2``,
  ``C2 = (0.03*255)^2``, population (biased) statistics, the map computed only where the whole
  window fits ("valid") and averaged; colour images: SSIM of each channel, then their mean.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "batch_psnr_ssim",
    "evaluate_module_path",
    "gaussian_window",
    "load_evaluate_metric",
    "psnr",
    "psnr_torch",
    "quantize_torch",
    "rgb_to_y",
    "rgb_to_y_torch",
    "ssim",
    "ssim_torch",
    "to_uint8",
]

# BT.601 luma weights for 8-bit RGB (MATLAB rgb2ycbcr), and the offset of the luma range [16, 235].
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0
_MAX_VALUE = 255.0
_SSIM_SIZE = 11
_SSIM_SIGMA = 1.5
_C1 = (0.01 * _MAX_VALUE) ** 2
_C2 = (0.03 * _MAX_VALUE) ** 2


# ----------------------------------------------------------------------------------------------
# numpy reference


def to_uint8(image) -> np.ndarray:
    """Float image in [0, 1] -> ``uint8``: clamp, multiply by 255, round half to even.

    This is the rounding to apply to a model's output before :func:`psnr` / :func:`ssim`; it is the
    original RAMiT test code's (numpy ``round`` in the output's float32 precision), which published
    numbers depend on.
    """
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float64)
    return np.round(np.clip(image, 0.0, 1.0) * _MAX_VALUE).astype(np.uint8)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Luma (BT.601, MATLAB ``rgb2ycbcr``) of an RGB ``HWC`` image with values in [0, 255], as float64 ``HW``.

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, in [16, 235], not rounded.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an RGB HWC image, got shape {image.shape}")
    return image.astype(np.float64) @ np.array(_Y_WEIGHTS) / _MAX_VALUE + _Y_OFFSET


def _as_hwc(image, name: str) -> np.ndarray:
    """Validates an HW/HWC image and returns it as float64 HWC."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"{name} must be an HW, HW1 or HW3 image, got shape {np.asarray(image).shape}")
    if array.dtype.kind not in "uif":
        raise TypeError(f"{name} must be a numeric image, got dtype {array.dtype}")
    return array.astype(np.float64)


def _check_crop(crop_border, height: int, width: int, min_size: int) -> int:
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    if min(height, width) - 2 * crop_border < min_size:
        raise ValueError(
            f"image of size {height}x{width} is too small: after cropping {crop_border} pixels per side "
            f"it must be at least {min_size}x{min_size}"
        )
    return int(crop_border)


def _prepare(img1, img2, crop_border, test_y_channel: bool, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 HWC, checked, border-cropped, and reduced to Y when asked."""
    a = _as_hwc(img1, "img1")
    b = _as_hwc(img2, "img2")
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {np.shape(img1)} and {np.shape(img2)}")
    c = _check_crop(crop_border, a.shape[0], a.shape[1], min_size)
    if c:
        a = a[c:-c, c:-c]
        b = b[c:-c, c:-c]
    if test_y_channel and a.shape[2] == 3:
        a = rgb_to_y(a)[:, :, None]
        b = rgb_to_y(b)[:, :, None]
    return a, b


def psnr(img1, img2, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """PSNR in dB between two 8-bit-valued ``HWC``/``HW`` RGB or gray images (see the module docstring).

    ``20 log10(255 / sqrt(MSE))`` over all pixels and channels (after cropping / Y conversion);
    ``inf`` when the images are identical.
    """
    a, b = _prepare(img1, img2, crop_border, test_y_channel, min_size=1)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return math.inf
    return float(20.0 * np.log10(_MAX_VALUE / np.sqrt(mse)))


def gaussian_window(size: int = _SSIM_SIZE, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product with itself is MATLAB's ``fspecial('gaussian', size, sigma)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of an HW float64 image with the window ``outer(g, g)``."""
    n = g.size
    h, w = image.shape
    rows = g[0] * image[0 : h - n + 1]
    for k in range(1, n):
        rows += g[k] * image[k : h - n + 1 + k]
    out = g[0] * rows[:, 0 : w - n + 1]
    for k in range(1, n):
        out += g[k] * rows[:, k : w - n + 1 + k]
    return out


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM map of two HW float64 images (valid region only)."""
    g = gaussian_window()
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / ((mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2))
    return float(ssim_map.mean())


def ssim(img1, img2, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """SSIM between two 8-bit-valued ``HWC``/``HW`` RGB or gray images (see the module docstring).

    Gaussian 11x11 window (sigma 1.5), valid filtering, mean of the map; colour images without
    ``test_y_channel``: the mean of the per-channel SSIMs. Images must be at least 11x11 after cropping.
    """
    a, b = _prepare(img1, img2, crop_border, test_y_channel, min_size=_SSIM_SIZE)
    return float(np.mean([_ssim_channel(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))


# ----------------------------------------------------------------------------------------------
# torch, for batches (B, C, H, W)


def quantize_torch(x: torch.Tensor) -> torch.Tensor:
    """Batch -> float64 8-bit values in [0, 255]: ``uint8`` is taken as is; float in [0, 1] is rounded
    exactly as :func:`to_uint8` does (clamp, *255 in the input's precision, round half to even)."""
    if x.dtype == torch.uint8:
        return x.to(torch.float64)
    if not x.dtype.is_floating_point:
        raise TypeError(f"expected a float tensor in [0, 1] or a uint8 tensor, got dtype {x.dtype}")
    return torch.round(x.clamp(0.0, 1.0) * _MAX_VALUE).to(torch.float64)


def rgb_to_y_torch(x: torch.Tensor) -> torch.Tensor:
    """Luma of a ``(B, 3, H, W)`` float64 batch in [0, 255] -> ``(B, 1, H, W)``, as :func:`rgb_to_y`."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"rgb_to_y_torch expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
    weights = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True) / _MAX_VALUE + _Y_OFFSET


def _prepare_torch(pred, target, crop_border, test_y_channel: bool, min_size: int):
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4 or t.shape[1] not in (1, 3):
            raise ValueError(f"{name} must be a (B, C, H, W) tensor with C in (1, 3), got shape {tuple(t.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    c = _check_crop(crop_border, pred.shape[2], pred.shape[3], min_size)
    a = quantize_torch(pred)
    b = quantize_torch(target.to(pred.device))
    if c:
        a = a[:, :, c:-c, c:-c]
        b = b[:, :, c:-c, c:-c]
    if test_y_channel and a.shape[1] == 3:
        a = rgb_to_y_torch(a)
        b = rgb_to_y_torch(b)
    return a, b


def _psnr_prepared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    # Identical images give mse 0 and therefore +inf, as the numpy version.
    return 20.0 * torch.log10(_MAX_VALUE / torch.sqrt(mse))


def _ssim_prepared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    channels = a.shape[1]
    g = torch.from_numpy(gaussian_window()).to(device=a.device, dtype=a.dtype)
    g_h = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    g_w = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian, per channel
        return F.conv2d(F.conv2d(t, g_h, groups=channels), g_w, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / ((mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2))
    # Mean over each channel's map, then over channels (= per-channel SSIM averaged).
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)


def psnr_torch(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, test_y_channel: bool = False
) -> torch.Tensor:
    """Per-image PSNR (float64, shape ``(B,)``) of ``(B, C, H, W)`` batches; see :func:`batch_psnr_ssim`."""
    a, b = _prepare_torch(pred, target, crop_border, test_y_channel, min_size=1)
    return _psnr_prepared(a, b)


def ssim_torch(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, test_y_channel: bool = False
) -> torch.Tensor:
    """Per-image SSIM (float64, shape ``(B,)``) of ``(B, C, H, W)`` batches; see :func:`batch_psnr_ssim`."""
    a, b = _prepare_torch(pred, target, crop_border, test_y_channel, min_size=_SSIM_SIZE)
    return _ssim_prepared(a, b)


def batch_psnr_ssim(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, test_y_channel: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``(psnr, ssim)``, each float64 of shape ``(B,)``, for ``(B, C, H, W)`` RGB or gray batches.

    Float input is taken in [0, 1] and rounded to 8 bits inside (as :func:`to_uint8`); ``uint8`` input is
    used as is. Same conventions and values as :func:`psnr` / :func:`ssim` per image, computed on the
    tensors' device in float64.
    """
    a, b = _prepare_torch(pred, target, crop_border, test_y_channel, min_size=_SSIM_SIZE)
    return _psnr_prepared(a, b), _ssim_prepared(a, b)


# ----------------------------------------------------------------------------------------------
# Hugging Face `evaluate` interface


def evaluate_module_path() -> Path:
    """Folder of the ``ramit_image_quality`` evaluate module shipped inside this package."""
    return Path(__file__).resolve().parent / "metrics_evaluate" / "ramit_image_quality"


def load_evaluate_metric(**kwargs):
    """``evaluate.load`` of the packaged ``ramit_image_quality`` metric (local files, no network).

    Keyword arguments go to ``evaluate.load`` (e.g. ``keep_in_memory=True``, ``experiment_id=...``).
    """
    import evaluate  # optional dependency (the `train` extra)

    return evaluate.load(str(evaluate_module_path()), **kwargs)
