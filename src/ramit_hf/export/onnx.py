"""Export a RAMiT model to ONNX: one graph for any batch, height and width, checked and verified before it is written.

The graph is the fused computation of `RamitForImageRestoration` traced with the TorchScript exporter
(`torch.onnx.export(..., dynamo=False)`) at `TRACE_SIZE`, with dynamic batch, height and width. RAMiT's shifted
windows wrap around with `torch.roll` and need no attention mask, so nothing in the graph depends on the image size;
the zero padding to the model's multiple (and the crop back) happen inside the graph, as in the PyTorch model.
`ramit_hf.inference.restore_tensor` adds the paper's symmetric padding before it, as it does for PyTorch.

After the export the graph goes through `onnx.checker` and through ONNX Runtime on an image of another size than the
traced one (`VERIFY_SIZE`, batch 2), compared with PyTorch; a mismatch raises `OnnxExportError` and writes nothing.
The file is written atomically and carries `metadata_props` (see `build_metadata`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..atomic import write_bytes_atomic
from ..configuration_ramit import preset_name
from ..forward import restore_padded
from ..inference import load_model
from ..modeling_ramit import RamitForImageRestoration
from .metadata import (
    DIGEST_KEY,
    DIGEST_PLACEHOLDER,
    INPUT_NAME,
    INSTALL_HINT,
    LIBRARY,
    OUTPUT_NAME,
    config_from_metadata,
    stamp_digest,
)
from .onnxruntime import create_session, import_onnxruntime, runtime_errors

# Opset 17 has LayerNormalization as one operator and is read by ONNX Runtime >= 1.13, TensorRT >= 8.6 and OpenVINO.
DEFAULT_OPSET = 17
# scaled_dot_product_attention and padding by sizes computed in the graph need opset 14 (measured: 7 to 13 fail)
MIN_OPSET = 14
# Traced at a multiple of the padding multiple and verified at a size that needs padding on both axes.
TRACE_SIZE = (64, 64)
VERIFY_SIZE = (37, 53)
# Largest absolute difference to float32 PyTorch a verified export may have, per dtype. float32: the fused path's
# own tolerance to the original (tests/test_modeling_ramit.py); float16: measured by scripts/benchmark_onnx.py
# --float16 (docs/deployment.md), with a margin.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}


class OnnxExportError(RuntimeError):
    """The export failed or its graph does not compute what the PyTorch model computes; no file was written."""


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote and how it was checked."""

    path: Path
    opset: int
    dtype: str
    max_error: float
    tolerance: float
    verify_shape: tuple[int, int, int, int]
    metadata: dict[str, str]


