"""Inputs that never end or never come: endless and trickling downloads, /dev/zero, FIFOs, degenerate shapes and
tiny tiles. Each is refused or bounded, with a message naming the input and the bound, in bounded time and memory."""

import http.server
import os
import threading
import time

import numpy as np
import pytest
import torch
from conftest import small_config
from PIL import Image

from ramit_hf import RamitForImageRestoration, image_io
from ramit_hf.cli import main
from ramit_hf.convert import save_model_folder
from ramit_hf.image_io import ImageReadError, load_image
from ramit_hf.tiling import resolve_tile_size

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


class Hostile(http.server.BaseHTTPRequestHandler):
    """/endless: a body that never ends; /trickle: one byte every 0.2 s; /huge: announces 10 GB."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if self.path == "/huge":
            self.send_header("Content-Length", str(10 << 30))
        self.end_headers()
        try:
            self.wfile.write(PNG_HEADER)
            for _ in range(100_000):  # bounded, in case the client never stops reading
                if self.path == "/trickle":
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
                    time.sleep(0.2)
                else:
                    self.wfile.write(b"\x00" * (1 << 16))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_downloads_are_bounded_in_bytes_and_in_time(server, monkeypatch):
    started = time.monotonic()
    limit = 1000 * 8 + (16 << 20)
    for path in ("/endless", "/huge"):
        with pytest.raises(
            ImageReadError,
            match=rf"{server}{path}: more than {limit:,} bytes, more than an image "
            r"within the pixel budget of 1,000 pixels can take",
        ):
            load_image(server + path, max_pixels=1000)
    monkeypatch.setattr(image_io, "DOWNLOAD_SECONDS", 1.5)
    with pytest.raises(
        ImageReadError, match=rf"{server}/trickle: download stopped after 1.5 s with \d+ bytes received"
    ):
        load_image(server + "/trickle", timeout=5)
    assert time.monotonic() - started < 30


def _refused_at_once(source, **kwargs) -> str:
    """The message of `load_image(source)`, which must come within 10 s (a FIFO would block for ever)."""
    outcome = {}

    def read():
        try:
            load_image(source, **kwargs)
        except ImageReadError as error:
            outcome["message"] = str(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(source, "wb"):
            pass
        pytest.fail(f"load_image({source}) blocked")
    return outcome["message"]


def test_devices_and_fifos_are_refused_as_the_cli_refuses_them(tmp_path, capsys):
    assert _refused_at_once("/dev/zero") == (
        "/dev/zero: not a regular file but a character device; only image files are read"
    )
    os.mkfifo(tmp_path / "pipe.png")
    message = _refused_at_once(str(tmp_path / "pipe.png"))
    assert message == f"{tmp_path / 'pipe.png'}: not a regular file but a FIFO (named pipe); only image files are read"
    # an open stream is read only up to what an image within the budget can take
    with open("/dev/zero", "rb") as endless, pytest.raises(ImageReadError, match=r"/dev/zero: more than 16,785,216"):
        load_image(endless, max_pixels=1000)
    # the CLI says the same
    assert main(["restore", "/dev/zero", str(tmp_path / "pipe.png"), "-o", str(tmp_path / "out"), "--model", "x"]) == 1
    err = capsys.readouterr().err
    assert "  /dev/zero: not a regular file but a character device" in err and "a FIFO (named pipe)" in err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    return save_model_folder(RamitForImageRestoration(small_config()), tmp_path_factory.mktemp("models") / "tiny")


def test_thin_strips_are_tiled_along_their_length_and_tiny_tiles_raised(tmp_path, tiny, capsys):
    # 1 x 10000 pixels is padded to 32 rows: restored whole it would be 32 x 10016; "auto" tiles it
    assert resolve_tile_size("auto", 1, 10000) is not None and resolve_tile_size("auto", 10000, 1) is not None
    assert resolve_tile_size("auto", 40, 48) is None
    strip = (np.arange(10000, dtype=np.uint8)[None, :, None] * np.ones((1, 1, 3), np.uint8)).astype(np.uint8)
    Image.fromarray(strip).save(tmp_path / "strip.png")
    assert main(["restore", str(tmp_path / "strip.png"), "-o", str(tmp_path / "out"), "--model", str(tiny)]) == 0
    assert Image.open(tmp_path / "out" / "strip.png").size == (20000, 2)
    # --tile 7 on 144 x 144 would be 1296 tiles of 32 x 32: raised to 64, with a line saying so
    Image.fromarray(np.full((144, 144, 3), 90, np.uint8)).save(tmp_path / "square.png")
    started = time.monotonic()
    code = main(
        ["restore", str(tmp_path / "square.png"), "-o", str(tmp_path / "tiles"), "--model", str(tiny), "--tile", "7"]
    )
    assert code == 0 and time.monotonic() - started < 60
    assert "ramit: --tile 7: tile size 7 raised to 64: every tile is padded to 32 pixels" in capsys.readouterr().err
