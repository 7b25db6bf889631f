"""Restoring videos: every frame through the image restoration path, every other stream kept (docs/video.md).

RAMiT restores single images, so a video is its frames: decoded by PyAV (FFmpeg), restored in batches by the same
`ImageRestorationPipeline` that restores image files (the same padding, tiling, precision and computation, so a frame
comes out as its image would), and encoded as they come; no frame is written to disk as an image. Audio, subtitles,
other video streams (cover art), chapters and metadata are copied without re-encoding, and every frame keeps its
timestamp (variable frame rate included), so audio stays in sync and the output lasts as long as the input.

Resuming: the restored video is encoded in segments of `segment_frames` frames, each an independent encoding that
starts with a keyframe, stored in a parts folder beside the output (`.NAME.ramit-parts/`) as soon as it is complete.
An interrupted run (Ctrl-C, SIGTERM, a crash, kill -9) leaves the finished segments there; `resume=True` restores only
the missing ones. At the end the segments' packets are joined without re-encoding and muxed with the input's other
streams into the output, written atomically: the output of a resumed run is the same file as an uninterrupted one's.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_file_atomic, write_text_atomic

# files the restore command treats as videos (a folder is searched for these beside the image extensions)
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv")

# encoder -> (codec name in containers, default quality options); CRF values that keep restored detail
CODECS: dict[str, dict[str, Any]] = {
    "libx264": {"codec": "h264", "crf": 18, "options": {"preset": "medium"}},
    "libx265": {"codec": "hevc", "crf": 20, "options": {"preset": "medium"}, "tag": "hvc1"},
    "libsvtav1": {"codec": "av1", "crf": 30, "options": {"preset": "8"}},
    "ffv1": {"codec": "ffv1", "crf": None, "options": {}},
}
DEFAULT_CODEC = "libx264"
# output containers by extension (FFmpeg format names); an input in another container is written as Matroska
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
FALLBACK_EXTENSION = ".mkv"
# frames per independently encoded segment: what an interruption can lose, and the keyframe interval at most
SEGMENT_FRAMES = 60
PARTS_SUFFIX = ".ramit-parts"
_MANIFEST = "parts.json"
_PARTS_FORMAT = "mp4"  # keeps each packet's presentation and decode timestamps (negative ones too, in an edit list)


class VideoError(ValueError):
    """A video that cannot be restored (no video stream, damaged, changing, too large, ...), named in the message."""


@dataclass(frozen=True)
class VideoEncoding:
    """How the restored frames are encoded.

    codec: `libx264` (default), `libx265`, `libsvtav1` or `ffv1` (lossless: the restored RGB pixels exactly).
    crf: constant rate factor (lower is better and larger; default per codec: 18, 20, 30); not with `bit_rate`.
    bit_rate: a target bit rate instead, in bits per second (e.g. 8_000_000, or "8M" on the command line).
    pix_fmt: pixel format of the encoded video; default: the input's where the codec takes it (bit depth and chroma
        kept), else 4:2:0 at the input's depth (8 or 10 bits); RGB at the input's depth for ffv1.
    segment_frames: frames per independently encoded segment (resumable unit; the longest keyframe interval).
    """

    codec: str = DEFAULT_CODEC
    crf: int | None = None
    bit_rate: int | None = None
    pix_fmt: str | None = None
    segment_frames: int = SEGMENT_FRAMES

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unknown video codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        if self.crf is not None and self.bit_rate is not None:
            raise ValueError("give a CRF or a bit rate, not both")
        if self.codec == "ffv1" and (self.crf is not None or self.bit_rate is not None):
            raise ValueError("ffv1 is lossless: it takes no CRF or bit rate")
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise ValueError(f"crf must be from 0 to 63, got {self.crf}")
        if self.bit_rate is not None and self.bit_rate <= 0:
            raise ValueError(f"bit rate must be positive, got {self.bit_rate}")
        if self.segment_frames < 1:
            raise ValueError(f"segment_frames must be positive, got {self.segment_frames}")


def parse_bit_rate(text: str) -> int:
    """ "8M", "2500k", "800000" -> bits per second."""
    factor = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if factor > 1 else text)
    except ValueError:
        raise ValueError(f"expected a bit rate such as 8M, 2500k or 800000, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive bit rate, got {text!r}")
    return int(value * factor)


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def output_extension(input_path: str | os.PathLike, codec: str = DEFAULT_CODEC) -> str:
    """The input's extension where that container holds `codec` (and is one this library writes), else .mkv."""
    suffix = Path(input_path).suffix.lower()
    container = CONTAINERS.get(suffix)
    if container is not None and _holds(container, CODECS[codec]["codec"]):
        return suffix
    return FALLBACK_EXTENSION


