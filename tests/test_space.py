"""The demo Space, launched on 127.0.0.1 and called through its API with gradio_client on real images.

Each task's output is compared with the library's own restoration (`ramit_hf.inference.restore_tensor`) of the same
input: the Space runs the code shipped in the model folders, without ramit_hf, and must give the same pixels.
"""

import re

import numpy as np
import pytest
import torch
from conftest import shared_path
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from space_server import SPACE_DIR, load_space_app, space_server

from ramit_hf.hub import PUBLISHED_PRESETS, repo_id_for
from ramit_hf.inference import choose_compute, load_model, restore_tensor
from ramit_hf.protocol.metrics import psnr, to_uint8

# task label -> (environment variable of its model, test image, crop box (left, top, right, bottom), noise level)
CASES = {
    "Super-resolution x2": ("RAMIT_MODEL_SR_X2", ("Set5", "LR_bicubic", "X2", "birdx2.png"), (40, 40, 88, 80), 0),
    "Super-resolution x3": ("RAMIT_MODEL_SR_X3", ("Set5", "LR_bicubic", "X3", "butterflyx3.png"), (20, 20, 60, 56), 0),
    "Super-resolution x4": ("RAMIT_MODEL_SR_X4", ("Set5", "LR_bicubic", "X4", "headx4.png"), (20, 16, 56, 48), 0),
    "Color denoising": ("RAMIT_MODEL_COLOR_DN", ("McMaster", "HR", "1.png"), (100, 100, 164, 148), 25),
    "Low-light enhancement": ("RAMIT_MODEL_LLE", ("McMaster", "HR", "10.png"), (200, 150, 248, 198), 0),
}


@pytest.fixture(scope="module")
def server():
    return space_server()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False, download_files=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return load_space_app(tmp_path_factory.mktemp("examples"))


def _crop(parts, box) -> np.ndarray:
    return np.asarray(Image.open(shared_path("testsets", *parts)).convert("RGB").crop(box))


def _library_restore(folder, image: np.ndarray) -> np.ndarray:
    # the Space computes as `choose_compute` decides for this machine (precision "auto"); so does the reference
    model = choose_compute("cpu", "auto").apply(load_model(folder))
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    return to_uint8(restore_tensor(model, pixels)[0].permute(1, 2, 0).numpy())


@pytest.mark.parametrize("task", list(CASES))
def test_every_task_matches_the_library(task, server, client, app, tmp_path):
    variable, parts, box, noise_level = CASES[task]
    image = _crop(parts, box)
    if task == "Low-light enhancement":
        image = app.darken(image)
    Image.fromarray(image).save(tmp_path / "input.png")

    (before_path, after_path), download = client.predict(
        task, handle_file(str(tmp_path / "input.png")), noise_level, api_name="/restore"
    )
    scale = app.TASKS[task].scale
    after = Image.open(after_path)
    assert after.format == "PNG" and after.mode == "RGB"
    assert after.size == (image.shape[1] * scale, image.shape[0] * scale)
    result = np.asarray(after)
    with Image.open(download) as downloaded:
        assert downloaded.format == "PNG" and download.endswith(".png")
        assert np.array_equal(np.asarray(downloaded), result)

    before = np.asarray(Image.open(before_path))
    assert before.shape == result.shape
    # the model's input: the upload, or for denoising the upload with the app's seeded noise (shown as "before")
    model_input = app.add_gaussian_noise(image, noise_level) if noise_level else image
    if scale == 1:
        assert np.array_equal(before, model_input)
    expected = _library_restore(server.models[variable], model_input)
    assert result.shape == expected.shape
    assert np.array_equal(result, expected) or psnr(result, expected) > 50


def test_a_noisy_upload_is_restored_as_it_is_with_noise_level_zero(server, client, app, tmp_path):
    noisy = app.add_gaussian_noise(_crop(("McMaster", "HR", "1.png"), (10, 10, 58, 42)), 15, seed=3)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    (before_path, after_path), _ = client.predict(
        "Color denoising", handle_file(str(tmp_path / "noisy.png")), 0, api_name="/restore"
    )
    assert np.array_equal(np.asarray(Image.open(before_path)), noisy)
    expected = _library_restore(server.models["RAMIT_MODEL_COLOR_DN"], noisy)
    result = np.asarray(Image.open(after_path))
    assert np.array_equal(result, expected) or psnr(result, expected) > 50


def test_an_image_beyond_the_pixel_limit_is_refused_with_a_message(client, app, tmp_path):
    limit = app.max_input_pixels(app.TASKS["Super-resolution x4"])
    side = int(limit**0.5) + 8  # just over the limit: refused before the model runs
    Image.new("RGB", (side, side), (90, 120, 150)).save(tmp_path / "big.png")
    with pytest.raises(
        AppError,
        match=rf"{side} x {side} = {side * side:,} pixels; Super-resolution x4 takes at most "
        rf"{limit:,} input pixels",
    ):
        client.predict("Super-resolution x4", handle_file(str(tmp_path / "big.png")), 0, api_name="/restore")


