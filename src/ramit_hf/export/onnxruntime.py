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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelLoadError
from .metadata import INPUT_NAME, INSTALL_HINT, LIBRARY, config_from_metadata


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

    Raises `ModelLoadError` naming the file when it is no ONNX graph or has no `ramit_hf` metadata.
    """

    input_modalities = ("image",)

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None):
        self.name_or_path = str(path)
        try:
            self.session = create_session(path, providers)
        except runtime_errors() as error:
            raise ModelLoadError(f"{path} is not a valid ONNX file: {error}") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("library") != LIBRARY or "config" not in self.metadata:
            raise ModelLoadError(
                f"{path} is an ONNX file without ramit_hf metadata, so what it expects is unknown; export RAMiT "
                "models with `ramit export MODEL -o OUT.onnx`"
            )
        self.config = config_from_metadata(self.metadata)
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ModelLoadError(f"{path} has inputs {[i.name for i in inputs]}, not [{INPUT_NAME!r}]")
        self.dtype = torch.float16 if inputs[0].type == "tensor(float16)" else torch.float32
        self.device = torch.device("cpu")

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
