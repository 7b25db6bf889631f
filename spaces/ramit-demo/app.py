"""RAMiT image restoration: a Gradio demo (Hugging Face Space).

Pick a task (super-resolution x2 / x3 / x4, color denoising, low-light enhancement), upload an image or pick an
example, and compare before and after in a slider; the result downloads as a PNG.

Models are loaded with `transformers.pipeline("image-restoration", model=<id>, trust_remote_code=True)`:
every RAMiT model repository ships the model, image-processor and pipeline code, so this Space depends on
`transformers` only, not on `ramit_hf` (which is not on PyPI). Each task's model is a Hub id, overridable by an
environment variable holding a Hub id or a local folder (e.g. one written by `ramit push --dry-run`):

    RAMIT_MODEL_SR_X2, RAMIT_MODEL_SR_X3, RAMIT_MODEL_SR_X4, RAMIT_MODEL_COLOR_DN, RAMIT_MODEL_LLE

Inputs larger than `RAMIT_MAX_OUTPUT_PIXELS` (default 1920 x 1080) of output are refused with a message; images above
512 x 512 pixels are restored in overlapping tiles, so memory stays bounded. A GPU is used when there is one.

Example images are made at start-up from photographs that scikit-image ships in its wheel (public domain / CC0),
degraded here: bicubic downscaling (PIL's antialiased bicubic, the kernel of MATLAB's `imresize`), Gaussian noise
(added by the app from the noise slider) and darkening.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image
from transformers import pipeline


@dataclass(frozen=True)
class Task:
    """A demo task: its label in the UI, the environment variable that overrides its model, the default Hub id."""

    label: str
    env: str
    model: str
    scale: int = 1
    denoising: bool = False

    @property
    def slug(self) -> str:
        return self.env.removeprefix("RAMIT_MODEL_").lower()

    @property
    def source(self) -> str:
        return os.environ.get(self.env) or self.model


TASKS: dict[str, Task] = {
    task.label: task
    for task in (
        # RAMiT-slimSR: within 0.07 dB of RAMiT-1 on Set5 with 29% fewer parameters and 14-15% fewer FLOPs
        Task("Super-resolution x2", "RAMIT_MODEL_SR_X2", "ramit-hf/ramit-slimsr-x2", scale=2),
        Task("Super-resolution x3", "RAMIT_MODEL_SR_X3", "ramit-hf/ramit-slimsr-x3", scale=3),
        Task("Super-resolution x4", "RAMIT_MODEL_SR_X4", "ramit-hf/ramit-slimsr-x4", scale=4),
        Task("Color denoising", "RAMIT_MODEL_COLOR_DN", "ramit-hf/ramit1-color-dn", denoising=True),
        Task("Low-light enhancement", "RAMIT_MODEL_LLE", "ramit-hf/ramit-slimlle"),
    )
}
# the ramit_hf release whose model repositories this Space is built for (the models carry its code)
RAMIT_HF_VERSION = "0.3.0"
DEFAULT_TASK = "Super-resolution x2"

# Results up to Full HD: bigger ones take long on a CPU Space (tiling keeps their memory small); raise it on a GPU.
MAX_OUTPUT_PIXELS = int(os.environ.get("RAMIT_MAX_OUTPUT_PIXELS", 1920 * 1080))
DEFAULT_NOISE_LEVEL = 25
NOISE_SEED = 0

EXAMPLES_DIR = Path(os.environ.get("RAMIT_EXAMPLES_DIR", Path(tempfile.gettempdir()) / "ramit-demo-examples"))
OUTPUT_DIR = Path(tempfile.gettempdir()) / "ramit-demo-outputs"
# result files older than this are removed (here and in gradio's own cache), so a long-running Space stays small
OUTPUT_MAX_AGE_S = int(os.environ.get("RAMIT_OUTPUT_MAX_AGE_S", 3600))


# ----------------------------------------------------------------------------------------------
# models

_load_lock = threading.Lock()


@functools.cache
def _pipeline(source: str):
    device = 0 if torch.cuda.is_available() else -1
    # precision "auto": bfloat16 on CPUs with native bfloat16, float32 elsewhere (RAMIT_PRECISION=float32 forces it)
    precision = os.environ.get("RAMIT_PRECISION", "auto")
    return pipeline("image-restoration", model=source, trust_remote_code=True, device=device, precision=precision)


def get_pipeline(task: Task):
    """The image-restoration pipeline of a task, loaded on first use (one load at a time)."""
    with _load_lock:
        return _pipeline(task.source)


# ----------------------------------------------------------------------------------------------
# degradations (ours, for the examples and the noise slider)


def bicubic_downscale(image: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) uint8 -> the image cropped to a multiple of `scale` and downscaled by it with antialiased bicubic
    (Keys a = -0.5, the kernel MATLAB's `imresize` uses), the usual way super-resolution inputs are made."""
    height, width = (image.shape[0] // scale) * scale, (image.shape[1] // scale) * scale
    picture = Image.fromarray(image[:height, :width])
    return np.asarray(picture.resize((width // scale, height // scale), Image.Resampling.BICUBIC))


def add_gaussian_noise(image: np.ndarray, sigma: float, seed: int = NOISE_SEED) -> np.ndarray:
    """(H, W, C) uint8 + white Gaussian noise of standard deviation `sigma` (0-255 scale), rounded and clipped to
    uint8 (what a noisy photo file holds). Seeded, so the same image and level give the same noise."""
    noise = np.random.default_rng(seed).normal(0.0, float(sigma), size=image.shape)
    return np.clip(np.rint(image.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def darken(image: np.ndarray, gain: float = 0.3, gamma: float = 1.8) -> np.ndarray:
    """(H, W, C) uint8 -> an under-exposed version: `gain * x ** gamma` on [0, 1] values (shadows sink the most)."""
    values = image.astype(np.float64) / 255.0
    return np.clip(np.rint(255.0 * gain * values**gamma), 0, 255).astype(np.uint8)


def _write_png(array: np.ndarray, path: Path) -> Path:
    """Write atomically (a temporary file and a rename), so a second process never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(handle)
    try:
        Image.fromarray(array).save(temporary, format="PNG")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def make_examples(folder: Path = EXAMPLES_DIR) -> list[list]:
    """Example inputs, made from scikit-image's bundled photographs: rows of (task, image path, noise level)."""
    from skimage import data  # these images are files inside the scikit-image wheel; nothing is downloaded

    astronaut, chelsea, coffee, rocket = data.astronaut(), data.chelsea(), data.coffee(), data.rocket()
    examples = [
        ("Super-resolution x2", "chelsea_lr_x2.png", bicubic_downscale(chelsea, 2), 0),
        ("Super-resolution x3", "rocket_lr_x3.png", bicubic_downscale(rocket, 3), 0),
        ("Super-resolution x4", "astronaut_lr_x4.png", bicubic_downscale(astronaut, 4), 0),
        # a clean image: the app adds the noise of the slider's level
        ("Color denoising", "astronaut_crop.png", astronaut[40:296, 128:384], DEFAULT_NOISE_LEVEL),
        ("Low-light enhancement", "coffee_dark.png", darken(bicubic_downscale(coffee, 2)), 0),
    ]
    rows = []
    for task, name, image, noise_level in examples:
        path = _write_png(np.ascontiguousarray(image), folder / name)  # always anew: cheap, never stale
        rows.append([task, str(path), noise_level])
    return rows


# ----------------------------------------------------------------------------------------------
# the restore endpoint


def max_input_pixels(task: Task) -> int:
    return MAX_OUTPUT_PIXELS // (task.scale * task.scale)


def restore(task_label: str, image: np.ndarray | None, noise_level: float = 0):
    """Restore `image` ((H, W, 3) uint8 RGB) for a task.

    Returns ((before, after), path of the result as PNG). For super-resolution `before` is the input upscaled with
    bicubic to the result's size; for denoising with `noise_level` > 0 it is the input with that much Gaussian noise
    added (the model's actual input); a `noise_level` of 0 restores the image as it is.
    """
    task = TASKS.get(task_label)
    if task is None:
        raise gr.Error(f"Unknown task {task_label!r}; choose one of: {', '.join(TASKS)}.")
    if image is None:
        raise gr.Error("Upload an image or pick an example first.")
    image = _as_rgb_uint8(image)
    height, width = image.shape[:2]
    limit = max_input_pixels(task)
    if height * width > limit:
        raise gr.Error(
            f"The image is {width} x {height} = {height * width:,} pixels; {task.label} takes at most {limit:,} "
            f"input pixels here (results up to {MAX_OUTPUT_PIXELS:,} pixels). Crop or downscale it first."
        )
    if task.denoising and noise_level and noise_level > 0:
        image = add_gaussian_noise(image, noise_level)
    pipe = get_pipeline(task)
    started = time.perf_counter()
    restored = pipe(Image.fromarray(image), tile_size="auto")
    compute = getattr(pipe, "compute", None)
    how = compute.describe() if compute is not None else str(pipe.model.dtype).removeprefix("torch.")
    gr.Info(f"{task.label}: {width} x {height} restored in {time.perf_counter() - started:.1f} s ({how})")
    before = Image.fromarray(image)
    if task.scale > 1:
        before = before.resize(restored.size, Image.Resampling.BICUBIC)
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    prune_outputs()
    path = Path(tempfile.mkdtemp(dir=OUTPUT_DIR)) / f"ramit_{task.slug}.png"
    restored.save(path, format="PNG")
    return (before, restored), str(path)


def prune_outputs(max_age_s: float = OUTPUT_MAX_AGE_S) -> None:
    """Remove result folders older than `max_age_s`, so that a long-running Space does not fill its disk."""
    cutoff = time.time() - max_age_s
    for folder in OUTPUT_DIR.iterdir() if OUTPUT_DIR.is_dir() else []:
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
        except OSError:
            pass  # another request removed it first


def checked_image_input(**kwargs) -> gr.Image:
    """A `gr.Image` whose uploads are checked before gradio decodes them, whatever form they come in (a file, or a
    `data:` URL as the API and the clipboard send): a file that is empty, not an image, truncated, or larger than the
    Space restores gets a message saying so instead of gradio's generic error. (The check wraps the instance's
    `preprocess`: a subclass would make gradio write a type-stub file beside this app.)"""
    component = gr.Image(**kwargs)
    decode = component.preprocess

    def preprocess(payload):
        if payload is not None:
            url = str(payload.url or "")
            if url.startswith("data:"):
                name = payload.orig_name or "image"
                _check_upload(_data_url_bytes(url, name), name)
            elif payload.path:
                _check_upload(Path(payload.path), payload.orig_name or Path(payload.path).name)
        return decode(payload)

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component


def _not_readable(name: str) -> gr.Error:
    return gr.Error(f"The upload {name} is not an image this Space can read; upload a PNG, JPEG or WebP file.")


def _data_url_bytes(url: str, name: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise _not_readable(name)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _not_readable(name) from None


def _check_upload(upload: Path | bytes, name: str) -> None:
    """The checks every upload goes through, a file or the bytes of a `data:` URL: not empty, an image, at most
    `MAX_OUTPUT_PIXELS` (from the header, before decoding), and complete (decoded once it is known to be small)."""
    try:
        size = len(upload) if isinstance(upload, bytes) else upload.stat().st_size
    except OSError:
        raise gr.Error(f"The upload {name} could not be read; try again.") from None
    if size == 0:
        raise gr.Error(f"The upload {name} is an empty file (0 bytes), not an image.")
    too_large = f"too large: this Space restores images of at most {MAX_OUTPUT_PIXELS:,} pixels; crop or downscale it"
    try:
        with Image.open(io.BytesIO(upload) if isinstance(upload, bytes) else upload) as image:  # the header only
            width, height = image.size
            if width * height > MAX_OUTPUT_PIXELS:
                raise gr.Error(f"The upload {name} is {too_large} ({width} x {height} = {width * height:,} pixels).")
            try:
                image.load()
            except Exception as error:
                raise gr.Error(
                    f"The upload {name} is a damaged or truncated image ({error}); upload the complete file."
                ) from None
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours: refused from the header
        raise gr.Error(f"The upload {name} is {too_large} (more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels).") from None
    except gr.Error:
        raise
    except Exception:
        raise _not_readable(name) from None


def _as_rgb_uint8(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise gr.Error(f"Expected an 8-bit image, got {array.dtype} pixels.")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise gr.Error(f"Expected an RGB image, got an array of shape {array.shape}.")
    return np.ascontiguousarray(array[..., :3])


def _noise_visibility(task_label: str):
    return gr.Slider(visible=TASKS[task_label].denoising)


# ----------------------------------------------------------------------------------------------
# the page

DESCRIPTION = """
# RAMiT image restoration

[RAMiT](https://arxiv.org/abs/2305.11474) (Reciprocal Attention Mixing Transformer, Choi et al., CVPR 2024
Workshops) is a lightweight (0.36M–0.82M parameters here) transformer for image restoration. Choose a task, upload an
image or pick an example, then press **Restore**; drag the slider to compare, and download the PNG.

For **color denoising**, the slider adds Gaussian noise of that level to a clean image (0: your image is already
noisy and is restored as it is). Results are limited to {max_pixels:,} pixels; larger inputs are refused, and inputs
above 512 x 512 are restored in tiles.
"""

FOOTER = """
Models: {models} (model code of ramit_hf {version}). The weights are the original authors'
([rami0205/RAMiT](https://github.com/rami0205/RAMiT)), converted to `transformers`. Example photographs ship with
scikit-image: astronaut Eileen Collins (NASA, public domain), Chelsea the cat (Stefan van der Walt, CC0), coffee cup
(Rachel Michetti, CC0), Falcon 9 launch (SpaceX, public domain); the low-quality versions are made by this app.
"""


def build_demo() -> gr.Blocks:
    examples = make_examples()
    with gr.Blocks(title="RAMiT image restoration", delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown(DESCRIPTION.format(max_pixels=MAX_OUTPUT_PIXELS))
        with gr.Row():
            with gr.Column():
                task = gr.Radio(list(TASKS), value=DEFAULT_TASK, label="Task")
                image = checked_image_input(
                    type="numpy", image_mode="RGB", sources=["upload", "clipboard"], label="Input image"
                )
                noise_level = gr.Slider(
                    0,
                    50,
                    value=DEFAULT_NOISE_LEVEL,
                    step=1,
                    visible=TASKS[DEFAULT_TASK].denoising,
                    label="Synthetic noise level σ (0-255 scale; 0 = the image is already noisy)",
                )
                run = gr.Button("Restore", variant="primary")
            with gr.Column():
                comparison = gr.ImageSlider(type="pil", format="png", label="Before / after", elem_id="comparison")
                download = gr.File(label="Restored image (PNG)", elem_id="download")
        gr.Examples(
            examples,
            inputs=[task, image, noise_level],
            label="Examples",
            example_labels=[f"{row[0]}: {Path(row[1]).stem}" for row in examples],
        )
        models = ", ".join(f"`{t.source}`" for t in TASKS.values())
        gr.Markdown(FOOTER.format(models=models, version=RAMIT_HF_VERSION))
        task.change(_noise_visibility, task, noise_level, api_visibility="private", queue=False)
        run.click(restore, [task, image, noise_level], [comparison, download], api_name="restore")
    return demo


demo = build_demo()

if __name__ == "__main__":
    # one restoration at a time: the model uses every core anyway
    demo.queue(default_concurrency_limit=1).launch(allowed_paths=[str(EXAMPLES_DIR)])
