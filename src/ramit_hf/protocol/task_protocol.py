"""How each task is benchmarked: the paper's protocol as a `Protocol`, and the seeded noise of denoising.

The protocol is the one of the original RAMiT test code (``ddp_engine_test.py``), so that a released checkpoint
gives here the numbers it gives there:

* **Inputs**, by task: super-resolution reads the set's LR files or makes them with MATLAB-exact bicubic
  (:func:`ramit_hf.protocol.resize.imresize` on ``uint8``, bit-exact on MATLAB-made LR files); denoising adds white
  Gaussian noise from :func:`add_gaussian_noise`: a CPU ``torch.Generator`` seeded with ``noise_seed`` (0, as the
  original) **anew for every image**, ``noise = randn(C, H, W) * sigma / 255`` in float32, neither clipped nor
  quantised (the original's ``torch.random.manual_seed(0)`` then ``torch.randn(*img.shape) * sigma / 255``, without
  touching the global random state); low-light enhancement and deraining read paired ``LQ``/``HQ`` images.
* The model sees the input in [0, 1] (8-bit value / 255, float32) through
  :func:`ramit_hf.inference.restore_tensor` (symmetric padding to 32, forward, crop); its output is clamped and
  rounded to 8 bits by :func:`ramit_hf.protocol.metrics.to_uint8`.
* **Metrics** (:func:`~ramit_hf.protocol.metrics.psnr`, :func:`~ramit_hf.protocol.metrics.ssim`): super-resolution on
  the Y channel with ``crop_border = scale``; denoising and low-light enhancement on RGB (or gray) with no border;
  deraining on Y with no border. A set's score is the mean over its images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..configuration_ramit import TASK_UPSCALE, TASKS

_DENOISING = ("color-dn", "gray-dn")
_Y_CHANNEL = (*tuple(TASK_UPSCALE), "derain")

QUANTIZATION = "output clamped to [0, 1], x255 in float32, rounded half to even to uint8 (metrics.to_uint8)"
PADDING = "symmetric (bottom/right) to a multiple of 32, output cropped (inference.restore_tensor)"
NOISE = (
    "per image: torch.Generator('cpu').manual_seed(noise_seed); noise = randn(C, H, W) * sigma / 255 (float32), "
    "added to the image in [0, 1], not clipped or quantised"
)


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


def add_gaussian_noise(image: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """The original protocol's noisy input: ``image + randn(image.shape) * sigma / 255`` (float32, unclipped).

    The noise comes from a fresh CPU generator seeded with ``seed``, so it is the same as
    ``torch.manual_seed(seed); torch.randn(*image.shape) * sigma / 255`` and the global random state is untouched.
    ``image`` is ``(C, H, W)`` float32 in [0, 1]; ``sigma`` is on the 0-255 scale.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(tuple(image.shape), generator=generator, dtype=torch.float32) * sigma / 255
    return image + noise
