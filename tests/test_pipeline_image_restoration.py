import functools
import http.server
import json
import threading

import numpy as np
import pytest
import torch
from conftest import checkpoint, run_without_ramit_hf, shared_path, small_config
from PIL import Image
from transformers import pipeline

from ramit_hf import ImageRestorationPipeline, RamitForImageRestoration
from ramit_hf.convert import convert_original_checkpoint, processor_for, save_model_folder
from ramit_hf.image_io import ImageReadError, save_image
from ramit_hf.inference import restore_tensor

BIRD = ("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png")


@pytest.fixture(scope="module")
def slim_folder(tmp_path_factory):
    model = convert_original_checkpoint(checkpoint("RAMiT-slimSR_X2.pth"))
    return save_model_folder(model, tmp_path_factory.mktemp("models") / "slim-x2")


@pytest.fixture(scope="module")
def slim_pipe(slim_folder):
    return pipeline("image-restoration", model=str(slim_folder))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """A tiny RAMiT (random weights, x2) for behaviour that does not depend on the weights: fast."""
    torch.manual_seed(0)
    folder = save_model_folder(RamitForImageRestoration(small_config()), tmp_path_factory.mktemp("models") / "tiny")
    return pipeline("image-restoration", model=str(folder))


@pytest.fixture(scope="module")
def crop() -> Image.Image:
    return Image.open(shared_path(*BIRD)).convert("RGB").crop((50, 40, 82, 64))  # 32 x 24


def _by_hand(model, image: Image.Image) -> np.ndarray:
    """The protocol spelled out with the library's parts: processor -> restore_tensor -> clamp, round."""
    pixel_values = processor_for(model.config)(image, do_pad=False, return_tensors="pt")["pixel_values"]
    out = restore_tensor(model, pixel_values)[0].clamp(0, 1)
    return (out * 255).round().byte().permute(1, 2, 0).numpy()


def test_pipeline_is_registered_and_runs_the_one_restoration_path(slim_pipe, crop):
    assert isinstance(slim_pipe, ImageRestorationPipeline)
    assert slim_pipe.task == "image-restoration"
    out = slim_pipe(crop)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (64, 48)
    assert np.array_equal(np.asarray(out), _by_hand(slim_pipe.model, crop))


def test_paths_urls_arrays_and_lists(pipe, crop, tmp_path):
    expected = np.asarray(pipe(crop))
    crop.save(tmp_path / "crop.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/crop.png"
        inputs = [str(tmp_path / "crop.png"), tmp_path / "crop.png", url, np.asarray(crop), crop]
        outputs = pipe(inputs, batch_size=2)
    finally:
        server.shutdown()
        server.server_close()
    assert len(outputs) == len(inputs)
    for out in outputs:
        # batched and single forward passes may differ in the last float bit: allow one 8-bit level
        assert np.abs(np.asarray(out).astype(int) - expected).max() <= 1


def test_batches_mix_sizes_in_order(pipe, crop):
    small = crop.crop((0, 0, 20, 16))
    outputs = pipe([crop, small, small, crop], batch_size=3)
    assert [o.size for o in outputs] == [(64, 48), (40, 32), (40, 32), (64, 48)]
    four_d = pipe(np.stack([np.asarray(small)] * 2))  # a 4-D array is a batch
    assert len(four_d) == 2 and four_d[0].size == (40, 32)


def test_modes_are_preserved(pipe, crop):
    gray = pipe(crop.convert("L"))
    assert gray.mode == "L" and gray.size == (64, 48)
    # gray input to a color model: restored as RGB, returned as its BT.601 luma
    rgb_of_gray = np.asarray(pipe(crop.convert("L").convert("RGB")), dtype=np.float32)
    luma = rgb_of_gray @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert np.abs(np.asarray(gray, dtype=np.float32) - luma).max() <= 1

    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1)))
    rgba = crop.copy()
    rgba.putalpha(alpha)
    out = pipe(rgba)
    assert out.mode == "RGBA" and out.size == (64, 48)
    assert np.array_equal(np.asarray(out)[..., :3], np.asarray(pipe(crop)))  # alpha does not touch the color
    # alpha: PIL bicubic on float32, as documented
    expected_alpha = np.asarray(
        Image.fromarray(np.asarray(alpha, dtype=np.float32) / 255).resize((64, 48), Image.Resampling.BICUBIC)
    )
    assert np.abs(np.asarray(out)[..., 3] - np.round(np.clip(expected_alpha, 0, 1) * 255)).max() <= 1

    la = crop.convert("LA")
    assert pipe(la).mode == "LA"


