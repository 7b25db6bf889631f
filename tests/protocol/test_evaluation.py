import json

import numpy as np
import pytest
import torch
from conftest import shared_path, small_config
from PIL import Image

from ramit_hf import RamitForImageRestoration
from ramit_hf.configuration_ramit import TASK_STATS
from ramit_hf.protocol import (
    SCHEMA,
    EvaluationResult,
    Protocol,
    TestSetError,
    add_gaussian_noise,
    evaluate_model,
    load_result,
    load_test_set,
    read_image,
    rgb_to_gray_opencv,
)
from ramit_hf.protocol.metrics import psnr, ssim

SET5_NAMES = ["baby", "bird", "butterfly", "head", "woman"]


def as_input(image: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float32 CHW / 255, as the original test code builds its input."""
    return torch.from_numpy(image.transpose(2, 0, 1).copy()) / 255


def tiny_model(task: str, upscale: int = 1, num_channels: int = 3) -> RamitForImageRestoration:
    torch.manual_seed(0)
    mean, std = TASK_STATS[task]
    config = small_config(upscale=upscale, num_channels=num_channels, task=task, image_mean=mean, image_std=std)
    return RamitForImageRestoration(config).eval()


# ----------------------------------------------------------------------------------------------
# protocol


@pytest.mark.parametrize(
    "task, y, border, channel, degradation",
    [
        ("sr-x2", True, 2, "Y", "bicubic"),
        ("sr-x3", True, 3, "Y", "bicubic"),
        ("sr-x4", True, 4, "Y", "bicubic"),
        ("color-dn", False, 0, "RGB", "gaussian-noise"),
        ("gray-dn", False, 0, "gray", "gaussian-noise"),
        ("lle", False, 0, "RGB", "paired"),
        ("derain", True, 0, "Y", "paired"),
    ],
)
def test_protocol_of_each_task_is_the_original_test_codes(task, y, border, channel, degradation):
    protocol = Protocol(task, sigma=25 if "dn" in task else None)
    assert (protocol.test_y_channel, protocol.crop_border, protocol.metric_channel) == (y, border, channel)
    assert protocol.degradation == degradation
    assert protocol.to_dict()["noise_seed"] == (0 if "dn" in task else None)


def test_protocol_rejects_bad_settings():
    with pytest.raises(ValueError, match="needs a noise level"):
        Protocol("color-dn")
    with pytest.raises(ValueError, match="denoising only"):
        Protocol("sr-x2", sigma=15)
    with pytest.raises(ValueError, match="positive"):
        Protocol("gray-dn", sigma=-5)
    with pytest.raises(ValueError, match="unknown task"):
        Protocol("sr-x8")
    assert Protocol("color-dn", sigma=15.0).sigma == 15 and isinstance(Protocol("color-dn", sigma=15.0).sigma, int)


# ----------------------------------------------------------------------------------------------
# super-resolution test sets


def test_hr_folder_with_lr_folder_reads_the_lr_files_and_crops_the_hr():
    root = shared_path("testsets", "Set5")
    test_set = load_test_set(root, Protocol("sr-x3"))
    assert (test_set.name, test_set.names) == ("Set5", SET5_NAMES)
    assert test_set.describe()["input"] == {"kind": "lr-folder", "source": "LR_bicubic/X3"}
    for index, name in enumerate(SET5_NAMES):
        sample = test_set[index]
        lr = read_image(root / "LR_bicubic" / "X3" / f"{name}x3.png")
        hr = read_image(root / "HR" / f"{name}.png")
        assert torch.equal(sample.pixel_values, as_input(lr))
        h, w = lr.shape[:2]
        np.testing.assert_array_equal(sample.target, hr[: 3 * h, : 3 * w])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_hr_folder_without_lr_makes_the_matlab_lr(scale):
    """Set5's LR files were made with MATLAB; our imresize of the mod-cropped HR gives the same pixels."""
    with_lr = load_test_set(shared_path("testsets", "Set5"), Protocol(f"sr-x{scale}"))
    from_hr = load_test_set(shared_path("testsets", "Set5", "HR"), Protocol(f"sr-x{scale}"))
    forced = load_test_set(shared_path("testsets", "Set5"), Protocol(f"sr-x{scale}"), make_lr=True)
    assert from_hr.name == "Set5" and from_hr.describe()["input"]["kind"] == "imresize"
    assert forced.describe()["input"]["kind"] == "imresize"
    for a, b, c in zip(with_lr, from_hr, forced, strict=True):
        assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.pixel_values, c.pixel_values)
        np.testing.assert_array_equal(a.target, b.target)
        assert b.target.shape[0] % scale == 0 and b.target.shape[1] % scale == 0


