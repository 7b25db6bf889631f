"""Frames per second, peak memory, the cost of copying streams, and the size and quality of the encodings of
`ramit restore` on videos (`ramit_hf.video.restore_video`).

The clips: --frames frames panning across `skimage.data.astronaut()` (NASA, public domain), scaled to cover 480p
(854x480) and 720p (1280x720), at 25 frames/s with a 440 Hz AAC track, written losslessly (FFV1) so that decoding
costs what a real clip's does and nothing of the content is lost before the model sees it.

Speed: each (size, dtype) case runs in a fresh process, which restores the clip once (default encoding) and reports
its frames per second (restored frames over the whole `restore_video` call: decoding, restoring, encoding, joining),
the seconds the image path takes for the clip's first frame (the pipeline on its RGB array, as for an image file),
the seconds spent joining the segments with the copied audio (the stream-copy step), and its peak resident memory
(`measuring.peak_memory`: the high-water mark of the process, model included, during the video restore). `auto` is
the dtype `ramit restore` picks on this machine (`inference.choose_compute`).

Encoding: the 480p clip restored with FFV1 (lossless RGB: the restored pixels themselves) and with each of --codecs
at its default quality; the table gives each file's size, its bit rate, and the PSNR of its decoded frames against
the lossless ones (RGB, 8-bit, whole frames).

    python scripts/benchmark_video.py --model ../shared/reference/checkpoints/RAMiT-slimSR_X2.pth --frames 3
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

SIZES = {"480p": (854, 480), "720p": (1280, 720)}
RATE = 25
AUDIO_RATE = 48000


def make_clip(path: Path, size: tuple[int, int], frames: int) -> None:
    import av
    from PIL import Image
    from skimage import data

    width, height = size
    pan = 4 * frames
    source = Image.fromarray(data.astronaut())
    side = max(width + pan, height)
    canvas = np.asarray(source.resize((side, side), Image.BICUBIC))
    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        for index in range(frames):
            crop = np.ascontiguousarray(canvas[:height, 4 * index : 4 * index + width])
            frame = av.VideoFrame.from_ndarray(crop, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = int(frames / RATE * AUDIO_RATE)
        wave = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / AUDIO_RATE)).astype(np.float32)
        for start in range(0, samples, 1024):
            chunk = np.repeat(wave[None, start : start + 1024], 2, axis=0)
            audio = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            audio.sample_rate, audio.pts, audio.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
            container.mux(sound.encode(audio))
        container.mux(sound.encode(None))


def child(args) -> None:
    """One restore in this process; prints a JSON line."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from measuring import peak_memory

    from ramit_hf import load_model
    from ramit_hf import video as video_module
    from ramit_hf.inference import choose_compute, tune_cpu_allocator
    from ramit_hf.pipeline_image_restoration import ImageRestorationPipeline

    tune_cpu_allocator()  # as the ramit command does
    model = load_model(args.model)
    pipe = ImageRestorationPipeline(model=model, device=model.device, precision=args.dtype)
    joined = []
    mux = video_module._mux

    def timed_mux(*arguments, **keywords):
        start = time.perf_counter()
        result = mux(*arguments, **keywords)
        joined.append(time.perf_counter() - start)
        return result

    video_module._mux = timed_mux
    encoding = video_module.VideoEncoding(args.codec)
    with peak_memory("cpu") as peak:
        start = time.perf_counter()
        result = video_module.restore_video(pipe, args.input, args.output, encoding, progress=False, overwrite=True)
        seconds = time.perf_counter() - start
    # the image path on the clip's first frame, in the same process: what a frame costs as an image
    import av

    with av.open(args.input) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    start = time.perf_counter()
    pipe(first, output_type="np")
    image_seconds = time.perf_counter() - start
    compute = choose_compute("cpu", args.dtype, model.config.computation)
    print(
        json.dumps(
            {
                "frames": result.frames,
                "seconds": seconds,
                "join_seconds": joined[0],
                "image_seconds": image_seconds,
                "peak_bytes": peak.peak,
                "compute": compute.describe(),
            }
        )
    )


def run_child(args, input: Path, output: Path, dtype: str, codec: str) -> dict:
    command = [sys.executable, __file__, "--child", "--model", args.model, "--input", str(input)]
    command += ["--output", str(output), "--dtype", dtype, "--codec", codec]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def frames_of(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=str(Path(__file__).resolve().parents[2] / "shared/reference/checkpoints/RAMiT-slimSR_X2.pth")
    )
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--sizes", default="480p,720p")
    parser.add_argument("--dtypes", default="float32,auto")
    parser.add_argument("--codecs", default="libx264", help="encodings compared with FFV1 on the 480p clip")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--codec", default="libx264", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch

    from ramit_hf.inference import choose_compute

    auto_dtype = choose_compute("cpu", "auto").dtype
    folder = Path(tempfile.mkdtemp(prefix="ramit-video-"))
    print(
        f"model {Path(args.model).name}, {args.frames} frames per clip, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print()
    columns = ["input", "dtype", "frames/s", "s/frame", "the first frame as an image", "joining with the audio"]
    print("| " + " | ".join([*columns, "peak memory"]) + " |")
    print("|---|---|---|---|---|---|---|")
    clips = {}
    for name in args.sizes.split(","):
        clips[name] = folder / f"{name}.mkv"
        make_clip(clips[name], SIZES[name], args.frames)
        rows: dict[str, dict] = {}
        for dtype in args.dtypes.split(","):
            same = "float32" if dtype == "auto" and auto_dtype == torch.float32 else None
            if same in rows:  # the same computation in the same precision: measured once
                row = {**rows[same], "compute": f"{choose_compute('cpu', 'auto').describe()} = the float32 row"}
            else:
                row = run_child(args, clips[name], folder / f"{name}-{dtype}.mkv", dtype, "libx264")
            rows[dtype] = row
            fps = row["frames"] / row["seconds"]
            share = row["join_seconds"] / row["seconds"]
            print(
                f"| {name} ({SIZES[name][0]}x{SIZES[name][1]}) | {dtype}: {row['compute']} | {fps:.3f} | "
                f"{1 / fps:.2f} | {row['image_seconds']:.2f} s | "
                f"{row['join_seconds']:.3f} s ({share:.2%} of the run) | "
                f"{row['peak_bytes'] / 2**20:,.0f} MiB |",
                flush=True,
            )

    name = "480p" if "480p" in clips else next(iter(clips))
    print()
    print(f"Encodings of the restored {name} clip ({args.frames} frames at {RATE} frames/s):")
    print()
    print("| codec | file size | bit rate | PSNR against the lossless frames |")
    print("|---|---|---|---|")
    lossless_path = folder / f"{name}-ffv1.mkv"
    run_child(args, clips[name], lossless_path, "auto", "ffv1")
    lossless = frames_of(lossless_path)
    seconds = args.frames / RATE
    for codec in ["ffv1", *args.codecs.split(",")]:
        path = lossless_path if codec == "ffv1" else folder / f"{name}-{codec}.mkv"
        if codec != "ffv1":
            run_child(args, clips[name], path, "auto", codec)
        encoded = frames_of(path)
        assert len(encoded) == len(lossless), (codec, len(encoded), len(lossless))
        quality = np.mean([psnr(a, b) for a, b in zip(encoded, lossless, strict=True)])
        size = path.stat().st_size
        shown = "identical" if math.isinf(quality) else f"{quality:.2f} dB"
        print(f"| {codec} | {size / 1024:,.0f} KiB | {size * 8 / seconds / 1e6:.2f} Mbit/s | {shown} |", flush=True)


if __name__ == "__main__":
    main()
