"""`ramit restore`: restore image and video files (super-resolution, denoising, ...) with a RAMiT model.

Inputs are files, folders (searched recursively for images) and glob patterns; each output keeps its input's path
relative to the folder or the pattern's fixed prefix (a file given by itself: its name), under the output folder.
Lossless formats keep their extension, lossy ones (JPEG, WebP) are written as PNG unless --format says otherwise;
16-bit PNG, TIFF and PNM files stay 16-bit, float TIFFs stay float. Each output keeps its input's ICC profile, EXIF
(orientation reset, pixel sizes updated), DPI (scaled with the image) and PNG text, as far as its format holds them.
Every output is written atomically and never over an existing file unless --overwrite. Failures are listed at the end
(exit status 1) while the other images are still written.

Under `torchrun --nproc_per_node N -m ramit_hf.cli restore ...` (or `accelerate launch`), each process restores every
N-th input (on GPU `cuda:LOCAL_RANK` when there is one) and the first prints the summary of all.

Videos (`ramit_hf.video.VIDEO_EXTENSIONS`) are restored frame by frame through the same path, every other stream
kept, and can be continued after an interruption with --resume (`ramit_hf.video`, docs/video.md).

With `--dataset ID_OR_PATH`, the images of a 🤗 dataset are restored into a new dataset instead
(`ramit_hf.dataset_restoration`, docs/datasets.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..dataset_restoration import add_dataset_arguments, run_dataset
from .common import (
    add_device_arguments,
    add_model_arguments,
    add_tiling_arguments,
    check_device,
    fail,
    max_pixels,
    positive_int,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "restore",
        help="restore image and video files (files, folders, globs) with a RAMiT model",
        description="Restore images and videos with a RAMiT model: super-resolution, denoising, low-light "
        "enhancement or deraining, whatever the model was trained for. Large images are restored in overlapping "
        "tiles; videos frame by frame, their audio, subtitles and timing kept.",
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image or video files, folders, glob patterns or image URLs"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output folder (created); with a single input file, a file name with an image (or, for a video, a "
        "video) extension also works",
    )
    add_model_arguments(parser)
    add_tiling_arguments(parser, auto=True)
    add_device_arguments(parser, device="auto", dtype="auto")
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="torch (default), or onnxruntime for an .onnx file from `ramit export` (CPU; --dtype must be the graph's)",
    )
    parser.add_argument(
        "--computation",
        choices=("auto", "faithful", "fused", "banded"),
        default="auto",
        help="how the network is computed (the same function): auto (default) runs banded for CPU inference and fused "
        "on accelerators; faithful follows the original code operation by operation (docs/performance.md)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=1, help="images of the same size restored together")
    parser.add_argument(
        "--bit-depth",
        choices=("auto", "8", "16"),
        default="auto",
        help="bits per channel of the outputs: auto (default) keeps 16-bit PNG, TIFF and PNM files 16-bit and float "
        "TIFFs float; 16 writes every output at 16 bits (as PNG where its format holds only 8)",
    )
    parser.add_argument(
        "--format",
        choices=tuple(FORMAT_EXTENSIONS),
        help="format of every output (default: lossless inputs keep their format, JPEG and WebP become PNG)",
    )
    parser.add_argument(
        "--quality",
        type=quality,
        metavar="Q",
        help="JPEG / WebP quality from 1 to 100 (default 95), with --format jpeg or webp",
    )
    parser.add_argument(
        "--max-pixels",
        type=max_pixels,
        metavar="N",
        help="largest input (width x height) to read; default: what this machine can hold with its restored output "
        "(or RAMIT_MAX_PIXELS); 0 for no limit",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--skip-existing", action="store_true", help="leave inputs whose output exists (resume a run)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: files whose output exists are left, videos continue from their restored "
        "segments; a dataset run restores only the shards its output folder lacks",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-image lines and no progress bar")
    add_video_arguments(parser)
    add_dataset_arguments(parser)
    parser.set_defaults(run=run)
    return parser


# --format -> the extension of the outputs
FORMAT_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}
_LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")


def add_video_arguments(parser) -> None:
    from ..video import CODECS, DEFAULT_CODEC, SEGMENT_FRAMES

    group = parser.add_argument_group("videos", "how restored videos are encoded (docs/video.md)")
    group.add_argument(
        "--codec",
        choices=tuple(CODECS),
        default=DEFAULT_CODEC,
        help=f"video encoder (default {DEFAULT_CODEC}; ffv1 is lossless: the restored pixels exactly)",
    )
    group.add_argument(
        "--crf",
        type=int,
        help="constant rate factor: lower is better and larger (default 18 for "
        "libx264, 20 for libx265, 30 for libsvtav1)",
    )
    group.add_argument("--bit-rate", metavar="RATE", help="a target bit rate instead of --crf, e.g. 8M or 2500k")
    group.add_argument(
        "--pix-fmt",
        metavar="FORMAT",
        help="pixel format, e.g. yuv420p10le (default: the input's where the codec takes it, else 4:2:0 at its depth)",
    )
    group.add_argument(
        "--segment-frames",
        type=positive_int,
        default=SEGMENT_FRAMES,
        metavar="N",
        help=f"frames per independently encoded segment, what an interruption can lose (default {SEGMENT_FRAMES})",
    )


def quality(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 100, got {value!r}")
    return number


@dataclass
class Job:
    """One input and where its output goes."""

    source: str
    output: Path


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0


def collect_inputs(
    specs: list[str], exclude: Path | None = None
) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Files, folders, globs and URLs -> ([(source, relative output name)], [(spec, problem)]), in a stable order.

    Folders are searched recursively for `IMAGE_EXTENSIONS` (hidden files and anything under `exclude`, the output
    folder, left out); a file named directly is taken whatever its extension (and fails later if it is no image).
    """
    from ..image_files import IMAGE_EXTENSIONS, glob_files, is_image_file, walk_files
    from ..image_io import is_url, not_a_regular_file
    from ..video import VIDEO_EXTENSIONS, is_video_file

    items, failures, seen = [], [], set()

    def add(source: str, relative: Path, key) -> None:
        if key not in seen:
            seen.add(key)
            items.append((source, relative))

    def wanted(path: Path, base: Path) -> bool:
        if not (is_image_file(path) or is_video_file(path)):
            return False
        if any(part.startswith(".") for part in path.relative_to(base).parts):
            return False
        # an output folder inside an input folder: earlier outputs are not inputs
        inside = exclude is not None and exclude != base.resolve() and exclude.is_relative_to(base.resolve())
        return not (inside and path.resolve().is_relative_to(exclude))

    for spec in specs:
        path = Path(spec).expanduser()
        if is_url(spec):
            name = Path(spec.split("?")[0].split("#")[0]).name or "image.png"
            add(spec, Path(name), spec)
        elif path.is_dir():
            files = sorted(p for p in walk_files(path) if wanted(p, path))
            if not files:
                kinds = ", ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
                failures.append((spec, f"folder contains no images or videos ({kinds})"))
            for file in files:
                add(str(file), file.relative_to(path), file.resolve())
        elif path.is_file():
            add(spec, Path(path.name), path.resolve())
        elif _has_magic(spec):
            base, found = glob_files(spec)
            matches = sorted(p for p in found if wanted(p, base))
            if not matches:
                failures.append((spec, "pattern matches no image or video files"))
            for file in matches:
                add(str(file), file.relative_to(base), file.resolve())
        elif path.exists():
            failures.append((spec, not_a_regular_file(path) or "not a regular file or folder"))
        else:
            failures.append((spec, "no such file or folder"))
    return items, failures