def test_missing_image_and_unknown_task_are_refused(client, tmp_path):
    with pytest.raises(AppError, match="Upload an image or pick an example first"):
        client.predict("Super-resolution x2", None, 0, api_name="/restore")
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
    with pytest.raises(Exception, match="Super-resolution x5"):
        client.predict("Super-resolution x5", handle_file(str(tmp_path / "tiny.png")), 0, api_name="/restore")


def test_the_api_has_one_public_endpoint(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/restore"]
    assert [p["parameter_name"] for p in api["named_endpoints"]["/restore"]["parameters"]] == [
        "task_label",
        "image",
        "noise_level",
    ]


def test_examples_are_made_from_bundled_images(app):
    rows = app.make_examples()
    assert [row[0] for row in rows] == list(app.TASKS)
    sizes = {row[0]: Image.open(row[1]).size for row in rows}
    assert sizes["Super-resolution x2"] == (225, 150)  # chelsea 451 x 300, cropped to 450 x 300, halved
    assert sizes["Super-resolution x4"] == (128, 128)  # astronaut 512 x 512
    for task, path, noise_level in rows:
        width, height = Image.open(path).size
        assert width * height <= app.max_input_pixels(app.TASKS[task])
        assert noise_level == (app.DEFAULT_NOISE_LEVEL if app.TASKS[task].denoising else 0)
    dark = np.asarray(Image.open(rows[-1][1]))
    assert dark.mean() < 40  # under-exposed


def test_space_readme_header_matches_the_app_and_the_hub_ids(app):
    import gradio
    import yaml

    text = (SPACE_DIR / "README.md").read_text()
    header = yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", text, re.S).group(1))
    assert header["sdk"] == "gradio"
    assert header["sdk_version"] == gradio.__version__  # the version installed here and tested
    assert header["python_version"] == "3.11"
    assert header["app_file"] == "app.py" and (SPACE_DIR / "app.py").is_file()
    defaults = [task.model for task in app.TASKS.values()]
    assert header["models"] == defaults
    # every default model is a repository `ramit push` publishes
    assert set(defaults) <= {repo_id_for(preset) for preset in PUBLISHED_PRESETS}
    requirements = (SPACE_DIR / "requirements.txt").read_text()
    assert "transformers" in requirements and "scikit-image" in requirements and "ramit" not in requirements


def test_an_empty_or_non_image_upload_gets_a_message_naming_it(client, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with pytest.raises(AppError, match=r"The upload notes.txt is not an image this Space can read"):
        client.predict("Super-resolution x2", handle_file(str(notes)), 0, api_name="/restore")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(AppError, match=r"The upload empty.png is an empty file \(0 bytes\), not an image"):
        client.predict("Super-resolution x2", handle_file(str(empty)), 0, api_name="/restore")


def test_old_result_files_are_removed(app):
    import os
    import tempfile
    import time
    from pathlib import Path

    app.OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    old, new = (Path(tempfile.mkdtemp(dir=app.OUTPUT_DIR)) for _ in range(2))
    for folder in (old, new):
        (folder / "ramit_sr_x2.png").write_bytes(b"png")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    app.prune_outputs(max_age_s=3600)
    assert not old.exists() and (new / "ramit_sr_x2.png").is_file()


def test_every_upload_form_is_checked_before_decoding(app, tmp_path):
    # a file upload and the same bytes as a `data:` URL (what the API and the clipboard send) meet the same checks
    import base64
    import io

    import gradio as gr
    from gradio.data_classes import ImageData
    from hostile_files import png_bomb

    component = app.checked_image_input(type="numpy", image_mode="RGB")

    def as_file(data: bytes, name: str) -> ImageData:
        (tmp_path / name).write_bytes(data)
        return ImageData(path=str(tmp_path / name), orig_name=name)

    def as_data_url(data: bytes, name: str) -> ImageData:
        return ImageData(url="data:image/png;base64," + base64.b64encode(data).decode(), orig_name=name)

    buffer = io.BytesIO()
    Image.open(shared_path("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png")).save(buffer, format="PNG")
    photo = buffer.getvalue()
    budget = f"this Space restores images of at most {app.MAX_OUTPUT_PIXELS:,} pixels"
    for form in (as_file, as_data_url):
        assert component.preprocess(form(photo, "bird.png")).shape == (144, 144, 3)
        with pytest.raises(gr.Error, match=r"The upload cut.png is a damaged or truncated image \(.*\); upload the"):
            component.preprocess(form(photo[: len(photo) // 2], "cut.png"))
        with pytest.raises(gr.Error, match=rf"The upload big.png is too large: {budget}.*\(2000 x 2000 = 4,000,000"):
            component.preprocess(form(png_bomb(2000, 2000, 8), "big.png"))
        # beyond Pillow's own bomb limit: still "too large", not "not an image"
        with pytest.raises(gr.Error, match=rf"The upload huge.png is too large: {budget}.*\(more than [\d,]+ pixels"):
            component.preprocess(form(png_bomb(20000, 20000, 8), "huge.png"))
