"""ONNX files in a Hub model folder (`ramit push --onnx`) and the model card's section on running them.

The card's snippet needs only numpy, Pillow, onnxruntime and huggingface_hub (for the download): no torch, no
transformers, no ramit_hf. The tests extract it from the rendered card and run it as written.
"""

from __future__ import annotations

import os
from pathlib import Path

ONNX_FOLDER = "onnx"
# dtype -> file name inside ONNX_FOLDER; float16 is offered within its measured tolerance (docs/deployment.md)
ONNX_FILES = {"float32": "model.onnx", "float16": "model_fp16.onnx"}


def write_onnx_files(model, folder: str | os.PathLike, dtypes: tuple[str, ...] = ("float32", "float16")) -> list:
    """Export `model` into `folder/onnx/` (`model.onnx`, `model_fp16.onnx`), each verified; the `OnnxExport`s."""
    from .onnx import export_onnx

    target = Path(folder) / ONNX_FOLDER
    return [export_onnx(model, target / ONNX_FILES[dtype], dtype=dtype) for dtype in dtypes]


def onnx_snippet(repo_id: str, example_file: str, num_channels: int) -> str:
    """Python that restores `example_file` with the repository's `onnx/model.onnx` on ONNX Runtime (CPU), with the
    paper's symmetric padding, as `ramit restore` does (the graph's own zero padding alone restores the right and
    bottom borders worse)."""
    color = num_channels == 3
    mode = "RGB" if color else "L"
    pads = "((0, -height % 32), (0, -width % 32), (0, 0))" if color else "((0, -height % 32), (0, -width % 32))"
    layout = "padded.transpose(2, 0, 1)[None]" if color else "padded[None, None]"
    to_image = "restored.transpose(1, 2, 0)" if color else "restored[0]"
    return "\n".join(
        [
            "import numpy as np",
            "import onnxruntime as ort",
            "from huggingface_hub import hf_hub_download",
            "from PIL import Image",
            "",
            f'path = hf_hub_download("{repo_id}", "{ONNX_FOLDER}/{ONNX_FILES["float32"]}")',
            'session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])',
            f'image = np.asarray(Image.open("{example_file}").convert("{mode}"), dtype=np.float32) / 255  # [0, 1]',
            "height, width = image.shape[:2]",
            f'padded = np.pad(image, {pads}, mode="symmetric")  # the paper\'s padding',
            f'restored = session.run(None, {{"pixel_values": {layout}}})[0][0]  # (C, padded H * s, padded W * s)',
            "scale = restored.shape[1] // padded.shape[0]",
            "restored = restored[:, : height * scale, : width * scale]",
            f"restored = np.round(np.clip({to_image}, 0, 1) * 255).astype(np.uint8)",
            'Image.fromarray(restored).save("restored.png")',
        ]
    )


def onnx_card_section(repo_id: str, example_file: str, num_channels: int, float16: bool = True) -> str:
    """The model card's Markdown on the ONNX files: what they are and how to run them without PyTorch."""
    half = (
        f" `{ONNX_FOLDER}/{ONNX_FILES['float16']}` is the same graph in float16 (inputs and outputs float16 too), "
        "for GPUs; it stays within 2e-2 of float32 (measured in ramit_hf's docs/deployment.md)."
        if float16
        else ""
    )
    return "\n".join(
        [
            "### ONNX",
            "",
            f"`{ONNX_FOLDER}/{ONNX_FILES['float32']}` is this model as an ONNX graph (opset 17) for ONNX Runtime, "
            "OpenVINO, TensorRT and other runtimes: batch, height and width are dynamic, the input is "
            "`pixel_values` (N, C, H, W) float32 in [0, 1], the output `reconstruction` (N, C, H x scale, W x scale), "
            "and the graph pads to a multiple of 32 inside (zeros, bottom and right) and crops back. The file's "
            "metadata names the variant, task, scale, channels and input range." + half,
            "",
            "With ONNX Runtime alone (no PyTorch, no transformers):",
            "",
            "```python",
            onnx_snippet(repo_id, example_file, num_channels),
            "```",
            "",
            "The snippet pads symmetrically (numpy 'symmetric') to a multiple of 32 first, as the paper's numbers do; "
            "`ramit restore --runtime onnxruntime --model model.onnx` (from `ramit_hf`) does the same and also tiles "
            "large images.",
        ]
    )


__all__ = ["ONNX_FILES", "ONNX_FOLDER", "onnx_card_section", "onnx_snippet", "write_onnx_files"]
