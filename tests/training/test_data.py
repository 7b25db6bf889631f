"""Training / validation data: exact on-the-fly LR, aligned and reproducible patches, the schedule, bad input."""

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from ramit_hf.image_io import rgb_to_gray
from ramit_hf.protocol.resize import imresize
from ramit_hf.training.patches import RestorationPatchDataset
from ramit_hf.training.pixels import DataError, downscale_region, modcrop_hw, pil_to_array
from ramit_hf.training.schedule import ProgressiveSchedule
from ramit_hf.training.sources import check_sizes, load_source
from ramit_hf.training.validation import validation_dataset


def read(*parts) -> np.ndarray:
    with Image.open(shared_path(*parts)) as image:
        return np.array(image.convert("RGB"))


def patch_dataset(source, task, patch=24, batch=4, repeat=4, epochs=2, **kwargs):
    schedule = ProgressiveSchedule(int(len(source) * repeat), epochs, [0], [patch], [batch])
    return RestorationPatchDataset(source, schedule, task, seed=7, **kwargs)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_region_downscaling_is_the_whole_image_downscaling(scale):
    # the MATLAB-made LR file, the whole-image imresize and the patch-region imresize give the same pixels
    hr = modcrop_hw(read("testsets", "Set5", "HR", "bird.png"), scale)
    whole = imresize(hr, 1 / scale)
    lr_file = read("testsets", "Set5", "LR_bicubic", f"X{scale}", f"birdx{scale}.png")
    np.testing.assert_array_equal(whole, lr_file)
    h, w = whole.shape[:2]
    size = 20
    rng = np.random.default_rng(0)
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (1, 2)]
    for top, left in corners + [tuple(rng.integers(0, [h - size + 1, w - size + 1])) for _ in range(6)]:
        patch = downscale_region(hr, scale, int(top), int(left), size)
        np.testing.assert_array_equal(patch, whole[top : top + size, left : left + size], err_msg=f"{top},{left}")


def test_sr_patches_are_aligned_with_and_without_lr_files(tmp_path):
    # given LR files and on-the-fly MATLAB bicubic make the same pairs; HR patch = x2 region of the LR patch
    with_files = patch_dataset(load_source(shared_path("testsets", "Set5"), task="sr-x2"), "sr-x2", augment=False)
    hr_only = patch_dataset(load_source(shared_path("testsets", "Set5", "HR"), task="sr-x2"), "sr-x2", augment=False)
    assert with_files.has_lq and not hr_only.has_lq
    for index in (0, 3, 7):
        a, b = with_files[index], hr_only[index]
        assert a["pixel_values"].shape == (4, 3, 24, 24) and a["labels"].shape == (4, 3, 48, 48)
        torch.testing.assert_close(a["pixel_values"], b["pixel_values"], rtol=0, atol=0)
        torch.testing.assert_close(a["labels"], b["labels"], rtol=0, atol=0)
        # each input is the bicubic downscaling of its target, away from the patch edge
        for inp, target in zip(a["pixel_values"], a["labels"], strict=True):
            small = np.clip(imresize(target.permute(1, 2, 0).double().numpy(), 0.5), 0, 1)
            np.testing.assert_allclose(small[3:-3, 3:-3], inp.permute(1, 2, 0).numpy()[3:-3, 3:-3], atol=1.5 / 255)


def test_flips_and_rotations_are_applied_to_both_images(tmp_path):
    # low-light style pairs made from real images: LQ = HQ darkened by a known factor, so every aligned pixel
    # pair satisfies lq ~= 0.25 * hq whatever the flip and rotation
    (tmp_path / "HQ").mkdir()
    (tmp_path / "LQ").mkdir()
    for name in ("1", "2", "3"):
        hq = read("testsets", "McMaster", "HR", f"{name}.png")[:120, :150]
        Image.fromarray(hq).save(tmp_path / "HQ" / f"{name}.png")
        Image.fromarray(np.round(hq * 0.25).astype(np.uint8)).save(tmp_path / "LQ" / f"{name}.png")
    source = load_source(tmp_path, task="lle")
    dataset = patch_dataset(source, "lle", patch=32, repeat=8)
    orientations = set()
    for index in range(len(dataset)):
        item = dataset[index]
        np.testing.assert_allclose(item["pixel_values"], item["labels"] * 0.25, atol=0.51 / 255)
        orientations.update(tuple(t[0, :2, :2].flatten().tolist()) for t in item["labels"])
    assert len(orientations) > 4  # patches differ (positions, flips, rotations)


