import itertools

import numpy as np
import pytest
import torch
from conftest import checkpoint, shared_path, small_config
from PIL import Image

from ramit_hf import RamitForImageRestoration
from ramit_hf.inference import load_model, restore_tensor
from ramit_hf.tiling import (
    AUTO_TILE_MAX_PIXELS,
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TILE_SIZE,
    auto_tile_size,
    blend_window,
    resolve_tile_size,
    restore_tiled,
    tile_starts,
)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def _image(*parts, box=None) -> torch.Tensor:
    image = Image.open(shared_path(*parts)).convert("RGB")
    if box is not None:
        image = image.crop(box)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def identity_model():
    """A restoration model (upscale 1) with a zeroed head: it returns its input exactly (a global residual)."""
    torch.manual_seed(0)
    model = RamitForImageRestoration(small_config(upscale=1)).eval()
    torch.nn.init.zeros_(model.reconstruction.final_conv.weight)
    torch.nn.init.zeros_(model.reconstruction.final_conv.bias)
    return model


@pytest.fixture(scope="module")
def tiny_sr_model():
    torch.manual_seed(0)
    return RamitForImageRestoration(small_config(upscale=2)).eval()


def test_tile_starts_cover_the_axis_with_full_tiles_and_at_least_the_overlap():
    for length in (1, 5, 31, 32, 33, 100, 257, 1000):
        for tile, overlap in ((32, 8), (64, 16), (64, 0), (7, 3)):
            starts = tile_starts(length, min(tile, length), overlap)
            size = min(tile, length)
            assert starts[0] == 0 and starts[-1] + size == length
            covered = np.zeros(length, bool)
            for start in starts:
                covered[start : start + size] = True
            assert covered.all()
            assert all(b - a <= size - overlap for a, b in itertools.pairwise(starts))


def test_neighbouring_ramps_sum_to_one():
    ramp = 24
    fade_out = blend_window(100, ramp, fade_in=False, fade_out=True)
    fade_in = blend_window(100, ramp, fade_in=True, fade_out=False)
    assert torch.allclose(fade_out[-ramp:] + fade_in[:ramp], torch.ones(ramp, dtype=torch.float64))
    assert (fade_in > 0).all() and fade_in[ramp:].eq(1).all()


def test_auto_tiles_only_large_images_in_few_equal_tiles():
    assert resolve_tile_size("auto", 512, 512) is None
    assert AUTO_TILE_MAX_PIXELS == 512 * 512 and DEFAULT_TILE_SIZE == 512
    # the tile side (a multiple of 32, 128 to 512) whose tiles cover the image with the fewest pixels
    assert resolve_tile_size("auto", 513, 512) == 288
    assert resolve_tile_size("auto", 600, 600) == 320
    assert resolve_tile_size("auto", 3000, 4000) == 480
    for height, width in ((513, 513), (3000, 4000), (300, 2000), (5000, 7), (20000, 20000)):
        tile = auto_tile_size(height, width)
        assert tile <= DEFAULT_TILE_SIZE and tile % 32 == 0
        tiles = len(tile_starts(height, min(tile, height), 32)) * len(tile_starts(width, min(tile, width), 32))
        assert tiles * min(tile, height) * min(tile, width) <= 1.3 * height * width
    assert resolve_tile_size(0, 4000, 3000) is None and resolve_tile_size(None, 9, 9) is None
    assert resolve_tile_size(96, 10, 10) == 96
    for bad in (-1, 2.5, "big", True):
        with pytest.raises(ValueError, match="tile_size"):
            resolve_tile_size(bad, 10, 10)


@pytest.mark.parametrize(
    "batch, height, width, tile, overlap",
    [(2, 77, 131, 48, 8), (1, 1, 100, 32, 8), (1, 100, 1, 32, 4), (1, 40, 40, 16, 6)],
)
def test_blending_is_exact_for_an_identity_model(identity_model, batch, height, width, tile, overlap):
    # every pixel's weights are normalised: tiles that agree give back exactly what each of them gave
    x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height))
    out = restore_tiled(identity_model, x, tile, overlap)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.allclose(out, x, atol=1e-5)


def test_image_smaller_than_a_tile_is_restored_whole(tiny_sr_model):
    x = torch.rand(1, 3, 21, 13, generator=torch.Generator().manual_seed(0))
    assert torch.equal(restore_tiled(tiny_sr_model, x, 64), restore_tensor(tiny_sr_model, x))
    assert torch.equal(restore_tensor(tiny_sr_model, x, tile_size=64), restore_tensor(tiny_sr_model, x))


@pytest.mark.parametrize("height, width", [(1, 70), (70, 1), (1, 1), (45, 67)])
def test_odd_sizes_tile_to_the_right_shape(tiny_sr_model, height, width):
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    out = restore_tensor(tiny_sr_model, x, tile_size=32, tile_overlap=8)
    assert out.shape == (1, 3, 2 * height, 2 * width)
    assert torch.isfinite(out).all()


def test_batched_tiles_equal_single_tiles(tiny_sr_model):
    x = torch.rand(1, 3, 50, 70, generator=torch.Generator().manual_seed(2))
    single = restore_tiled(tiny_sr_model, x, 32, 8, batch_size=1)
    batched = restore_tiled(tiny_sr_model, x, 32, 8, batch_size=5)
    assert torch.allclose(single, batched, atol=1e-5)


def test_the_model_only_ever_sees_one_tile_batch(tiny_sr_model):
    # memory follows the tile size: whatever the image size, each forward gets tiles padded to at most 32 x 32
    seen = []
    hook = tiny_sr_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["pixel_values"].shape), with_kwargs=True
    )
    try:
        restore_tiled(tiny_sr_model, torch.rand(1, 3, 96, 200), 32, 8, batch_size=2)
    finally:
        hook.remove()
    assert len(seen) > 10
    assert all(shape[0] <= 2 and tuple(shape[-2:]) == (32, 32) for shape in seen)


def test_invalid_tiling_arguments_name_the_problem(tiny_sr_model):
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(ValueError, match=r"tile_overlap \(32\) must be smaller than tile_size \(32\)"):
        restore_tiled(tiny_sr_model, x, 32, 32)
    with pytest.raises(ValueError, match="tile_overlap must be a non-negative"):
        restore_tiled(tiny_sr_model, x, 32, -1)
    with pytest.raises(ValueError, match="tile_size must be a positive"):
        restore_tiled(tiny_sr_model, x, 0)
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        restore_tiled(tiny_sr_model, x[0], 16)
    assert DEFAULT_TILE_OVERLAP == 32


# The released weights on real test images: tiles of 64 px (the images really are cut into 4 tiles) with the
# default overlap stay above 45 dB of the whole-image result.
@pytest.mark.parametrize(
    "name, image, box",
    [
        ("RAMiT-1_X2.pth", ("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png"), (24, 30, 120, 110)),
        ("RAMiT-1_X4.pth", ("testsets", "Set14", "LR_bicubic_pyport", "X4", "monarchx4.png"), (60, 20, 156, 100)),
    ],
)
def test_tiled_matches_whole_image_on_real_images(name, image, box):
    model = load_model(checkpoint(name))
    x = _image(*image, box=box)
    whole = restore_tensor(model, x)
    tiled = restore_tensor(model, x, tile_size=64)
    assert tiled.shape == whole.shape == (1, 3, x.shape[2] * model.config.upscale, x.shape[3] * model.config.upscale)
    assert _psnr(tiled, whole) >= 45.0
