"""PSNR / SSIM: hand-computed values, scikit-image, real images, torch == numpy, the evaluate module."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from ramit_hf.protocol.metrics import (
    batch_psnr_ssim,
    evaluate_module_path,
    gaussian_window,
    psnr,
    psnr_torch,
    rgb_to_y,
    ssim,
    ssim_torch,
    to_uint8,
)
from ramit_hf.protocol.resize import imresize, modcrop

C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def read(*parts) -> np.ndarray:
    with Image.open(shared_path(*parts)) as image:
        return np.array(image)


def bicubic_pair(testset: str, lr_folder: str, name: str, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR mod-cropped, bicubic upscaling of the LR): the classic bicubic baseline."""
    hr = modcrop(read("testsets", testset, "HR", f"{name}.png"), scale)
    lr = read("testsets", testset, lr_folder, f"X{scale}", f"{name}x{scale}.png")
    return hr, imresize(lr, scale)


def to_batch(*images: np.ndarray) -> torch.Tensor:
    """HW/HWC uint8 images of one shape -> (B, C, H, W) float32 in [0, 1]."""
    arrays = [image[:, :, None] if image.ndim == 2 else image for image in images]
    return torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in arrays])).float() / 255


# ---------------------------------------------------------------------------------------------
# By hand


def test_psnr_known_mse():
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    assert psnr(a, a + 5) == pytest.approx(20 * math.log10(255 / 5), abs=1e-12)  # MSE 25
    b = np.zeros((10, 10), dtype=np.uint8)
    c = b.copy()
    c[3, 4] = 255  # MSE 255^2 / 100 -> exactly 20 dB
    assert psnr(b, c) == pytest.approx(20.0, abs=1e-12)
    assert psnr(b, c[:, :, None]) == pytest.approx(20.0, abs=1e-12)  # HW vs HW1
    assert psnr(a, a) == math.inf


def test_crop_border_crops_every_side():
    a = np.full((12, 12), 100, dtype=np.uint8)
    for y, x in [(0, 5), (11, 5), (5, 0), (5, 11)]:
        b = a.copy()
        b[y, x] = 0
        assert psnr(a, b) < 100
        assert psnr(a, b, crop_border=1) == math.inf
    b = a.copy()
    b[1, 1] = 90  # inside a 1-pixel crop: MSE = 100 / 100 pixels
    assert psnr(a, b, crop_border=1) == pytest.approx(20 * math.log10(255), abs=1e-12)


def test_ssim_identical_is_one():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(32, 40, 3), dtype=np.uint8)
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert ssim(image, image, crop_border=3, test_y_channel=True) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("v1, v2", [(100, 110), (0, 255), (30, 30)])
def test_ssim_of_constant_images(v1, v2):
    # No variance: only the luminance term is left, (2 m1 m2 + C1) / (m1^2 + m2^2 + C1).
    a = np.full((16, 16), v1, dtype=np.uint8)
    b = np.full((16, 16), v2, dtype=np.uint8)
    expected = (2 * v1 * v2 + C1) / (v1**2 + v2**2 + C1)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)
    assert psnr(a, b) == (math.inf if v1 == v2 else pytest.approx(20 * math.log10(255 / abs(v1 - v2)), abs=1e-12))


def test_ssim_of_a_constant_shift_on_a_window_sized_image():
    # An 11x11 image gives a single window; with b = a + d the structure terms are 1 and only the
    # luminance term (of the Gaussian-weighted means) remains.
    rng = np.random.default_rng(2)
    a = rng.integers(0, 200, size=(11, 11)).astype(np.float64)
    b = a + 20
    window = np.outer(gaussian_window(), gaussian_window())
    mu_a = float((window * a).sum())
    mu_b = mu_a + 20
    expected = (2 * mu_a * mu_b + C1) / (mu_a**2 + mu_b**2 + C1)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)


def test_gaussian_window_is_matlab_fspecial():
    g = gaussian_window()
    x = np.arange(-5, 6)
    two_d = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(np.outer(g, g), two_d / two_d.sum(), atol=1e-16)


def test_y_channel_formula():
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(pixels)[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)
    # A gray image is measured as it is when test_y_channel is set.
    rng = np.random.default_rng(3)
    g1 = rng.integers(0, 256, size=(20, 20), dtype=np.uint8)
    g2 = rng.integers(0, 256, size=(20, 20), dtype=np.uint8)
    assert psnr(g1, g2, test_y_channel=True) == psnr(g1, g2)
    assert ssim(g1, g2, test_y_channel=True) == ssim(g1, g2)