def _has_magic(text: str) -> bool:
    return any(char in text for char in "*?[")


def output_name(relative: Path, bit_depth: str, format: str | None = None, codec: str | None = None) -> Path:
    """Images: with `format` (--format), its extension; else lossless formats keep their extension, and lossy ones,
    and with --bit-depth 16 those that hold only 8 bits, become .png. Videos: the input's container where it holds
    `codec`, else .mkv (`ramit_hf.video.output_extension`)."""
    from ..deep_images import SIXTEEN_BIT_EXTENSIONS
    from ..image_files import LOSSLESS_EXTENSIONS
    from ..video import DEFAULT_CODEC, is_video_file, output_extension

    suffix = relative.suffix.lower()
    if is_video_file(relative):
        new_suffix = output_extension(relative, codec or DEFAULT_CODEC)
    elif format is not None:
        new_suffix = FORMAT_EXTENSIONS[format]
    elif (bit_depth == "16" and suffix not in SIXTEEN_BIT_EXTENSIONS) or suffix not in LOSSLESS_EXTENSIONS:
        new_suffix = ".png"
    else:
        return relative
    if suffix.lower() == new_suffix:
        return relative
    return relative.with_suffix(new_suffix) if suffix else relative.with_name(relative.name + new_suffix)


def plan_outputs(
    items,
    output: Path,
    bit_depth: str,
    overwrite: bool,
    skip_existing: bool,
    single_file: bool,
    format=None,
    codec: str | None = None,
) -> Plan:
    """Map inputs to outputs; refuse two inputs writing one file, and existing outputs unless told otherwise."""
    from ..image_io import is_url

    plan = Plan()
    targets: dict[Path, str] = {}
    for source, relative in items:
        target = output if single_file else output / output_name(relative, bit_depth, format, codec)
        key = target.resolve()
        if target.exists() and not is_url(source) and os.path.samefile(target, source):
            plan.failures.append((source, f"the output {target} is this input itself, which is never overwritten"))
            continue
        if key in targets:
            raise ValueError(f"{targets[key]} and {source} would both be written to {target}; restore them separately")
        targets[key] = source
        if target.exists() and not overwrite:
            if skip_existing:
                plan.skipped += 1
            else:
                plan.failures.append((source, f"output {target} exists (pass --overwrite to replace it)"))
            continue
        plan.jobs.append(Job(source, target))
    return plan


