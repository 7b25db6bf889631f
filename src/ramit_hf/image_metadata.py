"""What an image file says about itself besides its pixels, read from files and written into outputs: the ICC
colour profile, EXIF (its orientation, which `upright` applies to the pixels read), XMP, the resolution in dots per
inch (also from TIFF tags), PNG colour and text chunks. `ImageMetadata` holds them; `metadata_of` reads them from an
opened PIL image; `pillow_save_options` and `write_png` put them into the files `image_io.save_image` writes.

This file ships with the pipeline to Hub folders (through `image_io`), so it imports nothing from the rest of the
package.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the numpy operation that shows the image upright (as PIL's ImageOps.exif_transpose does).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}

_PNG_XMP_KEY = "XML:com.adobe.xmp"  # the iTXt chunk PNG files keep XMP in
_XMP_ORIENTATION = re.compile(rb'(tiff:Orientation(?:="|>))(\d)("|</tiff:Orientation>)')
_EXIF_IFD = 0x8769
_EXIF_PIXEL_SIZE = (0xA002, 0xA003)  # PixelXDimension, PixelYDimension, in the Exif IFD
_TIFF_PIXEL_SIZE = (0x0100, 0x0101)  # ImageWidth, ImageLength, in IFD0


@dataclass
class ImageMetadata:
    """What an image file says about itself besides its pixels, as kept in restored files: the ICC colour profile, the
    EXIF block (orientation reset to upright, since the pixels are turned upright when read), the resolution in dots
    per inch, PNG colour chunks (sRGB, gamma, chromaticity) and PNG text chunks."""

    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    png_colour: dict = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)
    xmp: bytes | None = None  # the XMP packet, its tiff:Orientation reset to 1 as the EXIF one is
    float_white: float = (
        1.0  # the white of float samples (255.0 for 8-bit levels stored as float): float outputs keep it
    )

    def for_output(self, width: int, height: int, scale: float) -> ImageMetadata:
        """The metadata of a restored image of `width` x `height` pixels, `scale` times the input per side: the DPI
        scaled with it (so the printed size stays), the EXIF pixel sizes updated."""
        dpi = None if self.dpi is None else (self.dpi[0] * scale, self.dpi[1] * scale)
        exif = self.exif
        if exif:
            parsed = Image.Exif()
            parsed.load(exif)
            for tags, ifd in ((_TIFF_PIXEL_SIZE, parsed), (_EXIF_PIXEL_SIZE, parsed.get_ifd(_EXIF_IFD))):
                for tag, value in zip(tags, (width, height), strict=True):
                    if tag in ifd:
                        ifd[tag] = value
            exif = parsed.tobytes()
        return replace(self, dpi=dpi, exif=exif)

    def pil_info(self) -> dict:
        """As PIL's `Image.info` holds it (what `Image.open` gives, and what PNG saving takes from)."""
        info: dict = {**self.text, **self.png_colour}
        values = (("icc_profile", self.icc_profile), ("exif", self.exif), ("dpi", self.dpi), ("xmp", self.xmp))
        for key, value in values:
            if value is not None:
                info[key] = value
        return info


def metadata_of(image: Image.Image) -> tuple[ImageMetadata, int]:
    """(the metadata of an opened PIL image, its EXIF orientation), read without decoding the pixels; the EXIF block
    kept has its orientation reset to 1, the DPI is swapped where the orientation turns the image by 90 degrees."""
    info = image.info
    orientation, exif = 1, None
    if info.get("exif"):  # JPEG, PNG, WebP (a TIFF's own tags are not an EXIF block)
        with contextlib.suppress(Exception):  # a malformed block is left out, not kept half-read
            parsed = Image.Exif()
            parsed.load(info["exif"])
            orientation = int(parsed.get(_EXIF_ORIENTATION, 1) or 1)
            if _EXIF_ORIENTATION in parsed:
                parsed[_EXIF_ORIENTATION] = 1
            parsed.get_ifd(_EXIF_IFD)  # loaded, so that it is written back
            exif = parsed.tobytes()
    if image.format == "TIFF":
        with contextlib.suppress(Exception):
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    dpi = None
    with contextlib.suppress(KeyError, TypeError, ValueError, IndexError):
        x, y = (float(value) for value in info["dpi"])
        if x > 0 and y > 0:
            dpi = (y, x) if orientation in (5, 6, 7, 8) else (x, y)
    png = image.format in ("PNG", None)  # None: made in memory, e.g. the pipeline's outputs
    xmp = info.get("xmp") or info.get(_PNG_XMP_KEY)
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if xmp:  # upright now, as the EXIF orientation says once it is reset
        xmp = _XMP_ORIENTATION.sub(lambda match: match[1] + b"1" + match[3], xmp)
    text = {
        key: str(value)
        for key, value in info.items()
        if png
        and isinstance(key, str)
        and isinstance(value, str)
        and key != _PNG_XMP_KEY
        and not key.lower().startswith("raw profile type")  # ImageMagick's copies of EXIF and IPTC
    }
    colour = {key: info[key] for key in ("srgb", "gamma", "chromaticity") if png and key in info}
    return ImageMetadata(info.get("icc_profile") or None, exif, dpi, colour, text, xmp or None), orientation


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """`pixels` turned as EXIF `orientation` says, so that they show upright (unchanged for 1 or unknown values)."""
    if orientation in _ORIENT:
        pixels = _ORIENT[orientation](pixels)
    return pixels


