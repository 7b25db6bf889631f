"""ONNX Runtime beside PyTorch: speed and error of the exported graph, in one process (docs/deployment.md).

    python scripts/benchmark_onnx.py                      # eager fused vs ONNX Runtime CPU at 128 and 256
    python scripts/benchmark_onnx.py --float16            # also: float16 graphs on the golden cases and real images
    python scripts/benchmark_onnx.py --openvino           # also: the same graph on OpenVINO's CPU device

Speed: median milliseconds of one forward pass (batch 1, after a warm-up) of the fused PyTorch path and of the
exported float32 graph on ONNX Runtime's CPU execution provider, their ratio (PyTorch time / ONNX Runtime time, so
above 1 means ONNX Runtime is faster) and the largest absolute difference of their outputs. Every table is Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from measuring import time_calls

from ramit_hf import convert_original_checkpoint
from ramit_hf.convert import TARGET_MODES as GOLDEN_TASKS
from ramit_hf.export import OnnxRamitModel, export_onnx
from ramit_hf.inference import restore_tensor, tune_cpu_allocator

SHARED = ROOT.parent / "shared"
# real images for float16: (checkpoint, input image) with the task each checkpoint was trained for
REAL_IMAGES = [
    ("RAMiT-1_X2.pth", "testsets/Set5/LR_bicubic/X2/birdx2.png"),
    ("RAMiT-1_X4.pth", "testsets/Set14/LR_bicubic_pyport/X4/baboonx4.png"),
    ("RAMiT-1_CDN.pth", "testsets/McMaster/HR/1.png"),
]


def median_ms(function, repeats: int) -> float:
    """Median milliseconds of `repeats` calls after one warm-up call (first-run allocations, ONNX Runtime's kernel
    selection), as `measuring.time_calls` times them."""
    return statistics.median(time_calls({"call": function}, repeats=repeats, warmup=1).seconds["call"]) * 1000


def openvino_runner(path: Path):
    """The graph compiled by OpenVINO for its CPU device in float32, as a function of a tensor (None without openvino).

    float32 is asked for: on CPUs with bfloat16 units OpenVINO otherwise computes in bfloat16 (5e-2 off here)."""
    try:
        import openvino
    except ImportError:
        return None
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda images: torch.from_numpy(compiled(images.numpy())[0])


def speed_table(checkpoint: Path, sizes: list[int], repeats: int, folder: Path, openvino: bool) -> str:
    model = convert_original_checkpoint(checkpoint).eval()
    model.set_computation("auto")  # what PyTorch users get on this CPU
    path = export_onnx(model, folder / "model.onnx").path
    onnx_model = OnnxRamitModel(path)
    vino = openvino_runner(path) if openvino else None
    extra = " OpenVINO CPU (ms) | PyTorch / OpenVINO | OpenVINO max abs |" if vino else ""
    lines = [
        f"{checkpoint.stem}, batch 1, {torch.get_num_threads()} torch threads, median of {repeats}:",
        "",
        "| size | PyTorch fused (ms) | ONNX Runtime CPU (ms) | PyTorch / ONNX Runtime | max abs difference |" + extra,
        "|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if vino else ""),
    ]
    for size in sizes:
        images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            eager = median_ms(lambda images=images: model(pixel_values=images), repeats)
            expected = model(pixel_values=images).reconstruction
        runtime = median_ms(lambda images=images: onnx_model(pixel_values=images), repeats)
        error = (onnx_model(pixel_values=images).reconstruction - expected).abs().max().item()
        row = f"| {size}x{size} | {eager:.0f} | {runtime:.0f} | {eager / runtime:.2f}x | {error:.1e} |"
        if vino:
            vino_ms = median_ms(lambda images=images: vino(images), repeats)
            vino_error = (vino(images) - expected).abs().max().item()
            row += f" {vino_ms:.0f} | {eager / vino_ms:.2f}x | {vino_error:.1e} |"
        lines.append(row)
    return "\n".join(lines)


def golden_models():
    index = json.loads((SHARED / "reference/golden/index.json").read_text())
    from safetensors.torch import load_file

    for name, info in sorted(index.items()):
        case = load_file(SHARED / "reference/golden" / f"{name}.safetensors")
        if info["checkpoint"]:
            model = convert_original_checkpoint(SHARED / "reference/checkpoints" / info["checkpoint"])
        else:
            weights = {k.removeprefix("weights."): v for k, v in case.items() if k.startswith("weights.")}
            task = GOLDEN_TASKS[info["target_mode"]]
            model = convert_original_checkpoint(weights, variant=info["model_name"], task=task)
        yield name, model, case


def float16_tables(folder: Path) -> str:
    lines = [
        "Golden cases (45x61 inputs), largest absolute difference to the original implementation's `output_plain`:",
        "",
        "| case | ONNX float32 | ONNX float16 |",
        "|---|---:|---:|",
    ]
    for name, model, case in golden_models():
        errors = []
        for dtype in ("float32", "float16"):
            graph = OnnxRamitModel(export_onnx(model, folder / f"{name}-{dtype}.onnx", dtype=dtype).path)
            output = graph(pixel_values=case["input"]).reconstruction.float()
            errors.append((output - case["output_plain"]).abs().max().item())
        lines.append(f"| {name} | {errors[0]:.1e} | {errors[1]:.1e} |")
    lines += [
        "",
        "Real images through `restore_tensor` (symmetric padding), float16 graph against float32 PyTorch, 8-bit:",
        "",
        "| model | image | max abs (float) | PSNR to float32 (dB) | pixels off by 1 level | off by more |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for checkpoint, image_path in REAL_IMAGES:
        lines.append(real_image_row(checkpoint, image_path, folder))
    return "\n".join(lines)


def real_image_row(checkpoint: str, image_path: str, folder: Path) -> str:
    from ramit_hf.image_io import load_image

    model = convert_original_checkpoint(SHARED / "reference/checkpoints" / checkpoint).eval()
    pixels = load_image(str(SHARED / image_path)).pixels
    image = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    graph = OnnxRamitModel(export_onnx(model, folder / f"{checkpoint}-fp16.onnx", dtype="float16").path)
    expected = restore_tensor(model, image).clamp(0, 1)
    got = restore_tensor(graph, image).clamp(0, 1)
    quantised = [torch.round(t * 255) for t in (expected, got)]
    levels = (quantised[0] - quantised[1]).abs()
    mse = ((quantised[0] - quantised[1]) ** 2).mean().item()
    psnr = float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
    name = Path(image_path).name
    size = f"{image.shape[-1]}x{image.shape[-2]}"
    return (
        f"| {Path(checkpoint).stem} | {name} ({size}) | {(got - expected).abs().max().item():.1e} | {psnr:.2f} | "
        f"{(levels == 1).float().mean().item():.2%} | {(levels > 1).float().mean().item():.3%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHARED / "reference/checkpoints/RAMiT-1_X2.pth"))
    parser.add_argument("--sizes", default="128,256", help="square input sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--float16", action="store_true", help="also measure float16 graphs' error")
    parser.add_argument("--openvino", action="store_true", help="also run the graph on OpenVINO (pip install openvino)")
    args = parser.parse_args()
    tune_cpu_allocator()  # as the ramit command does
    with tempfile.TemporaryDirectory(prefix="ramit-onnx-bench-") as scratch:
        sizes = [int(s) for s in args.sizes.split(",")]
        print(speed_table(Path(args.model), sizes, args.repeats, Path(scratch), args.openvino), flush=True)
        if args.float16:
            print()
            print(float16_tables(Path(scratch)))


if __name__ == "__main__":
    main()