def test_to_uint8_clamps_and_rounds_half_to_even_like_the_original_test_code():
    # float32 values whose float32 product with 255 is exactly k + 0.5 for even k: ties go to even (k), as
    # numpy's round in the original test code does; half-away-from-zero would give k + 1
    ties = []
    for k in range(0, 255, 2):
        x = np.float32((k + 0.5) / 255)
        for candidate in (np.nextafter(x, np.float32(0)), x, np.nextafter(x, np.float32(1))):
            if candidate * np.float32(255) == np.float32(k + 0.5):
                ties.append((k, candidate))
    assert len(ties) > 100
    values = np.array([c for _, c in ties], dtype=np.float32)
    assert to_uint8(values).tolist() == [k for k, _ in ties]
    assert to_uint8(np.array([-0.2, 1.0, 1.3], dtype=np.float32)).tolist() == [0, 255, 255]
    assert to_uint8(values).dtype == np.uint8


# ---------------------------------------------------------------------------------------------
# scikit-image and real images


def test_against_scikit_image_on_a_real_pair():
    hr, up = bicubic_pair("Set5", "LR_bicubic", "bird", 4)
    assert psnr(hr, up) == pytest.approx(sk_psnr(hr, up, data_range=255), abs=1e-10)
    # skimage filters with edge padding, then drops a 5-pixel border: the same as 'valid' filtering.
    per_channel = []
    for c in range(3):
        a, b = hr[:, :, c].astype(np.float64), up[:, :, c].astype(np.float64)
        expected = sk_ssim(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        assert ssim(a, b) == pytest.approx(expected, abs=1e-9)
        per_channel.append(expected)
    assert ssim(hr, up) == pytest.approx(np.mean(per_channel), abs=1e-9)
    y_hr, y_up = rgb_to_y(hr)[4:-4, 4:-4], rgb_to_y(up)[4:-4, 4:-4]
    expected_y = sk_ssim(y_hr, y_up, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert ssim(hr, up, crop_border=4, test_y_channel=True) == pytest.approx(expected_y, abs=1e-9)
    assert psnr(hr, up, crop_border=4, test_y_channel=True) == pytest.approx(
        sk_psnr(y_hr, y_up, data_range=255), abs=1e-10
    )


def test_gray_real_pair_against_scikit_image():
    hr, up = bicubic_pair("Set14", "LR_bicubic_pyport", "bridge", 3)
    assert hr.ndim == 2
    expected = sk_ssim(
        hr.astype(np.float64),
        up.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim(hr, up) == pytest.approx(expected, abs=1e-9)
    assert psnr(hr, up, 3) == pytest.approx(sk_psnr(hr[3:-3, 3:-3], up[3:-3, 3:-3], data_range=255), abs=1e-10)


def test_set5_x4_bicubic_baseline_is_close_to_published():
    # Papers list bicubic x4 on Set5 (Y channel, border = scale) as 28.42 dB / 0.8104; the published
    # figures vary a little with the tooling, so this only guards against gross convention errors.
    pairs = [bicubic_pair("Set5", "LR_bicubic", name, 4) for name in ["baby", "bird", "butterfly", "head", "woman"]]
    results = [(psnr(hr, up, 4, True), ssim(hr, up, 4, True)) for hr, up in pairs]
    mean_psnr, mean_ssim = np.mean(results, axis=0)
    assert mean_psnr == pytest.approx(28.42, abs=0.02)
    assert mean_ssim == pytest.approx(0.8104, abs=0.002)


# ---------------------------------------------------------------------------------------------
# torch == numpy


@pytest.mark.parametrize("crop_border, test_y_channel", [(0, False), (4, True), (2, False)])
def test_torch_batch_equals_numpy(crop_border, test_y_channel):
    rng = np.random.default_rng(4)
    preds = rng.uniform(-0.05, 1.05, size=(3, 3, 40, 36)).astype(np.float32)  # model-like, out of range
    targets = rng.integers(0, 256, size=(3, 3, 40, 36), dtype=np.uint8)
    targets01 = torch.from_numpy(targets).float() / 255
    p, s = batch_psnr_ssim(torch.from_numpy(preds), targets01, crop_border, test_y_channel)
    assert p.dtype == torch.float64 and p.shape == (3,)
    for i in range(3):
        pred8 = to_uint8(preds[i].transpose(1, 2, 0))
        target8 = targets[i].transpose(1, 2, 0)
        assert p[i].item() == pytest.approx(psnr(pred8, target8, crop_border, test_y_channel), abs=1e-10)
        assert s[i].item() == pytest.approx(ssim(pred8, target8, crop_border, test_y_channel), abs=1e-10)
    pred_t, target_t = torch.from_numpy(preds), torch.from_numpy(targets)  # uint8 targets: used as they are
    assert torch.equal(psnr_torch(pred_t, target_t), batch_psnr_ssim(pred_t, target_t)[0])
    assert torch.equal(ssim_torch(pred_t, target_t), batch_psnr_ssim(pred_t, target_t)[1])


def test_torch_on_real_images_rgb_and_gray():
    hr, up = bicubic_pair("Set5", "LR_bicubic", "head", 2)
    p, s = batch_psnr_ssim(to_batch(up), to_batch(hr), crop_border=2, test_y_channel=True)
    assert p.item() == pytest.approx(psnr(up, hr, 2, True), abs=1e-10)
    assert s.item() == pytest.approx(ssim(up, hr, 2, True), abs=1e-10)
    hr_g, up_g = bicubic_pair("Set14", "LR_bicubic_pyport", "bridge", 2)
    u8 = torch.from_numpy(np.stack([up_g, hr_g]))[:, None]  # uint8 batches are used as they are
    s_g = ssim_torch(u8, torch.from_numpy(np.stack([hr_g, hr_g]))[:, None])
    assert s_g[0].item() == pytest.approx(ssim(up_g, hr_g), abs=1e-10)
    assert s_g[1].item() == pytest.approx(1.0, abs=1e-12)
    assert psnr_torch(u8[1:], u8[1:]).item() == math.inf


# ---------------------------------------------------------------------------------------------
# Errors


def test_errors_name_the_problem():
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, a[:, :15])
    with pytest.raises(ValueError, match="HW, HW1 or HW3"):
        psnr(np.zeros((16, 16, 4)), np.zeros((16, 16, 4)))
    with pytest.raises(ValueError, match="crop_border"):
        psnr(a, a, crop_border=-1)
    with pytest.raises(ValueError, match="too small"):
        ssim(a, a, crop_border=3)  # 10x10 left, the window is 11x11
    with pytest.raises(ValueError, match="too small"):
        psnr(a, a, crop_border=8)
    with pytest.raises(ValueError, match="RGB HWC"):
        rgb_to_y(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        batch_psnr_ssim(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        batch_psnr_ssim(torch.zeros(1, 3, 16, 16), torch.zeros(2, 3, 16, 16))
    with pytest.raises(TypeError, match="int64"):
        psnr_torch(torch.zeros(1, 1, 4, 4, dtype=torch.int64), torch.zeros(1, 1, 4, 4, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------
# The evaluate module, loaded offline in a clean process


_EVALUATE_SCRIPT = r"""
import json, sys
import numpy as np
from PIL import Image
from ramit_hf.protocol.resize import imresize, modcrop
from ramit_hf.protocol.metrics import load_evaluate_metric

def pair(hr_path, lr_path, scale):
    hr = modcrop(np.array(Image.open(hr_path)), scale)
    return hr, imresize(np.array(Image.open(lr_path)), scale)

(rgb_hr, rgb_up), (gray_hr, gray_up) = pair(*sys.argv[1:3], 4), pair(*sys.argv[3:5], 3)
metric = load_evaluate_metric(keep_in_memory=True)
images = metric.compute(predictions=[rgb_up, Image.fromarray(gray_up)], references=[rgb_hr, gray_hr],
                        crop_border=4, test_y_channel=True)
floats = metric.compute(predictions=[rgb_up[:48, :40].astype(np.float64)],
                        references=[rgb_hr[:48, :40].astype(np.float64)])
print("RESULT" + json.dumps({"images": images, "floats": floats}))
"""


def test_evaluate_module_offline_matches_core(tmp_path):
    paths = [
        shared_path("testsets", "Set5", "HR", "bird.png"),
        shared_path("testsets", "Set5", "LR_bicubic", "X4", "birdx4.png"),
        shared_path("testsets", "Set14", "HR", "bridge.png"),
        shared_path("testsets", "Set14", "LR_bicubic_pyport", "X3", "bridgex3.png"),
    ]
    assert (evaluate_module_path() / "ramit_image_quality.py").is_file()
    env = dict(os.environ)
    env.update(
        HF_HOME=str(tmp_path / "hf"),  # a fresh module cache: the script must be copied and import ramit_hf
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
    )
    env.pop("HF_MODULES_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-c", _EVALUATE_SCRIPT, *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])

    rgb_hr, rgb_up = bicubic_pair("Set5", "LR_bicubic", "bird", 4)
    gray_hr, gray_up = bicubic_pair("Set14", "LR_bicubic_pyport", "bridge", 3)
    expected_psnr = [psnr(rgb_up, rgb_hr, 4, True), psnr(gray_up, gray_hr, 4, True)]
    expected_ssim = [ssim(rgb_up, rgb_hr, 4, True), ssim(gray_up, gray_hr, 4, True)]
    images = result["images"]
    assert images["psnr_per_image"] == pytest.approx(expected_psnr, abs=1e-12)
    assert images["ssim_per_image"] == pytest.approx(expected_ssim, abs=1e-12)
    assert images["psnr"] == pytest.approx(np.mean(expected_psnr), abs=1e-12)
    assert images["ssim"] == pytest.approx(np.mean(expected_ssim), abs=1e-12)

    floats = result["floats"]
    assert floats["psnr"] == pytest.approx(psnr(rgb_up[:48, :40], rgb_hr[:48, :40]), abs=1e-12)
    assert floats["ssim"] == pytest.approx(ssim(rgb_up[:48, :40], rgb_hr[:48, :40]), abs=1e-12)
