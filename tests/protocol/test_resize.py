"""MATLAB bicubic imresize: bit-exactness on MATLAB-made LR images, torch == numpy, independent checks."""

import math

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from ramit_hf.protocol.resize import contributions, imresize, imresize_torch, modcrop, output_size

SET5 = ["baby", "bird", "butterfly", "head", "woman"]
SET14 = [
    "baboon",
    "barbara",
    "bridge",
    "coastguard",
    "comic",
    "face",
    "flowers",
    "foreman",
    "lenna",
    "man",
    "monarch",
    "pepper",
    "ppt3",
    "zebra",
]


def read(*parts) -> np.ndarray:
    with Image.open(shared_path(*parts)) as image:
        return np.array(image)


def hwc_to_tensor(image: np.ndarray) -> torch.Tensor:
    array = image[:, :, None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def tensor_to_hwc(tensor: torch.Tensor, like: np.ndarray) -> np.ndarray:
    array = tensor.numpy().transpose(1, 2, 0)
    return array[:, :, 0] if like.ndim == 2 else array


def assert_same_pixels(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    differing = int(np.count_nonzero(actual != expected))
    assert differing == 0, f"{what}: {differing} of {expected.size} values differ"


# ---------------------------------------------------------------------------------------------
# Reproducing MATLAB-made (Set5) and MATLAB-port-made (Set14) low-resolution images.


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_matlab_lr_bit_exact(scale):
    for name in SET5:
        hr = modcrop(read("testsets", "Set5", "HR", f"{name}.png"), scale)
        lr = read("testsets", "Set5", "LR_bicubic", f"X{scale}", f"{name}x{scale}.png")
        out = imresize(hr, 1 / scale)
        assert_same_pixels(out, lr, f"Set5 {name} x{scale}")
        out_t = imresize_torch(hwc_to_tensor(hr), 1 / scale)
        assert out_t.dtype == torch.uint8
        assert_same_pixels(tensor_to_hwc(out_t, hr), lr, f"Set5 {name} x{scale} (torch)")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set14_pyport_lr_bit_exact(scale):
    for name in SET14:
        hr = modcrop(read("testsets", "Set14", "HR", f"{name}.png"), scale)
        lr = read("testsets", "Set14", "LR_bicubic_pyport", f"X{scale}", f"{name}x{scale}.png")
        assert_same_pixels(imresize(hr, 1 / scale), lr, f"Set14 {name} x{scale}")
        if hr.ndim == 2:  # bridge.png is gray: the HW1 layout gives the same pixels
            assert_same_pixels(imresize(hr[:, :, None], 1 / scale)[:, :, 0], lr, f"Set14 {name} x{scale} HW1")


def test_per_pass_rounding_is_what_makes_it_exact():
    # Float resizing rounded once at the end (BasicSR style) is close but not MATLAB.
    hr = modcrop(read("testsets", "Set5", "HR", "baby.png"), 4)
    lr = read("testsets", "Set5", "LR_bicubic", "X4", "babyx4.png")
    once = np.clip(np.floor(imresize(hr.astype(np.float64), 1 / 4) + 0.5), 0, 255).astype(np.uint8)
    differing = np.count_nonzero(once != lr) / lr.size
    assert 0.01 < differing < 0.5
    assert np.abs(once.astype(int) - lr).max() <= 2


# ---------------------------------------------------------------------------------------------
# torch == numpy


def test_torch_float64_equals_numpy_on_set5():
    for name, scale in [("butterfly", 1 / 4), ("head", 1 / 3), ("bird", 2), ("woman", 0.6)]:
        hr = read("testsets", "Set5", "HR", f"{name}.png").astype(np.float64)
        ref = imresize(hr, scale)
        out = tensor_to_hwc(imresize_torch(hwc_to_tensor(hr), scale), hr)
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9)


def test_torch_batch_float32_and_round_uint8_modes():
    hr = modcrop(read("testsets", "Set5", "HR", "head.png"), 4)
    ref_u8 = imresize(hr, 1 / 4)
    batch_u8 = hwc_to_tensor(hr)[None].repeat(2, 1, 1, 1)

    out_u8 = imresize_torch(batch_u8, 1 / 4)
    assert out_u8.shape == (2, 3, 70, 70)
    for i in range(2):
        assert_same_pixels(tensor_to_hwc(out_u8[i], hr), ref_u8, f"batch item {i}")

    # Float in [0, 1] with 8-bit semantics: same pixels, returned as float32 in [0, 1].
    x01 = batch_u8.float() / 255
    out01 = imresize_torch(x01, 1 / 4, round_uint8=True)
    assert out01.dtype == torch.float32
    assert torch.equal(torch.round(out01 * 255).to(torch.uint8), out_u8)
    out255 = imresize_torch(batch_u8.double(), 1 / 4, round_uint8=True, data_range=255.0)
    assert torch.equal(out255.to(torch.uint8), out_u8)

    # Plain float32: no rounding, close to the float64 reference.
    out32 = imresize_torch(x01, 1 / 4)
    assert out32.dtype == torch.float32
    ref_f64 = imresize(hr.astype(np.float64) / 255, 1 / 4)
    np.testing.assert_allclose(tensor_to_hwc(out32[1], hr), ref_f64, atol=1e-5)

    half = imresize_torch(x01.half(), 1 / 4)
    assert half.dtype == torch.float16 and half.shape == (2, 3, 70, 70)


# ---------------------------------------------------------------------------------------------
# Independent references: a per-pixel loop, and Pillow's own bicubic (same kernel, clamped borders)


def _naive_resize_1d(signal: np.ndarray, scale: float) -> np.ndarray:
    """Straight from the definition, 0-based: centre-aligned sampling, stretched kernel when shrinking,
    symmetric mirroring (..., 1, 0 | 0, 1, ..., n-1 | n-1, n-2, ...), normalised weights."""
    n = signal.size
    shrink = min(scale, 1.0)

    def key(t):  # Keys cubic, a = -0.5
        t = abs(t)
        if t <= 1:
            return 1.5 * t**3 - 2.5 * t**2 + 1
        if t <= 2:
            return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
        return 0.0

    def mirror(j):
        j %= 2 * n
        return j if j < n else 2 * n - 1 - j

    out = []
    for i in range(math.ceil(n * scale)):
        centre = (i + 0.5) / scale - 0.5
        reach = 2 / shrink
        taps = range(math.floor(centre - reach) - 1, math.ceil(centre + reach) + 2)
        weights = [key((centre - j) * shrink) for j in taps]
        total = sum(weights)
        out.append(sum(w * signal[mirror(j)] for w, j in zip(weights, taps, strict=True)) / total)
    return np.array(out)


@pytest.mark.parametrize("scale", [2, 3, 1.5, 1 / 2, 1 / 3, 0.6, 1.0])
def test_matches_naive_definition_including_borders(scale):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, size=(7, 9))
    expected = np.apply_along_axis(_naive_resize_1d, 0, image, scale)
    expected = np.apply_along_axis(_naive_resize_1d, 1, expected, scale)
    np.testing.assert_allclose(imresize(image, scale), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [2, 3, 1.5, 1 / 2, 0.6])
