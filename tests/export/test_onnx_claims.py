"""What an ONNX file says about itself is checked against what it computes, and damage after export is detected:
edited metadata, metadata copied onto another graph, flipped bytes, metadata that is no configuration."""

import json

import onnx
import pytest
import torch
from conftest import small_config
from onnx import TensorProto, helper

from ramit_hf import RamitForImageRestoration, export_onnx
from ramit_hf.export.metadata import DIGEST_KEY
from ramit_hf.inference import ModelLoadError, load_model


@pytest.fixture(scope="module")
def x2_graph(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "x2.onnx"
    export_onnx(RamitForImageRestoration(small_config()).eval(), path)
    return path


def _rewrite(source, target, keep_digest: bool, **changes):
    """A copy of an exported graph with its metadata (and the config inside it) edited."""
    proto = onnx.load(str(source))
    metadata = {p.key: p.value for p in proto.metadata_props}
    config = json.loads(metadata["config"])
    for key, value in changes.items():
        if key in config:
            config[key] = value
        metadata[{"upscale": "scale", "num_channels": "channels"}.get(key, key)] = str(value)
    metadata["config"] = json.dumps(config)
    if not keep_digest:
        metadata.pop(DIGEST_KEY)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(target))
    return target


def test_an_exported_graph_records_and_verifies_its_digest(x2_graph):
    model = load_model(x2_graph)
    assert model.digest_verified and len(model.metadata[DIGEST_KEY]) == 64


@pytest.mark.parametrize("offset", [0.25, 0.5, 0.9])
def test_flipped_bytes_anywhere_in_the_graph_are_named(x2_graph, tmp_path, offset):
    data = bytearray(x2_graph.read_bytes())
    start = int(len(data) * offset)
    data[start : start + 64] = bytes(255 - b for b in data[start : start + 64])
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"damaged.onnx (changed since ramit_hf exported it|is not a valid)"):
        load_model(damaged)


def test_edited_metadata_breaks_the_digest(x2_graph, tmp_path):
    edited = _rewrite(x2_graph, tmp_path / "relabelled.onnx", keep_digest=True, upscale=4, task="sr-x4")
    with pytest.raises(ModelLoadError, match="relabelled.onnx changed since ramit_hf exported it"):
        load_model(edited)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            dict(upscale=1, task="color-dn"),
            r"x1, 3 channels\), but the graph turns a 40x24 probe into \(1, 3, 48, 80\)",
        ),
        (dict(upscale=4, task="sr-x4"), r"x4, 3 channels\), but the graph turns a 40x24 probe into \(1, 3, 48, 80\)"),
        (
            dict(num_channels=1, task="gray-dn", upscale=1, image_mean=[0.5], image_std=[1.0]),
            "does not run on a 1-channel image",
        ),
    ],
)
def test_metadata_that_does_not_describe_the_graph_is_refused_before_any_image(x2_graph, tmp_path, changes, message):
    # without a digest (files written before digests, or by hand), the probe run catches what the metadata claims
    edited = _rewrite(x2_graph, tmp_path / "claims.onnx", keep_digest=False, **changes)
    with pytest.raises(ModelLoadError, match="claims.onnx.*" + message):
        load_model(edited)


def test_a_dtype_claim_is_checked_against_the_graph(x2_graph, tmp_path):
    edited = _rewrite(x2_graph, tmp_path / "dtype.onnx", keep_digest=False, dtype="float16")
    with pytest.raises(ModelLoadError, match="its metadata says dtype float16, but .* says float32"):
        load_model(edited)


def test_another_graph_with_copied_metadata_is_refused(x2_graph, tmp_path):
    # an x2 resize: the probe's shape fits, but it stores none of the weights the metadata describes
    metadata = {p.key: p.value for p in onnx.load(str(x2_graph)).metadata_props}
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])
    graph = helper.make_graph(
        [helper.make_node("Resize", ["pixel_values", "", "scales"], ["reconstruction"], mode="cubic")],
        "bicubic",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [None, 3, None, None])],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, [None, 3, None, None])],
        initializer=[scales],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for copied in (metadata, {k: v for k, v in metadata.items() if k != DIGEST_KEY}):
        del proto.metadata_props[:]
        for key, value in copied.items():
            proto.metadata_props.add(key=key, value=value)
        path = tmp_path / "bicubic.onnx"
        onnx.save(proto, str(path))
        with pytest.raises(ModelLoadError, match=r"bicubic.onnx (changed since|stores 4 weights where)"):
            load_model(path)


@pytest.mark.parametrize("config", ["{not json", "[1, 2]", '{"upscale": 7}'])
def test_metadata_that_is_no_configuration_is_named(x2_graph, tmp_path, config):
    proto = onnx.load(str(x2_graph))
    metadata = {p.key: p.value for p in proto.metadata_props if p.key != DIGEST_KEY}
    del proto.metadata_props[:]
    for key, value in dict(metadata, config=config).items():
        proto.metadata_props.add(key=key, value=value)
    path = tmp_path / "config.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelLoadError, match=r"config.onnx: its ramit_hf metadata"):
        load_model(path)


def test_what_is_no_regular_file_is_refused_before_reading(tmp_path):
    import os

    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ModelLoadError, match="pipe.onnx is not a regular file"):
        load_model(fifo)
