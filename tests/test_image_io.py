import functools
import http.server
import re
import struct
import threading
import zlib

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image, ImageOps

from ramit_hf import image_files, image_io
from ramit_hf.image_io import ImageReadError, load_image, save_image

BIRD = ("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png")


@pytest.fixture(scope="module")
def bird() -> np.ndarray:
    return np.asarray(Image.open(shared_path(*BIRD)).convert("RGB"))[:30, :40]


def _sixteen_bit(image8: np.ndarray) -> np.ndarray:
    """8-bit pixels to 16 bits with information in the low byte too (which an 8-bit decoder loses)."""
    low = np.arange(image8.size, dtype=np.uint32).reshape(image8.shape) * 37 % 256
    return (image8.astype(np.uint32) * 256 + low).astype(np.uint16)


def _with_exif_chunk(png: bytes, orientation: int) -> bytes:
    """Insert an eXIf chunk carrying `orientation` right after IHDR (where the PNG spec allows it)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = exif.tobytes()
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data))
    end_of_ihdr = 8 + 8 + 13 + 4
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def test_reads_a_real_png_as_pil_does(bird):
    decoded = load_image(shared_path(*BIRD))
    assert decoded.mode == "RGB" and decoded.bit_depth == 8 and decoded.pixels.dtype == np.uint8
    assert np.array_equal(decoded.pixels, np.asarray(Image.open(shared_path(*BIRD))))
    assert decoded.source == str(shared_path(*BIRD))


@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_16_bit_png_round_trip_keeps_all_bits(bird, tmp_path, channels, mode):
    pixels = _sixteen_bit(np.concatenate([bird, bird[..., :1]], axis=-1)[..., :channels])
    if channels == 1:
        pixels = pixels[..., 0]
    path = save_image(pixels, tmp_path / "sixteen.png")
    decoded = load_image(path)
    assert decoded.mode == mode and decoded.bit_depth == 16
    assert np.array_equal(decoded.pixels, pixels)
    if channels >= 3:
        # the reason for pypng: Pillow opens 16-bit color PNGs with 8 bits
        assert Image.open(path).mode in ("RGB", "RGBA")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_in_both_decoders(bird, tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(bird).save(tmp_path / "eight.png", exif=exif)
    eight = load_image(tmp_path / "eight.png").pixels
    assert np.array_equal(eight, np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "eight.png"))))
    if orientation in (5, 6, 7, 8):
        assert eight.shape[:2] == bird.shape[1::-1]

    save_image(bird.astype(np.uint16) * 257, tmp_path / "plain16.png")
    (tmp_path / "sixteen.png").write_bytes(_with_exif_chunk((tmp_path / "plain16.png").read_bytes(), orientation))
    sixteen = load_image(tmp_path / "sixteen.png").pixels
    assert sixteen.dtype == np.uint16
    assert np.array_equal(sixteen // 257, eight)


def test_url_is_downloaded(bird, tmp_path):
    Image.fromarray(bird).save(tmp_path / "bird.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        decoded = load_image(f"{base}/bird.png")
        assert np.array_equal(decoded.pixels, bird) and decoded.source == f"{base}/bird.png"
        with pytest.raises(ImageReadError, match=rf"{base}/missing.png: download failed \(HTTP 404"):
            load_image(f"{base}/missing.png")
    finally:
        server.shutdown()
        server.server_close()


def test_modes_are_normalised():
    palette = Image.new("P", (4, 3))
    assert load_image(palette).mode == "RGB"
    assert load_image(Image.new("1", (4, 3))).mode == "L"
    assert load_image(Image.new("CMYK", (4, 3))).mode == "RGB"
    gray16 = load_image(Image.fromarray(np.full((3, 4), 40000, np.uint16)))
    assert gray16.mode == "L" and gray16.bit_depth == 16 and gray16.pixels.max() == 40000
    assert load_image(Image.new("LA", (4, 3))).pixels.shape == (3, 4, 2)


def _truncated_png(tmp_path, bird, sixteen=False):
    path = tmp_path / "full.png"
    save_image(bird.astype(np.uint16) * 257 if sixteen else bird, path)
    data = path.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("missing.png", None, "no such file"),
        ("empty.png", b"", "empty file"),
        ("notes.png", b"these are not pixels\n", "not an image file"),
        ("noise.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "corrupt or truncated"),
        ("truncated.png", "truncated", "corrupt or truncated"),
        ("truncated16.png", "truncated16", "corrupt or truncated PNG"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, bird, name, content, problem):
    path = tmp_path / name
    if content == "truncated":
        content = _truncated_png(tmp_path, bird)
    elif content == "truncated16":
        content = _truncated_png(tmp_path, bird, sixteen=True)
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=problem) as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_directory_and_empty_pil_image_are_refused(tmp_path):
    with pytest.raises(ImageReadError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ImageReadError, match=r"empty image \(0x0 pixels\)"):
        load_image(Image.new("RGB", (0, 0)))
    with pytest.raises(ImageReadError, match="expected a path"):
        load_image(42)


def test_save_refuses_to_overwrite_and_replaces_with_overwrite(bird, tmp_path):
    path = save_image(bird, tmp_path / "out" / "bird.png")  # parents are created
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        save_image(bird[::-1], path)
    assert path.read_bytes() == before
    save_image(bird[::-1], path, overwrite=True)
    assert np.array_equal(np.asarray(Image.open(path)), bird[::-1])
    assert sorted(p.name for p in path.parent.iterdir()) == ["bird.png"]  # no temporary files left


def test_an_interrupted_write_leaves_nothing(bird, tmp_path, monkeypatch):
    def crash(self, file, *args, **kwargs):
        file.write(b"\x89PNG half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_image(bird, tmp_path / "bird.png")
    assert list(tmp_path.iterdir()) == []


def test_save_checks_format_and_pixels(bird, tmp_path):
    with pytest.raises(ValueError, match="16-bit images can only be written as .png"):
        save_image(bird.astype(np.uint16), tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="JPEG cannot store mode RGBA"):
        save_image(np.dstack([bird, bird[..., 0]]), tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="unknown image extension"):
        save_image(bird, tmp_path / "a.xyz")
    with pytest.raises(ValueError, match="cannot write pixels of shape"):
        save_image(np.zeros((4, 4, 5), np.uint8), tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []
    assert image_files.LOSSLESS_EXTENSIONS[0] == ".png"


def test_rgb_to_gray_is_opencvs_for_8_and_16_bit():
    from ramit_hf.protocol import samples
    from ramit_hf.training import sources

    # cv2.cvtColor(..., COLOR_RGB2GRAY) of OpenCV 4.10 and 5.0; on these colours 14-bit weights are off by one
    rgb8 = np.array([[[0, 0, 250], [0, 1, 201], [0, 2, 152], [255, 255, 255]]], np.uint8)
    assert image_io.rgb_to_gray(rgb8)[0, :, 0].tolist() == [28, 23, 18, 255]
    rgb16 = np.array(
        [[[65535, 0, 0], [0, 65535, 0], [0, 0, 65535], [1000, 40000, 65535], [12345, 23456, 34567]]], np.uint16
    )
    gray16 = image_io.rgb_to_gray(rgb16)
    assert gray16.dtype == np.uint16 and gray16[0, :, 0].tolist() == [19596, 38469, 7470, 31249, 21400]
    # training data and benchmarks convert with this one function
    assert sources.to_channels is samples.to_channels is image_io.to_channels
    assert samples.rgb_to_gray_opencv is image_io.rgb_to_gray
    assert np.array_equal(sources.to_channels(rgb8, 1), image_io.rgb_to_gray(rgb8))


# --------------------------------------------------------------------------------------------------
# hostile files: pixel budget, animations, symlink loops


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_bombs_are_refused_from_the_header_before_decoding(tmp_path, monkeypatch):
    import time

    from hostile_files import png_bomb

    monkeypatch.delenv("RAMIT_MAX_PIXELS", raising=False)
    for name, data in [
        ("bomb16.png", png_bomb(20000, 20000)),  # 16-bit: read by pypng, which has no bomb check of its own
        ("bomb8.png", png_bomb(40000, 40000, bit_depth=8, color_type=2)),  # 8-bit: Pillow's path
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        before, started = _peak_rss_mib(), time.perf_counter()
        with pytest.raises(ImageReadError) as caught:
            load_image(path)
        assert time.perf_counter() - started < 5
        assert _peak_rss_mib() - before < 200  # nothing near the gigabytes decoding would take
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "pixels is more than the pixel budget of" in message
        assert re.search(r"\d+x\d+ = [\d,]+ pixels", message) and "RAMIT_MAX_PIXELS" in message


def test_pixel_budget_from_argument_and_environment(tmp_path, bird, monkeypatch):
    from ramit_hf.pixel_budget import max_pixels_for

    path = tmp_path / "bird.png"
    save_image(bird, path)
    height, width = bird.shape[:2]
    with pytest.raises(ImageReadError, match=rf"{width}x{height} = {width * height:,} pixels .* budget of 1,000"):
        load_image(path, max_pixels=1000)
    assert load_image(path, max_pixels=0).size == (width, height)  # 0: no limit
    monkeypatch.setenv("RAMIT_MAX_PIXELS", "1000")
    assert max_pixels_for(4) == 1000
    with pytest.raises(ImageReadError, match="budget of 1,000"):
        load_image(path)
    monkeypatch.setenv("RAMIT_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="RAMIT_MAX_PIXELS must be a whole number of pixels"):
        load_image(path)
    monkeypatch.delenv("RAMIT_MAX_PIXELS")
    # the default leaves room for the output: a larger scale allows fewer input pixels
    assert max_pixels_for(1) > max_pixels_for(2) > max_pixels_for(4) > 1_000_000


def test_animated_images_are_refused_not_cut_to_one_frame(tmp_path, bird):
    frames = [Image.fromarray(bird), Image.fromarray(255 - bird)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ImageReadError, match=r"anim.gif: an animated or multi-page image \(2 frames\)"):
        load_image(path)
    with pytest.raises(ImageReadError, match="2 frames"):
        load_image(Image.open(path))
    single = tmp_path / "still.gif"
    frames[0].save(single)
    assert load_image(single).size == frames[0].size


def test_folder_walks_and_globs_do_not_follow_symlink_loops(tmp_path, bird):
    from ramit_hf.image_files import glob_files, walk_files

    root = tmp_path / "dir"
    (root / "sub").mkdir(parents=True)
    save_image(bird, root / "a.png")
    save_image(bird, root / "sub" / "b.png")
    (root / "self").symlink_to(".")
    (root / "sub" / "up").symlink_to("..")
    assert sorted(p.relative_to(root).as_posix() for p in walk_files(root)) == ["a.png", "sub/b.png"]
    base, found = glob_files(str(root / "**" / "*.png"))
    assert base == root and sorted(p.relative_to(root).as_posix() for p in found) == ["a.png", "sub/b.png"]
    assert [p.name for p in glob_files(str(root / "*.png"))[1]] == ["a.png"]