def test_interior_matches_pillow_bicubic(scale):
    # Pillow ('F' mode, float) uses the same kernel, centre alignment and antialiasing, but clamps at
    # the borders instead of mirroring: away from the borders the two must agree.
    gray = read("testsets", "Set5", "HR", "baby.png")[:510, :500, 1].astype(np.float32)
    ours = imresize(gray.astype(np.float64), scale)
    height, width = ours.shape
    assert (height, width) == (round(510 * scale), round(500 * scale))
    pil = np.asarray(Image.fromarray(gray).resize((width, height), Image.BICUBIC, reducing_gap=None))
    margin = math.ceil(4 * max(1.0, 1 / scale)) + 2
    interior = (slice(margin, -margin), slice(margin, -margin))
    np.testing.assert_allclose(ours[interior], pil[interior], rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Conventions and properties


def test_output_size_and_layout():
    image = np.zeros((10, 7, 3), dtype=np.uint8)
    assert imresize(image, 1 / 3).shape == (4, 3, 3)  # ceil(10/3), ceil(7/3)
    assert imresize(image[:, :, 0], 2.5).shape == (25, 18)
    assert imresize(image[:, :, :1], 0.5).shape == (5, 4, 1)
    assert output_size(255, 1 / 3) == 85
    for dtype in (np.uint8, np.float32, np.float64):
        assert imresize(image.astype(dtype), 0.5).dtype == dtype


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 2, 3])
def test_constant_image_stays_constant(scale):
    image = np.full((13, 11, 3), 77, dtype=np.uint8)
    assert np.all(imresize(image, scale) == 77)
    np.testing.assert_allclose(imresize(image.astype(np.float64) / 255, scale), 77 / 255, atol=1e-14)