def run(args: argparse.Namespace) -> int:
    if args.dataset is not None:
        return run_dataset(args)
    if not args.inputs:
        return fail("restore", "give image files, folders, glob patterns or URLs (or --dataset)")
    if args.overwrite and (args.skip_existing or args.resume):
        return fail(
            "restore", f"--overwrite and {'--resume' if args.resume else '--skip-existing'} contradict each other"
        )
    try:
        if args.runtime != "onnxruntime":  # an ONNX Runtime model takes CPU inputs and says so itself
            check_device(args.device)
    except ValueError as error:
        return fail("restore", error)
    from ..deep_images import SIXTEEN_BIT_EXTENSIONS
    from ..image_files import IMAGE_EXTENSIONS
    from ..video import CONTAINERS, is_video_file

    try:
        encoding = _video_encoding(args)
    except ValueError as error:
        return fail("restore", error)
    output = Path(args.output).expanduser()
    for spec in args.inputs:
        if Path(spec).expanduser().is_dir() and Path(spec).expanduser().resolve() == output.resolve():
            return fail(
                "restore",
                f"-o {args.output} is the input folder {spec}: outputs would mix with (or replace) the "
                "images they come from; choose another output folder",
            )
    items, failures = collect_inputs(args.inputs, exclude=output.resolve())
    single_file = (
        len(items) == 1
        and len(args.inputs) == 1
        and Path(args.inputs[0]).is_file()
        and output.suffix.lower() in (CONTAINERS if is_video_file(args.inputs[0]) else IMAGE_EXTENSIONS)
        and not output.is_dir()
    )
    if output.is_file() and not single_file:
        return fail(
            "restore",
            f"{output} is a file; -o must be a folder (or, for a single input file, a file name of its kind)",
        )
    if single_file and args.bit_depth == "16" and output.suffix.lower() not in SIXTEEN_BIT_EXTENSIONS:
        return fail("restore", f"--bit-depth 16 needs a {', '.join(SIXTEEN_BIT_EXTENSIONS)} output, not {output}")
    if single_file and args.format is not None:
        from PIL import Image

        if Image.registered_extensions().get(output.suffix.lower()) != args.format.upper():
            return fail("restore", f"-o {output} and --format {args.format} name different formats; choose one")
    lossy = args.format in ("jpeg", "webp") or (single_file and output.suffix.lower() in _LOSSY_EXTENSIONS)
    if args.quality is not None and not lossy:
        return fail("restore", "--quality applies to JPEG and WebP outputs: add --format jpeg or --format webp")
    try:
        plan = plan_outputs(
            items,
            output,
            args.bit_depth,
            args.overwrite,
            args.skip_existing or args.resume,
            single_file,
            args.format,
            encoding.codec,
        )
    except ValueError as error:
        return fail("restore", error)

    rank, world, local_rank = _distributed_setup()
    jobs = plan.jobs[rank::world]
    failures = (failures + plan.failures)[rank::world]

    restored, elapsed, fatal = 0, 0.0, None
    if jobs:
        try:
            pipe = _build_pipeline(args, local_rank)
        except (ValueError, OSError, RuntimeError, ImportError) as error:
            fatal = str(error)
        else:
            if not args.quiet and rank == 0:
                config = pipe.model.config
                params = pipe.model.num_parameters()
                where = f"{world} processes" if world > 1 else f"{pipe.device}"
                name = f"{config.variant or 'RAMiT'} {config.task or ''}".strip()
                if pipe.compute is None:  # an ONNX graph, in the precision it was exported in
                    dtype = str(pipe.model.dtype).removeprefix("torch.")
                    print(f"model: {name} ({params:,} parameters), {dtype} on {where}, ONNX Runtime")
                else:
                    print(f"model: {name} ({params:,} parameters), {pipe.compute.describe()} on {where}")
            start = time.perf_counter()
            images = [job for job in jobs if not is_video_file(job.source)]
            videos = [job for job in jobs if is_video_file(job.source)]
            restored, new_failures = _restore(pipe, images, args, rank, world) if images else (0, [])
            failures += new_failures
            for job in videos:
                failure = _restore_video(pipe, job, encoding, args, rank, world)
                if failure is None:
                    restored += 1
                else:
                    failures.append((job.source, failure))
            elapsed = time.perf_counter() - start

    skipped = plan.skipped
    if world > 1:
        # every process takes part, also one that failed or had nothing to do, so none waits for ever
        restored, failures, elapsed, fatal = _gather(restored, failures, elapsed, fatal)
    _distributed_teardown(world)
    if fatal is not None:
        return fail("restore", fatal) if rank == 0 else 2
    if rank == 0:
        noun = "file" if any(is_video_file(source) for source, _ in items) else "image"
        _summary(restored, skipped, failures, elapsed, output, single_file, noun)
    return 1 if failures else 0