def test_set14_finds_its_only_lr_folder_and_repeats_gray_images_to_rgb():
    root = shared_path("testsets", "Set14")
    test_set = load_test_set(root, Protocol("sr-x4"))
    assert test_set.describe()["input"] == {"kind": "lr-folder", "source": "LR_bicubic_pyport/X4"}
    bridge = test_set[test_set.names.index("bridge")]
    stored = read_image(root / "HR" / "bridge.png")
    assert stored.shape[2] == 1 and bridge.target.shape[2] == 3 and bridge.pixel_values.shape[0] == 3
    height, width = bridge.target.shape[:2]
    np.testing.assert_array_equal(bridge.target, np.repeat(stored, 3, axis=2)[:height, :width])


def test_lr_folder_problems_are_named(tmp_path):
    set5 = shared_path("testsets", "Set5")
    (tmp_path / "HR").symlink_to(set5 / "HR")
    for name in ("LR_bicubic", "LR_other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "X2").symlink_to(set5 / "LR_bicubic" / "X2")
    with pytest.raises(TestSetError, match="several LR folders for x2"):
        load_test_set(tmp_path, Protocol("sr-x2"))
    chosen = load_test_set(tmp_path, Protocol("sr-x2"), lr_dir=tmp_path / "LR_other" / "X2")
    assert chosen.describe()["input"]["kind"] == "lr-folder"

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "babyx2.png").symlink_to(set5 / "LR_bicubic" / "X2" / "babyx2.png")
    with pytest.raises(TestSetError, match=r"no input image for bird.png"):
        load_test_set(tmp_path, Protocol("sr-x2"), lr_dir=partial)
    with pytest.raises(TestSetError, match="dataset not found"):
        load_test_set(tmp_path / "missing", Protocol("sr-x2"))
    with pytest.raises(TestSetError, match="no images and no ground-truth folder"):
        load_test_set(partial.parent / "LR_other", Protocol("sr-x2"))


# ----------------------------------------------------------------------------------------------
# `datasets` datasets


def _image_cell(path) -> dict:
    return {"path": None, "bytes": path.read_bytes()}  # embedded, so the saved dataset stands alone


def test_datasets_dataset_gives_the_same_samples_and_scores_as_the_folder(tmp_path):
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Image as ImageFeature

    root = shared_path("testsets", "Set5")
    hr = [_image_cell(root / "HR" / f"{n}.png") for n in SET5_NAMES]
    lr = [_image_cell(root / "LR_bicubic" / "X4" / f"{n}x4.png") for n in SET5_NAMES]
    features = Features({"file_name": Value("string"), "hr": ImageFeature(), "lr_x4": ImageFeature()})
    columns = {"file_name": [f"{n}.png" for n in SET5_NAMES], "hr": hr, "lr_x4": lr}
    dataset = Dataset.from_dict(columns, features=features)
    dataset.save_to_disk(str(tmp_path / "set5_ds"))
    DatasetDict({"train": dataset, "test": dataset.remove_columns("lr_x4")}).save_to_disk(str(tmp_path / "set5_dict"))

    folder = load_test_set(root, Protocol("sr-x4"))
    from_disk = load_test_set(tmp_path / "set5_ds", Protocol("sr-x4"))
    assert (from_disk.name, from_disk.names) == ("set5_ds", SET5_NAMES)
    assert from_disk.describe()["input"] == {"kind": "lr-column", "source": "lr_x4"}
    only_hr = load_test_set(tmp_path / "set5_dict", Protocol("sr-x4"))  # picks the `test` split: HR only
    assert only_hr.split == "test" and only_hr.describe()["input"]["kind"] == "imresize"
    for a, b, c in zip(folder, from_disk, only_hr, strict=True):
        assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.pixel_values, c.pixel_values)
        np.testing.assert_array_equal(a.target, b.target)
        np.testing.assert_array_equal(a.target, c.target)

    model = tiny_model("sr-x4", upscale=4)
    ours = evaluate_model(model, from_disk.select(range(2)), progress=False)
    reference = evaluate_model(model, folder.select(range(2)), progress=False)
    assert [(i.name, i.psnr, i.ssim) for i in ours.images] == [(i.name, i.psnr, i.ssim) for i in reference.images]
    assert ours.dataset["input"]["kind"] == "lr-column" and ours.dataset["name"] == "set5_ds"

    with pytest.raises(TestSetError, match="no column 'lq'"):
        load_test_set(tmp_path / "set5_ds", Protocol("sr-x4"), lr_column="lq")
    with pytest.raises(TestSetError, match="no split 'validation'"):
        load_test_set(tmp_path / "set5_dict", Protocol("sr-x4"), split="validation")
    with pytest.raises(TestSetError, match="cannot load the dataset 'someone/no-such-set'"):
        load_test_set("someone/no-such-set", Protocol("sr-x4"))  # tests run with HF_HUB_OFFLINE=1