def tiff_dpi(tags: dict) -> tuple[float, float] | None:
    """Dots per inch from TIFF tags XResolution (282), YResolution (283) and ResolutionUnit (296: 2 inch, 3 cm)."""
    unit = {2: 1.0, 3: 2.54}.get(int(tags.get(296, 2)))
    try:
        x, y = (float(tags[tag][0]) / float(tags[tag][1]) for tag in (282, 283))
    except (KeyError, TypeError, IndexError, ValueError, ZeroDivisionError):
        return None
    return (x * unit, y * unit) if unit and x > 0 and y > 0 else None


def pillow_save_options(format: str, metadata: ImageMetadata, quality: int | None) -> dict:
    """Pillow's save options that carry `metadata` into `format` (PNG's chunks are written by `write_png`)."""
    keep = {
        "JPEG": ("icc_profile", "exif", "dpi", "xmp"),
        "WEBP": ("icc_profile", "exif", "xmp"),
        "TIFF": ("icc_profile", "dpi"),
        "BMP": ("dpi",),
    }.get(format, ())
    values: dict = {"icc_profile": metadata.icc_profile, "exif": metadata.exif, "dpi": metadata.dpi}
    values["xmp"] = metadata.xmp
    options = {key: values[key] for key in keep if values[key] is not None}
    if format == "PNG":
        options = {"icc_profile": None, "exif": None}  # not from the image's own info: `write_png` writes them
    if format in ("JPEG", "WEBP"):
        options["quality"] = 95 if quality is None else quality
    return options


def write_png(encode, file, metadata: ImageMetadata) -> None:
    """A PNG from `encode(buffer)` (which writes one without metadata), with `metadata`'s chunks after its header."""
    buffer = io.BytesIO()
    encode(buffer)
    data = buffer.getbuffer()
    header_end = len(PNG_SIGNATURE) + 8 + 13 + 4  # IHDR is the first chunk, 13 bytes long
    file.write(data[:header_end])
    file.write(_png_metadata_chunks(metadata))
    file.write(data[header_end:])


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_metadata_chunks(metadata: ImageMetadata) -> bytes:
    chunks = []
    if metadata.icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(metadata.icc_profile)))
    elif metadata.png_colour.get("srgb") is not None:
        chunks.append(_png_chunk(b"sRGB", bytes([int(metadata.png_colour["srgb"]) & 3])))
    if metadata.png_colour.get("gamma"):
        chunks.append(_png_chunk(b"gAMA", struct.pack(">I", round(float(metadata.png_colour["gamma"]) * 100000))))
    chromaticity = metadata.png_colour.get("chromaticity")
    if chromaticity and len(chromaticity) == 8:
        chunks.append(_png_chunk(b"cHRM", struct.pack(">8I", *(round(float(v) * 100000) for v in chromaticity))))
    if metadata.dpi:
        per_metre = (round(value / 0.0254) for value in metadata.dpi)
        chunks.append(_png_chunk(b"pHYs", struct.pack(">IIB", *per_metre, 1)))
    if metadata.exif:
        chunks.append(_png_chunk(b"eXIf", metadata.exif.removeprefix(b"Exif\x00\x00")))
    if metadata.xmp:
        chunks.append(_png_chunk(b"iTXt", _PNG_XMP_KEY.encode() + b"\x00\x00\x00\x00\x00" + metadata.xmp))
    for key, value in metadata.text.items():
        name = key.encode("latin-1", "replace")[:79]
        try:
            chunks.append(_png_chunk(b"tEXt", name + b"\x00" + value.encode("latin-1")))
        except UnicodeEncodeError:  # international text
            chunks.append(_png_chunk(b"iTXt", name + b"\x00\x00\x00\x00\x00" + value.encode("utf-8")))
    return b"".join(chunks)


__all__ = ["PNG_SIGNATURE", "ImageMetadata", "metadata_of", "pillow_save_options", "tiff_dpi", "upright", "write_png"]