def _build_pipeline(args, local_rank: int):
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the weight-loading bar: noise for a one-line-per-image command

    from ..convert import processor_for
    from ..inference import choose_compute, load_model
    from ..pipeline_image_restoration import ImageRestorationPipeline

    device = args.device
    if device == "auto" and args.runtime == "onnxruntime":
        device = "cpu"  # where the ONNX Runtime model takes its inputs
    elif device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and local_rank:
        device = f"cuda:{local_rank}"
    if args.runtime == "onnxruntime":
        # a graph runs in the precision it was exported in; "auto" takes that one
        dtype = None if args.dtype == "auto" else args.dtype
        model = load_model(args.model, device=device, dtype=dtype, task=args.task, runtime="onnxruntime")
    else:
        model = load_model(args.model, device=device, task=args.task, runtime="torch")
    if args.task is not None and model.config.task not in (None, args.task):
        raise ValueError(f"{args.model} is a {model.config.task} model, not {args.task}")
    processor = processor_for(model.config)
    pipe = ImageRestorationPipeline(model=model, image_processor=processor, device=torch.device(device))
    pipe.compute = None
    if args.runtime != "onnxruntime":
        model.set_computation(args.computation)
        pipe.compute = choose_compute(device, args.dtype, args.computation)
        pipe.compute.apply(pipe.model)
    return pipe


def _restore(pipe, jobs: list[Job], args, rank: int, world: int) -> tuple[int, list[tuple[str, str]]]:
    from tqdm.auto import tqdm

    from ..image_io import save_image

    prefix = f"[{rank}] " if world > 1 else ""
    bit_depth = "auto" if args.bit_depth == "auto" else int(args.bit_depth)
    failures, restored = [], 0
    show_bar = not args.quiet and len(jobs) > 1
    bar = tqdm(total=len(jobs), unit="image", disable=not show_bar, desc=f"{prefix}restoring".strip(), file=sys.stderr)
    scale = pipe.model.config.upscale
    results = pipe.iter_outputs(
        [job.source for job in jobs],
        batch_size=args.batch_size,
        return_errors=True,
        tile_size=args.tile,
        tile_overlap=args.tile_overlap,
        output_type="np",
        bit_depth=bit_depth,
        with_metadata=True,
        max_pixels=args.max_pixels,
    )
    last = time.perf_counter()
    for index, result in results:
        job = jobs[index]
        if isinstance(result, Exception):
            failures.append((job.source, _message(result, job.source)))
        else:
            result, metadata = result
            try:
                save_image(
                    _fit_bit_depth(result, job.output, metadata.float_white),
                    job.output,
                    overwrite=args.overwrite,
                    metadata=metadata,
                    quality=args.quality,
                )
            except (OSError, ValueError) as error:
                failures.append((job.source, f"cannot write {job.output}: {error}"))
            else:
                restored += 1
                now = time.perf_counter()
                if not args.quiet:
                    height, width = result.shape[:2]
                    bar.write(
                        f"{prefix}{job.source}: {width // scale}x{height // scale} -> {width}x{height} "
                        f"in {now - last:.1f} s -> {job.output}",
                        file=sys.stdout,
                    )
        last = time.perf_counter()
        bar.update(1)
    bar.close()
    return restored, failures