def parts_folder(output: str | os.PathLike) -> Path:
    """Where the segments of `output` wait until it is written (hidden, beside it)."""
    output = Path(output)
    return output.with_name(f".{output.name}{PARTS_SUFFIX}")


@dataclass
class VideoResult:
    """What `restore_video` did."""

    output: Path
    frames: int
    restored_frames: int  # this run's; fewer than `frames` when resumed
    seconds: float
    copied_streams: list[str] = field(default_factory=list)


def restore_video(
    model,
    input: str | os.PathLike,
    output: str | os.PathLike,
    encoding: VideoEncoding | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    batch_size: int = 1,
    tile_size: int | str | None = "auto",
    tile_overlap: int | None = None,
    max_pixels: int | None = None,
    progress: bool = True,
    on_frame: Callable[[int], None] | None = None,
) -> VideoResult:
    """Restore the video file `input` into `output` (its container from its extension), keeping every other stream.

    `model`: a RAMiT model (run in the precision and computation `inference.choose_compute` picks for its device) or
    an `ImageRestorationPipeline`. `encoding`: codec, CRF or bit rate, pixel format (`VideoEncoding`). `resume`:
    continue an interrupted run from the segments in `parts_folder(output)`; without it those parts are an error
    (or, with `overwrite`, discarded). An existing output is replaced only with `overwrite`, and never the input.
    `batch_size` frames are restored together; `tile_size`, `tile_overlap` and `max_pixels` (the largest frame, width
    x height) as for images. `on_frame(index)` is called after each restored frame.
    """

    from .pipeline_image_restoration import ImageRestorationPipeline

    _require_av()
    encoding = encoding or VideoEncoding()
    input, output = Path(input), Path(output)
    pipe = model if isinstance(model, ImageRestorationPipeline) else _pipeline(model)
    _check_paths(input, output, overwrite)
    if output.suffix.lower() not in CONTAINERS:
        raise VideoError(f"{output}: cannot write a video named so; use one of {', '.join(CONTAINERS)}")
    start = time.perf_counter()
    with _open_input(input) as container:
        stream = _video_stream(container, input)
        plan = _Plan.make(container, stream, input, output, encoding, pipe, max_pixels)
        parts = _prepare_parts(output, plan, resume, overwrite)
        restored = _restore_segments(
            container, stream, plan, parts, pipe, batch_size, tile_size, tile_overlap, progress, on_frame
        )
    _check_unchanged(input, plan)
    copied = _mux(input, output, plan, parts, overwrite)
    shutil.rmtree(parts, ignore_errors=True)
    return VideoResult(output, plan.frames_done, restored, time.perf_counter() - start, copied)


def _require_av() -> None:
    try:
        import av  # noqa: F401
    except ImportError:
        raise ImportError("restoring videos needs PyAV: pip install 'ramit-hf[video]' (or pip install av)") from None


def _pipeline(model):
    from .pipeline_image_restoration import ImageRestorationPipeline

    return ImageRestorationPipeline(model=model, device=model.device, precision="auto")


# ----------------------------------------------------------------------------------------------
# checks before anything is decoded


def _check_paths(input: Path, output: Path, overwrite: bool) -> None:
    from .image_io import not_a_regular_file

    if not input.exists():
        raise VideoError(f"{input}: no such file")
    problem = not_a_regular_file(input)
    if problem:
        raise VideoError(f"{input}: {problem}")
    if output.exists() and os.path.samefile(input, output):
        raise VideoError(f"{input}: the output is this input itself, which is never overwritten")
    if output.exists() and not overwrite:
        raise FileExistsError(f"output {output} exists (pass --overwrite / overwrite=True to replace it)")