def test_gray_model_keeps_gray_and_gives_color_input_its_luma():
    torch.manual_seed(0)
    config = small_config(num_channels=1, upscale=1, image_mean=(0.45,), image_std=(0.23,), task="gray-dn")
    gray_pipe = ImageRestorationPipeline(model=RamitForImageRestoration(config), device="cpu")
    first = sorted(shared_path("testsets", "Set12", "HR").iterdir())[0]
    image = Image.open(first)
    image = image.convert("L").crop((0, 0, 40, 30))
    out = gray_pipe(image)
    assert out.mode == "L" and out.size == (40, 30)
    color = gray_pipe(image.convert("RGB"))
    assert color.mode == "RGB"
    channels = np.asarray(color)
    assert np.array_equal(channels[..., 0], channels[..., 1]) and np.array_equal(channels[..., 0], channels[..., 2])
    assert np.abs(channels[..., 0].astype(int) - np.asarray(out)).max() <= 1


def test_exif_orientation_is_applied(pipe, crop, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    crop.save(tmp_path / "rotated.png", exif=exif)
    out = pipe(str(tmp_path / "rotated.png"))
    assert out.size == (48, 64)
    assert np.array_equal(np.asarray(out), np.asarray(pipe(crop.transpose(Image.Transpose.ROTATE_270))))


def test_16_bit_png_is_restored_with_all_its_bits(pipe, crop, tmp_path):
    eight = np.asarray(crop)
    low = (np.arange(eight.size).reshape(eight.shape) * 37 % 256).astype(np.uint16)
    sixteen = eight.astype(np.uint16) * 256 + low
    save_image(sixteen, tmp_path / "sixteen.png")
    from_file = pipe(str(tmp_path / "sixteen.png"), output_type="np", bit_depth=16)
    from_array = pipe(sixteen, output_type="np", bit_depth=16)
    assert from_file.dtype == np.uint16 and from_file.shape == (48, 64, 3)
    assert np.array_equal(from_file, from_array)  # the file's low bytes reached the model
    truncated = pipe(Image.open(tmp_path / "sixteen.png"), output_type="np", bit_depth=16)  # PIL: 8 bits
    assert not np.array_equal(from_file, truncated)
    # "auto" follows the input; PIL holds 16 bits only for gray
    assert pipe(str(tmp_path / "sixteen.png"), output_type="np", bit_depth="auto").dtype == np.uint16
    assert pipe(crop, output_type="np", bit_depth="auto").dtype == np.uint8
    with pytest.raises(ValueError, match="output_type='np'"):
        pipe(str(tmp_path / "sixteen.png"), bit_depth=16)
    assert pipe(crop.convert("L"), bit_depth=16).mode == "I;16"


def test_tiling_arguments_reach_restore_tensor(pipe, crop):
    larger = Image.open(shared_path(*BIRD)).convert("RGB").crop((0, 0, 100, 80))
    pixel_values = processor_for(pipe.model.config)(larger, do_pad=False, return_tensors="pt")["pixel_values"]
    tiled = restore_tensor(pipe.model, pixel_values, tile_size=64, tile_overlap=16)[0].clamp(0, 1)
    expected = (tiled * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(pipe(larger, tile_size=64, tile_overlap=16)), expected)
    # a tile below the floor is raised to it, with a warning: 16-px tiles would only multiply the work
    with pytest.warns(UserWarning, match=r"tile size 16 raised to 64: every tile is padded to 32 pixels"):
        raised = pipe(larger, tile_size=16, tile_overlap=16)
    assert np.array_equal(np.asarray(raised), expected)
    # "auto" restores small images whole, as tile_size=0 does
    assert np.array_equal(np.asarray(pipe(crop, tile_size="auto")), np.asarray(pipe(crop, tile_size=0)))
    with pytest.raises(ValueError, match="tile_size"):
        pipe(crop, tile_size=-3)


def test_device_and_dtype_are_honoured(slim_folder, pipe, crop):
    reference = np.asarray(pipeline("image-restoration", model=str(slim_folder), device="cpu")(crop), dtype=np.float64)
    # released weights in bfloat16 stay close to float32 (float16 on real images: scripts/benchmark_memory.py)
    bf16 = pipeline("image-restoration", model=str(slim_folder), device="cpu", dtype=torch.bfloat16)
    assert bf16.model.dtype == torch.bfloat16 and bf16.device.type == "cpu"
    mse = np.mean((np.asarray(bf16(crop), dtype=np.float64) - reference) ** 2)
    assert 10 * np.log10(255**2 / mse) >= 35.0
    # a model object passed in is cast too; float16 runs (slowly) on CPU and stays finite
    fp16 = ImageRestorationPipeline(model=pipe.model.__class__(pipe.model.config), device="cpu", dtype=torch.float16)
    assert fp16.model.dtype == torch.float16
    assert np.isfinite(fp16(crop.crop((0, 0, 16, 16)), output_type="np")).all()


def test_iter_outputs_can_report_errors_and_go_on(pipe, crop, tmp_path):
    results = list(pipe.iter_outputs([crop, str(tmp_path / "missing.png"), crop], return_errors=True, batch_size=2))
    assert [index for index, _ in results] == [0, 1, 2]
    assert isinstance(results[1][1], ImageReadError) and "missing.png: no such file" in str(results[1][1])
    assert isinstance(results[0][1], Image.Image) and isinstance(results[2][1], Image.Image)


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda d: str(d / "missing.png"), "missing.png: no such file"),
        (lambda d: str(d), "is a directory"),
        (lambda d: _write(d / "notes.png", b"no pixels here"), "notes.png: not an image file"),
        (lambda d: _write(d / "cut.png", shared_path(*BIRD).read_bytes()[:3000]), "cut.png: corrupt or truncated"),
        (lambda d: _write(d / "zero.png", b""), r"zero.png: empty file"),
        (lambda d: np.zeros((0, 5, 3), np.uint8), r"shape \(0, 5, 3\).*empty image"),
        (lambda d: Image.new("RGB", (0, 0)), r"PIL image \(RGB, 0x0\): empty image"),
        (lambda d: np.zeros((8, 8, 2), np.uint8), r"shape \(8, 8, 2\).*1, 3 or 4 channels"),
        (lambda d: np.zeros((8, 8, 5), np.uint8), r"shape \(8, 8, 5\).*1, 3 or 4 channels"),
        (lambda d: np.full((8, 8, 3), np.nan, np.float32), r"shape \(8, 8, 3\).*NaN or infinite"),
        (lambda d: np.full((8, 8, 3), np.inf, np.float32), r"NaN or infinite"),
        (lambda d: 42, "cannot restore a int"),
    ],
)
def test_bad_inputs_name_the_input_and_the_problem(pipe, tmp_path, make, problem):
    with pytest.raises((ValueError, TypeError), match=problem):
        pipe(make(tmp_path))