class _Reconstruction(torch.nn.Module):
    """What the exporter traces: the test-time protocol of `forward.restore_padded` (symmetric padding, forward,
    crop) as a function of one tensor, so that apps running the graph on an image get the pixels `ramit restore`
    writes (the model alone would zero-pad)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return restore_padded(self.model, pixel_values)


def build_metadata(config, dtype: str, opset: int) -> dict[str, str]:
    """The `metadata_props` of an exported graph: what a runtime needs to feed it and read its output.

    `library` marks the file as ours (`ramit_hf.export.onnxruntime` refuses files without it); `config` is the full
    `RamitConfig` as JSON, from which the runtime wrapper rebuilds the model's config (`config_from_metadata`).
    """
    return {
        "library": LIBRARY,
        "library_version": __version__,
        "variant": str(config.variant or ""),
        "task": str(config.task or ""),
        "preset": _preset(config),
        "scale": str(config.upscale),
        "channels": str(config.num_channels),
        "input_range": "[0, 1]",
        "input_layout": "NCHW",
        "padding_multiple": str(config.pad_multiple),
        "padding": "symmetric (numpy's mode), bottom and right, inside the graph; the output is cropped to "
        "(H * scale, W * scale)",
        "dtype": dtype,
        "opset": str(opset),
        "parameters": str(_parameter_count(config)),
        "config": config.to_json_string(use_diff=False),
        DIGEST_KEY: DIGEST_PLACEHOLDER,  # filled in by `stamp_digest` once the file's bytes are final
    }


def _preset(config) -> str:
    try:
        return preset_name(config.variant, config.task)
    except (ValueError, KeyError, TypeError):  # a setting the authors never released
        return ""


def _parameter_count(config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in RamitForImageRestoration(config).parameters())


def export_onnx(
    model,
    path: str | os.PathLike,
    dtype: str = "float32",
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    task: str | None = None,
) -> OnnxExport:
    """Export `model` (anything `ramit_hf.load_model` takes) to the ONNX file `path`, verified, written atomically.

    Args:
        dtype: `"float32"` or `"float16"` (weights, inputs and outputs in float16; see `TOLERANCE`).
        opset: the ONNX opset (default `DEFAULT_OPSET`).
        overwrite: replace an existing file.
        task: only for an original checkpoint whose name and weights do not tell its task.

    Raises `ModelLoadError` / `CheckpointError` for a source that is not a RAMiT model, `FileExistsError` for an
    existing `path` without `overwrite` (both before any work), and `OnnxExportError` when the export fails or its
    output differs from PyTorch's by more than the tolerance.
    """
    import_onnx(), import_onnxruntime()  # both needed: fail before any work
    if dtype not in TOLERANCE:
        raise ValueError(f"unknown ONNX dtype {dtype!r}; choose one of {', '.join(TOLERANCE)}")
    newest = import_onnx().defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"opset {opset} cannot hold RAMiT's graph: choose one from {MIN_OPSET} (scaled_dot_product_attention "
            f"and computed padding) to {newest} (the newest this onnx package knows); default {DEFAULT_OPSET}"
        )
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True / --overwrite to replace it)")
    source = load_model(model, task=task)
    if not isinstance(source, torch.nn.Module):
        raise ValueError(f"{model} is already an ONNX graph; export a PyTorch model (folder, Hub id or .pth)")
    reference = copy.deepcopy(source).to("cpu", torch.float32).eval()
    # traced from the fused computation: a fixed graph for any size (the banded one's pieces and gathers would freeze
    # the traced size into the graph)
    reference.set_computation("fused")
    data = _export_bytes(reference, dtype, opset)
    proto = _with_metadata(data, build_metadata(reference.config, dtype, opset))
    data = proto.SerializeToString()
    max_error, shape = verify_onnx(data, reference, dtype)
    data = stamp_digest(data)
    write_bytes_atomic(path, data, overwrite=overwrite)
    metadata = {prop.key: prop.value for prop in import_onnx().load_from_string(data).metadata_props}
    return OnnxExport(path, opset, dtype, max_error, TOLERANCE[dtype], shape, metadata)


def _export_bytes(model: torch.nn.Module, dtype: str, opset: int) -> bytes:
    traced = _Reconstruction(copy.deepcopy(model).to(getattr(torch, dtype))).eval()
    example = torch.rand(1, model.config.num_channels, *TRACE_SIZE, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    try:
        # the exporter's C++ side writes the whole TorchScript graph (megabytes) to the error stream on failure
        with warnings.catch_warnings(), torch.no_grad(), _quiet_error_stream():
            # the legacy exporter warns that it is legacy, and the tracer about the (static) channel check
            warnings.simplefilter("ignore")
            torch.onnx.export(
                traced,
                (example.to(getattr(torch, dtype)),),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "output_height", 3: "output_width"},
                },
            )
    except Exception as error:  # the exporter raises many kinds (unsupported opset, operators, ...)
        # the first line says what failed; the rest is the exporter's dump of graph nodes
        reason = (str(error).strip().splitlines() or [""])[0][:300]
        raise OnnxExportError(f"the ONNX export failed at opset {opset}: {type(error).__name__}: {reason}") from None
    return buffer.getvalue()


@contextlib.contextmanager
def _quiet_error_stream():
    """Send what C++ code writes to file descriptor 2 to a temporary file for the duration, so that an error
    message is all a failed export prints."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_onnx():
    """`onnx`, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ModuleNotFoundError(f"the onnx package is not installed; install it with `{INSTALL_HINT}`") from None
    return onnx


def _with_metadata(data: bytes, metadata: dict[str, str]):
    onnx = import_onnx()

    proto = onnx.load_from_string(data)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    # the channels are fixed whatever the size: say so in the graph's signature, where apps (chaiNNer) read them;
    # the crop would otherwise leave the output's channel dimension symbolic
    for value in (proto.graph.input[0], proto.graph.output[0]):
        channels = value.type.tensor_type.shape.dim[1]
        channels.Clear()
        channels.dim_value = int(metadata["channels"])
    proto.producer_name = LIBRARY
    proto.producer_version = metadata["library_version"]
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise OnnxExportError(f"the exported graph does not pass onnx.checker: {error}") from None
    return proto


def verify_onnx(data: bytes, model: torch.nn.Module, dtype: str) -> tuple[float, tuple[int, int, int, int]]:
    """Run the graph `data` on ONNX Runtime (CPU) and `model` in float32 on the same images of `VERIFY_SIZE`
    (batch 2, another size than the traced one); (max abs difference, input shape). `OnnxExportError` when the
    difference exceeds `TOLERANCE[dtype]` or is not finite."""
    shape = (2, model.config.num_channels, *VERIFY_SIZE)
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = restore_padded(model, images).numpy()
    try:
        session = create_session(data, ["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy().astype(dtype)})[0].astype(np.float32)
    except runtime_errors() as error:
        raise OnnxExportError(f"ONNX Runtime cannot run the exported graph: {error}") from None
    if got.shape != expected.shape:
        raise OnnxExportError(f"the ONNX graph returned shape {got.shape} for {shape}, PyTorch {expected.shape}")
    difference = float(np.abs(got - expected).max())
    if not difference <= TOLERANCE[dtype]:  # also catches NaN
        raise OnnxExportError(
            f"the ONNX graph ({dtype}) differs from PyTorch by {difference:.3g} at {shape} (tolerance "
            f"{TOLERANCE[dtype]:g}); no file was written"
        )
    return difference, shape


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `metadata_props` of an ONNX file (without loading its weights)."""
    onnx = import_onnx()

    proto = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}


__all__ = [
    "DEFAULT_OPSET",
    "TOLERANCE",
    "OnnxExport",
    "OnnxExportError",
    "build_metadata",
    "config_from_metadata",
    "export_onnx",
    "read_metadata",
    "verify_onnx",
]
