"""`ModelLoadError`, raised by `ramit_hf.load_model` and the ONNX Runtime model for a source that is no RAMiT model.

It lives in a module of its own, importing nothing, so that `inference` and `export.onnxruntime` both import it from
here. This file ships to Hub folders with `inference.py` (transformers copies the files it imports relatively).
"""


class ModelLoadError(ValueError):
    """A model source that is not a RAMiT model; the message names the source and the problem."""


__all__ = ["ModelLoadError"]
