"""What an exported RAMiT ONNX graph and the code that runs it agree on: its input and output names, the `library`
mark and the `RamitConfig` stored in its `metadata_props`, and the install hint of the `onnx` extra.

`export.onnx` (which writes graphs) and `export.onnxruntime` (which runs them) both import these names from here;
this module imports nothing from the package but `configuration_ramit`.
"""

from __future__ import annotations

import json

from ..configuration_ramit import RamitConfig

INPUT_NAME, OUTPUT_NAME = "pixel_values", "reconstruction"
# `metadata_props["library"]` of the graphs `export_onnx` writes; the ONNX Runtime model refuses files without it.
LIBRARY = "ramit_hf"
INSTALL_HINT = "pip install ramit-hf[onnx]"


def config_from_metadata(metadata: dict[str, str]) -> RamitConfig:
    """The `RamitConfig` stored in an exported graph's metadata (its `config` entry, the full config as JSON)."""
    return RamitConfig.from_dict(json.loads(metadata["config"]))


__all__ = ["INPUT_NAME", "INSTALL_HINT", "LIBRARY", "OUTPUT_NAME", "config_from_metadata"]