def _open_input(path: Path):
    """The input container, its open failures named (a file still being written often has no index yet)."""
    import av

    try:
        return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as error:
        raise VideoError(
            f"{path}: cannot be read as a video ({_ffmpeg_message(error)}); if it is still being written, wait "
            "until it is complete"
        ) from None


def _ffmpeg_message(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _video_stream(container, path: Path):
    """The first video stream that is not a cover picture."""
    from av.stream import Disposition

    videos = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if videos:
        return videos[0]
    kinds = sorted({s.type for s in container.streams})
    if container.streams.video:
        raise VideoError(f"{path}: has no video stream to restore, only a cover picture ({', '.join(kinds)})")
    held = f"only {' and '.join(kinds)} streams" if kinds else "no streams"
    raise VideoError(f"{path}: has no video stream ({held})")


_SUPPORTED: dict[str, set[str]] = {}


def _holds(container: str, codec: str) -> bool:
    """Whether FFmpeg's muxer for `container` takes `codec` (asked once per container)."""
    import io

    import av

    if container not in _SUPPORTED:
        with av.open(io.BytesIO(), "w", format=container) as probe:
            _SUPPORTED[container] = set(probe.supported_codecs)
    return codec in _SUPPORTED[container]


@dataclass
class _Plan:
    """Everything decided about a video before its first frame: what the segments' encoder makes and what the
    output holds. Written to the parts folder, so that a resumed run continues only what the same settings made."""

    input: dict[str, Any]
    width: int
    height: int
    scale: int
    bits: int  # 8, or 16 for inputs deeper than 8 bits
    pix_fmt: str
    time_base: tuple[int, int]
    rate: tuple[int, int] | None
    color: dict[str, int]
    rotation: float
    encoding: dict[str, Any]
    model: dict[str, Any]
    container: str
    estimated_frames: int | None
    frames_done: int = 0

    @classmethod
    def make(cls, container, stream, input: Path, output: Path, encoding: VideoEncoding, pipe, max_pixels) -> _Plan:
        from .pixel_budget import check_max_pixels, max_pixels_for

        context = stream.codec_context
        width, height = context.width, context.height
        scale = pipe.model.config.upscale
        budget = max_pixels_for(scale) if max_pixels is None else check_max_pixels(max_pixels)
        if not width or not height:
            raise VideoError(f"{input}: its video stream has no frame size; the file is damaged or not a video")
        if budget and width * height > budget:
            raise VideoError(
                f"{input}: {width}x{height} = {width * height:,} pixels per frame is more than the pixel budget of "
                f"{budget:,}; pass max_pixels / --max-pixels (0 for no limit) if there is memory for it"
            )
        format_name = context.format.name if context.format is not None else "yuv420p"
        depth = max((c.bits for c in context.format.components), default=8) if context.format is not None else 8
        bits = 8 if depth <= 8 else 16
        pix_fmt = _output_pix_fmt(encoding, format_name, depth, input)
        _check_even(pix_fmt, width * scale, height * scale, encoding.codec, input)
        out_container = CONTAINERS[output.suffix.lower()]
        if not _holds(out_container, CODECS[encoding.codec]["codec"]):
            raise VideoError(
                f"{output}: a {output.suffix} file cannot hold {encoding.codec} video; name the output .mkv (holds "
                f"every codec) or choose another codec"
            )
        for other in container.streams:
            if other is stream or other.type == "attachment":
                continue
            name = other.codec_context.name if other.codec_context is not None else None
            if other.type in ("audio", "subtitle", "video") and name and not _holds(out_container, name):
                raise VideoError(
                    f"{output}: a {output.suffix} file cannot hold stream {other.index} of {input} ({other.type}, "
                    f"{name}), which is copied without re-encoding; choose a container that holds it (.mkv holds "
                    "SubRip, ASS and WebVTT subtitles, .mp4 and .mov hold mov_text)"
                )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        estimated = stream.frames or None
        if estimated is None and stream.duration and rate:
            estimated = round(float(stream.duration * stream.time_base * rate))
        elif estimated is None and container.duration and rate:
            estimated = round(container.duration / 1_000_000 * float(rate))
        stat = input.stat()
        model = pipe.model
        compute = getattr(pipe, "compute", None)
        return cls(
            input={"path": str(input.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
            width=width,
            height=height,
            scale=scale,
            bits=bits,
            pix_fmt=pix_fmt,
            time_base=(stream.time_base.numerator, stream.time_base.denominator),
            rate=(rate.numerator, rate.denominator) if rate else None,
            color={
                "colorspace": int(context.colorspace),
                "color_range": int(context.color_range),
                "color_primaries": int(context.color_primaries),
                "color_trc": int(context.color_trc),
            },
            rotation=_rotation(input, stream.index),
            encoding=asdict(encoding),
            model={
                "name": str(getattr(model, "name_or_path", "") or ""),
                "config": _config_digest(model),
                "dtype": str(model.dtype),
                "computation": compute.computation if compute is not None else None,
            },
            container=out_container,
            estimated_frames=estimated,
        )

    def settings(self) -> dict[str, Any]:
        """What the parts folder records, as read back from its JSON."""
        data = asdict(self)
        data.pop("frames_done")
        return json.loads(json.dumps(data))


def _rotation(path: Path, index: int) -> float:
    """The display rotation of video stream `index` (degrees, counter-clockwise), read from its first frame."""
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(container.streams[index]), None)
    except av.FFmpegError:
        return 0.0  # the main pass names the damage
    return float(getattr(frame, "rotation", 0) or 0)


def _config_digest(model) -> str:
    import hashlib

    text = json.dumps(model.config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _output_pix_fmt(encoding: VideoEncoding, input_format: str, depth: int, input: Path) -> str:
    import av

    supported = [f.name for f in av.Codec(encoding.codec, "w").video_formats or ()]
    if encoding.pix_fmt is not None:
        if encoding.pix_fmt not in supported:
            raise VideoError(
                f"{encoding.codec} cannot encode pixel format {encoding.pix_fmt!r}; it takes {', '.join(supported)}"
            )
        return encoding.pix_fmt
    if encoding.codec == "ffv1":  # lossless means the restored RGB pixels themselves
        wanted = ["bgr0"] if depth <= 8 else [f"gbrp{min(depth, 14)}le", "gbrp14le"]
    else:
        deep = "10le" if depth > 8 else ""
        wanted = [input_format, f"yuv420p{deep}", "yuv420p"]
    chosen = next((name for name in wanted if name in supported), None)
    if chosen is None:  # pragma: no cover - every codec above takes yuv420p or bgr0
        raise VideoError(f"{input}: no pixel format of {encoding.codec} fits it; pass pix_fmt / --pix-fmt")
    return chosen


def _check_even(pix_fmt: str, width: int, height: int, codec: str, input: Path) -> None:
    subsampled = pix_fmt.startswith(("yuv420", "yuvj420", "nv12", "nv21", "yuva420"))
    horizontal = subsampled or pix_fmt.startswith(("yuv422", "yuvj422", "nv16", "nv20", "yuva422"))
    if (horizontal and width % 2) or (subsampled and height % 2):
        raise VideoError(
            f"{input}: the restored frames are {width}x{height}, which {pix_fmt} ({codec}) cannot hold (its colour "
            "is subsampled, so both sides must be even); pass --pix-fmt yuv444p / pix_fmt='yuv444p', or ffv1"
        )


# ----------------------------------------------------------------------------------------------
# the parts folder


def _prepare_parts(output: Path, plan: _Plan, resume: bool, overwrite: bool) -> Path:
    parts = parts_folder(output)
    manifest = parts / _MANIFEST
    if parts.exists():
        if resume:
            try:
                recorded = json.loads(manifest.read_text())
            except (OSError, ValueError):
                recorded = None
            if recorded != plan.settings():
                raise VideoError(
                    f"{output}: the parts in {parts} were made from another input file or with other settings "
                    f"({_difference(recorded, plan.settings())}); remove that folder, or rerun without --resume and "
                    "with --overwrite to start again"
                )
            return parts
        if not overwrite:
            raise VideoError(
                f"{output}: an interrupted run left its restored segments in {parts}; pass --resume to continue it "
                "or --overwrite to start again"
            )
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    write_text_atomic(manifest, json.dumps(plan.settings(), indent=1, sort_keys=True))
    return parts


def _difference(recorded, current: dict) -> str:
    if not isinstance(recorded, dict):
        return "its record is missing or damaged"
    keys = sorted(k for k in current if recorded.get(k) != current[k])
    if "input" in keys:
        return "the input file changed since"
    return "different " + ", ".join(keys)


def _segment_path(parts: Path, index: int) -> Path:
    return parts / f"segment-{index:06d}.{_PARTS_FORMAT}"


def _done_segments(parts: Path) -> set[int]:
    found = set()
    for path in parts.glob(f"segment-*.{_PARTS_FORMAT}"):
        stem = path.stem.removeprefix("segment-")
        if stem.isdigit():
            found.add(int(stem))
    return found


# ----------------------------------------------------------------------------------------------
# decoding, restoring, encoding


def _restore_segments(
    container, stream, plan: _Plan, parts: Path, pipe, batch_size, tile_size, tile_overlap, progress, on_frame
) -> int:
    """Decode every frame; restore and encode those of the segments not yet in `parts`. Returns frames restored."""
    import av
    from tqdm.auto import tqdm

    segment_frames = plan.encoding["segment_frames"]
    done = _done_segments(parts)
    name = Path(plan.input["path"]).name
    bar = tqdm(
        total=plan.estimated_frames,
        unit="frame",
        desc=name if stream.frames else f"{name} (frame count estimated)",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    writer: _SegmentWriter | None = None
    batch: list[tuple[int, Any, np.ndarray]] = []  # (index, decoded frame, its RGB pixels)
    restored, index, seconds = 0, -1, 0.0

    def flush() -> None:
        nonlocal restored
        outputs = _restore_arrays(pipe, [array for _, _, array in batch], batch_size, tile_size, tile_overlap)
        for (frame_index, frame, _), output in zip(batch, outputs, strict=True):
            assert writer is not None
            writer.encode(output, frame)
            restored += 1
            bar.update(1)
            if on_frame is not None:
                on_frame(frame_index)
        batch.clear()

    try:
        for frame in _decode(container, stream, plan):
            index += 1
            seconds = float(frame.time or 0.0)
            if (frame.width, frame.height) != (plan.width, plan.height):
                raise VideoError(
                    f"{plan.input['path']}: frame {index} (at {seconds:.3f} s) is {frame.width}x{frame.height}, "
                    f"but the video started at {plan.width}x{plan.height}; videos that change size are not supported"
                )
            segment = index // segment_frames
            if segment in done:
                bar.update(1)
                continue
            if writer is None or writer.segment != segment:
                flush()
                if writer is not None:
                    writer.finish()
                writer = _SegmentWriter(plan, parts, segment)
            batch.append((index, frame, _to_array(frame, plan.bits)))
            if len(batch) == batch_size:
                flush()
        flush()
        plan.frames_done = index + 1
        if plan.frames_done == 0:
            raise VideoError(f"{plan.input['path']}: its video stream holds no frames")
        _check_complete(stream, plan, seconds, parts)  # before the last segment is kept: it may be cut short
        if writer is not None:
            writer.finish()
            writer = None
    except _DamagedFrame as error:
        kept = len(_done_segments(parts))
        raise VideoError(
            f"{plan.input['path']}: the video stream is damaged at frame {index + 1} (after {seconds:.3f} s): "
            f"{error}; {kept} restored segment(s) of {segment_frames} frames are kept in {parts} for --resume"
        ) from None
    except av.FFmpegError as error:
        raise VideoError(
            f"{plan.input['path']}: {plan.encoding['codec']} cannot encode frame {index} as {plan.pix_fmt} "
            f"({_ffmpeg_message(error)})"
        ) from None
    finally:
        if writer is not None:
            writer.abandon()
        bar.close()
    return restored


def _check_complete(stream, plan: _Plan, last_seconds: float, parts: Path) -> None:
    """A stream whose header promises more frames and time than could be decoded is cut short (a damaged copy, or a
    file still being written); the frames before the cut are kept for --resume."""
    promised = stream.frames
    if not promised or plan.frames_done >= promised or not stream.duration or not plan.rate:
        return
    duration = float(stream.duration * stream.time_base)
    if last_seconds + 2 / float(Fraction(*plan.rate)) < duration:  # edit lists may drop a frame or two
        raise VideoError(
            f"{plan.input['path']}: its video ends at frame {plan.frames_done} ({last_seconds:.3f} s), but its header "
            f"promises {promised} frames ({duration:.3f} s): the file is cut short (damaged, or still being written); "
            f"the restored segments are kept in {parts} for --resume"
        )


class _DamagedFrame(Exception):
    """A frame the decoder could only conceal (FFmpeg's corrupt flag)."""


def _decode(container, stream, plan: _Plan) -> Iterator[Any]:
    """Frames in presentation order, each with a timestamp (the previous one plus a frame's time where missing)."""
    stream.thread_type = "AUTO"
    step = 1
    if plan.rate:
        step = max(1, round(1 / (Fraction(*plan.rate) * Fraction(*plan.time_base))))
    import av

    previous = None
    packets = container.demux(stream)
    while True:
        try:  # errors of reading and decoding only: the encoder's are not the input's damage
            packet = next(packets, None)
            frames = packet.decode() if packet is not None else []
        except av.FFmpegError as error:
            raise _DamagedFrame(_ffmpeg_message(error)) from None
        if packet is None:
            return
        for frame in frames:
            if frame.is_corrupt:
                raise _DamagedFrame("the decoder could only conceal errors in it")
            if frame.pts is None:
                frame.pts = 0 if previous is None else previous + step
            elif previous is not None and frame.pts <= previous:
                frame.pts = previous + 1  # a repeated timestamp would make the encoder drop or reorder the frame
            previous = frame.pts
            yield frame


def _to_array(frame, bits: int) -> np.ndarray:
    """A decoded frame -> (H, W, 3) uint8 (or uint16 for deeper video) RGB, its colour matrix and range followed."""
    return frame.to_ndarray(
        format="rgb24" if bits == 8 else "rgb48le",
        src_color_range=frame.color_range or None,
    )


def _restore_arrays(pipe, arrays, batch_size, tile_size, tile_overlap) -> Iterator[np.ndarray]:
    results = pipe.iter_outputs(
        arrays,
        batch_size=batch_size,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        output_type="np",
        bit_depth="auto",
        max_pixels=0,  # the frame size was checked against the budget once, before decoding
    )
    for _, array in results:
        yield array


class _SegmentWriter:
    """One segment: an encoder of its own (a keyframe first), writing to a temporary file in the parts folder that
    becomes `segment-NNNNNN.mp4` only when complete."""

    def __init__(self, plan: _Plan, parts: Path, segment: int) -> None:
        import av

        self.plan, self.segment = plan, segment
        self.path = _segment_path(parts, segment)
        self.temporary = self.path.with_name(self.path.name + ".partial")
        self.temporary.unlink(missing_ok=True)
        # edit lists (a segment starts late, its decode timestamps early) in the video's own time base, not in
        # milliseconds, so that no timestamp is rounded
        options = {"movie_timescale": str(plan.time_base[1]), "video_track_timescale": str(plan.time_base[1])}
        self.container = av.open(str(self.temporary), "w", format=_PARTS_FORMAT, options=options)
        self.stream = _add_encoder(self.container, plan)
        self.packets: list[Any] = []  # a segment's packets are kept until it is complete (compressed: small)
        self.finished = False

    def encode(self, array: np.ndarray, source_frame) -> None:
        import av

        plan = self.plan
        frame = av.VideoFrame.from_ndarray(array, format="rgb24" if array.dtype == np.uint8 else "rgb48le")
        color = plan.color
        frame = frame.reformat(
            format=plan.pix_fmt,
            dst_colorspace=color["colorspace"] or None,
            dst_color_range=color["color_range"] or None,
        )
        frame.pts = source_frame.pts
        frame.time_base = Fraction(*plan.time_base)
        if source_frame.duration:
            frame.duration = source_frame.duration
        self.packets.extend(self.stream.encode(frame))

    def finish(self) -> None:
        self.packets.extend(self.stream.encode(None))
        _decode_timestamps(self.packets)
        for packet in self.packets:
            self.container.mux(packet)
        self.container.close()
        os.replace(self.temporary, self.path)
        self.finished = True

    def abandon(self) -> None:
        if not self.finished:
            with contextlib.suppress(Exception):
                self.container.close()
            self.temporary.unlink(missing_ok=True)


def _decode_timestamps(packets: list) -> None:
    """Give a segment's packets (in decode order) decode timestamps from their presentation timestamps: the i-th
    smallest, moved back just enough that no packet is decoded after it is shown. Encoders' own differ (libx265
    leaves those of short segments unset), and these are what a demuxer would infer; they increase, so the
    segments join (`_interleave`)."""
    stamps = sorted(packet.pts for packet in packets)
    shift = max((stamp - packet.pts for stamp, packet in zip(stamps, packets, strict=True)), default=0)
    for stamp, packet in zip(stamps, packets, strict=True):
        packet.dts = stamp - shift


def _add_encoder(container, plan: _Plan):
    import av

    spec = CODECS[plan.encoding["codec"]]
    stream = container.add_stream(plan.encoding["codec"], rate=Fraction(*plan.rate) if plan.rate else None)
    stream.width, stream.height = plan.width * plan.scale, plan.height * plan.scale
    stream.pix_fmt = plan.pix_fmt
    stream.time_base = Fraction(*plan.time_base)
    context = stream.codec_context
    context.time_base = Fraction(*plan.time_base)
    context.flags |= av.codec.context.Flags.global_header  # the output container needs the headers apart
    for name, value in plan.color.items():
        if value:
            setattr(context, name, value)
    options = {**spec["options"]}
    if plan.encoding["bit_rate"] is not None:
        context.bit_rate = plan.encoding["bit_rate"]
    elif spec["crf"] is not None:
        options["crf"] = str(plan.encoding["crf"] if plan.encoding["crf"] is not None else spec["crf"])
    if plan.encoding["codec"] in ("libx264", "libx265"):
        # one keyframe per segment at its start (scene cuts may add more), and no open GOP: segments join cleanly
        options["g"] = str(plan.encoding["segment_frames"])
        key = "x264-params" if plan.encoding["codec"] == "libx264" else "x265-params"
        options[key] = "open-gop=0" if plan.encoding["codec"] == "libx265" else "open_gop=0"
        if plan.encoding["codec"] == "libx265":
            options[key] += ":log-level=error"
    elif plan.encoding["codec"] == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr at every encoder otherwise
        options["g"] = str(plan.encoding["segment_frames"])
        options["svtav1-params"] = "irefresh-type=2"  # closed GOP
    context.options = options
    return stream


# ----------------------------------------------------------------------------------------------
# joining the segments with the input's other streams


def _check_unchanged(input: Path, plan: _Plan) -> None:
    try:
        stat = input.stat()
    except OSError as error:
        raise VideoError(f"{input}: cannot be read any more ({error.strerror})") from None
    if (stat.st_size, stat.st_mtime_ns) != (plan.input["size"], plan.input["mtime_ns"]):
        raise VideoError(
            f"{input}: the file changed while it was read (is it still being written?); nothing was written; "
            "restore it again once it is complete"
        )


def _mux(input: Path, output: Path, plan: _Plan, parts: Path, overwrite: bool) -> list[str]:
    """Write `output`: the segments' video in place of the input's restored stream, every other stream copied."""
    copied: list[str] = []

    def write(file) -> None:
        copied.extend(_mux_into(file, input, plan, parts))

    write_file_atomic(output, write, overwrite=overwrite)
    return copied


def _mux_into(file, input: Path, plan: _Plan, parts: Path) -> list[str]:
    import av

    segments = [_segment_path(parts, i) for i in range(-(-plan.frames_done // plan.encoding["segment_frames"]))]
    missing = [p.name for p in segments if not p.exists()]
    if missing:
        raise VideoError(f"{input}: segments {', '.join(missing)} are missing from {parts}; restore it again")
    copied = []
    with (
        av.open(str(input), metadata_errors="replace") as source,
        # bitexact: no random identifiers (Matroska's UIDs), so a resumed run writes the same file as a whole one
        av.open(file, "w", format=plan.container, options={"fflags": "+bitexact"}) as out,
        av.open(str(segments[0])) as first,
    ):
        restored = _video_stream(source, input)
        out.metadata.update(source.metadata)
        mapping: dict[int, Any] = {}
        # opaque: codec parameters copied as they are, without an encoder named like the decoder (libdav1d and
        # mp3float have none)
        for stream in source.streams:
            new: Any
            if stream is restored:
                new = out.add_stream_from_template(first.streams.video[0], opaque=True)
                spec = CODECS[plan.encoding["codec"]]
                if spec.get("tag") and plan.container in ("mp4", "mov"):
                    new.codec_tag = spec["tag"]  # what Apple players look for
                if plan.rotation:
                    new.set_display_rotation(plan.rotation)
            elif stream.type == "attachment":
                continue  # fonts of subtitle tracks: carried below
            else:
                new = out.add_stream_from_template(stream, opaque=True)
                copied.append(f"{stream.type} {stream.index} ({stream.codec_context.name})")
            new.metadata.update(_kept_tags(stream.metadata, restored=stream is restored))
            _copy_disposition(stream, new)
            mapping[stream.index] = new
        for attachment in source.streams.attachments:
            try:
                name = attachment.name or f"attachment-{attachment.index}"
                out.add_attachment(name, attachment.mimetype or "application/octet-stream", bytes(attachment.data))
            except (av.FFmpegError, ValueError, TypeError) as error:
                raise VideoError(
                    f"{input}: its attachment {attachment.name!r} (stream {attachment.index}) cannot be copied into a "
                    f"{plan.container} file ({error}); name the output .mkv"
                ) from None
            copied.append(f"attachment {attachment.index} ({attachment.name})")
        chapters = source.chapters()
        if chapters:
            out.set_chapters(chapters)
        for packet, target in _interleave(source, restored, segments, mapping):
            packet.stream = target
            out.mux(packet)
    return copied


# tags a muxer writes from what it muxes (Matroska's statistics), and the restored stream's old encoder
_COMPUTED_TAGS = ("DURATION", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES", "_STATISTICS_")


def _kept_tags(tags: dict[str, str], restored: bool) -> dict[str, str]:
    return {
        key: value
        for key, value in tags.items()
        if not key.upper().startswith(_COMPUTED_TAGS) and not (restored and key.lower() == "encoder")
    }


def _copy_disposition(source, target) -> None:
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        target.disposition = source.disposition


def _interleave(source, restored, segments: list[Path], mapping) -> Iterator[Any]:
    """Packets of every output stream in time order: the segments' (their decode timestamps kept increasing across
    segment joins) and the input's other streams'."""
    import av

    def timed(packets: Iterator[Any], target_of: Callable[[Any], Any]) -> Iterator[tuple[float, Any, Any]]:
        last = -math.inf
        for packet in packets:
            stamp = packet.dts if packet.dts is not None else packet.pts
            if stamp is not None and packet.time_base is not None:
                last = max(last, float(stamp * packet.time_base))  # untimed packets go with the one before
            yield last, packet, target_of(packet)

    def segment_packets() -> Iterator[Any]:
        last_dts = None
        for path in segments:
            with av.open(str(path)) as part:
                for packet in part.demux(part.streams.video[0]):
                    if packet.size == 0:
                        continue
                    if packet.dts is not None and last_dts is not None and packet.dts <= last_dts:
                        # a segment's first decode timestamps lie before its first frame; past the previous
                        # segment's last one they are moved on by one tick, still before the frame they decode
                        packet.dts = last_dts + 1
                        if packet.pts is not None and packet.dts > packet.pts:
                            raise VideoError(f"{path.name} cannot follow the segment before it; restore it again")
                    last_dts = packet.dts
                    yield packet

    def other_packets() -> Iterator[Any]:
        others = [s for s in source.streams if s is not restored and s.index in mapping]
        if others:
            for packet in source.demux(others):
                if packet.size or packet.dts is not None:
                    yield packet

    video = mapping[restored.index]
    merged = heapq.merge(
        timed(segment_packets(), lambda packet: video),
        timed(other_packets(), lambda packet: mapping[packet.stream.index]),
        key=lambda item: item[0],
    )
    for _, packet, target in merged:
        yield packet, target


__all__ = [
    "CODECS",
    "VIDEO_EXTENSIONS",
    "VideoEncoding",
    "VideoError",
    "VideoResult",
    "is_video_file",
    "output_extension",
    "parse_bit_rate",
    "parts_folder",
    "restore_video",
]