def test_float_images_from_files_and_pil_are_read_on_the_scale_their_values_lie_in(pipe, crop, tmp_path):
    # a float TIFF stores [0, 1]; the same picture as 0..255 floats, or as 8-bit, must restore the same
    gray = np.asarray(crop.convert("L"))
    unit, levels = gray.astype(np.float32) / 255, gray.astype(np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    Image.fromarray(levels).save(tmp_path / "levels.tif")
    expected = np.asarray(pipe(Image.fromarray(gray)))
    for source in (str(tmp_path / "unit.tif"), str(tmp_path / "levels.tif"), Image.fromarray(unit)):
        out = pipe(source)
        assert out.mode == "L" and np.abs(np.asarray(out).astype(int) - expected).max() <= 1
    for values, shown in ((unit - 1, r"got \[-"), (levels + 300, r"got \[3\d\d")):
        Image.fromarray(values).save(tmp_path / "bad.tif")
        rule = r"bad.tif: float image values must lie in \[0, 1\] or in \[0, 255\], "
        with pytest.raises(ValueError, match=rule + shown):
            pipe(str(tmp_path / "bad.tif"))


def test_float_arrays_and_tensors_follow_the_rule_of_float_files(pipe, crop, tmp_path):
    # one rule for files, arrays and tensors: [0, 1] as it is, [0, 255] as 8-bit levels, anything else an error
    gray = np.asarray(crop.convert("L"))
    expected = np.asarray(pipe(Image.fromarray(gray)))
    unit, levels = gray.astype(np.float32) / 255, gray.astype(np.float32)
    for source in (unit, levels, torch.from_numpy(unit), torch.from_numpy(levels).double()):
        out = pipe(source, bit_depth=8)
        assert out.mode == "L" and np.abs(np.asarray(out).astype(int) - expected).max() <= 1
    rule = r"float image values must lie in \[0, 1\] or in \[0, 255\], got "
    for values, shown in ((levels * 257, r"\[\d+, \d{5}\]"), (unit - 0.5, r"\[-0.\d+, 0.\d+\]"), (-levels, r"\[-2")):
        Image.fromarray(values).save(tmp_path / "far.tif")
        for source in (values, torch.from_numpy(values), str(tmp_path / "far.tif")):
            with pytest.raises(ValueError, match=rule + shown):
                pipe(source)
    with pytest.raises(ValueError, match=r"values with do_rescale=False must lie in \[0, 1\], got \[\d+, \d+\]"):
        pipe(levels, do_rescale=False)


def test_bad_input_in_a_list_is_named_by_index(pipe, crop):
    with pytest.raises(ValueError, match=r"input 1: .*NaN"):
        pipe([crop, np.full((8, 8, 3), np.nan, np.float32)])


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_a_model_that_is_not_ramit_is_refused(tmp_path):
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    config = Swin2SRConfig(embed_dim=8, depths=[1], num_heads=[1], window_size=4, image_size=16, upscale=2)
    Swin2SRForImageSuperResolution(config).save_pretrained(tmp_path / "swin")
    with pytest.raises(ValueError, match=r"needs a RAMiT model, but .*swin is a 'swin2sr' model"):
        pipeline("image-restoration", model=str(tmp_path / "swin"))


def test_unknown_task_name(slim_folder):
    with pytest.raises(KeyError, match="Unknown task image-restorashun"):
        pipeline("image-restorashun", model=str(slim_folder))


def test_saved_pipeline_runs_in_a_fresh_process_without_ramit_hf(slim_pipe, crop, tmp_path):
    pipe = slim_pipe
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    impl = config["custom_pipelines"]["image-restoration"]["impl"]
    assert impl == "pipeline_image_restoration.ImageRestorationPipeline"
    assert (folder / "pipeline_image_restoration.py").is_file()
    crop.save(tmp_path / "crop.png")
    np.save(tmp_path / "expected.npy", np.asarray(pipe(crop)))
    result = run_without_ramit_hf(
        f"""
        import numpy as np
        from transformers import pipeline
        pipe = pipeline("image-restoration", model={str(folder)!r}, trust_remote_code=True)
        out = np.asarray(pipe({str(tmp_path / "crop.png")!r}))
        assert np.array_equal(out, np.load({str(tmp_path / "expected.npy")!r}))
        print("remote pipeline OK", type(pipe).__module__, pipe.task)
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote pipeline OK transformers_modules" in result.stdout and "image-restoration" in result.stdout
