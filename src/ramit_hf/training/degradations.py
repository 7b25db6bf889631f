"""Real-world degradations of super-resolution inputs: the second-order model of Real-ESRGAN, seeded per sample.

`RealDegradation(settings, scale)(hr, rng)` turns a high-resolution uint8 image into its low-resolution input in
three stages, as Real-ESRGAN synthesises its training pairs (the settings, their names and where each number comes
from are in `recipes/degradations/realesrgan.yaml`):

1. blur (a random Gaussian-family kernel, or a sinc filter), random resize, Gaussian or Poisson noise (colour or
   gray), JPEG;
2. blur (with probability `second_blur_prob`), random resize relative to the output size, noise;
3. resize to the output size followed by a sinc filter (with probability `final_sinc_prob`), and JPEG, in random
   order; the result is rounded to 8 bits.

Resizes use `torch.nn.functional.interpolate` with a random mode (area, bilinear, bicubic); JPEG is Pillow's
encoder (4:2:0 chroma subsampling, integer quality rounded from the drawn one); images are clipped to [0, 1] after
noise and JPEG. Departures from Real-ESRGAN: no sharpening of the ground truth (its `gt_usm`), and Poisson noise
counts 255 photons per unit of intensity. Every draw comes from the `numpy.random.Generator` given, so seeding it
with `training_rng(seed, epoch, position)` or `test_rng(seed, index)` makes each sample reproducible.
"""

from __future__ import annotations

import difflib
import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .kernels import KERNEL_TYPES, filter2d, random_blur_kernel, random_sinc_kernel

BUILTIN_DIR = Path(__file__).resolve().parent / "recipes" / "degradations"
RESIZE_MODES = ("area", "bilinear", "bicubic", "nearest")
_PROBABILITIES = (
    "sinc_prob",
    "gaussian_noise_prob",
    "gray_noise_prob",
    "second_blur_prob",
    "sinc_prob2",
    "gaussian_noise_prob2",
    "gray_noise_prob2",
    "final_sinc_prob",
)
# distributions over choices: their length (or the key whose list they weigh)
_DISTRIBUTIONS = {"kernel_prob": "kernel_list", "kernel_prob2": "kernel_list", "resize_prob": 3, "resize_prob2": 3}
# ranges [low, high]: (smallest allowed low, largest allowed high, low must be strictly above the smallest)
_RANGES = {
    "blur_sigma": (0.0, None, True),
    "blur_sigma2": (0.0, None, True),
    "betag_range": (0.0, None, True),
    "betag_range2": (0.0, None, True),
    "betap_range": (0.0, None, True),
    "betap_range2": (0.0, None, True),
    "resize_range": (0.0, None, True),
    "resize_range2": (0.0, None, True),
    "noise_range": (0.0, None, False),
    "noise_range2": (0.0, None, False),
    "poisson_scale_range": (0.0, None, False),
    "poisson_scale_range2": (0.0, None, False),
    "jpeg_range": (1.0, 100.0, False),
    "jpeg_range2": (1.0, 100.0, False),
}


class DegradationError(ValueError):
    """Degradation settings that cannot be used; the message names the setting and the problem."""


# --------------------------------------------------------------------------------------------------
# settings


def _read(path: Path, name: str | None = None) -> dict:
    import yaml

    if not path.is_file():
        names = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
        given = name or str(path)
        raise DegradationError(f"unknown degradation {given!r}: give one of {', '.join(names)} or a .yaml file")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise DegradationError(f"{path} must hold a mapping of degradation settings")
    return data


def builtin_settings(name: str = "realesrgan") -> dict:
    """The settings of a built-in degradation model (`realesrgan`)."""
    return _read(BUILTIN_DIR / f"{name}.yaml")


