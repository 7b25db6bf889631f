"""Speed and memory of RAMiT's computation paths, side by side, against the faithful float32 path.

Prints one Markdown table: path x size x device, median time, peak memory, speed-up over the faithful path and the
largest difference from its output. Times are measured in one process with the paths interleaved round by round
(machines are noisy: compare ratios); peak memory is measured in a fresh subprocess per case. Both are measured as
scripts/measuring.py defines them.

    python scripts/benchmark.py                                   # CPU, 128 and 256, eager paths
    python scripts/benchmark.py --device cuda --sizes 128 256 512 --paths faithful auto fused-bf16 fused-compile \
        fused-cudagraph
    python scripts/benchmark.py --train --device cuda             # training step, batch 32, 64x64 LR patches

Paths: original (the original repository's code, with --original-code DIR: a checkout of github.com/rami0205/RAMiT;
its random weights are converted for every other path), then a computation (`RamitConfig.computation`): faithful
(the original's operations and layouts), fused (whole tensors, scaled_dot_product_attention), banded (CPU inference
piece by piece), auto (what the library runs on this device: banded for CPU inference, fused elsewhere), each
optionally with a suffix: -bf16 (inference: bfloat16 body with the stem and the head in float32, `Compute.apply`;
training: bfloat16 autocast over float32 weights), -bf16-full (every layer in bfloat16), -compile / -bf16-compile
(torch.compile), -cudagraph (torch.compile mode "reduce-overhead": CUDA graphs; CUDA only); and onnxruntime (the
model exported with `ramit_hf.export_onnx` and run by ONNX Runtime's CPU execution provider; CPU inference only).
With --tiled, the tiled restoration of a large image is timed for --tiled-paths (default: auto and auto-bf16).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
from functools import partial
from types import SimpleNamespace

import torch
from measuring import is_cuda, peak_memory, time_calls, timed

from ramit_hf import RamitConfig, RamitForImageRestoration, convert_original_checkpoint
from ramit_hf.forward import model_placement
from ramit_hf.inference import Compute
from ramit_hf.modeling_ramit import resolve_computation

PATHS = (
    "original",
    "faithful",
    "auto",
    "fused",
    "banded",
    "auto-bf16",
    "fused-bf16",
    "banded-bf16",
    "fused-bf16-full",
    "fused-compile",
    "fused-bf16-compile",
    "fused-cudagraph",
    "onnxruntime",
)


class _Original(torch.nn.Module):
    """The original model behind this package's output interface (`.reconstruction`)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(reconstruction=self.model(pixel_values))


def base_model(preset: str, original_code: str | None) -> RamitForImageRestoration:
    """Random weights seeded 0: those of the original model when its code is given (converted), so that every path
    computes the same function as the original."""
    if original_code is None:
        torch.manual_seed(0)
        return RamitForImageRestoration(RamitConfig.from_preset(preset))
    from original_ramit import load_original

    config = RamitConfig.from_preset(preset)
    return convert_original_checkpoint(load_original(original_code, preset).state_dict(), config.variant, config.task)


def build(path: str, preset: str, device: str, training: bool = False, original_code: str | None = None):
    """The model for a path, and the function that runs it."""
    if path == "original":
        if original_code is None:
            raise SystemExit("the original path needs --original-code DIR (a checkout of rami0205/RAMiT)")
        from original_ramit import load_original

        model = _Original(load_original(original_code, preset)).to(device).train(training)
        return model, model
    if path == "onnxruntime":
        return _onnx_runtime(base_model(preset, original_code), device, training)
    model = base_model(preset, original_code).to(device)
    model.train(training)
    computation, _, variant = path.partition("-")
    model.set_computation(computation)
    if variant == "bf16-full":
        model = model.to(torch.bfloat16)
    elif variant.startswith("bf16") and not training:
        model = Compute(torch.bfloat16, computation, "benchmark").apply(model)
    run = model
    if variant.endswith("compile"):
        run = torch.compile(model)
    elif variant == "cudagraph":
        run = torch.compile(model, mode="reduce-overhead")
    return model, run


def _onnx_runtime(model: RamitForImageRestoration, device: str, training: bool):
    """The model exported to ONNX (float32, verified) and run by ONNX Runtime's CPU execution provider."""
    import tempfile
    from pathlib import Path

    from ramit_hf.export import OnnxRamitModel, export_onnx

    if training or device != "cpu":
        raise SystemExit("the onnxruntime path is measured for CPU inference only")
    path = Path(tempfile.mkdtemp(prefix="ramit-benchmark-")) / "model.onnx"
    export_onnx(model, path)
    runtime = OnnxRamitModel(path)
    return runtime, lambda pixel_values: runtime(pixel_values=pixel_values)


def input_dtype(model) -> torch.dtype:
    return model_placement(model)[1]


def forward(run, x: torch.Tensor, dtype: torch.dtype):
    return run(x.to(dtype))


