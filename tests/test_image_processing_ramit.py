import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from ramit_hf import RamitImageProcessor
from ramit_hf.image_processing_ramit import symmetric_pad


@pytest.mark.parametrize("size", [1, 2, 5, 31, 32, 45, 70])
def test_symmetric_pad_matches_numpy(size):
    x = torch.arange(3 * size * (size + 3), dtype=torch.float32).view(3, size, size + 3)
    padded = symmetric_pad(x, 32)
    expected = np.pad(x.numpy(), ((0, 0), (0, -size % 32), (0, -(size + 3) % 32)), mode="symmetric")
    assert torch.equal(padded, torch.from_numpy(expected))


def real_image() -> Image.Image:
    return Image.open(shared_path("testsets", "Set5", "HR", "bird.png"))


def test_pil_uint8_and_float_inputs_agree():
    image = real_image().convert("RGB")
    array = np.asarray(image)
    processor = RamitImageProcessor()
    from_pil = processor(image, return_tensors="pt")
    from_uint8 = processor(array, return_tensors="pt")
    chw = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    from_tensor = processor(chw, do_rescale=False, return_tensors="pt")
    from_hwc_float = processor(array.astype(np.float32) / 255, do_rescale=False, return_tensors="pt")
    for other in (from_uint8, from_tensor, from_hwc_float):
        assert torch.allclose(from_pil["pixel_values"], other["pixel_values"], atol=1e-7)
    assert from_pil["pixel_values"].shape == (1, 3, 288, 288)
    assert from_pil["original_sizes"] == [(288, 288)]
    assert from_pil["pixel_values"].dtype == torch.float32


def test_channels_follow_the_model():
    gray = Image.open(shared_path("testsets", "Set12", "HR", "01.png"))
    assert gray.mode == "L"
    rgb_batch = RamitImageProcessor(num_channels=3)(gray, return_tensors="pt")["pixel_values"]
    assert rgb_batch.shape[1] == 3 and torch.equal(rgb_batch[:, 0], rgb_batch[:, 2])
    color = real_image().convert("RGB")
    gray_batch = RamitImageProcessor(num_channels=1)(color, return_tensors="pt")["pixel_values"]
    expected = np.asarray(color, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255
    assert gray_batch.shape[1] == 1
    assert np.abs(gray_batch[0, 0, :288, :288].numpy() - expected).max() < 1e-6
    rgba = color.copy()
    rgba.putalpha(128)
    assert torch.equal(
        RamitImageProcessor()(rgba, return_tensors="pt")["pixel_values"],
        RamitImageProcessor()(color, return_tensors="pt")["pixel_values"],
    )


def test_sixteen_bit_data_keep_their_precision():
    values = np.array([[0, 1, 257, 65535]], dtype=np.uint16)
    out = RamitImageProcessor(do_pad=False)(values, return_tensors="pt")["pixel_values"][0, 0, 0]
    assert torch.allclose(out, torch.tensor([0, 1, 257, 65535]) / 65535.0)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out_pil = RamitImageProcessor(do_pad=False)(image, return_tensors="pt")["pixel_values"][0, 0, 0]
    assert torch.equal(out, out_pil)


def test_float_pil_images_are_taken_on_the_scale_their_values_lie_in():
    gray = np.asarray(real_image().convert("L"))
    processor = RamitImageProcessor(do_pad=False)
    expected = processor(Image.fromarray(gray), return_tensors="pt")["pixel_values"]
    for values in (gray.astype(np.float32) / 255, gray.astype(np.float32)):
        image = Image.fromarray(values)
        assert image.mode == "F"
        assert torch.allclose(processor(image, return_tensors="pt")["pixel_values"], expected, atol=1e-6)
    for values in (gray.astype(np.float32) - 300, gray.astype(np.float32) + 300):
        with pytest.raises(ValueError, match=r"image 0: float image values must lie in \[0, 1\] or in \[0, 255\]"):
            processor(Image.fromarray(values))
    with pytest.raises(ValueError, match=r"32-bit integer image values must lie in \[0, 65535\], got \[0, 70000\]"):
        processor(Image.fromarray(np.array([[0, 70000]], dtype=np.int32)))


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 10, 3), dtype=np.uint8), "empty image"),
        (np.zeros((10, 10, 2), dtype=np.uint8), "cannot find the channel axis"),
        (np.zeros((10, 10, 5), dtype=np.uint8), "cannot find the channel axis"),
        (np.full((8, 8, 3), np.nan, dtype=np.float32), "NaN or infinite"),
        (np.zeros((2, 8, 8, 3, 1), dtype=np.uint8), "2 or 3 dimensions"),
        (np.full((8, 8), -3, dtype=np.int32), r"must lie in \[0, 65535\]"),
    ],
)
def test_bad_images_are_refused_with_the_reason(image, message):
    with pytest.raises(ValueError, match=message) as error:
        RamitImageProcessor()(image, do_rescale=False)
    assert str(error.value).startswith("image 0: ")


def test_different_sizes_batch_only_as_a_list():
    images = [np.zeros((40, 40, 3), np.uint8), np.zeros((70, 20, 3), np.uint8)]
    with pytest.raises(ValueError, match="different sizes"):
        RamitImageProcessor()(images, return_tensors="pt")
    out = RamitImageProcessor()(images)
    assert [tuple(t.shape) for t in out["pixel_values"]] == [(3, 64, 64), (3, 96, 32)]
    same = RamitImageProcessor()([np.zeros((40, 40, 3), np.uint8), np.zeros((50, 60, 3), np.uint8)])
    assert same["pixel_values"].shape == (2, 3, 64, 64)


def test_postprocess_crops_clamps_and_quantises():
    processor = RamitImageProcessor()
    batch = processor(np.zeros((45, 61, 3), np.uint8), return_tensors="pt")
    output = torch.linspace(-0.5, 1.5, 3 * 128 * 128).view(1, 3, 128, 128)
    image = processor.postprocess(output, batch["original_sizes"])[0]
    assert image.size == (122, 90) and image.mode == "RGB"
    array = processor.postprocess(output, batch["original_sizes"], output_type="np")[0]
    expected = (output[0, :, :90, :122].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(array, expected)
    gray16 = processor.postprocess(output[:, :1], batch["original_sizes"], output_type="np", bit_depth=16)[0]
    assert gray16.dtype == np.uint16 and gray16.shape == (90, 122)
    with pytest.raises(ValueError, match="does not fit an input"):
        processor.postprocess(torch.zeros(1, 3, 100, 100), batch["original_sizes"])


def test_processor_config_round_trip(tmp_path):
    processor = RamitImageProcessor(num_channels=1, size_divisor=32)
    processor.save_pretrained(tmp_path)
    again = RamitImageProcessor.from_pretrained(tmp_path)
    assert (again.num_channels, again.size_divisor, again.do_pad) == (1, 32, True)