def _video_encoding(args):
    from ..video import VideoEncoding, parse_bit_rate

    bit_rate = None if args.bit_rate is None else parse_bit_rate(args.bit_rate)
    return VideoEncoding(args.codec, args.crf, bit_rate, args.pix_fmt, args.segment_frames)


def _restore_video(pipe, job: Job, encoding, args, rank: int, world: int) -> str | None:
    """Restore one video (`ramit_hf.video.restore_video`); returns why it failed, or None."""
    from ..video import VideoError, parts_folder, restore_video

    prefix = f"[{rank}] " if world > 1 else ""
    try:
        result = restore_video(
            pipe,
            job.source,
            job.output,
            encoding,
            resume=args.resume,
            overwrite=args.overwrite,
            batch_size=args.batch_size,
            tile_size=args.tile,
            tile_overlap=args.tile_overlap,
            max_pixels=args.max_pixels,
            progress=not args.quiet,
        )
    except (VideoError, FileExistsError, ValueError, ImportError) as error:
        return _message(error, job.source)
    except OSError as error:
        return f"cannot write {job.output}: {error}"
    except BaseException:  # Ctrl-C, SIGTERM: say what is kept before the command reports the interruption
        parts = parts_folder(job.output)
        if parts.is_dir() and any(parts.glob("segment-*")):
            print(
                f"{prefix}{job.source}: its restored segments are kept in {parts}; continue with --resume",
                file=sys.stderr,
            )
        raise
    if not args.quiet:
        fps = result.restored_frames / result.seconds if result.seconds else 0.0
        resumed = (
            f" ({result.frames - result.restored_frames} from an earlier run)"
            if result.restored_frames < result.frames
            else ""
        )
        kept = f", kept: {', '.join(result.copied_streams)}" if result.copied_streams else ""
        print(
            f"{prefix}{job.source}: {result.frames} frames{resumed} in {result.seconds:.1f} s ({fps:.2f} frames/s)"
            f" -> {job.output}{kept}"
        )
    return None


def _fit_bit_depth(array, output: Path, float_white: float = 1.0):
    """16-bit and float results go as they are to the formats that hold them (`deep_images.SIXTEEN_BIT_EXTENSIONS`,
    `FLOAT_EXTENSIONS`); where the output's format holds less (an output file named by the user), float becomes
    16-bit (from its white, `float_white`) and 16-bit becomes 8-bit, rounded as the 8-bit path rounds."""
    import numpy as np

    from ..deep_images import FLOAT_EXTENSIONS, SIXTEEN_BIT_EXTENSIONS

    suffix = output.suffix.lower()
    if array.dtype == np.float32 and suffix not in FLOAT_EXTENSIONS:
        array = np.round(np.clip(array / float_white, 0, 1) * 65535).astype(np.uint16)
    if array.dtype == np.uint16 and suffix not in SIXTEEN_BIT_EXTENSIONS:
        return np.round(array / 257.0).astype(np.uint8)
    return array


def _message(error: Exception, source: str) -> str:
    message = str(error)
    if message.startswith("input "):
        message = message.split(": ", 1)[-1]
    return message.removeprefix(f"{source}: ")


def _summary(restored, skipped, failures, elapsed, output: Path, single_file: bool, noun: str = "image") -> None:
    where = output if single_file else f"{output}{os.sep}"
    noun = noun if restored == 1 else f"{noun}s"
    line = f"restored {restored} {noun} into {where} in {elapsed:.1f} s"
    if skipped:
        line += f" ({skipped} skipped: output exists)"
    print(line)
    if failures:
        print(f"failed ({len(failures)}):", file=sys.stderr)
        for source, message in failures:
            print(f"  {source}: {message}", file=sys.stderr)


def _distributed_setup() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun / accelerate's environment; joins a gloo group when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            # gloo: only small Python objects (the summary) travel between processes, on any hardware
            dist.init_process_group(backend="gloo")
    return rank, world, local_rank


def _gather(restored, failures, elapsed, fatal):
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (restored, failures, elapsed, fatal))
    return (
        sum(g[0] for g in gathered),
        [failure for g in gathered for failure in g[1]],
        max(g[2] for g in gathered),
        next((g[3] for g in gathered if g[3] is not None), None),
    )


def _distributed_teardown(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
