"""What an exported RAMiT ONNX graph and the code that runs it agree on: its input and output names, the `library`
mark and the `RamitConfig` stored in its `metadata_props`, and the install hint of the `onnx` extra.

`export.onnx` (which writes graphs) and `export.onnxruntime` (which runs them) both import these names from here;
this module imports nothing from the package but `configuration_ramit` and `errors`.
"""

from __future__ import annotations

import hashlib
import json

from ..configuration_ramit import RamitConfig
from ..errors import ModelLoadError

INPUT_NAME, OUTPUT_NAME = "pixel_values", "reconstruction"
# `metadata_props["library"]` of the graphs `export_onnx` writes; the ONNX Runtime model refuses files without it.
LIBRARY = "ramit_hf"
INSTALL_HINT = "pip install ramit-hf[onnx]"


# The SHA-256 of the whole file, recorded in its own metadata: computed with the value itself written as 64 zeros, so
# that the file holds it and a reader can recompute it from the bytes alone (no protobuf parsing, no onnx package).
DIGEST_KEY = "ramit_hf.sha256"
DIGEST_PLACEHOLDER = "0" * 64


def config_from_metadata(metadata: dict[str, str], source: str = "the graph") -> RamitConfig:
    """The `RamitConfig` stored in an exported graph's metadata (its `config` entry, the full config as JSON);
    `ModelLoadError` naming `source` when the entry is not a configuration."""
    try:
        data = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{source}: its ramit_hf metadata holds no readable configuration ({error})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(
            f"{source}: its ramit_hf metadata 'config' is a JSON {type(data).__name__}, not a configuration object"
        )
    try:
        return RamitConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise ModelLoadError(
            f"{source}: its ramit_hf metadata 'config' is not a valid configuration: {error}"
        ) from None


def _digest_marker() -> bytes:
    """How a metadata entry with key `DIGEST_KEY` and a 64-character value starts in the serialized ModelProto
    (StringStringEntryProto: field 1 the key, field 2 the value, both length-delimited)."""
    key = DIGEST_KEY.encode()
    return b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(DIGEST_PLACEHOLDER)])


def stamp_digest(data: bytes) -> bytes:
    """A serialized graph whose metadata holds `DIGEST_KEY` = `DIGEST_PLACEHOLDER`, with the digest filled in."""
    start = data.index(_digest_marker()) + len(_digest_marker())
    digest = hashlib.sha256(data).hexdigest().encode()
    return data[:start] + digest + data[start + len(digest) :]


def check_digest(data: bytes, source: str) -> bool:
    """Verify the digest `stamp_digest` recorded in a serialized graph; False where it has none (files written
    before digests, or by other tools), `ModelLoadError` naming `source` where the bytes changed since."""
    marker = _digest_marker()
    at = data.find(marker)
    if at < 0:
        return False
    start, end = at + len(marker), at + len(marker) + len(DIGEST_PLACEHOLDER)
    recorded = data[start:end]
    if hashlib.sha256(data[:start] + DIGEST_PLACEHOLDER.encode() + data[end:]).hexdigest().encode() != recorded:
        raise ModelLoadError(
            f"{source} changed since ramit_hf exported it (its SHA-256 differs from the one recorded in the file): "
            "it was damaged on disk or in transfer, or edited; export it again"
        )
    return True


__all__ = [
    "DIGEST_KEY",
    "INPUT_NAME",
    "INSTALL_HINT",
    "LIBRARY",
    "OUTPUT_NAME",
    "check_digest",
    "config_from_metadata",
    "stamp_digest",
]