def time_inference(args) -> list[dict]:
    rows = []
    for size in args.sizes:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)).to(args.device)
        calls, warmup_s = {}, {}
        for path in args.paths:
            model, run = build(path, args.preset, args.device, original_code=args.original_code)
            calls[path] = partial(forward, run, x, input_dtype(model))
            with torch.no_grad():  # the first calls: compilation, allocations, kernel selection
                warmup_s[path] = sum(time_calls({path: calls[path]}, args.device, repeats=args.warmup).seconds[path])
        with torch.no_grad():  # interleaved: every path sees the same machine state
            timings = time_calls(calls, args.device, repeats=args.repeats)
        times = timings.seconds
        outputs = {path: result.reconstruction.float() for path, result in timings.results.items()}
        base = statistics.median(times["faithful"]) if "faithful" in times else None
        original = statistics.median(times["original"]) if "original" in times else None
        for path in args.paths:
            median = statistics.median(times[path])
            reference = outputs.get("faithful")
            error = (outputs[path] - reference).abs().max().item() if reference is not None else float("nan")
            relative = (
                ((outputs[path] - reference).norm() / reference.norm()).item()
                if reference is not None
                else float("nan")
            )
            rows.append(
                dict(
                    path=path,
                    size=size,
                    device=device_name(args.device),
                    median_ms=median * 1000,
                    speedup=base / median if base else float("nan"),
                    vs_original=original / median if original else float("nan"),
                    spread=(max(times[path]) - min(times[path])) / median,
                    max_error=error,
                    rel_l2=relative,
                    warmup_s=warmup_s[path],
                    peak_mib=measure_peak(args, path, size),
                )
            )
            del calls[path]
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def measure_peak(args, path: str, size: int) -> float:
    """Peak memory (MiB) of one forward in a fresh process: how far it raises the CUDA allocator's high-water mark, or
    on CPU the resident set's, above what the process held before (`measuring.peak_memory`'s `increase`)."""
    if args.no_memory:
        return float("nan")
    command = [
        sys.executable,
        __file__,
        "--memory-worker",
        path,
        str(size),
        "--preset",
        args.preset,
        "--device",
        args.device,
    ]
    command += ["--tune-allocator"] if args.tune_allocator else []
    command += ["--original-code", args.original_code] if args.original_code else []
    command += ["--threads", str(args.threads)] if args.threads else []
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.memory_timeout)
    if result.returncode != 0:
        return float("nan")
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def memory_worker(path: str, size: int, preset: str, device: str, original_code: str | None) -> None:
    model, run = build(path, preset, device, original_code=original_code)
    dtype = input_dtype(model)
    x = torch.rand(1, 3, size, size, device=device, dtype=dtype)
    with torch.no_grad():
        run(x[..., :32, :32])  # compile / allocate what does not depend on the size
        with peak_memory(device) as memory:
            run(x)
    print(json.dumps({"peak_mib": memory.increase / 2**20}))


def time_training(args) -> list[dict]:
    """Training steps (Adam, L1) on random LR/HR patches: time per step, peak memory, loss curve agreement."""
    rows, losses = [], {}
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.rand(args.batch_size, 3, args.patch, args.patch, generator=generator),
            torch.rand(args.batch_size, 3, 2 * args.patch, 2 * args.patch, generator=generator),
        )
        for _ in range(min(args.steps, 8))
    ]
    for path in args.paths:
        # training in bf16 means autocast over float32 weights (mixed precision), not bf16 weights
        mixed = path == "fused-bf16"
        model, run = build("fused" if mixed else path, "ramit-sr-x2", args.device, training=True)
        dtype = next(model.parameters()).dtype
        device_type = "cuda" if args.device.startswith("cuda") else "cpu"
        optimizer = torch.optim.Adam(model.parameters(), lr=4e-4)

        def train_step(lr, hr, run=run, optimizer=optimizer, device_type=device_type, mixed=mixed) -> torch.Tensor:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=mixed):
                loss = run(pixel_values=lr, labels=hr).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        curve, step_times = [], []
        with peak_memory(args.device) as memory:
            for step in range(args.steps):
                lr, hr = (t.to(args.device, dtype) for t in batches[step % len(batches)])
                seconds, loss = timed(lambda lr=lr, hr=hr: train_step(lr, hr), args.device)
                step_times.append(seconds)
                curve.append(loss.item())
        losses[path] = curve
        peak = memory.peak / 2**20 if is_cuda(args.device) else float("nan")
        measured = step_times[min(5, len(step_times) - 1) :]
        rows.append(
            dict(
                path=path,
                median_ms=statistics.median(measured) * 1000,
                peak_mib=peak,
                first_loss=curve[0],
                last_loss=curve[-1],
            )
        )
        del model, run, optimizer
    if "faithful" in losses:
        base = next(r for r in rows if r["path"] == "faithful")
        for row in rows:
            row["speedup"] = base["median_ms"] / row["median_ms"]
            row["max_loss_gap"] = max(abs(a - b) for a, b in zip(losses[row["path"]], losses["faithful"], strict=True))
    return rows


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def cell(value: float, form: str, unit: str = "") -> str:
    """A table cell; "-" for nan (the reference path was not run, or the memory not measured)."""
    return "-" if math.isnan(value) else format(value, form) + unit