# ----------------------------------------------------------------------------------------------
# denoising


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_denoising_noise_equals_the_originals_manual_seed_and_randn(sigma):
    root = shared_path("testsets", "McMaster")
    test_set = load_test_set(root, Protocol("color-dn", sigma=sigma))
    assert test_set.describe()["input"]["kind"] == "gaussian-noise" and len(test_set) == 18
    state = torch.get_rng_state()
    for index in (0, 7):
        sample = test_set[index]
        clean = as_input(read_image(root / "HR" / f"{sample.name}.png"))
        torch.random.manual_seed(0)  # the original's make_some_noise(img, (sigma,), seed=0)
        expected = clean + torch.randn(*clean.shape) * sigma / 255
        torch.set_rng_state(state)
        assert torch.equal(sample.pixel_values, expected)
        np.testing.assert_array_equal(sample.target, read_image(root / "HR" / f"{sample.name}.png"))
        # neither clipped nor quantised
        assert sample.pixel_values.min() < 0 or sample.pixel_values.max() > 1
        assert not torch.equal(sample.pixel_values, torch.round(sample.pixel_values * 255) / 255)
    assert torch.equal(torch.get_rng_state(), state), "the global random state must not change"
    assert torch.equal(add_gaussian_noise(clean, sigma, seed=0), expected)
    assert not torch.equal(add_gaussian_noise(clean, sigma, seed=1), expected)


def test_rgb_to_gray_is_opencvs_fixed_point_conversion():
    # cv2.cvtColor(..., cv2.COLOR_RGB2GRAY) of these pixels with OpenCV 4.7.0 and 5.0.0
    pixels = np.array(
        [[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30], [128, 128, 128], [1, 2, 3], [250, 128, 7]]], np.uint8
    )
    assert rgb_to_gray_opencv(pixels)[0, :, 0].tolist() == [76, 150, 29, 124, 128, 2, 151]
    levels = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    np.testing.assert_array_equal(rgb_to_gray_opencv(levels)[..., 0], levels[..., 0])


def test_gray_denoising_reads_gray_sets_and_converts_rgb_ones():
    set12 = load_test_set(shared_path("testsets", "Set12"), Protocol("gray-dn", sigma=15))
    sample = set12[0]
    np.testing.assert_array_equal(sample.target, read_image(shared_path("testsets", "Set12", "HR", "01.png")))
    assert sample.pixel_values.shape[0] == 1
    set5 = load_test_set(shared_path("testsets", "Set5"), Protocol("gray-dn", sigma=15))
    rgb = read_image(shared_path("testsets", "Set5", "HR", "baby.png"))
    np.testing.assert_array_equal(set5[0].target, rgb_to_gray_opencv(rgb))

    small = load_test_set(shared_path("testsets", "Set12"), Protocol("gray-dn", sigma=50))
    result = evaluate_model(tiny_model("gray-dn", num_channels=1), small.select(range(1)), progress=False)
    assert result.protocol["metric_channel"] == "gray" and result.protocol["sigma"] == 50
    assert len(result.images) == 1 and all(np.isfinite(i.psnr) for i in result.images)


# ----------------------------------------------------------------------------------------------
# paired sets (low-light enhancement, deraining)


