"""Real-world degradations: each stage on a real image, reproducible draws, the recipe's settings, bad settings."""

import math

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from ramit_hf.protocol import Protocol, load_test_set
from ramit_hf.training.degradations import (
    RealDegradation,
    add_noise,
    builtin_settings,
    degraded_test_set,
    jpeg,
    resolve_settings,
    training_rng,
)
from ramit_hf.training.kernels import KERNEL_TYPES, filter2d, gaussian_kernel, random_blur_kernel, sinc_kernel
from ramit_hf.training.patches import RestorationPatchDataset
from ramit_hf.training.recipes import RecipeError, load_recipe
from ramit_hf.training.schedule import ProgressiveSchedule
from ramit_hf.training.sources import load_source
from ramit_hf.training.validation import validation_dataset


def image(name="baboon", size=192) -> np.ndarray:
    with Image.open(shared_path("testsets", "Set14", "HR", f"{name}.png")) as file:
        return np.array(file.convert("RGB"))[:size, :size]


def tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)[None]


def high_frequency_energy(x: torch.Tensor) -> float:
    """Spectral energy above half the Nyquist frequency (of the mean-free image)."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x - x.mean()), dim=(-2, -1)).abs() ** 2
    h, w = x.shape[-2:]
    fy, fx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return spectrum[..., torch.hypot(fy, fx) > 0.5].sum().item()


def test_blur_kernels_lower_high_frequencies_of_a_real_image():
    x = tensor(image())
    original = high_frequency_energy(x)
    for sigma in (1.0, 2.0, 3.0):
        assert high_frequency_energy(filter2d(x, gaussian_kernel(21, sigma, sigma))) < 0.1 * original
    # anisotropic: blurring along x removes horizontal detail much more than vertical detail
    along_x = filter2d(x, gaussian_kernel(21, 3.0, 0.3))
    assert (along_x.diff(dim=-1).abs().mean() < 0.5 * along_x.diff(dim=-2).abs().mean()).item()
    # generalised and plateau kernels, and the sinc filter with a low cut-off, are low-pass too
    for kernel in (
        gaussian_kernel(21, 2, 2, beta=2.0, shape="generalized"),
        gaussian_kernel(21, 2, 1, 0.5, 1.5, "plateau"),
    ):
        assert abs(kernel.sum() - 1) < 1e-9 and high_frequency_energy(filter2d(x, kernel)) < 0.2 * original
    sinc = sinc_kernel(21, math.pi / 4)
    assert abs(sinc.sum() - 1) < 1e-9 and sinc.min() < 0  # ringing lobes
    assert high_frequency_energy(filter2d(x, sinc)) < 0.1 * original
    rng = np.random.default_rng(0)
    for _ in range(20):
        kernel = random_blur_kernel(rng, 21, KERNEL_TYPES, [1 / 6] * 6, [0.2, 3], [0.5, 4], [1, 2])
        np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-12)  # point-symmetric: no shift
        assert abs(kernel.sum() - 1) < 1e-9


def blockiness(x: torch.Tensor) -> float:
    """Mean jump across the 8 x 8 block boundaries over the mean jump inside the blocks (1 for no blocks)."""
    jumps = x.diff(dim=-1).abs().mean(dim=(0, 1, 2))
    at_edges = jumps[7::8].mean()
    inside = torch.cat([jumps[i::8] for i in range(7)]).mean()
    return (at_edges / inside).item()


def test_jpeg_quality_sets_the_artefacts():
    # a smooth real region (Set14 lenna's shoulder, slightly blurred) shows blocks at low quality
    x = filter2d(tensor(image("lenna", 256)), gaussian_kernel(9, 1.5, 1.5))
    errors, blocks = [], []
    for quality in (10, 30, 60, 95):
        out = jpeg(x, quality)
        errors.append((out - x).abs().mean().item())
        blocks.append(blockiness(out))
    assert errors == sorted(errors, reverse=True) and errors[0] > 3 * errors[-1]
    assert blocks[0] > 2.5 and blocks[-1] < 1.2 and blocks == sorted(blocks, reverse=True)
    # the same as Pillow's own encoder at that quality (the quality a drawn 29.6 rounds to)
    array = np.round(x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=30)
    reference = np.asarray(Image.open(buffer)).astype(np.float32) / 255
    np.testing.assert_array_equal(jpeg(x, 29.6)[0].permute(1, 2, 0).numpy(), reference)


def test_noise_has_the_drawn_sigma():
    x = tensor(image()) * 0.6 + 0.2  # keep clear of clipping
    for seed in range(4):
        # the draws add_noise makes, in its order: gray?, gaussian?, sigma
        probe = np.random.default_rng(seed)
        probe.random(), probe.random()
        sigma = probe.uniform(1, 30)
        noisy = add_noise(x, np.random.default_rng(seed), 1.0, [1, 30], [0.05, 3], 0.0)
        assert (noisy - x).std().item() == pytest.approx(sigma / 255, rel=0.03)
    gray = add_noise(x, np.random.default_rng(1), 1.0, [20, 20], [0.05, 3], 1.0) - x
    # the same noise on every channel (but where clipping at 0 or 1 cut it)
    for other in (1, 2):
        assert (gray[:, 0] - gray[:, other]).abs().gt(1e-6).float().mean().item() < 1e-3
    # Poisson noise: variance = value x scale^2 / 255 (255 photons per unit of intensity)
    scale = 2.0
    noise = (add_noise(x, np.random.default_rng(3), 0.0, [1, 30], [scale, scale], 0.0) - x).double()
    levels = torch.round(x.clamp(0, 1) * 255) / 255
    assert (noise**2).mean().item() == pytest.approx((levels * scale**2 / 255).mean().item(), rel=0.05)


def test_pipeline_is_reproducible_for_a_fixed_seed_and_position():
    settings = resolve_settings("realesrgan")
    degrade = RealDegradation(settings, 2)
    hr = image(size=128)
    first, again = degrade(hr, training_rng(7, 1, 5)), degrade(hr, training_rng(7, 1, 5))
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    others = [degrade(hr, training_rng(7, 1, p)) for p in (6, 7)] + [degrade(hr, training_rng(8, 1, 5))]
    assert all(not np.array_equal(first, other) for other in others)
    # training patches made with the degradation: a pure function of the index and the seed
    source = load_source(shared_path("testsets", "Set5", "HR"), task="sr-x2")
    schedule = ProgressiveSchedule(20, 2, [0], [24], [4])

    def dataset():
        return RestorationPatchDataset(source, schedule, "sr-x2", seed=3, degradation=settings)

    late = dataset()[7]
    torch.testing.assert_close(dataset()[7]["pixel_values"], late["pixel_values"], rtol=0, atol=0)
    plain = RestorationPatchDataset(source, schedule, "sr-x2", seed=3)[7]
    torch.testing.assert_close(plain["labels"], late["labels"], rtol=0, atol=0)  # same patches, other inputs
    assert not torch.equal(plain["pixel_values"], late["pixel_values"])


def test_validation_inputs_are_those_of_ramit_evaluate():
    settings = resolve_settings("realesrgan")
    set5 = shared_path("testsets", "Set5")
    pairs = validation_dataset(load_source(set5 / "HR", task="sr-x2"), "sr-x2", degradation=settings)
    test_set = degraded_test_set(load_test_set(set5, Protocol("sr-x2"), make_lr=True), settings, seed=0)
    for index in (0, 3):
        torch.testing.assert_close(pairs[index]["pixel_values"], test_set[index].pixel_values, rtol=0, atol=0)
    assert test_set.input_kind == "degraded"
    other = degraded_test_set(load_test_set(set5, Protocol("sr-x2"), make_lr=True), settings, seed=1)
    assert not torch.equal(other[0].pixel_values, test_set[0].pixel_values)


def test_recipe_settings_and_bad_values():
    published = builtin_settings("realesrgan")
    assert published["kernel_prob"] == [0.45, 0.25, 0.12, 0.03, 0.12, 0.03] and published["jpeg_range"] == [30, 95]
    recipe = load_recipe("sr-x2", ["degradation=realesrgan", "degradation.noise_range=[1, 10]"])
    assert recipe.degradation["noise_range"] == [1, 10] and recipe.degradation["blur_sigma"] == [0.2, 3.0]
    assert load_recipe("sr-x2").degradation is None
    for override, message in [
        ("degradation.sinc_prob=1.5", "sinc_prob must be a probability in [0, 1], got 1.5"),
        ("degradation.noise_range=[-1, 10]", "noise_range must be [low, high]"),
        ("degradation.jpeg_range=[0, 90]", "jpeg_range must be [low, high] with low <= high, low >= 1"),
        ("degradation.blur_sigma=[0, 2]", "blur_sigma must be [low, high] with low <= high, low > 0"),
        ("degradation.resize_prob=[0.5, 0.6, 0.1]", "resize_prob must be 3 probabilities summing to 1"),
        ("degradation.jpeg_rnage=[30, 95]", "did you mean 'jpeg_range'?"),
    ]:
        with pytest.raises(RecipeError, match=re_escape(message)):
            load_recipe("sr-x2", ["degradation=realesrgan", override])
    with pytest.raises(RecipeError, match="super-resolution inputs"):
        load_recipe("color-dn", ["degradation=realesrgan"])


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_ramit_evaluate_scores_the_seeded_degraded_set(tmp_path, capsys):
    import json

    from conftest import checkpoint

    from ramit_hf.cli import main

    folder = tmp_path / "HR"
    folder.mkdir()
    for name in ("bird", "head"):
        with Image.open(shared_path("testsets", "Set5", "HR", f"{name}.png")) as file:
            file.crop((0, 0, 128, 96)).save(folder / f"{name}.png")
    model = str(checkpoint("RAMiT-1_X2.pth"))

    def evaluate(*extra):
        assert main(["evaluate", "--model", model, "--dataset", str(tmp_path), "--json", "--no-progress", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    degraded = evaluate("--degradation", "realesrgan", "--seed", "0")
    again = evaluate("--degradation", "realesrgan", "--seed", "0")  # seeded: the same inputs again
    assert again["images"] == degraded["images"] and again["mean"] == degraded["mean"]
    assert degraded["dataset"]["input"]["kind"] == "degraded" and "seed 0" in degraded["dataset"]["input"]["source"]
    bicubic, other = evaluate(), evaluate("--degradation", "realesrgan", "--seed", "1")
    assert degraded["mean"]["psnr"] < bicubic["mean"]["psnr"] - 3 and other["mean"] != degraded["mean"]
    assert main(["evaluate", "--model", model, "--dataset", str(tmp_path), "--degradation", "nope"]) == 2
    assert "unknown degradation 'nope'" in capsys.readouterr().err
