"""Peak memory and time of whole-image versus tiled restoration, for growing image sizes.

Each case runs in a fresh Python process, so one case's allocations do not hide another's. Memory and time are
measured as scripts/measuring.py defines them, over the restoration call alone (the model loaded and warmed up
before): the process' resident-set high-water mark (VmHWM, reset as the call starts; tracemalloc misses torch's
allocations), how far the call raised it above the resident set at its start, and, on CUDA,
`torch.cuda.max_memory_allocated`.

Two guards keep the run finite on a small machine:
  * a whole-image case is skipped when the memory it would need (extrapolated per pixel from the largest whole case
    that ran) exceeds 80 % of the memory available; the table says so;
  * a case still running after --timeout seconds is stopped. Its peak memory is then read from /proc (VmHWM) before
    the stop, so it is a measurement of the part that ran (for tiles: the full output canvas plus the tiles done),
    and the table gives the tiles done and an extrapolated total time, marked "~".

The input is a real photo (Set14 barbara, x2 LR) mirrored out to the requested size. Tiled and whole outputs of the
same size are compared with the float32 whole-image output (PSNR on [0, 1], no border crop) where both finished;
so are other precisions (--dtypes float32,bfloat16,float16).

    python scripts/benchmark_memory.py --sizes 512,1024,2048,4096 --timeout 420
    python scripts/benchmark_memory.py --sizes 256 --modes whole --dtypes float32,bfloat16,float16
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from measuring import peak_memory, resident_peak, timed

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAMIT_SHARED", REPO.parent / "shared"))
DEFAULT_MODEL = SHARED / "reference" / "checkpoints" / "RAMiT-1_X2.pth"
DEFAULT_IMAGE = SHARED / "testsets" / "Set14" / "LR_bicubic_pyport" / "X2" / "barbarax2.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="anything load_model takes (default RAMiT-1 x2)")
    parser.add_argument("--image", default=str(DEFAULT_IMAGE), help="image mirrored out to each size")
    parser.add_argument("--sizes", default="512,1024,2048,4096", help="square input sizes, comma-separated")
    parser.add_argument("--tile", type=int, help="tile size (default: what tile_size='auto' picks for each size)")
    parser.add_argument("--tile-overlap", type=int, default=None, help="tile overlap (default: the library's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="float32", help="model precisions, comma-separated (float32 first)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per case before it is stopped")
    parser.add_argument("--modes", default="whole,tiled", help="which of whole,tiled to run")
    parser.add_argument(
        "--quality",
        action="store_true",
        help="instead: PSNR-Y against HR on Set14, whole versus tiled (RAMiT-1 x2 and x4)",
    )
    parser.add_argument("--quality-tiles", default="128,192", help="tile sizes for --quality (x2; halved for x4)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.quality:
        return quality([int(t) for t in args.quality_tiles.split(",")], args.tile_overlap)

    from ramit_hf.tiling import DEFAULT_TILE_OVERLAP, auto_tile_size, tile_starts

    overlap = DEFAULT_TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    dtypes = args.dtypes.split(",")
    tiles = args.tile or "as 'auto' picks"
    print(
        f"model {Path(args.model).name} on {args.device}, tiles {tiles} with {overlap} px overlap, "
        f"{os.cpu_count()} CPUs, timeout {args.timeout:.0f} s per case",
        flush=True,
    )
    rows, whole_per_pixel = [], None
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            results = {}
            tile = args.tile or auto_tile_size(size, size, overlap)
            count = len(tile_starts(size, min(tile, size), overlap))
            layout = f"tiled ({count}x{count} of {min(tile, size)} px)"
            for dtype in dtypes:
                for mode in modes:
                    if mode == "tiled" and count == 1:
                        results[mode, dtype] = {"note": "one tile: the same as whole"}
                        continue
                    case = dict(
                        model=args.model,
                        image=args.image,
                        size=size,
                        mode=mode,
                        tile=tile,
                        overlap=overlap,
                        device=args.device,
                        dtype=dtype,
                        output=f"{scratch}/{mode}_{dtype}_{size}.npy",
                    )
                    if mode == "whole" and whole_per_pixel is not None:
                        need = whole_per_pixel * size * size
                        available = _available_memory(args.device)
                        if need > 0.8 * available:
                            results[mode, dtype] = {
                                "note": f"skipped: needs ~{need / 2**30:.0f} GiB, {available / 2**30:.0f} GiB available"
                            }
                            print(f"  {size}x{size} {mode} {dtype}: {results[mode, dtype]['note']}", flush=True)
                            continue
                    result = run_case(case, args.timeout)
                    results[mode, dtype] = result
                    if mode == "whole" and dtype == "float32" and result.get("finished"):
                        whole_per_pixel = result["increase"] / (size * size)
                    name = layout if mode == "tiled" else mode
                    print(f"  {size}x{size} {name} {dtype}: {describe(result)}", flush=True)
            for dtype in dtypes:
                for mode in modes:
                    psnr = None if (mode, dtype) == ("whole", "float32") else _psnr(scratch, size, mode, dtype, results)
                    rows.append((size, layout if mode == "tiled" else mode, dtype, results[mode, dtype], psnr))
            for path in Path(scratch).glob(f"*_{size}.npy"):
                path.unlink()
    print()
    print_table(rows, args.device)


def run_case(case: dict, timeout: float) -> dict:
    """Run one case in a fresh process; past `timeout` seconds of restoration (start-up not counted), read its peak
    RSS and tile progress, then stop it."""
    with tempfile.TemporaryFile("w+") as err, tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(case)], stdout=out, stderr=err)
        started, baseline = None, None
        while process.poll() is None:
            time.sleep(0.5)
            if started is None:
                out.seek(0)
                baseline = next((json.loads(line)["baseline"] for line in out if line.startswith('{"baseline"')), None)
                started = time.perf_counter() if baseline is not None else None
            elif time.perf_counter() - started > timeout:
                peak = resident_peak(process.pid)
                err.seek(0)
                progress = re.findall(r"(\d+)/(\d+) \[", err.read())
                process.kill()
                process.wait()
                done, total = (int(progress[-1][0]), int(progress[-1][1])) if progress else (0, None)
                return {
                    "finished": False,
                    "seconds": time.perf_counter() - started,
                    "peak": peak,
                    "baseline": baseline,
                    "done": done,
                    "total": total,
                }
        out.seek(0)
        lines = [json.loads(line) for line in out if line.startswith("{")]
        if process.returncode != 0 or not lines or "peak" not in lines[-1]:
            err.seek(0)
            tail = err.read()[-300:].strip().replace("\n", " ")
            killed = process.returncode == -9
            return {"finished": False, "note": "killed (out of memory?)" if killed else f"failed: {tail}"}
        result = lines[-1]
        result["finished"] = True
        return result


def worker(case: dict) -> None:
    """One case: load the model, mirror the image to size, restore (whole or tiled), report JSON lines."""
    import numpy as np
    import torch
    from PIL import Image

    from ramit_hf.inference import load_model, restore_tensor

    model = load_model(case["model"], device=case["device"], dtype=case["dtype"])
    image = np.asarray(Image.open(case["image"]).convert("RGB"), dtype=np.float32) / 255
    size = case["size"]
    pads = ((0, max(0, size - image.shape[0])), (0, max(0, size - image.shape[1])), (0, 0))
    image = np.pad(image, pads, mode="symmetric")
    pixels = torch.from_numpy(np.ascontiguousarray(image[:size, :size].transpose(2, 0, 1)))[None]
    del image
    # the first forward of a process initialises kernels (seconds on CPU): not part of the measurement
    restore_tensor(model, pixels[..., :32, :32])
    if case["mode"] == "whole":
        restore = partial(restore_tensor, model, pixels)
    else:
        from ramit_hf.tiling import restore_tiled

        restore = partial(restore_tiled, model, pixels, case["tile"], case["overlap"], progress=True)
    with ExitStack() as measuring:
        resident = measuring.enter_context(peak_memory("cpu"))
        cuda = torch.device(case["device"]).type == "cuda"
        allocated = measuring.enter_context(peak_memory(case["device"])) if cuda else None
        print(json.dumps({"baseline": resident.baseline}), flush=True)
        seconds, output = timed(restore, case["device"])
    result = {"seconds": seconds, "peak": resident.peak, "baseline": resident.baseline, "increase": resident.increase}
    if allocated is not None:
        result["cuda_peak"] = allocated.peak
    # quantised to 16 bits to keep the comparison files small
    np.save(case["output"], (output[0].clamp(0, 1) * 65535).round().to(torch.int32).numpy().astype(np.uint16))
    print(json.dumps(result), flush=True)


def describe(result: dict) -> str:
    if "note" in result:
        return result["note"]
    text = f"{result['seconds']:.0f} s, peak RSS {result['peak'] / 2**20:.0f} MiB"
    if not result.get("finished"):
        text += f" (stopped after {result['done']}/{result['total']} tiles)"
    return text


def print_table(rows, device: str) -> None:
    cuda = device.startswith("cuda")
    header = "| input | mode | dtype | time (s) | peak RSS (MiB) | increase during restoration (MiB) |"
    header += " CUDA peak allocated (MiB) |" if cuda else ""
    header += " PSNR vs float32 whole (dB) | note |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for size, mode, dtype, result, psnr in rows:
        if "note" in result and "peak" not in result:
            cells = ["-", "-", "-"] + (["-"] if cuda else [])
            note = result["note"]
        else:
            finished = result.get("finished")
            seconds = result["seconds"]
            note = ""
            if not finished:
                done, total = result.get("done"), result.get("total")
                if done and total:
                    seconds = seconds * total / done
                    note = f"stopped after {result['seconds']:.0f} s at {done}/{total} tiles; time extrapolated"
                else:
                    note = f"stopped after {result['seconds']:.0f} s"
            increase = result["peak"] - result["baseline"] if result.get("baseline") else None
            cells = [
                f"{'' if finished else '~'}{seconds:.0f}",
                f"{result['peak'] / 2**20:.0f}",
                "-" if increase is None else f"{increase / 2**20:.0f}",
            ]
            if cuda:
                cells.append(f"{result['cuda_peak'] / 2**20:.0f}" if "cuda_peak" in result else "-")
        cells.append("-" if psnr is None else f"{psnr:.2f}")
        cells.append(note)
        print(f"| {size}x{size} | {mode} | {dtype} | " + " | ".join(cells) + " |")


def _psnr(scratch: str, size: int, mode: str, dtype: str, results: dict):
    """PSNR of a case's output against the float32 whole-image output of the same size, when both finished."""
    import numpy as np

    reference, case = Path(f"{scratch}/whole_float32_{size}.npy"), Path(f"{scratch}/{mode}_{dtype}_{size}.npy")
    finished = results.get(("whole", "float32"), {}).get("finished") and results[mode, dtype].get("finished")
    if not finished or not reference.exists() or not case.exists():
        return None
    mse = np.mean((np.load(reference).astype(np.float64) / 65535 - np.load(case).astype(np.float64) / 65535) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def quality(tiles: list[int], overlap: int | None) -> None:
    """Tiled restoration against the ground truth: Set14 (x2, x4) PSNR-Y (crop border = scale, the paper's
    protocol) of whole-image and tiled outputs, and tiled versus whole."""
    import numpy as np
    import torch
    from PIL import Image

    from ramit_hf.inference import load_model, restore_tensor
    from ramit_hf.protocol.metrics import psnr, to_uint8

    base_tiles = tiles
    for scale in (2, 4):
        # tile sizes are given for x2 inputs; x4 inputs are half as large, so are their tiles
        tiles = [t * 2 // scale for t in base_tiles]
        header = (
            f"| x{scale} image | LR size | whole PSNR-Y | "
            + " | ".join(f"tiles {t}: PSNR-Y | tiles {t} vs whole (dB)" for t in tiles)
            + " |"
        )
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        model = load_model(SHARED / "reference" / "checkpoints" / f"RAMiT-1_X{scale}.pth")
        totals = np.zeros(1 + len(tiles))
        names = sorted(p.stem for p in (SHARED / "testsets" / "Set14" / "HR").glob("*.png"))
        for name in names:
            lr_path = SHARED / "testsets" / "Set14" / "LR_bicubic_pyport" / f"X{scale}" / f"{name}x{scale}.png"
            lr = np.asarray(Image.open(lr_path).convert("RGB"), dtype=np.float32) / 255
            hr = np.asarray(Image.open(SHARED / "testsets" / "Set14" / "HR" / f"{name}.png").convert("RGB"))
            hr = hr[: lr.shape[0] * scale, : lr.shape[1] * scale]
            x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None]
            outputs = [restore_tensor(model, x).clamp(0, 1)]
            outputs += [restore_tensor(model, x, tile_size=t, tile_overlap=overlap).clamp(0, 1) for t in tiles]
            images = [to_uint8(o[0].permute(1, 2, 0).numpy()) for o in outputs]
            scores = [psnr(image, hr, crop_border=scale, test_y_channel=True) for image in images]
            totals += scores
            cells = [f"{scores[0]:.3f}"]
            for score, output in zip(scores[1:], outputs[1:], strict=True):
                mse = ((output - outputs[0]) ** 2).mean().item()
                cells += [f"{score:.3f}", "inf" if mse == 0 else f"{10 * np.log10(1 / mse):.1f}"]
            print(f"| {name} | {lr.shape[1]}x{lr.shape[0]} | " + " | ".join(cells) + " |", flush=True)
        means = totals / len(names)
        print(f"| **mean** | | {means[0]:.3f} | " + " | ".join(f"{m:.3f} | " for m in means[1:]) + " |")
        print(flush=True)


def _available_memory(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(torch.device(device))[0]
    match = re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return int(match.group(1)) * 1024


if __name__ == "__main__":
    main()
