"""Restoring videos: streams and timing kept, frames equal to the image path's, resumable, bad inputs named."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import REPO_ROOT, SHARED, checkpoint
from PIL import Image
from video_clips import AUDIO_RATE, make_clip

from ramit_hf import load_model
from ramit_hf.cli import main
from ramit_hf.pipeline_image_restoration import ImageRestorationPipeline
from ramit_hf.video import VideoEncoding, VideoError, parse_bit_rate, parts_folder, restore_video

SEGMENT = VideoEncoding(segment_frames=4)


@pytest.fixture(scope="module")
def pipe():
    model = load_model(checkpoint("RAMiT-slimSR_X2.pth"))
    return ImageRestorationPipeline(model=model, device=model.device, precision="auto")


def _streams(path: Path) -> dict:
    """Per stream: its type, codec, the timestamps (s) of its packets and where it ends (s)."""
    with av.open(str(path)) as container:
        found = {
            s.index: {"type": s.type, "codec": s.codec_context.name, "stamps": [], "end": 0.0, "payloads": []}
            for s in container.streams
        }
        for packet in container.demux():
            if packet.pts is None:
                continue
            info = found[packet.stream.index]
            start = float(packet.pts * packet.time_base)
            info["stamps"].append(start)
            info["end"] = max(info["end"], start + float((packet.duration or 0) * packet.time_base))
            if packet.stream.type == "subtitle":
                info["payloads"].append(bytes(packet))
    return found


def _frames(path: Path) -> tuple[list[float], list[np.ndarray]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [float(f.pts * f.time_base) for f in frames], [f.to_ndarray(format="rgb24") for f in frames]


def _no_leftovers(folder: Path, *keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "name, options",
    [
        ("cfr.mp4", {}),
        ("vfr.mkv", {"variable_rate": True, "subtitles": True}),
        ("subtitled.mp4", {"subtitles": True, "rotation": 90}),
    ],
)
def test_streams_timestamps_and_length_kept(tmp_path, pipe, name, options):
    source = tmp_path / name
    stamps = make_clip(source, frames=10, **options)
    output = tmp_path / "out" / name
    result = restore_video(pipe, source, output, SEGMENT, progress=False)
    assert result.frames == result.restored_frames == len(stamps) == 10
    before, after = _streams(source), _streams(output)
    assert [s["type"] for s in after.values()] == [s["type"] for s in before.values()]
    video_in, video_out = _frames(source), _frames(output)
    assert video_out[0] == pytest.approx(video_in[0], abs=1e-6)  # every frame at its time: VFR and audio sync kept
    assert all(out.shape == (64, 80, 3) for out in video_out[1])  # 40x32 at x2
    for index, stream in before.items():
        kept = after[index]
        assert kept["end"] == pytest.approx(stream["end"], abs=1e-3), stream["type"]
        if stream["type"] != "video":  # copied as they were
            assert kept["codec"] == stream["codec"]
            assert kept["stamps"] == pytest.approx(stream["stamps"], abs=1e-3)
            assert kept["payloads"] == stream["payloads"]
    with av.open(str(output)) as container:
        audio = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio))
    assert samples / AUDIO_RATE == pytest.approx(before[1]["end"], abs=0.07)  # the sine track's length
    assert _no_leftovers(output.parent) == [name]  # no parts folder, no temporary file
    with av.open(str(source)) as original, av.open(str(output)) as restored:
        assert next(restored.decode(video=0)).rotation == next(original.decode(video=0)).rotation
        assert restored.metadata.get("title") == original.metadata.get("title") == "a test clip"


def test_lossless_frames_equal_the_image_path(tmp_path, pipe):
    source = tmp_path / "clip.mkv"
    make_clip(source, frames=6, size=(36, 28), audio=False)
    output = tmp_path / "restored.mkv"
    restore_video(pipe, source, output, VideoEncoding("ffv1", segment_frames=4), batch_size=3, progress=False)
    _, inputs = _frames(source)
    _, outputs = _frames(output)
    assert len(outputs) == 6
    for index, frame in enumerate(inputs):
        png = tmp_path / f"frame{index}.png"
        Image.fromarray(frame).save(png)
        assert (
            main(
                [
                    "restore",
                    str(png),
                    "-o",
                    str(tmp_path / f"restored{index}.png"),
                    "--quiet",
                    "--model",
                    str(checkpoint("RAMiT-slimSR_X2.pth")),
                ]
            )
            == 0
        )
        expected = np.asarray(Image.open(tmp_path / f"restored{index}.png"))
        assert np.array_equal(outputs[index], expected), f"frame {index}"


def test_interrupted_run_resumes_to_the_same_file(tmp_path, pipe):
    source = tmp_path / "clip.mkv"
    make_clip(source, frames=14, variable_rate=True, subtitles=True)
    whole = restore_video(pipe, source, tmp_path / "whole.mkv", SEGMENT, progress=False)

    def stop(index):
        if index == 9:
            raise KeyboardInterrupt

    output = tmp_path / "out" / "clip.mkv"
    with pytest.raises(KeyboardInterrupt):
        restore_video(pipe, source, output, SEGMENT, progress=False, on_frame=stop)
    parts = parts_folder(output)
    assert not output.exists()
    assert _no_leftovers(parts) == ["parts.json", "segment-000000.mp4", "segment-000001.mp4"]
    with pytest.raises(VideoError, match="pass --resume to continue it"):
        restore_video(pipe, source, output, SEGMENT, progress=False)
    resumed = restore_video(pipe, source, output, SEGMENT, progress=False, resume=True)
    assert resumed.restored_frames == 6 and resumed.frames == 14
    assert _digest(output) == _digest(whole.output)
    assert not parts.exists()


def test_killed_process_resumes_to_the_same_file(tmp_path, pipe):
    source = tmp_path / "clip.mp4"
    make_clip(source, frames=12)
    whole = restore_video(pipe, source, tmp_path / "whole.mp4", SEGMENT, progress=False)
    output = tmp_path / "out" / "clip.mp4"
    script = f"""
        import os, signal
        from ramit_hf import load_model
        from ramit_hf.video import VideoEncoding, restore_video

        def kill(index):
            if index == 6:
                os.kill(os.getpid(), signal.SIGKILL)

        model = load_model({str(checkpoint("RAMiT-slimSR_X2.pth"))!r})
        restore_video(model, {str(source)!r}, {str(output)!r}, VideoEncoding(segment_frames=4), progress=False,
                      on_frame=kill)
    """
    victim = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, timeout=300)
    assert victim.returncode == -signal.SIGKILL, victim.stderr.decode()[-2000:]
    assert not output.exists()
    left = [name for name in _no_leftovers(parts_folder(output)) if not name.endswith(".partial")]
    assert left == ["parts.json", "segment-000000.mp4"]  # and perhaps the killed segment's unfinished file
    resumed = restore_video(pipe, source, output, SEGMENT, progress=False, resume=True)
    assert resumed.restored_frames == 8
    assert not parts_folder(output).exists()
    assert _digest(output) == _digest(whole.output)


def test_cli_sigterm_keeps_segments_and_resume_finishes(tmp_path):
    source = tmp_path / "clip.mp4"
    make_clip(source, frames=10)
    model = str(checkpoint("RAMiT-slimSR_X2.pth"))
    script = f"""
        import os, signal, sys
        from ramit_hf import video
        from ramit_hf.cli import main

        encode, calls = video._SegmentWriter.encode, []

        def encode_then_stop(self, *args):
            encode(self, *args)
            calls.append(1)
            if len(calls) == 5:
                os.kill(os.getpid(), signal.SIGTERM)

        video._SegmentWriter.encode = encode_then_stop
        sys.exit(main(["restore", {str(source)!r}, "-o", {str(tmp_path / "out")!r}, "--model", {model!r},
                       "--segment-frames", "4", "--quiet"]))
    """
    stopped = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=300
    )
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "continue with --resume" in stopped.stderr and "terminated (SIGTERM)" in stopped.stderr
    assert _no_leftovers(tmp_path / "out") == [".clip.mp4.ramit-parts"]
    args = ["restore", str(source), "-o", str(tmp_path / "out"), "--model", model, "--segment-frames", "4"]
    assert main([*args, "--resume", "--quiet"]) == 0
    assert _no_leftovers(tmp_path / "out") == ["clip.mp4"]
    whole = tmp_path / "whole"
    assert main(["restore", str(source), "-o", str(whole), "--model", model, "--segment-frames", "4", "--quiet"]) == 0
    assert _digest(tmp_path / "out" / "clip.mp4") == _digest(whole / "clip.mp4")


def test_cli_folder_of_images_and_videos(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "clip.ts", frames=3, audio=False)  # MPEG-TS is read, not written: the output is .mkv
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(folder / "still.png")
    model = str(checkpoint("RAMiT-slimSR_X2.pth"))
    assert main(["restore", str(folder), "-o", str(tmp_path / "out"), "--model", model, "--bit-rate", "300k"]) == 0
    out = capsys.readouterr().out
    assert "clip.ts: 3 frames" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mkv", "still.png"]
    with av.open(str(tmp_path / "out" / "clip.mkv")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    # run again: the outputs exist; --resume leaves them
    assert main(["restore", str(folder), "-o", str(tmp_path / "out"), "--model", model, "--resume", "--quiet"]) == 0


def test_encoding_options_are_checked_before_any_work(capsys):
    assert parse_bit_rate("8M") == 8_000_000 and parse_bit_rate("2500k") == 2_500_000
    for bad in ("fast", "-1M", "nan"):
        with pytest.raises(ValueError, match="bit rate"):
            parse_bit_rate(bad)
    with pytest.raises(ValueError, match="a CRF or a bit rate, not both"):
        VideoEncoding(crf=20, bit_rate=1_000_000)
    with pytest.raises(ValueError, match="ffv1 is lossless"):
        VideoEncoding("ffv1", crf=10)
    with pytest.raises(ValueError, match="unknown video codec"):
        VideoEncoding("mpeg2video")
    assert main(["restore", "clip.mp4", "-o", "out", "--model", "m", "--crf", "20", "--bit-rate", "1M"]) == 2
    assert "a CRF or a bit rate, not both" in capsys.readouterr().err


@pytest.mark.parametrize("codec, tag, audio", [("libx265", "hvc1", "libmp3lame"), ("libsvtav1", "av01", "aac")])
def test_other_encoders_join_their_segments(tmp_path, pipe, codec, tag, audio):
    source = tmp_path / "clip.mp4"
    make_clip(source, frames=5, audio_codec=audio)  # segments of 2, 2 and 1 frames
    output = tmp_path / "restored.mp4"
    restore_video(pipe, source, output, VideoEncoding(codec, segment_frames=2), progress=False)
    with av.open(str(source)) as original, av.open(str(output)) as restored:
        assert restored.streams.video[0].codec_tag == tag  # what MP4 players look for
        assert restored.streams.audio[0].codec_context.name == original.streams.audio[0].codec_context.name
    assert _frames(output)[0] == pytest.approx(_frames(source)[0], abs=1e-6)


def test_ten_bit_input_stays_ten_bit(tmp_path, pipe):
    source = tmp_path / "deep.mkv"
    make_clip(source, frames=3, audio=False, pix_fmt="yuv420p10le")
    output = tmp_path / "restored.mkv"
    restore_video(pipe, source, output, progress=False)
    with av.open(str(output)) as container:
        assert container.streams.video[0].codec_context.format.name == "yuv420p10le"
        assert container.streams.video[0].codec_context.name == "h264"


# ----------------------------------------------------------------------------------------------
# bad inputs: a named error, nothing written


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, 0, Fraction(1, AUDIO_RATE)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _damage_frame(path: Path, index: int) -> None:
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    position, size = packets[index]
    for offset in range(position + size // 4, position + size):
        data[offset] = (offset * 37) % 256
    path.write_bytes(bytes(data))


def test_damaged_frame_is_named_and_earlier_segments_kept(tmp_path, pipe):
    source = tmp_path / "damaged.mp4"
    make_clip(source, frames=14, audio=False, codec="mpeg4", pix_fmt="yuv420p")
    _damage_frame(source, 9)
    output = tmp_path / "out" / "damaged.mp4"
    with pytest.raises(VideoError, match=r"damaged at frame 9 .*2 restored segment\(s\) of 4 frames are kept"):
        restore_video(pipe, source, output, SEGMENT, progress=False)
    assert not output.exists()
    assert _no_leftovers(parts_folder(output)) == ["parts.json", "segment-000000.mp4", "segment-000001.mp4"]


def test_cut_short_file_is_named(tmp_path, pipe):
    source = tmp_path / "whole.mp4"
    make_clip(source, frames=24, audio=False)
    # the index at the front (as a recorder that writes it first), then the frames' data cut short
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(source)) as original, av.open(str(faststart), "w", options={"movflags": "faststart"}) as copy:
        stream = copy.add_stream_from_template(original.streams.video[0])
        for packet in original.demux(video=0):
            if packet.size:
                packet.stream = stream
                copy.mux(packet)
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoError, match=r"promises 24 frames .* cut short \(damaged, or still being written\)"):
        restore_video(pipe, cut, tmp_path / "out.mp4", SEGMENT, progress=False)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (_audio_only, r"has no video stream \(only audio streams\)"),
        (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200)), "cannot be read as a video .* still being"),
        (lambda p: make_clip(p, frames=2, size=(48, 40), audio=False), r"48x40 = 1,920 pixels per frame is more than"),
    ],
    ids=["audio-only", "no-index", "over-budget"],
)
def test_bad_inputs_named_and_nothing_written(tmp_path, pipe, make, message):
    source = tmp_path / "bad.mp4"
    make(source)
    output = tmp_path / "out" / "bad.mp4"
    with pytest.raises(VideoError, match=message):
        restore_video(pipe, source, output, progress=False, max_pixels=1000)
    assert not output.parent.exists() or _no_leftovers(output.parent) == []


def test_odd_sized_output_for_subsampled_colour_is_named(tmp_path):
    model = load_model(checkpoint("RAMiT-slimSR_X3.pth"))
    source = tmp_path / "odd.mkv"
    make_clip(source, frames=2, size=(21, 17), audio=False, pix_fmt="yuv444p")
    with pytest.raises(VideoError, match=r"63x51, which yuv420p \(libx264\) cannot hold .* --pix-fmt yuv444p"):
        restore_video(model, source, tmp_path / "out.mkv", VideoEncoding(pix_fmt="yuv420p"), progress=False)
    assert _no_leftovers(tmp_path) == ["odd.mkv"]
    restore_video(model, source, tmp_path / "out.mkv", progress=False)  # the input's 4:4:4 holds it
    assert _frames(tmp_path / "out.mkv")[1][0].shape == (51, 63, 3)


def test_input_that_changes_while_read_writes_nothing(tmp_path, pipe):
    source = tmp_path / "growing.mp4"
    make_clip(source, frames=6, audio=False)

    def grow(index):
        if index == 2:
            with open(source, "ab") as file:
                file.write(bytes(100))

    output = tmp_path / "out.mp4"
    with pytest.raises(VideoError, match=r"changed while it was read \(is it still being written\?\)"):
        restore_video(pipe, source, output, SEGMENT, progress=False, on_frame=grow)
    assert not output.exists()


def test_existing_output_and_input_itself_are_never_replaced(tmp_path, pipe):
    source = tmp_path / "clip.mp4"
    make_clip(source, frames=2, audio=False)
    before = _digest(source)
    with pytest.raises(VideoError, match="the output is this input itself"):
        restore_video(pipe, source, source, progress=False, overwrite=True)
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        restore_video(pipe, source, taken, progress=False)
    assert taken.read_bytes() == b"keep me" and _digest(source) == before


def test_resume_with_other_settings_is_refused(tmp_path, pipe):
    source = tmp_path / "clip.mp4"
    make_clip(source, frames=8, audio=False)
    output = tmp_path / "clip-x2.mp4"

    def stop(index):
        if index == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore_video(pipe, source, output, SEGMENT, progress=False, on_frame=stop)
    with pytest.raises(VideoError, match="other settings .*different encoding"):
        restore_video(pipe, source, output, VideoEncoding(crf=30, segment_frames=4), progress=False, resume=True)
    assert os.path.isdir(parts_folder(output))


def test_cli_names_a_bad_video_and_restores_the_rest(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _audio_only(folder / "sound.mp4")
    make_clip(folder / "fine.mp4", frames=2, audio=False)
    model = str(checkpoint("RAMiT-slimSR_X2.pth"))
    assert main(["restore", str(folder), "-o", str(tmp_path / "out"), "--model", model, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "sound.mp4: has no video stream (only audio streams)" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fine.mp4"]


def test_readme_video_commands_run(tmp_path, monkeypatch, capsys):
    # the README's commands, from a folder with ../shared beside it, on a short clip named as they name it
    import shlex

    readme = (REPO_ROOT / "README.md").read_text()
    lines = [line.split("  #")[0] for line in readme.splitlines() if line.startswith("ramit restore clip.mp4")]
    assert len(lines) == 2 and "--resume" in lines[1]
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    make_clip(work / "clip.mp4", frames=3)
    monkeypatch.chdir(work)
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0
    assert "clip.mp4: 3 frames" in capsys.readouterr().out
    assert sorted(p.name for p in (work / "restored").iterdir()) == ["clip.mp4"]
