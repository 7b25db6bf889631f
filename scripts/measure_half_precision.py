"""Measure RAMiT in float16 and bfloat16 against float32: relative L2 error, PSNR to the float32 output, PSNR drop.

Runs every golden case (the 8 released checkpoints and 4 randomly initialised models, on their uniform-noise inputs)
and real images: Set5 bird and butterfly for the super-resolution checkpoints (PSNR on Y, `scale` pixels cropped,
against the HR image), Set5 bird with Gaussian noise (sigma 25) for color denoising (PSNR on RGB against the clean
image), and a darkened Set5 bird for low-light enhancement (no ground truth: errors against float32 only). The model
is the one spandrel's descriptor wraps (default computation path), weights and input cast to each dtype, as
`descriptor.half()` / `.bfloat16()` do. Prints a Markdown table.

    python scripts/measure_half_precision.py [--device cpu] [--dtypes float16,bfloat16] [--cases NAME,...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ramit_hf import convert_original_checkpoint
from ramit_hf.convert import TARGET_MODES as GOLDEN_TASKS
from ramit_hf.protocol import add_gaussian_noise
from ramit_hf.protocol.metrics import psnr, to_uint8

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def read_image(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def golden_model(name: str, info: dict, case: dict):
    if info["checkpoint"]:
        return convert_original_checkpoint(SHARED / "reference" / "checkpoints" / info["checkpoint"])
    weights = {k.removeprefix("weights."): v for k, v in case.items() if k.startswith("weights.")}
    return convert_original_checkpoint(weights, variant=info["model_name"], task=GOLDEN_TASKS[info["target_mode"]])


def real_inputs(task: str) -> list[tuple[str, torch.Tensor, torch.Tensor | None, int]]:
    """(label, input, ground truth or None, PSNR border crop) of the real images measured for a task."""
    set5 = SHARED / "testsets" / "Set5"
    if task.startswith("sr-"):
        scale = int(task[-1])
        return [
            (
                f"Set5 {name} x{scale}",
                read_image(set5 / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"),
                read_image(set5 / "HR" / f"{name}.png"),
                scale,
            )
            for name in ("bird", "butterfly")
        ]
    clean = read_image(set5 / "HR" / "bird.png")
    if task == "color-dn":
        return [("Set5 bird, sigma 25", add_gaussian_noise(clean[0], 25)[None], clean, 0)]
    if task == "lle":
        return [("Set5 bird darkened (x0.2, no ground truth)", clean * 0.2, None, 0)]
    return []


def run(model, x: torch.Tensor, dtype: torch.dtype, device: str) -> torch.Tensor:
    model.to(device=device, dtype=dtype)
    with torch.inference_mode():
        return model(x.to(device=device, dtype=dtype)).reconstruction.float().cpu()


def psnr_float(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def psnr_to_truth(output: torch.Tensor, truth: torch.Tensor, crop: int) -> float:
    out = to_uint8(output[0].permute(1, 2, 0).numpy())
    ref = to_uint8(truth[0, :, : out.shape[0], : out.shape[1]].permute(1, 2, 0).numpy())
    return psnr(out, ref, crop_border=crop, test_y_channel=crop > 0)


def measure(model, label: str, x, truth, crop: int, dtypes: list[str], device: str) -> dict:
    reference = run(model, x, torch.float32, device)
    row = {"case": label, "input": "x".join(map(str, x.shape[-2:]))}
    base = psnr_to_truth(reference, truth, crop) if truth is not None else None
    for name in dtypes:
        start = time.perf_counter()
        try:
            out = run(model, x, DTYPES[name], device)
        except RuntimeError as error:  # an op without a kernel for this dtype on this device
            row[name] = {"error": str(error).splitlines()[0][:80]}
            continue
        finite = bool(torch.isfinite(out).all())
        rel = ((out - reference).norm() / reference.norm()).item() if finite else math.inf
        drop = base - psnr_to_truth(out, truth, crop) if truth is not None and finite else None
        row[name] = {
            "rel_l2": rel,
            "psnr_vs_fp32": psnr_float(out, reference) if finite else -math.inf,
            "psnr_drop": drop,
            "finite": finite,
            "seconds": time.perf_counter() - start,
        }
    model.to(torch.float32)
    return row


def cell(result: dict) -> list[str]:
    if "error" in result:
        return [f"fails: {result['error']}", "-", "-"]
    if not result["finite"]:
        return ["non-finite", "-", "-"]
    drop = "-" if result["psnr_drop"] is None else f"{result['psnr_drop']:+.3f}"
    return [f"{result['rel_l2']:.2e}", f"{result['psnr_vs_fp32']:.1f}", drop]


def table(rows: list[dict], dtypes: list[str]) -> str:
    header = ["case", "input"] + [
        f"{d} {c}" for d in dtypes for c in ("rel. L2", "PSNR vs fp32 (dB)", "PSNR drop (dB)")
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([row["case"], row["input"]] + [v for d in dtypes for v in cell(row[d])]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--cases", default="", help="golden case names, comma-separated (default: all 12)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    dtypes = [d for d in args.dtypes.split(",") if d]
    from safetensors.torch import load_file

    index = json.loads((SHARED / "reference" / "golden" / "index.json").read_text())
    names = [n for n in args.cases.split(",") if n] or sorted(index)
    rows = []
    for name in names:
        case = load_file(SHARED / "reference" / "golden" / f"{name}.safetensors")
        model = golden_model(name, index[name], case).eval()
        rows.append(measure(model, f"{name} (golden input)", case["input"], None, 0, dtypes, args.device))
        if index[name]["checkpoint"]:
            for label, x, truth, crop in real_inputs(model.config.task):
                rows.append(measure(model, f"{name}: {label}", x, truth, crop, dtypes, args.device))
        print(f"done: {name}", file=sys.stderr, flush=True)
    print(
        f"device: {args.device}, torch {torch.__version__}; PSNR drop: float32's PSNR minus the dtype's, against "
        "the ground truth (8-bit outputs)\n"
    )
    print(table(rows, dtypes))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
