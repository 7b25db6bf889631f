"""Inputs in the forms users give them: encoded images in memory, another model's folder, upper-case extensions.
Each gets what its lower-case or on-disk twin gets, or a message naming it."""

import io
import shutil

import numpy as np
import pytest
import torch
from conftest import checkpoint, shared_path, small_config
from hostile_files import truncate
from PIL import Image
from transformers import pipeline

from ramit_hf import RamitConfig, RamitForImageRestoration
from ramit_hf.convert import save_model_folder
from ramit_hf.inference import ModelLoadError, load_model
from ramit_hf.safe_files import DamagedFileError, check_weight_files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    return save_model_folder(RamitForImageRestoration(small_config()), tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.open(shared_path("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png")).crop((0, 0, 40, 32)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def test_encoded_images_in_memory_are_read_as_pillow_reads_them(tiny, png_bytes, tmp_path):
    pipe = pipeline("image-restoration", model=str(tiny))
    (tmp_path / "bird.png").write_bytes(png_bytes)
    expected = np.asarray(pipe(str(tmp_path / "bird.png")))
    with open(tmp_path / "bird.png", "rb") as opened:
        forms = [png_bytes, bytearray(png_bytes), memoryview(png_bytes), io.BytesIO(png_bytes), opened]
        for form in forms:
            out = pipe(form)
            assert isinstance(out, Image.Image) and np.array_equal(np.asarray(out), expected), type(form)
    assert len(pipe([png_bytes, io.BytesIO(png_bytes)])) == 2
    with pytest.raises(ValueError, match=r"bytes of [\d,]+ bytes: corrupt or truncated image"):
        pipe(png_bytes[: len(png_bytes) // 2])
    with pytest.raises(ValueError, match=r"BytesIO: not an image file"):
        pipe(io.BytesIO(b"no pixels here"))


def test_another_models_folder_is_named_with_its_model_type(tmp_path):
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    config = Swin2SRConfig(embed_dim=8, depths=[1], num_heads=[1], window_size=4, image_size=16, upscale=2)
    Swin2SRForImageSuperResolution(config).save_pretrained(tmp_path / "swin")
    message = rf"{tmp_path / 'swin'} is not a RAMiT model: its config.json has model_type 'swin2sr', not 'ramit'"
    with pytest.raises(ValueError, match=message):
        RamitForImageRestoration.from_pretrained(tmp_path / "swin")
    with pytest.raises(ValueError, match=message):
        RamitConfig.from_pretrained(tmp_path / "swin")
    with pytest.raises(ModelLoadError, match=r"swin is not a RAMiT model \(its config.json has model_type 'swin2sr'\)"):
        load_model(tmp_path / "swin")


def test_upper_case_extensions_are_recognised_as_lower_case_ones(tmp_path, tiny):
    shutil.copy(checkpoint("RAMiT-slimSR_X2.pth"), tmp_path / "RAMIT-SLIMSR_X2.PTH")
    assert load_model(tmp_path / "RAMIT-SLIMSR_X2.PTH").config.upscale == 2
    (tmp_path / "BROKEN.ONNX").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match=r"BROKEN.ONNX is not a valid ONNX file"):
        load_model(tmp_path / "BROKEN.ONNX")
    with pytest.raises(ModelLoadError, match=r"model not found: .*MISSING.ONNX"):
        load_model(tmp_path / "MISSING.ONNX")
    folder = tmp_path / "upper"
    shutil.copytree(tiny, folder)
    (folder / "model.safetensors").rename(folder / "MODEL.SAFETENSORS")
    truncate(folder / "MODEL.SAFETENSORS")
    with pytest.raises(DamagedFileError, match=r"MODEL.SAFETENSORS: truncated safetensors file"):
        check_weight_files(folder)
