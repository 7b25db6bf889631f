"""A RAMiT ONNX graph on ONNX Runtime, standing in for the PyTorch model in the one restoration path.

`OnnxRamitModel` has what `inference.restore_tensor`, `tiling.restore_tiled` and the image-restoration pipeline ask
of a model: `config` (a `RamitConfig` rebuilt from the graph's metadata: `upscale`, `pad_multiple`, `num_channels`,
...), `device` and `dtype` (where and in which precision its inputs go), and a call
`model(pixel_values=tensor).reconstruction`. Symmetric padding, tiling, blending, image reading and writing therefore
stay in one place for both runtimes. `ramit_hf.load_model("model.onnx")` returns one.

Only files written by `ramit_hf.export_onnx` are accepted: their `metadata_props` say what the graph expects.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelLoadError
from .metadata import INPUT_NAME, INSTALL_HINT, LIBRARY, check_digest, config_from_metadata

# The probe every loaded graph runs once: small, and not a multiple of the padding (32) on either axis.
PROBE_SIZE = (24, 40)
# Larger files are no RAMiT graph (the largest is about 4 MB); protobuf cannot hold more than 2 GiB anyway.
MAX_GRAPH_BYTES = 256 << 20


def _stored_weights(data: bytes) -> int | None:
    """How many numbers a serialized graph stores (initializers and constants); None without the onnx package."""
    try:
        import onnx
    except ImportError:
        return None
    graph = onnx.load_from_string(data).graph
    tensors = [*graph.initializer]
    tensors += [a.t for node in graph.node if node.op_type == "Constant" for a in node.attribute if a.HasField("t")]
    return sum(int(np.prod(t.dims)) for t in tensors)


def _read_graph(path: Path) -> bytes:
    """The bytes of an .onnx file, refusing what is no regular file (a FIFO, /dev/zero) or far too large before
    reading it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelLoadError(f"model not found: {path}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelLoadError(f"{path} is not a regular file (a device, a pipe or a folder), so not an ONNX graph")
    if info.st_size > MAX_GRAPH_BYTES:
        raise ModelLoadError(
            f"{path} is {info.st_size:,} bytes, more than an ONNX graph of RAMiT holds ({MAX_GRAPH_BYTES:,} at most)"
        )
    return path.read_bytes()


def import_onnxruntime():
    """`onnxruntime`, or an ImportError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ModuleNotFoundError(
            f"ONNX Runtime is not installed; install it with `{INSTALL_HINT}` (or `pip install onnxruntime`)"
        ) from None
    return onnxruntime


def create_session(model: str | os.PathLike | bytes, providers: list[str] | None = None):
    """An `onnxruntime.InferenceSession` for a file or serialized graph; warnings (e.g. about float16 kernels the
    CPU lacks and replaces with float32 ones) are not printed."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers or ["CPUExecutionProvider"])


def runtime_errors() -> tuple[type[Exception], ...]:
    """The exceptions ONNX Runtime raises for bad files, graphs and inputs (they derive from Exception only)."""
    state = import_onnxruntime().capi.onnxruntime_pybind11_state
    return (state.Fail, state.InvalidProtobuf, state.InvalidGraph, state.NoSuchFile, state.InvalidArgument)


@dataclass
class OnnxOutput:
    """The output of `OnnxRamitModel`, named as the PyTorch model's (`ImageSuperResolutionOutput`)."""

    reconstruction: torch.Tensor


class OnnxRamitModel:
    """A RAMiT ONNX file (from `ramit_hf.export_onnx`) run by ONNX Runtime.

    Args:
        path: the `.onnx` file.
        providers: ONNX Runtime execution providers, in order of preference (default: the CPU one). Inputs and
            outputs are CPU tensors whatever the provider; ONNX Runtime moves them.

    Raises `ModelLoadError` naming the file when it is no ONNX graph, has no `ramit_hf` metadata, changed since it
    was exported (the digest `export_onnx` records), or computes something other than its metadata says (a probe
    image checks the scale, the channels and that the output is finite).
    """

    input_modalities = ("image",)

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None):
        self.name_or_path = str(path)
        data = _read_graph(Path(path))
        self.digest_verified = check_digest(data, self.name_or_path)
        try:
            self.session = create_session(data, providers)
        except runtime_errors() as error:
            raise ModelLoadError(f"{path} is not a valid ONNX file: {error}") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("library") != LIBRARY or "config" not in self.metadata:
            raise ModelLoadError(
                f"{path} is an ONNX file without ramit_hf metadata, so what it expects is unknown; export RAMiT "
                "models with `ramit export MODEL -o OUT.onnx`"
            )
        self.config = config_from_metadata(self.metadata, self.name_or_path)
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ModelLoadError(f"{path} has inputs {[i.name for i in inputs]}, not [{INPUT_NAME!r}]")
        self.dtype = torch.float16 if inputs[0].type == "tensor(float16)" else torch.float32
        self.device = torch.device("cpu")
        self._check_claims(data)

    def _check_claims(self, data: bytes) -> None:
        """What the metadata says (scale, channels, dtype) checked against what the graph computes, on a probe image
        of `PROBE_SIZE` that needs padding: a graph whose metadata was edited, or copied onto another graph, would
        otherwise restore images wrongly without a word."""
        config, metadata = self.config, self.metadata
        claims = {
            "scale": (metadata.get("scale"), str(config.upscale)),
            "channels": (metadata.get("channels"), str(config.num_channels)),
            "dtype": (metadata.get("dtype"), str(self.dtype).removeprefix("torch.")),
        }
        for name, (claimed, actual) in claims.items():
            if claimed is not None and claimed != actual:
                raise ModelLoadError(
                    f"{self.name_or_path}: its metadata says {name} {claimed}, but its configuration or graph says "
                    f"{actual}; the file's metadata was edited or does not belong to this graph"
                )
        parameters = int(metadata.get("parameters") or 0)
        stored = _stored_weights(data)
        # constant folding moves some weights (the position bias tables are stored gathered), so allow for it
        if parameters and stored is not None and not parameters / 2 <= stored <= 2 * parameters:
            raise ModelLoadError(
                f"{self.name_or_path} stores {stored:,} weights where its metadata describes a model of "
                f"{parameters:,} parameters: the metadata does not belong to this graph"
            )
        height, width = PROBE_SIZE
        probe = torch.rand(1, config.num_channels, height, width, generator=torch.Generator().manual_seed(0))
        try:
            output = self(pixel_values=probe).reconstruction
        except runtime_errors() as error:
            raise ModelLoadError(
                f"{self.name_or_path} does not run on a {config.num_channels}-channel image, as its metadata says it "
                f"takes: {error}"
            ) from None
        expected = (1, config.num_channels, height * config.upscale, width * config.upscale)
        if tuple(output.shape) != expected:
            raise ModelLoadError(
                f"{self.name_or_path}: its metadata describes a {config.task or 'RAMiT'} model (x{config.upscale}, "
                f"{config.num_channels} channels), but the graph turns a {width}x{height} probe into "
                f"{tuple(output.shape)}, not {expected}; the metadata does not belong to this graph"
            )
        if not bool(torch.isfinite(output).all()):
            raise ModelLoadError(
                f"{self.name_or_path} computes NaN or infinity on a probe image: its weights are broken"
            )

    def __call__(self, pixel_values: torch.Tensor) -> OnnxOutput:
        """(B, C, H, W) in [0, 1], any size -> `OnnxOutput` with the (B, C, H * s, W * s) reconstruction."""
        channels = self.config.num_channels
        if pixel_values.ndim != 4 or pixel_values.shape[1] != channels:
            raise ValueError(
                f"{Path(self.name_or_path).name} takes pixel_values of shape (batch, {channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        numpy_dtype = np.float16 if self.dtype == torch.float16 else np.float32
        array = np.ascontiguousarray(pixel_values.detach().cpu().numpy(), dtype=numpy_dtype)
        (output,) = self.session.run(None, {self.session.get_inputs()[0].name: array})
        return OnnxOutput(reconstruction=torch.from_numpy(output))

    # -- what the pipeline and the loaders ask of a model ------------------------------------------------------

    def eval(self) -> OnnxRamitModel:
        return self

    def to(self, *args, **kwargs) -> OnnxRamitModel:
        """Accepts only the CPU (inputs go to ONNX Runtime from there) and the graph's own dtype: an ONNX graph's
        precision is fixed when it is exported (`ramit export --dtype`)."""
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.dtype) and value != self.dtype:
                raise ValueError(
                    f"{self.name_or_path} is a {str(self.dtype).removeprefix('torch.')} graph and cannot run in "
                    f"{str(value).removeprefix('torch.')}; its precision is chosen at export (ramit export --dtype)"
                )
            if isinstance(value, (str, torch.device)) and torch.device(value).type != "cpu":
                raise ValueError(
                    f"an ONNX Runtime model takes its inputs on the CPU, not {value}; choose where it runs with "
                    "its execution providers (OnnxRamitModel(path, providers=[...]))"
                )
        return self

    def num_parameters(self) -> int:
        return int(self.metadata.get("parameters", 0))

    def can_generate(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"OnnxRamitModel({self.name_or_path!r}, providers={self.session.get_providers()})"


__all__ = ["INSTALL_HINT", "OnnxOutput", "OnnxRamitModel", "create_session", "import_onnxruntime", "runtime_errors"]
