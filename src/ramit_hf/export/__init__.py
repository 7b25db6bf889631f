"""Deployment formats: ONNX export (`export_onnx`, `ramit export`) and the ONNX Runtime model (`OnnxRamitModel`).

Needs the `onnx` extra (`pip install ramit-hf[onnx]`: `onnx` and `onnxruntime`), imported only when used.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "export_onnx": "onnx",
    "OnnxExport": "onnx",
    "OnnxExportError": "onnx",
    "DEFAULT_OPSET": "onnx",
    "read_metadata": "onnx",
    "OnnxRamitModel": "onnxruntime",
    "onnx_card_section": "hub",
    "write_onnx_files": "hub",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
