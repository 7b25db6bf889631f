"""ONNX export and the ONNX Runtime model: the exported graphs against the original implementation, float16 within its
stated tolerance, the metadata, and bad input (no file left behind)."""

import numpy as np
import pytest
import torch
from conftest import checkpoint, golden_case, golden_index, golden_model, shared_path

from ramit_hf import export_onnx
from ramit_hf.export import onnx as onnx_export
from ramit_hf.export.onnxruntime import OnnxRamitModel
from ramit_hf.image_io import load_image
from ramit_hf.inference import ModelLoadError, load_model, restore_tensor

# every variant (RAMiT, RAMiT-1, RAMiT-slimSR, RAMiT-slimLLE) and every kind of head and input (x3 and x4 upsampling,
# colour and gray denoising, deraining, low-light): the other golden cases give the same graphs with other weights,
# and the PyTorch path runs all twelve (tests/test_modeling_ramit.py)
GOLDEN_CASES = [
    "RAMiT-1_X3",
    "RAMiT-1_CDN",
    "RAMiT-slimSR_X4",
    "RAMiT-slimLLE_LLE",
    "RAMiT_GDN_randinit",
    "RAMiT_DR_randinit",
]
# the fused PyTorch path's tolerance to the original (tests/test_modeling_ramit.py)
TOLERANCE = 1e-4


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_cases_through_the_exported_graph(name, tmp_path):
    model = golden_model(name)
    result = export_onnx(model, tmp_path / "model.onnx")
    assert result.max_error <= TOLERANCE and result.verify_shape[-2:] == onnx_export.VERIFY_SIZE
    graph = load_model(result.path)
    assert isinstance(graph, OnnxRamitModel)
    case = golden_case(name)

    # the graph itself pads symmetrically (the paper's protocol), so apps that run it on an image get the protocol's
    # output; so does the library's restoration path, which pads first (the graph's padding is then a no-op)
    reference = case["output_protocol"]
    alone = graph(pixel_values=case["input"]).reconstruction
    assert alone.shape == reference.shape
    assert (alone - reference).abs().max() <= TOLERANCE
    protocol = restore_tensor(graph, case["input"])
    assert protocol.shape == reference.shape
    assert (protocol - reference).abs().max() <= TOLERANCE

    info = golden_index()[name]
    metadata = graph.metadata
    assert metadata["library"] == "ramit_hf" and metadata["variant"] == info["model_name"]
    assert metadata["scale"] == str(info["upscale"]) and metadata["channels"] == str(info["in_chans"])
    assert metadata["input_range"] == "[0, 1]" and metadata["padding_multiple"] == "32"
    assert metadata["task"] == model.config.task and metadata["dtype"] == "float32" and metadata["opset"] == "17"
    assert int(metadata["parameters"]) == info["params"] == graph.num_parameters()
    for field in ("variant", "task", "upscale", "num_channels", "depths", "embed_dim", "image_mean", "image_std"):
        assert getattr(graph.config, field) == getattr(model.config, field), field


@pytest.fixture(scope="module")
def x2_float16(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "x2-fp16.onnx"
    return export_onnx(checkpoint("RAMiT-1_X2.pth"), path, dtype="float16")


def test_float16_within_its_stated_tolerance(x2_float16):
    assert x2_float16.max_error <= onnx_export.TOLERANCE["float16"] == 2e-2
    graph = load_model(x2_float16.path)
    assert graph.dtype == torch.float16 and graph.metadata["dtype"] == "float16"
    case = golden_case("RAMiT-1_X2")
    restored = graph(pixel_values=case["input"]).reconstruction.float()
    assert (restored - case["output_protocol"]).abs().max() <= onnx_export.TOLERANCE["float16"]  # padded in the graph

    # a real image, through the restoration path: 8-bit outputs of float16 and float32 nearly identical
    pixels = load_image(str(shared_path("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png"))).pixels
    image = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    half = torch.round(restore_tensor(graph, image).clamp(0, 1) * 255)
    full = torch.round(restore_tensor(load_model(checkpoint("RAMiT-1_X2.pth")), image).clamp(0, 1) * 255)
    levels = (half - full).abs()
    assert levels.max() <= 2 and (levels > 0).float().mean() < 0.05


def test_float16_graph_refuses_float32(x2_float16):
    with pytest.raises(ValueError, match="float16 graph and cannot run in float32"):
        load_model(x2_float16.path, dtype="float32")


def test_wrong_channel_count_is_a_clear_error(x2_float16):
    graph = load_model(x2_float16.path)
    expected = r"takes pixel_values of shape \(batch, 3, height, width\), got \(1, 1, 32, 32\)"
    with pytest.raises(ValueError, match=expected):
        restore_tensor(graph, torch.rand(1, 1, 32, 32))


def test_not_a_ramit_model_writes_nothing(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError, match="is not a RAMiT model"):
        export_onnx(folder, tmp_path / "model.onnx")
    with pytest.raises(ModelLoadError, match="Linear is not a RAMiT model"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == [folder]


def test_existing_output_is_kept(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="already exists"):
        export_onnx(checkpoint("RAMiT-slimLLE_LLE.pth"), target)
    assert target.read_bytes() == b"keep"


def test_mismatch_after_export_is_loud_and_leaves_no_file(tmp_path, monkeypatch):
    # a tolerance no real export meets: the verification must refuse the graph and write nothing
    monkeypatch.setitem(onnx_export.TOLERANCE, "float32", 0.0)
    with pytest.raises(onnx_export.OnnxExportError, match=r"differs from PyTorch by .* at \(2, 3, 37, 53\)"):
        export_onnx(checkpoint("RAMiT-slimLLE_LLE.pth"), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_foreign_and_broken_onnx_files_are_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixel_values"], ["reconstruction"])],
        "identity",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, [1, 3, None, None])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), foreign)
    with pytest.raises(ModelLoadError, match="foreign.onnx is an ONNX file without ramit_hf metadata"):
        load_model(foreign)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="broken.onnx is not a valid ONNX file"):
        load_model(broken)
    with pytest.raises(ModelLoadError, match="model not found"):
        load_model(tmp_path / "missing.onnx")


def test_runtime_must_fit_the_source(tmp_path):
    with pytest.raises(ModelLoadError, match=r"runtime 'onnxruntime' needs an \.onnx file"):
        load_model(checkpoint("RAMiT-slimLLE_LLE.pth"), runtime="onnxruntime")
    with pytest.raises(ModelLoadError, match="runtime 'torch' needs a PyTorch model"):
        load_model(tmp_path / "model.onnx", runtime="torch")
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        load_model(tmp_path / "model.onnx", runtime="tensorrt")
