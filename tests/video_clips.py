"""Short synthetic clips made with PyAV for the video tests: moving colour frames, a sine-wave audio track, and
optionally subtitles and a variable frame rate."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 16000


def frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    """A gradient with a square moving across it: every frame differs, and edges give the model something to do."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), (x + y + 7 * index) % 256], -1)
    left = (3 * index) % max(width - 8, 1)
    image[height // 4 : height // 4 + 8, left : left + 8] = (250, 30, 60)
    return image.astype(np.uint8)


def make_clip(
    path: Path,
    frames: int = 12,
    size: tuple[int, int] = (40, 32),
    fps: int = 12,
    variable_rate: bool = False,
    audio: bool = True,
    subtitles: bool = False,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    audio_codec: str = "aac",
) -> list[int]:
    """Write the clip; returns the presentation timestamps of its frames (in 1/fps, or 1/1000 s when variable)."""
    width, height = size
    time_base = Fraction(1, 1000) if variable_rate else Fraction(1, fps)
    stamps = []
    t = 0
    for index in range(frames):
        stamps.append(t)
        t += (1000 // fps) * (1 + index % 3) if variable_rate else 1
    with av.open(str(path), "w") as container:
        container.metadata["title"] = "a test clip"
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if rotation:
            video.set_display_rotation(rotation)
        video.time_base = time_base
        video.codec_context.time_base = time_base
        if codec == "libx264":
            video.codec_context.options = {"preset": "ultrafast", "crf": "10"}
        sound = container.add_stream(audio_codec, rate=AUDIO_RATE, layout="mono") if audio else None
        text = container.add_mux_stream("mov_text" if path.suffix == ".mp4" else "subrip") if subtitles else None
        for index, stamp in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, width, height), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = stamp, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        duration = float((stamps[-1] + (1000 // fps if variable_rate else 1)) * time_base)
        if sound is not None:
            samples = int(duration * AUDIO_RATE)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / AUDIO_RATE)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = wave[None, start : start + 1024]
                audio_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                audio_frame.sample_rate, audio_frame.pts = AUDIO_RATE, start
                audio_frame.time_base = Fraction(1, AUDIO_RATE)
                container.mux(sound.encode(audio_frame))
            container.mux(sound.encode(None))
        if text is not None:
            for number, start in enumerate((0.0, duration / 2)):
                words = f"line {number}".encode()
                payload = len(words).to_bytes(2, "big") + words if path.suffix == ".mp4" else words
                packet = av.Packet(payload)
                packet.stream = text
                packet.time_base = Fraction(1, 1000)
                packet.pts = packet.dts = int(start * 1000)
                packet.duration = int(duration / 2 * 1000)
                container.mux(packet)
    return stamps