def resolve_settings(value) -> dict | None:
    """Settings from a name (`realesrgan`), a YAML file, or a mapping (optionally with `base:`); keys a mapping
    leaves out take the Real-ESRGAN value. Unknown keys are an error naming the closest one."""
    if value is None or value == {} or (isinstance(value, str) and value.lower() in ("none", "bicubic")):
        return None
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        value = {"base": text}
    if not isinstance(value, dict):
        raise DegradationError(f"expected a name, a file or a mapping of settings, got {value!r}")
    value = dict(value)
    base = str(value.pop("base", "realesrgan"))
    path = Path(base) if base.lower().endswith((".yaml", ".yml")) else BUILTIN_DIR / f"{base}.yaml"
    if path == BUILTIN_DIR / "realesrgan.yaml":
        settings = builtin_settings()
    else:
        settings = {**builtin_settings(), **_read(path, base)}
    unknown = [k for k in value if k not in settings]
    if unknown:
        hints = [
            k + (f" (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(k, settings, 1)) else "")
            for k in unknown
        ]
        raise DegradationError(f"unknown setting(s) {', '.join(hints)}")
    settings.update(value)
    return settings


def _number_list(value) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return None
    return [float(v) for v in value]


def settings_problems(settings: dict, task: str | None = None) -> list[str]:
    """Every out-of-range or malformed setting (empty when the settings can be used)."""
    problems = []
    if task is not None and not task.startswith("sr-"):
        problems.append(f"real-world degradations make super-resolution inputs; the task {task} has none")
    for key in _PROBABILITIES:
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            problems.append(f"{key} must be a probability in [0, 1], got {value!r}")
    kinds = settings.get("kernel_list")
    if not isinstance(kinds, list) or not kinds or any(k not in KERNEL_TYPES for k in kinds):
        problems.append(f"kernel_list must be a list of {', '.join(KERNEL_TYPES)}, got {kinds!r}")
        kinds = []
    for key, length in _DISTRIBUTIONS.items():
        values, size = _number_list(settings.get(key)), len(kinds) if isinstance(length, str) else length
        if values is None or len(values) != size or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
            problems.append(f"{key} must be {size} probabilities summing to 1, got {settings.get(key)!r}")
    for key, (smallest, largest, strict) in _RANGES.items():
        pair = _number_list(settings.get(key))
        if pair is None or len(pair) != 2:
            pair = [math.nan, math.nan]
        low_ok = pair[0] > smallest if strict else pair[0] >= smallest
        if not (low_ok and pair[0] <= pair[1] and (largest is None or pair[1] <= largest)):
            low = f"> {smallest:g}" if strict else f">= {smallest:g}"
            high = f" and high <= {largest:g}" if largest is not None else ""
            problems.append(f"{key} must be [low, high] with low <= high, low {low}{high}; got {settings.get(key)!r}")
    sizes = settings.get("kernel_sizes")
    if not isinstance(sizes, list) or not sizes or any(not isinstance(s, int) or s < 3 or s % 2 == 0 for s in sizes):
        problems.append(f"kernel_sizes must be odd integers >= 3, got {sizes!r}")
    modes = settings.get("resize_modes")
    if not isinstance(modes, list) or not modes or any(m not in RESIZE_MODES for m in modes):
        problems.append(f"resize_modes must be a list of {', '.join(RESIZE_MODES)}, got {modes!r}")
    return problems


def check_settings(settings: dict, task: str | None = None) -> dict:
    problems = settings_problems(settings, task)
    if problems:
        raise DegradationError("; ".join(problems))
    return settings


# --------------------------------------------------------------------------------------------------
# seeds


def training_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of one training sample's degradation (a stream of its own beside the patch's)."""
    return np.random.default_rng((seed, 3, epoch, position))


def test_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image `index` of a degraded test set (`ramit evaluate --degradation ... --seed`)."""
    return np.random.default_rng((seed, 4, index))


# --------------------------------------------------------------------------------------------------
# the pipeline