def test_items_depend_only_on_their_index_and_seed():
    source = load_source(shared_path("testsets", "Set5", "HR"), task="sr-x2")
    first, second = patch_dataset(source, "sr-x2"), patch_dataset(source, "sr-x2")
    late = second[9]  # out of order, from a fresh dataset (as a resumed run or another process reads it)
    torch.testing.assert_close(first[9]["pixel_values"], late["pixel_values"], rtol=0, atol=0)
    assert not torch.equal(first[8]["pixel_values"], late["pixel_values"])
    # every epoch shows every image the same number of times, in a different order
    orders = [first.epoch_order(epoch) for epoch in (0, 1)]
    assert all(np.bincount(order, minlength=5).tolist() == [4] * 5 for order in orders)
    assert not np.array_equal(*orders)


def test_progressive_schedule_of_the_denoising_recipe():
    # the paper's colour denoising: 8,594 images x 3 per epoch, 2 GPUs, patches 64/96/128 with 32/16/8 per GPU
    schedule = ProgressiveSchedule(8594 * 3, 400, [0, 100, 200], [64, 96, 128], [32, 16, 8], world_size=2)
    assert [p.steps_per_epoch for p in schedule.phases] == [25782 // 64, 25782 // 32, 25782 // 16]
    assert schedule.total_steps == 100 * 402 + 100 * 805 + 200 * 1611
    assert schedule.phase_at(schedule.step_at_epoch(150)).patch_size == 96
    assert schedule.epoch_at(schedule.step_at_epoch(250) + 805) == pytest.approx(250.5, abs=1e-3)
    # one step: 2 processes' items, disjoint, together one total batch of consecutive positions
    step = schedule.step_at_epoch(120) + 3
    items = [schedule.item(step * 2 + rank) for rank in range(2)]
    assert {i.patch_size for i in items} == {96} and all(len(i.positions) == 16 for i in items)
    assert items[0].positions.stop == items[1].positions.start
    assert schedule.epoch_end_steps(100)[:2] == [40200, 40200 + 80500]
    short = ProgressiveSchedule(1000, 400, [0, 100, 200], [64, 96, 128], [32, 16, 8], max_steps=10)
    assert short.max_patch_size() == 64


def test_denoising_noise_and_gray_conversion():
    source = load_source(shared_path("testsets", "McMaster", "HR"), task="gray-dn")
    dataset = patch_dataset(source, "gray-dn", patch=40, batch=8, noise_sigma=(0, 50))
    item = dataset[0]
    assert item["pixel_values"].shape == (8, 1, 40, 40)
    residual_std = (item["pixel_values"] - item["labels"]).flatten(1).std(dim=1) * 255
    assert residual_std.max() < 50 * 1.2 and residual_std.std() > 2  # sigma drawn per patch in [0, 50]
    # gray as OpenCV's COLOR_RGB2GRAY: fixed-point BT.601 luma
    rgb = read("testsets", "McMaster", "HR", "1.png")
    gray = rgb_to_gray(rgb)[:, :, 0].astype(np.float64)
    np.testing.assert_allclose(gray, np.round(rgb @ [0.299, 0.587, 0.114]), atol=1)
    # validation noise: the original test's seed-0 torch noise on every image
    val = validation_dataset(load_source(shared_path("testsets", "Set12"), task="gray-dn"), "gray-dn", 25, 2)
    pair = val[0]
    noise = torch.randn(pair["labels"].shape, generator=torch.Generator().manual_seed(0)) * 25 / 255
    torch.testing.assert_close(pair["pixel_values"], pair["labels"] + noise)


def test_sr_validation_pairs_use_the_lr_files():
    val = validation_dataset(load_source(shared_path("testsets", "Set5"), task="sr-x3"), "sr-x3", max_images=1)
    pair = val[0]
    lr = read("testsets", "Set5", "LR_bicubic", "X3", "babyx3.png")
    hr = modcrop_hw(read("testsets", "Set5", "HR", "baby.png"), 3)
    np.testing.assert_array_equal((pair["pixel_values"].permute(1, 2, 0).numpy() * 255).round(), lr)
    np.testing.assert_array_equal((pair["labels"].permute(1, 2, 0).numpy() * 255).round(), hr)


def test_datasets_sources(tmp_path):
    import datasets

    files = sorted(str(p) for p in shared_path("testsets", "Set5", "HR").glob("*.png"))
    table = datasets.Dataset.from_dict({"image": files}).cast_column("image", datasets.Image())
    table.save_to_disk(str(tmp_path / "set5"))
    for data in (table, tmp_path / "set5"):
        source = load_source(data, task="color-dn")
        assert len(source) == 5 and not source.has_lq
        item = patch_dataset(source, "color-dn", noise_sigma=(10, 10))[0]
        assert item["pixel_values"].shape == (4, 3, 24, 24)
    with pytest.raises(DataError, match="no high-quality image column"):
        load_source(datasets.Dataset.from_dict({"x": [1]}), task="sr-x2")


def test_bad_data_is_reported_before_training(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images in"):
        load_source(empty, task="sr-x2")
    with pytest.raises(DataError, match="not found"):
        load_source(tmp_path / "missing", task="sr-x2")
    # LQ/HQ names that do not pair up
    hq, lq = tmp_path / "pairs" / "HQ", tmp_path / "pairs" / "LQ"
    hq.mkdir(parents=True)
    lq.mkdir()
    image = read("testsets", "Set5", "HR", "bird.png")
    Image.fromarray(image).save(hq / "bird.png")
    Image.fromarray(image).save(lq / "parrot.png")
    with pytest.raises(DataError, match=r"no low-quality image for bird\.png.*no high-quality image for parrot\.png"):
        load_source(tmp_path / "pairs", task="derain")
    # LQ/HQ sizes that differ
    (lq / "parrot.png").rename(lq / "bird.png")
    Image.fromarray(image[:100]).save(lq / "bird.png")
    with pytest.raises(DataError, match=r"sizes do not match.*bird \(HQ 288x288, LQ 288x100\)"):
        check_sizes(load_source(tmp_path / "pairs", task="derain"), "derain")
    # an image smaller than the training patch
    source = load_source(shared_path("testsets", "Set5", "HR"), task="sr-x4")
    with pytest.raises(DataError, match=r"smaller than the training patch.*woman \(228x344\)"):
        patch_dataset(source, "sr-x4", patch=64)
    # an epoch too short for one step
    with pytest.raises(DataError, match="does not fill one step"):
        ProgressiveSchedule(10, 2, [0], [64], [32])


def test_training_images_above_the_pixel_budget_are_refused_from_their_headers(tmp_path):
    from hostile_files import png_bomb

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "huge.png").write_bytes(png_bomb(20000, 20000))
    source = load_source(folder, task="sr-x2")
    with pytest.raises(DataError, match=r"above the pixel budget of [\d,]+ in .*huge \(20000x20000\)"):
        check_sizes(source, "sr-x2")


def test_float_training_images_are_read_on_the_pipelines_scale():
    gray = np.asarray(Image.open(shared_path("testsets", "Set12", "HR", "01.png")))
    expected = pil_to_array(Image.fromarray(gray))
    for values in (gray.astype(np.float32) / 255, gray.astype(np.float32)):
        assert np.array_equal(pil_to_array(Image.fromarray(values)), expected)
    with pytest.raises(DataError, match=r"float image values must lie in \[0, 1\] or in \[0, 255\]"):
        pil_to_array(Image.fromarray(gray.astype(np.float32) * 2))
