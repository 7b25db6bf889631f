"""Blur kernels of the Real-ESRGAN degradation model (Wang et al., "Real-ESRGAN: Training Real-World Blind
Super-Resolution with Pure Synthetic Data", ICCVW 2021, section 3.2).

* Gaussian kernels with covariance `R diag(sigma_x^2, sigma_y^2) R^T` (isotropic: equal sigmas, no rotation), in
  three shapes of the quadratic form `q = x^T C^-1 x`: Gaussian `exp(-q / 2)`, generalised Gaussian
  `exp(-q^beta / 2)` and plateau `1 / (1 + q^beta)`;
* the sinc (ideal circular low-pass) filter `w J1(w r) / (2 pi r)` with cut-off frequency `w`, which makes ringing
  and overshoot artefacts.

Every kernel is a square of odd side, normalised to sum 1. The random draws take a `numpy.random.Generator`, so a
caller that seeds it from a sample's position gets the same kernel every time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel sizes must be odd and positive, got {size}")
    axis = np.arange(size, dtype=np.float64) - size // 2
    return np.meshgrid(axis, axis, indexing="xy")


def gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float, angle: float = 0.0, beta: float = 1.0, shape: str = "gaussian"
) -> np.ndarray:
    """A normalised (anisotropic) Gaussian-family kernel; `shape` is gaussian, generalized or plateau."""
    if sigma_x <= 0 or sigma_y <= 0 or beta <= 0:
        raise ValueError(f"kernel sigmas and beta must be positive, got {sigma_x}, {sigma_y}, {beta}")
    xx, yy = _grid(size)
    cos, sin = math.cos(angle), math.sin(angle)
    # coordinates in the kernel's own axes: q = (u / sigma_x)^2 + (v / sigma_y)^2
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    if shape == "gaussian":
        kernel = np.exp(-0.5 * q)
    elif shape == "generalized":
        kernel = np.exp(-0.5 * q**beta)
    elif shape == "plateau":
        kernel = 1.0 / (1.0 + q**beta)
    else:
        raise ValueError(f"unknown kernel shape {shape!r}; choose gaussian, generalized or plateau")
    return kernel / kernel.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """The normalised ideal circular low-pass filter of cut-off `cutoff` (radians per pixel, in (0, pi])."""
    if not 0 < cutoff <= math.pi:
        raise ValueError(f"the sinc cut-off must be in (0, pi], got {cutoff}")
    xx, yy = _grid(size)
    r = torch.from_numpy(np.hypot(xx, yy))
    safe = torch.where(r == 0, torch.ones_like(r), r)
    values = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    # the limit at r = 0: J1(x) ~ x / 2
    values = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), values)
    kernel = values.numpy()
    return kernel / kernel.sum()


def _beta(rng: np.random.Generator, low: float, high: float) -> float:
    # half of the draws below 1 (sharper centre), half above (flatter top), as Real-ESRGAN samples its betas
    return float(rng.uniform(low, 1.0)) if rng.random() < 0.5 else float(rng.uniform(1.0, high))


def random_blur_kernel(
    rng: np.random.Generator,
    size: int,
    types: Sequence[str],
    probabilities: Sequence[float],
    sigma_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
) -> np.ndarray:
    """One kernel of a type drawn with `probabilities`: sigmas uniform in `sigma_range`, the rotation uniform in
    [-pi, pi] (anisotropic types), beta from `betag_range` (generalised) or `betap_range` (plateau)."""
    kind = types[int(rng.choice(len(types), p=np.asarray(probabilities, dtype=np.float64)))]
    low, high = float(sigma_range[0]), float(sigma_range[1])
    sigma_x = float(rng.uniform(low, high))
    if kind.endswith("aniso"):
        sigma_y, angle = float(rng.uniform(low, high)), float(rng.uniform(-math.pi, math.pi))
    else:
        sigma_y, angle = sigma_x, 0.0
    if kind.startswith("generalized"):
        return gaussian_kernel(size, sigma_x, sigma_y, angle, _beta(rng, betag_range[0], betag_range[1]), "generalized")
    if kind.startswith("plateau"):
        return gaussian_kernel(size, sigma_x, sigma_y, angle, _beta(rng, betap_range[0], betap_range[1]), "plateau")
    return gaussian_kernel(size, sigma_x, sigma_y, angle)


def random_sinc_kernel(rng: np.random.Generator, size: int, final: bool = False) -> np.ndarray:
    """A sinc filter with the cut-off uniform in [pi/3, pi] (kernels under 13 px and the final filter) or
    [pi/5, pi] (larger kernels, where a lower cut-off still fits), as Real-ESRGAN draws them."""
    low = math.pi / 3 if final or size < 13 else math.pi / 5
    return sinc_kernel(size, float(rng.uniform(low, math.pi)))


def filter2d(image: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """`image` (N, C, H, W) convolved with a 2-D kernel per channel, the border reflected (or replicated where the
    image is smaller than the kernel's reach)."""
    size = kernel.shape[0]
    pad = size // 2
    channels = image.shape[1]
    weight = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32)).expand(channels, 1, size, size)
    mode = "reflect" if min(image.shape[-2:]) > pad else "replicate"
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad), mode=mode)
    return torch.nn.functional.conv2d(padded, weight, groups=channels)
