"""Hostile files for the tests, made by the tests themselves: decompression bombs of a few kB, pickles that carry
code, truncated weight files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def png_bomb(width: int, height: int, bit_depth: int = 16, color_type: int = 2) -> bytes:
    """A valid PNG of `width` x `height` black pixels, a few kB on disk whatever its size.

    Every block of rows is deflated after a full flush, which resets the compressor, so one compressed block stands
    for all of them: the file is built without ever holding the pixels.
    """
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\x00" * (1 + width * channels * bit_depth // 8)  # filter byte + pixels
    rows_per_block = max(1, min(height, (1 << 22) // len(row)))
    compressor = zlib.compressobj(9)
    block = compressor.compress(row * rows_per_block) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(height, rows_per_block)
    tail = compressor.compress(row * rest) + compressor.flush()
    idat = block * blocks + tail

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class RunsCode:
    """Pickled, it makes the loader call `open(marker, "w")`: proof that code ran if the marker appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