def test_upscaling_reproduces_a_linear_ramp_away_from_borders():
    # The a = -0.5 cubic interpolates linear functions exactly; sample positions are centre-aligned.
    ramp = np.tile(np.arange(20, dtype=np.float64), (20, 1))
    up = imresize(ramp, 2)
    expected = (np.arange(40) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(up[10:30, 4:36], np.tile(expected[4:36], (20, 1)), atol=1e-12)


def test_upscaling_uint8_rounds_and_clips():
    image = np.array([[0, 255, 0, 255], [255, 0, 255, 0]] * 2, dtype=np.uint8)
    up = imresize(image, 2)
    assert up.dtype == np.uint8
    # The cubic over/undershoots on this checkerboard: float results leave [0, 255], uint8 is clipped.
    up_float = imresize(image.astype(np.float64), 2)
    assert up_float.min() < 0 and up_float.max() > 255
    assert up.min() == 0 and up.max() == 255


def test_smaller_scale_is_resized_first():
    image = read("testsets", "Set5", "HR", "bird.png")
    both = imresize(image, (0.5, 0.25))
    width_first = imresize(imresize(image, (1, 0.25)), (0.5, 1))
    height_first = imresize(imresize(image, (0.5, 1)), (1, 0.25))
    assert_same_pixels(both, width_first, "width (smaller scale) first")
    assert np.count_nonzero(both != height_first) > 0
    torch_both = imresize_torch(hwc_to_tensor(image), (0.5, 0.25))
    assert_same_pixels(tensor_to_hwc(torch_both, image), both, "torch pair scale")


def test_contributions_are_cached_normalised_and_in_range():
    indices, weights = contributions(17, 5, 1 / 3)
    assert contributions(17, 5, 1 / 3)[0] is indices
    assert indices.min() >= 0 and indices.max() < 17
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-14)
    assert not indices.flags.writeable
    # Antialiasing widens the kernel to 4/scale = 12 pixels, plus MATLAB's two spare taps.
    assert indices.shape[1] <= 14
    assert contributions(17, 5, 1 / 3, antialias=False)[0].shape[1] <= 6


def test_modcrop():
    assert modcrop(np.zeros((13, 10, 3)), 4).shape == (12, 8, 3)
    assert modcrop(np.zeros((13, 10)), 1).shape == (13, 10)
    with pytest.raises(ValueError, match="positive integer"):
        modcrop(np.zeros((4, 4)), 0)


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("scale", [0, -0.5, float("nan"), float("inf"), "2", True, (0.5,), (0.5, 0)])
def test_bad_scale_is_rejected(scale):
    with pytest.raises(ValueError, match="scale"):
        imresize(np.zeros((4, 4), dtype=np.uint8), scale)
    with pytest.raises(ValueError, match="scale"):
        imresize_torch(torch.zeros(1, 4, 4), scale)


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        imresize(np.zeros((0, 4, 3), dtype=np.uint8), 0.5)
    with pytest.raises(ValueError, match="HW or HWC"):
        imresize(np.zeros(4, dtype=np.uint8), 0.5)
    with pytest.raises(ValueError, match="HW or HWC"):
        imresize(np.zeros((1, 4, 4, 3), dtype=np.uint8), 0.5)
    with pytest.raises(TypeError, match="int16"):
        imresize(np.zeros((4, 4), dtype=np.int16), 0.5)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        imresize_torch(torch.zeros(4, 4), 0.5)
    with pytest.raises(ValueError, match="empty"):
        imresize_torch(torch.zeros(1, 3, 0, 4), 0.5)
    with pytest.raises(TypeError, match="int32"):
        imresize_torch(torch.zeros(1, 4, 4, dtype=torch.int32), 0.5)
    with pytest.raises(TypeError, match="torch.Tensor"):
        imresize_torch(np.zeros((1, 4, 4)), 0.5)