@pytest.fixture
def paired_set(tmp_path):
    """HQ: 64x80 crops of Set5; LQ: the same crops darkened (a stand-in for low-light or rainy images)."""
    for folder in ("HQ", "LQ"):
        (tmp_path / folder).mkdir()
    for name in SET5_NAMES[:3]:
        clean = read_image(shared_path("testsets", "Set5", "HR", f"{name}.png"))[:64, :80]
        Image.fromarray(clean).save(tmp_path / "HQ" / f"{name}.png")
        Image.fromarray(clean // 3).save(tmp_path / "LQ" / f"{name}.png")
    return tmp_path


@pytest.mark.parametrize("task", ["lle", "derain"])
def test_paired_lq_hq_folder(paired_set, task, tmp_path_factory):
    test_set = load_test_set(paired_set, Protocol(task))
    assert test_set.names == SET5_NAMES[:3]
    assert test_set.describe()["input"] == {"kind": "lq-folder", "source": "LQ"}
    sample = test_set[1]
    assert torch.equal(sample.pixel_values, as_input(read_image(paired_set / "LQ" / "bird.png")))
    np.testing.assert_array_equal(sample.target, read_image(paired_set / "HQ" / "bird.png"))

    saved = tmp_path_factory.mktemp("restored")
    result = evaluate_model(tiny_model(task), test_set, save_images=saved, progress=False)
    assert sorted(p.name for p in saved.iterdir()) == [f"{n}.png" for n in sorted(SET5_NAMES[:3])]
    y = task == "derain"
    for image in result.images:  # the scores are those of the saved 8-bit images under the task's protocol
        restored = read_image(saved / f"{image.name}.png")
        target = read_image(paired_set / "HQ" / f"{image.name}.png")
        assert image.psnr == psnr(restored, target, 0, y) and image.ssim == ssim(restored, target, 0, y)
    with pytest.raises(FileExistsError, match="not empty"):
        evaluate_model(tiny_model(task), test_set, save_images=saved, progress=False)


def test_paired_folder_problems_are_named(paired_set):
    (paired_set / "LQ" / "bird.png").rename(paired_set / "LQ" / "bird_rainy.png")
    with pytest.raises(TestSetError, match="no input image for bird.png"):
        load_test_set(paired_set, Protocol("derain"))
    Image.new("RGB", (10, 10)).save(paired_set / "LQ" / "bird.png")
    with pytest.raises(TestSetError, match="bird: the LQ image .* differ in size"):
        load_test_set(paired_set, Protocol("derain"))[1]
    (paired_set / "LQ").rename(paired_set / "elsewhere")
    with pytest.raises(TestSetError, match="needs degraded images"):
        load_test_set(paired_set, Protocol("lle"))


# ----------------------------------------------------------------------------------------------
# results


def test_result_json_schema_round_trip_and_no_silent_overwrite(paired_set, tmp_path_factory):
    test_set = load_test_set(paired_set, Protocol("lle"), name="pairs")
    result = evaluate_model(tiny_model("lle"), test_set, model_id="tiny", model_source="made in a test", progress=False)
    data = json.loads(result.to_json())
    assert list(data) == [
        "schema",
        "schema_version",
        "model",
        "dataset",
        "protocol",
        "mean",
        "images",
        "environment",
        "date",
        "elapsed_s",
    ]
    assert (data["schema"], data["schema_version"]) == (SCHEMA, 1)
    assert data["model"]["id"] == "tiny" and data["model"]["task"] == "lle" and data["model"]["parameters"] > 0
    assert data["dataset"]["name"] == "pairs" and data["dataset"]["num_images"] == 3
    assert data["protocol"]["crop_border"] == 0 and data["protocol"]["test_y_channel"] is False
    assert data["mean"]["psnr"] == pytest.approx(np.mean([i["psnr"] for i in data["images"]]))
    assert data["environment"]["ramit_hf"] and data["date"].endswith("Z")
    assert "| **mean (3)** |" in result.to_markdown()

    path = tmp_path_factory.mktemp("json") / "r.json"
    result.save_json(path)
    assert load_result(path).to_dict() == EvaluationResult.from_dict(data).to_dict()
    with pytest.raises(FileExistsError):
        result.save_json(path)


def test_model_and_protocol_must_fit():
    test_set = load_test_set(shared_path("testsets", "Set5"), Protocol("sr-x4"))
    with pytest.raises(ValueError, match=r"upscales x2 but the sr-x4 protocol needs x4"):
        evaluate_model(tiny_model("sr-x2", upscale=2), test_set, progress=False)


def test_an_lr_that_is_not_the_hr_divided_by_the_scale_is_not_scored(tmp_path):
    set5 = shared_path("testsets", "Set5")
    (tmp_path / "HR").mkdir()
    (tmp_path / "HR" / "bird.png").symlink_to(set5 / "HR" / "bird.png")
    lr = Image.open(set5 / "LR_bicubic" / "X2" / "birdx2.png")
    (tmp_path / "LR_bicubic" / "X2").mkdir(parents=True)
    lr.crop((0, 0, lr.width - 10, lr.height - 10)).save(tmp_path / "LR_bicubic" / "X2" / "birdx2.png")
    test_set = load_test_set(tmp_path, Protocol("sr-x2"))
    with pytest.raises(TestSetError, match=r"bird: the LR image \(134x134\) times 2 does not match the HR image"):
        test_set[0]
    # a true pair of the same set is scored
    assert load_test_set(set5, Protocol("sr-x2"))[0].target.shape == (512, 512, 3)