def print_inference(rows: list[dict]) -> None:
    print(
        "| path | size | median ms | spread | vs faithful | vs original | peak MiB | max abs err | rel. L2 err | "
        "first call s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")

    for r in rows:
        print(
            f"| {r['path']} | {r['size']}x{r['size']} | {r['median_ms']:.1f} | {100 * r['spread']:.0f}% | "
            f"{cell(r['speedup'], '.2f', 'x')} | {cell(r['vs_original'], '.2f', 'x')} | {cell(r['peak_mib'], '.0f')} | "
            f"{cell(r['max_error'], '.1e')} | {cell(r['rel_l2'], '.1e')} | {r['warmup_s']:.1f} |"
        )
    print("(errors against the faithful float32 output; spread: (slowest - fastest) / median over the repeats)")


def time_tiled(args) -> list[dict]:
    """Tiled restoration of one large image (`--tiled WIDTHxHEIGHT`, tile size "auto") per path, once each."""
    from ramit_hf.tiling import auto_tile_size, restore_tiled, tile_starts

    width, height = (int(v) for v in args.tiled.lower().split("x"))
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    tile = auto_tile_size(height, width)
    count = len(tile_starts(height, tile, 32)) * len(tile_starts(width, tile, 32))
    rows = []
    for path in args.tiled_paths:
        model, _ = build(path, args.preset, args.device, original_code=args.original_code)
        with torch.no_grad():
            elapsed, _ = timed(lambda model=model: restore_tiled(model.eval(), image, tile), args.device)
        rows.append(dict(path=path, image=f"{width}x{height}", tile=tile, tiles=count, seconds=elapsed))
    return rows


def print_tiled(rows: list[dict]) -> None:
    print("| path | image | tile | tiles | total s | tiles/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['path']} | {r['image']} | {r['tile']} | {r['tiles']} | {r['seconds']:.1f} | "
            f"{r['tiles'] / r['seconds']:.2f} |"
        )


def print_training(rows: list[dict], args) -> None:
    print(
        f"Training step, RAMiT x2, batch {args.batch_size}, {args.patch}x{args.patch} LR patches, Adam, "
        f"{args.steps} steps, {device_name(args.device)}"
    )
    print("| path | median ms/step | speed-up | peak MiB | loss step 1 | loss last | max loss gap vs faithful |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['path']} | {r['median_ms']:.1f} | {cell(r.get('speedup', math.nan), '.2f', 'x')} | "
            f"{cell(r['peak_mib'], '.0f')} | {r['first_loss']:.4f} | {r['last_loss']:.4f} | "
            f"{cell(r.get('max_loss_gap', math.nan), '.1e')} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=["faithful", "auto"])
    parser.add_argument("--preset", default="ramit-sr-x2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case memory subprocesses")
    parser.add_argument(
        "--tune-allocator",
        action="store_true",
        help="keep freed memory in the process, as the ramit command does (inference.tune_cpu_allocator)",
    )
    parser.add_argument("--memory-timeout", type=int, default=600)
    parser.add_argument("--original-code", help="a checkout of github.com/rami0205/RAMiT, for the original path")
    parser.add_argument("--tiled", help="also time tiled restoration of an image of this size, e.g. 2000x1500")
    parser.add_argument("--tiled-paths", nargs="+", choices=PATHS, default=["auto", "auto-bf16"])
    parser.add_argument("--train", action="store_true", help="benchmark training steps instead of inference")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--memory-worker", nargs=2, metavar=("PATH", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tune_allocator:
        from ramit_hf.inference import tune_cpu_allocator

        tune_cpu_allocator()
    if args.memory_worker:
        memory_worker(args.memory_worker[0], int(args.memory_worker[1]), args.preset, args.device, args.original_code)
        return
    if "fused-cudagraph" in args.paths and not args.device.startswith("cuda"):
        parser.error("fused-cudagraph needs --device cuda")
    allocator = ", allocator tuned" if args.tune_allocator else ", default allocator"
    print(f"torch {torch.__version__}, preset {args.preset}, {device_name(args.device)}{allocator}")
    runs = resolve_computation("auto", args.device, training=args.train)
    print(f"'auto' runs the {runs} computation here ({'training' if args.train else 'inference'})")
    if args.train:
        rows = time_training(args)
        print_training(rows, args)
    else:
        rows = time_inference(args)
        print_inference(rows)
        if args.tiled:
            tiled = time_tiled(args)
            print_tiled(tiled)
            rows += tiled
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
