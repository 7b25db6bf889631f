"""RAMiT as the apps run it, with the same pixels as `ramit restore`.

ComfyUI ("Load Upscale Model" and "Upscale Image (using Model)"): spandrel's loader, a model patcher that moves the
model and assigns `model.device`, the descriptor's casts, tiles of 512 with overlap 32 (one tile for the images
here), the output clamped and saved as 8 bits by truncation. chaiNNer's ONNX nodes: the graph's shapes probed by
ONNX shape inference at fixed input sizes (16, 64, 256, 512) to learn a size requirement and the scale, reflect
padding to that requirement, then ONNX Runtime on the whole image (smaller than its 256 tiles). The apps' code needs
their servers and user interfaces, so these steps are written here from their behaviour.
"""

import importlib

import numpy as np
import onnx
import pytest
import torch
from conftest import checkpoint, shared_path
from onnx.tools.update_model_dims import update_inputs_outputs_dims
from PIL import Image
from spandrel_env import import_spandrel

from ramit_hf import export_onnx
from ramit_hf.cli import main
from ramit_hf.export.onnxruntime import create_session

spandrel = import_spandrel()
# the app's registry with RAMiT added, as the custom node does to spandrel's main one (kept apart here, so that other
# tests still see spandrel as `import ramit_hf` leaves it)
REGISTRY = spandrel.ArchRegistry()
REGISTRY.add(*spandrel.MAIN_REGISTRY)
importlib.import_module("ramit_hf.spandrel").install(registry=REGISTRY)

# x2, x4 and a colour denoiser, on a crop whose sides are no multiple of 32 (and one smaller than 32)
CASES = [("RAMiT-1_X2.pth", (75, 50)), ("RAMiT-1_X4.pth", (45, 38)), ("RAMiT-1_CDN.pth", (61, 20))]


class ComfyModelPatcher:
    """What ComfyUI's model management does with an upscale model: move it, then record where it is by
    assigning `model.device`."""

    def __init__(self, model: torch.nn.Module, load_device: torch.device, offload_device: torch.device):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device

    def load(self) -> None:
        self.model.to(self.load_device)
        self.model.device = self.load_device

    def offload(self) -> None:
        self.model.to(self.offload_device)
        self.model.device = self.offload_device


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crops")
    baboon = Image.open(shared_path("testsets", "Set14", "HR", "baboon.png")).convert("RGB")
    paths = {}
    for name, (width, height) in CASES:
        paths[name] = folder / f"{name}-{width}x{height}.png"
        baboon.crop((100, 80, 100 + width, 80 + height)).save(paths[name])
    return paths


def _restore_cli(name: str, image, tmp_path) -> np.ndarray:
    out = tmp_path / "cli"
    assert main(["restore", str(image), "-o", str(out), "--model", str(checkpoint(name)), "--dtype", "float32"]) == 0
    return np.asarray(Image.open(out / image.name)).astype(np.int32)


def _comfyui(name: str, image) -> np.ndarray:
    descriptor = spandrel.ModelLoader(registry=REGISTRY).load_from_file(checkpoint(name)).eval()
    ComfyModelPatcher(descriptor.model, torch.device("cpu"), torch.device("cpu")).load()
    descriptor.to(torch.device("cpu"))
    pixels = torch.from_numpy(np.asarray(Image.open(image), dtype=np.float32) / 255)[None]  # (B, H, W, C)
    assert max(pixels.shape[1:3]) <= 512  # one tile of ComfyUI's 512
    with torch.no_grad():
        out = descriptor(pixels.movedim(-1, -3).float())
    out = torch.clamp(out.movedim(-3, -1), 0, 1)[0].numpy()
    return np.clip(255.0 * out, 0, 255).astype(np.uint8).astype(np.int32)  # ComfyUI's SaveImage truncates


def _chainner_probe(model: onnx.ModelProto) -> tuple[int | None, int | None, int | None]:
    """(input channels, output channels, scale) as chaiNNer's ONNX loader learns them."""
    dims = [
        [d.dim_value or None for d in v.type.tensor_type.shape.dim]
        for v in (model.graph.input[0], model.graph.output[0])
    ]
    inputs, outputs = dims
    for size in (16, 64, 256, 512):
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        named = [d.dim_value or d.dim_param for d in probe.graph.output[0].type.tensor_type.shape.dim]
        update_inputs_outputs_dims(
            probe, {probe.graph.input[0].name: [1, inputs[1], size, size]}, {probe.graph.output[0].name: named}
        )
        try:
            inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=True).graph.output[0]
        except Exception:
            continue
        height = inferred.type.tensor_type.shape.dim[2].dim_value
        if height and height % size == 0:
            return inputs[1], outputs[1], height // size
    return inputs[1], outputs[1], None


def _chainner(graph, image) -> np.ndarray:
    model = onnx.load(str(graph))
    in_channels, out_channels, scale = _chainner_probe(model)
    # chaiNNer shows 3 channels in and out; it learns no scale (no fixed size requirement, so it pads nothing)
    assert (in_channels, out_channels, scale) == (3, 3, None)
    pixels = np.asarray(Image.open(image), dtype=np.float32) / 255
    session = create_session(model.SerializeToString())
    (out,) = session.run(None, {session.get_inputs()[0].name: pixels.transpose(2, 0, 1)[None]})
    return np.round(np.clip(out[0].transpose(1, 2, 0), 0, 1) * 255).astype(np.int32)


@pytest.mark.parametrize("name", [name for name, _ in CASES])
def test_comfyui_and_chainner_give_the_pixels_of_ramit_restore(name, crops, tmp_path):
    image = crops[name]
    expected = _restore_cli(name, image, tmp_path)
    comfy = _comfyui(name, image)
    graph = export_onnx(checkpoint(name), tmp_path / "model.onnx").path
    chainner = _chainner(graph, image)
    assert comfy.shape == chainner.shape == expected.shape
    # within one 8-bit level everywhere, the bottom and right borders included (they were off by up to 108)
    assert np.abs(comfy - expected).max() <= 1
    assert np.abs(chainner - expected).max() <= 1


def test_current_comfyui_model_management_moves_and_casts_the_descriptor():
    descriptor = spandrel.ModelLoader(registry=REGISTRY).load_from_file(checkpoint("RAMiT-slimSR_X2.pth")).eval()
    patcher = ComfyModelPatcher(descriptor.model, torch.device("cpu"), torch.device("cpu"))
    patcher.load()  # transformers' read-only `device` made this an AttributeError
    patcher.offload()
    descriptor.model.device = "cpu"
    assert descriptor.model.device == descriptor.device == torch.device("cpu")
    x = torch.rand(1, 3, 30, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = descriptor(x)
        for cast, dtype, bound in ((descriptor.half, torch.float16, 5e-3), (descriptor.bfloat16, torch.bfloat16, 2e-2)):
            cast()
            assert descriptor.dtype == dtype
            out = descriptor(x.to(dtype)).float()
            assert ((out - reference).norm() / reference.norm()).item() < bound
        descriptor.float()
        assert descriptor.dtype == torch.float32 and descriptor(x).dtype == torch.float32