class RealDegradation:
    """High-resolution uint8 (H, W, C) -> its degraded low-resolution input (H / scale, W / scale, C), uint8."""

    def __init__(self, settings: dict, scale: int):
        self.settings = check_settings(settings)
        self.scale = int(scale)

    def __call__(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = hr.shape[0] // self.scale, hr.shape[1] // self.scale
        if h < 1 or w < 1:
            raise ValueError(f"an image of {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {self.scale}")
        s = self.settings
        kernel1, kernel2 = self._kernel(rng, ""), self._kernel(rng, "2")
        size = s["kernel_sizes"][int(rng.integers(len(s["kernel_sizes"])))]
        final_sinc = random_sinc_kernel(rng, size, final=True) if rng.random() < s["final_sinc_prob"] else None
        x = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        # stage 1
        x = filter2d(x, kernel1)
        x = self._resize(x, rng, s["resize_prob"], s["resize_range"], x.shape[-2:])
        x = add_noise(
            x, rng, s["gaussian_noise_prob"], s["noise_range"], s["poisson_scale_range"], s["gray_noise_prob"]
        )
        x = jpeg(x, rng.uniform(*s["jpeg_range"]))
        # stage 2 (sizes relative to the output)
        if rng.random() < s["second_blur_prob"]:
            x = filter2d(x, kernel2)
        x = self._resize(x, rng, s["resize_prob2"], s["resize_range2"], (h, w))
        x = add_noise(
            x, rng, s["gaussian_noise_prob2"], s["noise_range2"], s["poisson_scale_range2"], s["gray_noise_prob2"]
        )
        # final stage: the two orders of resize + sinc and JPEG
        quality = rng.uniform(*s["jpeg_range2"])
        if rng.random() < 0.5:
            x = jpeg(self._final_resize(x, rng, (h, w), final_sinc), quality)
        else:
            x = self._final_resize(jpeg(x, quality), rng, (h, w), final_sinc)
        return nchw_to_uint8_hwc(x)

    def _kernel(self, rng: np.random.Generator, stage: str) -> np.ndarray:
        s = self.settings
        size = s["kernel_sizes"][int(rng.integers(len(s["kernel_sizes"])))]
        if rng.random() < s[f"sinc_prob{stage}"]:
            return random_sinc_kernel(rng, size)
        return random_blur_kernel(
            rng,
            size,
            s["kernel_list"],
            s[f"kernel_prob{stage}"],
            s[f"blur_sigma{stage}"],
            s[f"betag_range{stage}"],
            s[f"betap_range{stage}"],
        )

    def _mode(self, rng: np.random.Generator) -> str:
        return self.settings["resize_modes"][int(rng.integers(len(self.settings["resize_modes"])))]

    def _resize(self, x: torch.Tensor, rng: np.random.Generator, probabilities, factors, base) -> torch.Tensor:
        choice = int(rng.choice(3, p=np.asarray(probabilities, dtype=np.float64)))
        factor = (rng.uniform(1, factors[1]), rng.uniform(factors[0], 1), 1.0)[choice]
        size = (max(1, int(base[0] * factor)), max(1, int(base[1] * factor)))
        return resize(x, size, self._mode(rng))

    def _final_resize(self, x, rng, size, sinc: np.ndarray | None) -> torch.Tensor:
        x = resize(x, size, self._mode(rng))
        return filter2d(x, sinc) if sinc is not None else x


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    corners = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return torch.nn.functional.interpolate(x, size=size, mode=mode, **corners)


def add_noise(x: torch.Tensor, rng: np.random.Generator, gaussian_prob, sigma_range, poisson_range, gray_prob):
    """Gaussian noise (sigma uniform in `sigma_range`, 0-255 scale) with probability `gaussian_prob`, else Poisson
    noise (scaled by a factor uniform in `poisson_range`); the same noise on every channel with probability
    `gray_prob`. Clipped to [0, 1]."""
    gray = rng.random() < gray_prob
    shape = (x.shape[0], 1, *x.shape[2:]) if gray else tuple(x.shape)
    if rng.random() < gaussian_prob:
        sigma = rng.uniform(*sigma_range) / 255
        noise = rng.standard_normal(shape).astype(np.float32) * np.float32(sigma)
    else:
        scale = rng.uniform(*poisson_range)
        base = luma(x) if gray and x.shape[1] == 3 else x[:, :1] if gray else x
        levels = torch.round(base.clamp(0, 1) * 255).double().numpy()
        noise = ((rng.poisson(levels) - levels) / 255 * scale).astype(np.float32)
    return (x + torch.from_numpy(noise)).clamp(0, 1)


def luma(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def jpeg(x: torch.Tensor, quality: float) -> torch.Tensor:
    """Each image of `x` (N, C, H, W in [0, 1]) through Pillow's JPEG encoder and decoder at `quality` (rounded)."""
    quality = min(100, max(1, round(quality)))
    out = []
    for image in nchw_to_uint8_hwc(x, batch=True):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            array = np.asarray(decoded, dtype=np.float32).reshape(image.shape) / 255
        out.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(out)


def nchw_to_uint8_hwc(x: torch.Tensor, batch: bool = False) -> np.ndarray:
    """(N, C, H, W) float tensor in [0, 1] -> uint8 numpy (H, W, C) of the first image (or (N, H, W, C) with `batch`):
    clamped, x255, rounded half to even by `torch.round`. `protocol.metrics.to_uint8` is the same rounding for numpy
    images already in (H, W, C), as scoring takes them."""
    array = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return array if batch else array[0]


def degrade_test_image(hr: np.ndarray, degradation: RealDegradation, seed: int, index: int) -> np.ndarray:
    """The seeded degraded input of image `index` of a test or validation set (`hr` mod-cropped)."""
    return degradation(hr, test_rng(seed, index))


def degraded_test_set(test_set, settings: dict | None, seed: int = 0):
    """A `protocol.TestSet` whose low-resolution inputs are the seeded real-world degradations of its mod-cropped
    ground truth (image i degraded with `test_rng(seed, i)`, i in the set's name order), scored as usual."""
    from ..image_io import to_channels
    from ..protocol.samples import ImageEntry, TestSet

    scale = test_set.protocol.scale
    if not settings:
        raise DegradationError("no degradation settings given (e.g. realesrgan)")
    if scale == 1:
        raise DegradationError(f"real-world degradations make super-resolution inputs, not {test_set.protocol.task}")
    degradation = RealDegradation(settings, scale)

    def entry(index: int, original: ImageEntry) -> ImageEntry:
        def load():
            target, _ = original.load()
            target = to_channels(target, test_set.protocol.num_channels)
            target = target[: target.shape[0] // scale * scale, : target.shape[1] // scale * scale]
            return target, degrade_test_image(target, degradation, seed, index)

        return ImageEntry(original.name, load)

    entries = [entry(i, e) for i, e in enumerate(test_set._entries)]
    description = f"real-world degradation (Real-ESRGAN model) of the HR mod-cropped, seed {seed}"
    return TestSet(test_set.name, test_set.source, entries, test_set.protocol, "degraded", description, test_set.split)


__all__ = [
    "DegradationError",
    "RealDegradation",
    "builtin_settings",
    "check_settings",
    "degrade_test_image",
    "degraded_test_set",
    "resolve_settings",
    "settings_problems",
    "test_rng",
    "training_rng",
]
