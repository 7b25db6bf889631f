"""`ramit export`: write a RAMiT model as an ONNX graph (any batch and image size), verified against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..configuration_ramit import TASKS
from .common import fail, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX (for ONNX Runtime, OpenVINO, TensorRT, ...)",
        description="Export a RAMiT model to one ONNX graph with dynamic batch, height and width (the padding to a "
        "multiple of 32 is inside the graph). The graph is checked with onnx.checker and run on ONNX Runtime "
        "against PyTorch at another size than the traced one before the file is written (atomically). Run it with "
        "`ramit restore --runtime onnxruntime --model OUT.onnx`. Needs `pip install ramit-hf[onnx]`.",
    )
    parser.add_argument("model", metavar="MODEL", help="model folder, Hub id, or original .pth checkpoint")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="precision of the graph, its inputs and outputs (default float32; float16 stays within 2e-2 of float32, "
        "see docs/deployment.md)",
    )
    parser.add_argument("--opset", type=positive_int, help="ONNX opset (default 17)")
    parser.add_argument(
        "--task", choices=TASKS, help="the model's task (needed only for a .pth whose name does not tell)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    output = Path(args.output).expanduser()
    if output.suffix.lower() != ".onnx":
        return fail("export", f"the output must be an .onnx file, not {output}")
    if output.exists() and not args.overwrite:
        return fail("export", f"{output} exists (pass --overwrite to replace it)")
    if output.is_dir():
        return fail("export", f"{output} is a folder")
    try:
        from transformers.utils import logging as transformers_logging

        from ..export.onnx import DEFAULT_OPSET, OnnxExportError, export_onnx

        transformers_logging.disable_progress_bar()
        opset = args.opset or DEFAULT_OPSET
        result = export_onnx(
            args.model, output, dtype=args.dtype, opset=opset, overwrite=args.overwrite, task=args.task
        )
    except ImportError as error:
        return fail("export", error)
    except (OnnxExportError, ValueError, OSError) as error:  # ModelLoadError and CheckpointError are ValueErrors
        return fail("export", error)
    metadata = result.metadata
    size = output.stat().st_size / 1e6
    height, width = result.verify_shape[-2:]
    print(
        f"{args.model} -> {output} ({metadata['variant']} {metadata['task']}, {args.dtype}, opset {opset}, "
        f"{size:.1f} MB); ONNX Runtime matches PyTorch at {width}x{height} to {result.max_error:.1e} "
        f"(tolerance {result.tolerance:g})"
    )
    return 0
