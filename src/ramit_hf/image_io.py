"""Reading and writing image files: paths, http(s) URLs, EXIF orientation, 16-bit and float images, atomic writes.

Conventions: decoded pixels are numpy arrays, (H, W) for gray or (H, W, C) with C = 2 (gray + alpha), 3 (RGB) or
4 (RGBA), of dtype uint8 or uint16 (16-bit PNG, TIFF and PNM files keep all 16 bits) or float32 (float TIFFs and PIL
mode "F", as stored: `image_processing_ramit.stored_float_to_unit` brings them to [0, 1]), with the EXIF
orientation applied (rows top to bottom as a viewer shows them). `DecodedImage.mode` names the layout as PIL does
("L", "LA", "RGB", "RGBA").

Pillow decodes 16-bit RGB(A) and gray+alpha PNGs to 8 bits, so 16-bit PNGs are decoded with `pypng` (pure Python,
no compiled code, ~80 kB; imageio reads PNGs through Pillow and has the same limit, OpenCV would add ~60 MB). pypng
unfilters in Python: about 1 s per megapixel for the slowest PNG filter, small next to restoring the image.
Pillow also decodes 16-bit RGB(A) TIFFs to 8 bits and cannot open float RGB TIFFs, so TIFFs of more than 8 bits per
sample or of float samples are read (and 16-bit and float images written as TIFF) with `tifffile` (pure Python on
numpy); 16-bit PPM files, which Pillow also cuts to 8 bits, are read and written here (a header and raw samples).

Also here, for every part of the package that reads image files (benchmarks, training data, `ramit restore`): the
pixel-format conversions on decoded arrays (`to_gray_or_rgb`, `rgb_to_gray` exactly as OpenCV, `to_channels`).
Finding image files is `image_files`; the pixel budget every reader checks is `pixel_budget`.

This file ships with the pipeline to Hub folders, so it imports nothing from the rest of the package but `atomic`,
`image_files` and `pixel_budget` (which import only the standard library).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .atomic import write_file_atomic
from .pixel_budget import MAX_PIXELS_ENV, max_pixels_for

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# headers of common formats: a file that has one but that Pillow cannot identify is damaged, not a non-image
_SIGNATURES = (
    (_PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WebP"),
)
# The longest a download may take in all (the `timeout` of `load_image` bounds each wait for the server), and the
# bytes an encoded image may take per pixel of the pixel budget (uncompressed 16-bit RGBA) plus room for metadata.
DOWNLOAD_SECONDS = 60.0
_BYTES_PER_BUDGET_PIXEL = 8
_METADATA_BYTES = 16 << 20
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF
# where `save_image` writes 16-bit pixels (as they are) and float32 pixels (other formats take 8 bits)
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff", ".ppm", ".pgm", ".pnm")
FLOAT_EXTENSIONS = (".tif", ".tiff")
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
_MODE_OF_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


class ImageReadError(ValueError):
    """An input that cannot be read as an image; the message names the input and the problem."""


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


@dataclass
class DecodedImage:
    """Pixels of one image (see the module docstring for the layout), its PIL-style mode, where it came from and
    what its file says about itself (`metadata`)."""

    pixels: np.ndarray
    mode: str
    source: str
    metadata: ImageMetadata = field(default_factory=ImageMetadata)

    @property
    def bit_depth(self) -> int:
        """Bits per channel as decoded: 8, 16, or 32 for float pixels."""
        if self.pixels.dtype.kind == "f":
            return 32
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL reports it."""
        return self.pixels.shape[1], self.pixels.shape[0]


def is_url(source) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def describe(image) -> str:
    """A short name of an input for error messages: the path or URL, or the kind, size and type of the object."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, Image.Image):
        return f"PIL image ({image.mode}, {image.width}x{image.height})"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"{type(image).__name__} of {len(image):,} bytes"
    if callable(getattr(image, "read", None)) and isinstance(getattr(image, "name", None), str):
        return image.name  # an open file
    shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", None)
    if shape is not None:
        return f"{type(image).__name__} of shape {tuple(shape)} and dtype {dtype}"
    return type(image).__name__


def _check_budget(width: int, height: int, name: str, max_pixels: int | None) -> None:
    budget = max_pixels_for() if max_pixels is None else max_pixels
    if budget and width * height > budget:
        raise ImageReadError(
            f"{name}: {width}x{height} = {width * height:,} pixels is more than the pixel budget of {budget:,} "
            f"(what this machine can decode and hold); raise it with --max-pixels / max_pixels= / {MAX_PIXELS_ENV} "
            "(0 for no limit) if there is memory for it"
        )


def _check_single_frame(image: Image.Image, name: str) -> None:
    _check_frames(getattr(image, "n_frames", 1), name)


def _check_frames(frames: int, name: str) -> None:
    if frames > 1:
        raise ImageReadError(
            f"{name}: an animated or multi-page image ({frames} frames); only still images are restored, and "
            "restoring the first frame alone would drop the others: save the frames as separate images first"
        )


def is_encoded_image(source) -> bool:
    """The bytes of an image file in memory: bytes, bytearray, memoryview or a binary file object (`BytesIO`, an
    open file), as Pillow's `Image.open` takes them."""
    return isinstance(source, (bytes, bytearray, memoryview)) or (
        callable(getattr(source, "read", None)) and not isinstance(source, (str, os.PathLike))
    )


def load_image(source, timeout: float = 10.0, max_pixels: int | None = None) -> DecodedImage:
    """A path, an http(s) URL, a PIL image or an encoded image in memory (`is_encoded_image`: bytes, a `BytesIO`, an
    open binary file) -> `DecodedImage`, upright (EXIF orientation applied).

    `max_pixels` bounds width x height, checked from the file's header before anything is decoded (default:
    `max_pixels_for()`; 0: no limit). Raises `ImageReadError` naming the source for a missing file, a failed
    download, a file that is not an image, a corrupt or truncated image, an empty one, one above the budget, or an
    animated one.
    """
    if isinstance(source, Image.Image):
        name = describe(source)
        _check_budget(source.width, source.height, name, max_pixels)
        _check_single_frame(source, name)
        return _decode_pil(source, name)
    limit = max_encoded_bytes(max_pixels)
    if is_encoded_image(source):
        name = describe(source)
        if not isinstance(source, (bytes, bytearray, memoryview)):
            try:
                source = _read_bounded(source, limit, name, max_pixels)
            except (OSError, ValueError) as error:  # a closed or unreadable file object
                raise ImageReadError(f"{name}: cannot read ({error})") from None
        return decode_image_bytes(bytes(source), name, max_pixels=max_pixels)
    if not isinstance(source, (str, os.PathLike)):
        raise ImageReadError(
            f"{describe(source)}: expected a path, an http(s) URL, a PIL image or the bytes of an image file"
        )
    name = str(source)
    data = _download(name, timeout, limit, max_pixels) if is_url(name) else _read_file(name, limit, max_pixels)
    return decode_image_bytes(data, name, max_pixels=max_pixels)


def max_encoded_bytes(max_pixels: int | None = None) -> int | None:
    """The most bytes an image file within the pixel budget `max_pixels` can take (None: no budget, no bound):
    `_BYTES_PER_BUDGET_PIXEL` per pixel, uncompressed 16-bit RGBA, and `_METADATA_BYTES` for what else it holds. A
    longer file, download or stream is refused before it is read whole (/dev/zero, an endless response)."""
    budget = max_pixels_for() if max_pixels is None else max_pixels
    return budget * _BYTES_PER_BUDGET_PIXEL + _METADATA_BYTES if budget else None


def _too_long(name: str, limit: int, max_pixels: int | None) -> ImageReadError:
    budget = max_pixels_for() if max_pixels is None else max_pixels
    return ImageReadError(
        f"{name}: more than {limit:,} bytes, more than an image within the pixel budget of {budget:,} pixels can "
        f"take; raise it with --max-pixels / max_pixels= / {MAX_PIXELS_ENV} (0 for no limit) if this is an image"
    )


def _read_bounded(stream, limit: int | None, name: str, max_pixels: int | None, deadline: float | None = None):
    """The bytes of a binary stream, at most `limit` of them (else `_too_long`), read in chunks until `deadline`
    (`time.monotonic()`; None: no deadline)."""
    chunks: list[bytes] = []
    total = 0
    read = getattr(stream, "read1", stream.read)  # read1: what has arrived, so a slow server meets the deadline
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise ImageReadError(
                f"{name}: download stopped after {DOWNLOAD_SECONDS:g} s with {total:,} bytes received (the time a "
                "download may take in all)"
            )
        chunk = read(1 << 20)
        if not isinstance(chunk, (bytes, bytearray)):
            raise ImageReadError(f"{name}: read() gave {type(chunk).__name__}, not bytes (open the file in 'rb')")
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if limit is not None and total > limit:
            raise _too_long(name, limit, max_pixels)
        chunks.append(bytes(chunk))


def decode_image_bytes(data: bytes, name: str, max_pixels: int | None = None) -> DecodedImage:
    """The bytes of an image file -> `DecodedImage`, decoded as `load_image` decodes files; `name` is for errors."""
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes), not an image")
    if data.startswith(_PNG_SIGNATURE) and len(data) > 24 and data[12:16] == b"IHDR" and data[24] == 16:
        width, height = struct.unpack(">II", data[16:24])
        _check_budget(width, height, name, max_pixels)
        return _decode_png16(data, name)
    deep = None
    if data.startswith(_TIFF_SIGNATURES):
        deep = _decode_deep_tiff(data, name, max_pixels)
    elif data.startswith((b"P5", b"P6")):
        deep = _decode_deep_pnm(data, name, max_pixels)
    if deep is not None:
        return deep
    try:
        with pillow_bomb_check_off():  # the budget above is the check, from the header and before decoding
            image = Image.open(io.BytesIO(data))
            _check_budget(image.width, image.height, name, max_pixels)
            _check_single_frame(image, name)
            _check_pillow_depth(image, name)
            image.load()
    except ImageReadError:
        raise
    except Image.UnidentifiedImageError:
        kind = next((kind for signature, kind in _SIGNATURES if data.startswith(signature)), None)
        if kind is not None:
            raise ImageReadError(f"{name}: corrupt or truncated image (a {kind} header, undecodable data)") from None
        raise ImageReadError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except Exception as error:  # decoders of damaged files raise OSError, SyntaxError, ValueError, zlib.error...
        raise ImageReadError(f"{name}: corrupt or truncated image ({type(error).__name__}: {error})") from None
    return _decode_pil(image, name)


def _check_pillow_depth(image: Image.Image, name: str) -> None:
    """Refuse a TIFF of more than 8 bits per sample that Pillow would cut to 8 bits (only where tifffile, which
    reads them whole, is missing)."""
    if image.format != "TIFF" or image.mode.startswith("I") or image.mode == "F":
        return
    bits = image.tag_v2.get(258, (8,))  # type: ignore[attr-defined]
    bits = max(bits) if isinstance(bits, tuple) else bits
    if bits > 8:
        raise ImageReadError(
            f"{name}: a {bits}-bit {image.mode} TIFF, which Pillow reads only at 8 bits; install tifffile "
            "(pip install tifffile) to restore it at its depth"
        )


def _decode_deep_tiff(data: bytes, name: str, max_pixels: int | None) -> DecodedImage | None:
    """A TIFF of more than 8 bits per sample or of float samples, read whole with tifffile; None for other TIFFs
    (Pillow reads them) or where tifffile is not installed."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            bits, float_samples = page.bitspersample, page.sampleformat == 3
            if bits <= 8 and not float_samples:
                return None
            _check_budget(page.imagewidth, page.imagelength, name, max_pixels)
            _check_frames(len(tif.pages), name)
            what = f"a {bits}-bit {'float ' if float_samples else ''}TIFF"
            photometric = int(page.photometric)
            if photometric not in (1, 2):  # min-is-black, RGB
                kind = getattr(page.photometric, "name", photometric)
                raise ImageReadError(f"{name}: {what} in {kind} colour, which is not read (only gray and RGB)")
            try:
                pixels = page.asarray()
            except (KeyError, ValueError) as error:
                if "imagecodecs" in str(error) and page.samplesperpixel == 1 and bits == 16 and not float_samples:
                    return None  # Pillow reads 16-bit gray with its own codecs (mode I;16)
                if "imagecodecs" in str(error):
                    codec = getattr(page.compression, "name", page.compression)
                    raise ImageReadError(
                        f"{name}: {what} compressed with {codec}, which needs the imagecodecs package to read "
                        "(pip install imagecodecs)"
                    ) from None
                raise
            axes = page.axes
            tags = {tag: page.tags[tag].value for tag in (274, 282, 283, 296, 34675) if tag in page.tags}
            orientation = int(tags.get(274, 1))
            icc_profile = bytes(tags[34675]) if 34675 in tags else None
            dpi = _tiff_dpi(tags)
    except ImageReadError:
        raise
    except Exception as error:  # tifffile.TiffFileError, struct errors, codec errors of damaged strips...
        raise ImageReadError(f"{name}: corrupt or truncated TIFF ({type(error).__name__}: {error})") from None
    if axes == "SYX":  # planar configuration: one plane per sample
        pixels = np.moveaxis(pixels, 0, -1)
    elif axes not in ("YX", "YXS"):
        raise ImageReadError(f"{name}: {what} with axes {axes}, which is not read (only one plane of samples)")
    if pixels.size == 0:
        raise ImageReadError(f"{name}: empty image ({page.imagewidth}x{page.imagelength} pixels)")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in _MODE_OF_CHANNELS:
        raise ImageReadError(f"{name}: {what} with {channels} samples per pixel (only 1 to 4 are read)")
    if pixels.dtype.kind == "f":
        pixels = pixels.astype(np.float32)
    elif pixels.dtype != np.uint16 or bits < 16:
        pixels = _integers_to_uint16(pixels, bits, name, what)
    if orientation in _ORIENT:
        pixels = _ORIENT[orientation](pixels)
    metadata, _ = _header_metadata(data)  # Pillow opens 16-bit TIFFs (not float RGB ones) without decoding them
    metadata.icc_profile = metadata.icc_profile or icc_profile
    metadata.dpi = metadata.dpi or dpi
    return DecodedImage(np.ascontiguousarray(pixels), _MODE_OF_CHANNELS[channels], name, metadata)


def _tiff_dpi(tags: dict) -> tuple[float, float] | None:
    """Dots per inch from TIFF tags XResolution (282), YResolution (283) and ResolutionUnit (296: 2 inch, 3 cm)."""
    unit = {2: 1.0, 3: 2.54}.get(int(tags.get(296, 2)))
    try:
        x, y = (float(tags[tag][0]) / float(tags[tag][1]) for tag in (282, 283))
    except (KeyError, TypeError, IndexError, ValueError, ZeroDivisionError):
        return None
    return (x * unit, y * unit) if unit and x > 0 and y > 0 else None


def _integers_to_uint16(pixels: np.ndarray, bits: int, name: str, what: str) -> np.ndarray:
    """Integer samples of `bits` bits -> uint16 at full scale: 12-bit samples are scaled to 16 bits (so their white
    stays white); 32-bit ones are kept where their values fit 16 bits, as PIL's mode "I" is."""
    low, high = int(pixels.min()), int(pixels.max())
    if bits < 16 and low >= 0:
        return _scale_to_16_bits(pixels, (1 << bits) - 1)
    if low < 0 or high > 65535:
        raise ImageReadError(f"{name}: {what} with values in [{low}, {high}], outside 0..65535")
    return pixels.astype(np.uint16)


_PNM_NUMBER = re.compile(rb"(?:\s|#[^\r\n]*[\r\n])+(\d+)")


def _decode_deep_pnm(data: bytes, name: str, max_pixels: int | None) -> DecodedImage | None:
    """A binary PGM / PPM (P5 / P6) of more than 8 bits per sample (maxval above 255), which Pillow cuts to 8 bits,
    at 16 bits (samples scaled to 0..65535 from their maxval); None for 8-bit files (Pillow reads them)."""
    numbers, position = [], 2
    for _ in range(3):  # width, height, maxval
        match = _PNM_NUMBER.match(data, position)
        if match is None:
            return None  # Pillow names the problem
        numbers.append(int(match[1]))
        position = match.end()
    width, height, top = numbers
    if top <= 255:
        return None
    if top > 65535:
        raise ImageReadError(f"{name}: corrupt PNM header (maxval {top}, above 65535)")
    _check_budget(width, height, name, max_pixels)
    channels = 1 if data[1:2] == b"5" else 3
    count = width * height * channels
    samples = data[position + 1 : position + 1 + 2 * count]  # one whitespace byte ends the header
    if width == 0 or height == 0:
        raise ImageReadError(f"{name}: empty image ({width}x{height} pixels)")
    if len(samples) < 2 * count:
        raise ImageReadError(
            f"{name}: corrupt or truncated image (a PNM header, {len(samples):,} of {2 * count:,} bytes)"
        )
    pixels = np.frombuffer(samples, dtype=">u2").reshape((height, width, channels)[: 2 if channels == 1 else 3])
    return DecodedImage(np.ascontiguousarray(_scale_to_16_bits(pixels, top)), _MODE_OF_CHANNELS[channels], name)


def _scale_to_16_bits(pixels: np.ndarray, top: int) -> np.ndarray:
    """Integer samples whose white is `top` -> uint16 whose white is 65535 (rounded), so that white stays white."""
    if top == 65535:
        return pixels.astype(np.uint16)
    return ((np.minimum(pixels, top).astype(np.uint32) * 65535 + top // 2) // top).astype(np.uint16)


@contextlib.contextmanager
def pillow_bomb_check_off():
    """Pillow's decompression-bomb check off, where the pixel budget is checked instead (from the header)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def not_a_regular_file(path: str | os.PathLike) -> str | None:
    """What is wrong with reading `path` as an image file when it is not a regular file (a device such as
    /dev/zero, which never ends, a FIFO, which blocks until someone writes, a socket), or None. Folders are left to
    the caller. The one rule of `load_image` and `ramit restore`."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # reading it names the problem
    kinds = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a FIFO (named pipe)"}
    kinds[stat.S_ISSOCK] = "a socket"
    kind = next((what for test, what in kinds.items() if test(mode)), None)
    return None if kind is None else f"not a regular file but {kind}; only image files are read"


def _read_file(name: str, limit: int | None = None, max_pixels: int | None = None) -> bytes:
    path = Path(name).expanduser()
    problem = not_a_regular_file(path)
    if problem is not None:
        raise ImageReadError(f"{name}: {problem}")
    try:
        with open(path, "rb") as file:
            return _read_bounded(file, limit, name, max_pixels)
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{name}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageReadError(f"{name}: permission denied") from None
    except OSError as error:
        raise ImageReadError(f"{name}: cannot read ({error.strerror or error})") from None


def _download(url: str, timeout: float, limit: int | None = None, max_pixels: int | None = None) -> bytes:
    """The body of `url`: each wait for the server at most `timeout` s, the whole download at most
    `DOWNLOAD_SECONDS`, at most `limit` bytes."""
    request = urllib.request.Request(url, headers={"User-Agent": "ramit-hf"})
    deadline = time.monotonic() + DOWNLOAD_SECONDS
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            if limit is not None and announced and announced.isdigit() and int(announced) > limit:
                raise _too_long(url, limit, max_pixels)
            return _read_bounded(response, limit, url, max_pixels, deadline)
    except urllib.error.HTTPError as error:
        raise ImageReadError(f"{url}: download failed (HTTP {error.code} {error.reason})") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ImageReadError(f"{url}: download failed ({reason})") from None


def _decode_pil(image: Image.Image, name: str) -> DecodedImage:
    if image.width == 0 or image.height == 0:
        raise ImageReadError(f"{name}: empty image ({image.width}x{image.height} pixels)")
    metadata, _ = metadata_of(image)  # before the orientation is applied (and removed from the image's EXIF)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as error:  # a malformed EXIF block should not hide the pixels
        raise ImageReadError(f"{name}: unreadable EXIF orientation ({error})") from None
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        pixels = np.asarray(image)
    elif mode.startswith("I;16"):
        pixels, mode = np.asarray(image).astype(np.uint16), "L"
    elif mode == "I":
        pixels, mode = np.asarray(image), "L"
        if pixels.min() < 0 or pixels.max() > 65535:
            raise ImageReadError(f"{name}: 32-bit integer image with values outside 0..65535")
        pixels = pixels.astype(np.uint16)
    elif mode == "F":
        pixels, mode = np.asarray(image, dtype=np.float32), "L"
    elif mode == "1":
        pixels, mode = np.asarray(image.convert("L")), "L"
    else:
        # palettes, CMYK, YCbCr, premultiplied alpha, ...: to RGB, keeping transparency as alpha
        has_alpha = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
        mode = "RGBA" if has_alpha else "RGB"
        pixels = np.asarray(image.convert(mode))
    return DecodedImage(np.ascontiguousarray(pixels), mode, name, metadata)


def _decode_png16(data: bytes, name: str) -> DecodedImage:
    try:
        import png  # pypng
    except ImportError:
        raise ImageReadError(f"{name}: reading 16-bit PNGs needs the pypng package (pip install pypng)") from None
    try:
        width, height, values, info = png.Reader(bytes=data).read_flat()
    except Exception as error:  # png.FormatError, png.ChunkError, zlib.error, ...
        raise ImageReadError(f"{name}: corrupt or truncated PNG ({type(error).__name__}: {error})") from None
    if width == 0 or height == 0:
        raise ImageReadError(f"{name}: empty image ({width}x{height} pixels)")
    planes = info["planes"]
    pixels = np.frombuffer(values, dtype=np.uint16).reshape(height, width, planes)
    if planes == 1:
        pixels = pixels[..., 0]
    metadata, orientation = _header_metadata(data)
    if orientation in _ORIENT:
        pixels = _ORIENT[orientation](pixels)
    return DecodedImage(np.ascontiguousarray(pixels), _MODE_OF_CHANNELS[planes], name, metadata)


def _header_metadata(data: bytes) -> tuple[ImageMetadata, int]:
    """`metadata_of` the file in `data` as Pillow opens it (its header, not its pixels), for the files decoded by
    other means; none where Pillow cannot open it."""
    try:
        with pillow_bomb_check_off():
            return metadata_of(Image.open(io.BytesIO(data)))
    except Exception:
        return ImageMetadata(), 1


def save_image(
    image,
    path: str | os.PathLike,
    overwrite: bool = False,
    metadata: ImageMetadata | None = None,
    quality: int | None = None,
) -> Path:
    """Write a PIL image or an (H, W[, C]) uint8, uint16 or float32 array to `path` atomically, in the format of its
    extension, with `metadata` (default: a PIL image's own `info`) as far as the format holds it.

    The image goes to a temporary file beside `path` that is then renamed (`ramit_hf.atomic.write_file_atomic`), so
    an interrupted write never leaves a partial image. An existing `path` raises `FileExistsError` unless `overwrite`
    (checked before encoding and again, atomically, when the file is put in place). 16-bit data needs one of
    `SIXTEEN_BIT_EXTENSIONS` (PNG with pypng: gray, gray + alpha, RGB and RGBA; TIFF with tifffile; PGM / PPM),
    float32 data a TIFF (`FLOAT_EXTENSIONS`); nothing is cut to 8 bits here. `quality` (1-100, default 95) is for
    JPEG and WebP. Parent folders are created.

    Kept: the ICC profile (PNG, JPEG, WebP, TIFF), EXIF (PNG, JPEG, WebP), DPI (PNG, JPEG, TIFF, BMP), PNG colour
    and text chunks (PNG).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if metadata is None and isinstance(image, Image.Image):
        metadata = metadata_of(image)[0]
    metadata = metadata or ImageMetadata()
    if quality is not None and not (isinstance(quality, int) and 1 <= quality <= 100):
        raise ValueError(f"{path}: quality must be a whole number from 1 to 100, got {quality!r}")
    if isinstance(image, Image.Image) and image.mode.startswith("I;16"):
        image = np.asarray(image).astype(np.uint16)
    elif isinstance(image, Image.Image) and image.mode == "F":
        image = np.asarray(image, dtype=np.float32)
    elif isinstance(image, Image.Image) and image.mode not in ("1", "L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    elif not isinstance(image, Image.Image):
        image = np.asarray(image)
    if isinstance(image, np.ndarray) and image.dtype in (np.uint16, np.float32):
        deep_writer = _deep_writer(image, path)

        def write(file) -> None:
            deep_writer(image, file, metadata)
    else:
        format = Image.registered_extensions().get(suffix)
        if format is None:
            raise ValueError(f"{path}: unknown image extension {suffix!r}")
        if isinstance(image, np.ndarray):
            image = _array_to_pil(image, path)
        if format == "JPEG" and image.mode not in ("L", "RGB"):
            raise ValueError(f"{path}: JPEG cannot store mode {image.mode}; use .png")
        options = _pillow_options(format, metadata, quality)

        def write(file) -> None:
            if format == "PNG":
                _write_png(lambda buffer: image.save(buffer, format="PNG", **options), file, metadata)
            else:
                image.save(file, format=format, **options)

    return write_file_atomic(path, write, overwrite=overwrite)


def _pillow_options(format: str, metadata: ImageMetadata, quality: int | None) -> dict:
    """Pillow's save options that carry `metadata` into `format` (PNG's chunks are written by `_write_png`)."""
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
        options = {"icc_profile": None, "exif": None}  # not from the image's own info: `_write_png` writes them
    if format in ("JPEG", "WEBP"):
        options["quality"] = 95 if quality is None else quality
    return options


def _write_png(encode, file, metadata: ImageMetadata) -> None:
    """A PNG from `encode(buffer)` (which writes one without metadata), with `metadata`'s chunks after its header."""
    buffer = io.BytesIO()
    encode(buffer)
    data = buffer.getbuffer()
    header_end = len(_PNG_SIGNATURE) + 8 + 13 + 4  # IHDR is the first chunk, 13 bytes long
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


def _deep_writer(array: np.ndarray, path: Path):
    """The writer of 16-bit or float32 pixels for `path`'s format; ValueError where the format cannot hold them."""
    suffix = path.suffix.lower()
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    planes = 1 if array.ndim == 2 else array.shape[-1]
    if array.ndim not in (2, 3) or planes not in _MODE_OF_CHANNELS:
        raise ValueError(f"{path}: cannot write pixels of shape {array.shape} (expected H x W [x 1, 2, 3 or 4])")
    if array.dtype == np.float32:
        if suffix not in FLOAT_EXTENSIONS:
            raise ValueError(f"{path}: float images can only be written as {' or '.join(FLOAT_EXTENSIONS)}")
        return _write_tiff
    if suffix not in SIXTEEN_BIT_EXTENSIONS:
        raise ValueError(f"{path}: 16-bit images can only be written as {', '.join(SIXTEEN_BIT_EXTENSIONS)}")
    if suffix in FLOAT_EXTENSIONS:
        return _write_tiff
    if suffix != ".png":
        if planes not in (1, 3):
            raise ValueError(f"{path}: PGM / PPM files hold gray or RGB, not {_MODE_OF_CHANNELS[planes]}; use .png")
        return _write_pnm16
    return lambda array, file, metadata: _write_png(lambda buffer: _write_png16(array, buffer), file, metadata)


def _write_tiff(array: np.ndarray, file, metadata: ImageMetadata) -> None:
    """16-bit or float32 pixels as a deflate-compressed TIFF (tifffile)."""
    try:
        import tifffile
    except ImportError:
        raise ValueError("writing 16-bit or float TIFFs needs the tifffile package (pip install tifffile)") from None
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    planes = 1 if array.ndim == 2 else array.shape[-1]
    tifffile.imwrite(
        file,
        np.ascontiguousarray(array),
        photometric="minisblack" if planes <= 2 else "rgb",
        extrasamples=("unassalpha",) if planes in (2, 4) else None,
        compression="zlib",
        predictor=array.dtype == np.uint16,
        iccprofile=metadata.icc_profile,
        resolution=metadata.dpi,
        resolutionunit="INCH" if metadata.dpi else None,
    )


def _write_pnm16(array: np.ndarray, file, metadata: ImageMetadata) -> None:
    """16-bit gray or RGB pixels as a binary PGM (P5) or PPM (P6) with maxval 65535."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    height, width = array.shape[:2]
    file.write(f"P{5 if array.ndim == 2 else 6}\n{width} {height}\n65535\n".encode())
    file.write(np.ascontiguousarray(array, dtype=">u2").tobytes())


def _array_to_pil(array: np.ndarray, path: Path) -> Image.Image:
    if array.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 or uint16 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in _MODE_OF_CHANNELS):
        return Image.fromarray(array)
    raise ValueError(f"{path}: cannot write pixels of shape {array.shape} (expected H x W [x 1, 2, 3 or 4])")


def _write_png16(array: np.ndarray, file) -> None:
    import png  # pypng

    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    planes = 1 if array.ndim == 2 else array.shape[-1]
    if planes not in _MODE_OF_CHANNELS:
        raise ValueError(f"cannot write 16-bit pixels of shape {array.shape} (expected H x W [x 2, 3 or 4])")
    height, width = array.shape[:2]
    writer = png.Writer(width, height, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16, compression=6)
    writer.write_array(file, np.ascontiguousarray(array).reshape(-1))


# ----------------------------------------------------------------------------------------------
# finding image files


def to_gray_or_rgb(pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels (see the module docstring) -> (H, W, 1) gray or (H, W, 3) RGB; alpha is dropped (not
    blended), the dtype kept."""
    if pixels.ndim == 2:
        return pixels[:, :, None]
    return pixels[:, :, :1] if pixels.shape[2] <= 2 else pixels[:, :, :3]


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 or uint16 RGB `(H, W, 3)` -> gray `(H, W, 1)` of the same dtype, exactly as OpenCV's
    `cvtColor(image, COLOR_RGB2GRAY)`.

    OpenCV computes BT.601 luma in 15-bit fixed point for both depths: `(9798 R + 19235 G + 3735 B + 2**14) >> 15`.
    This equals `cv2.cvtColor` of OpenCV 4.10 and 5.0 on all 2**24 8-bit colours (and 4.7 on 8-bit) and on 4 million
    random 16-bit ones; 14-bit weights (4899, 9617, 1868) would be off by one on 0.26% of the 8-bit colours. Gray
    (R = G = B) pixels are unchanged.
    """
    if image.dtype not in (np.uint8, np.uint16) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"rgb_to_gray expects a uint8 or uint16 (H, W, 3) image, got {image.dtype} {image.shape}")
    x = image.astype(np.int64)
    gray = (x[..., 0] * 9798 + x[..., 1] * 19235 + x[..., 2] * 3735 + (1 << 14)) >> 15
    return gray.astype(image.dtype)[:, :, None]


def to_channels(image: np.ndarray, num_channels: int) -> np.ndarray:
    """(H, W, 1 or 3) -> (H, W, `num_channels`): gray is repeated to RGB, RGB becomes gray by `rgb_to_gray`."""
    if image.shape[2] == num_channels:
        return image
    if num_channels == 3:
        return np.repeat(image, 3, axis=2)
    return rgb_to_gray(image)


__all__ = [
    "DOWNLOAD_SECONDS",
    "FLOAT_EXTENSIONS",
    "SIXTEEN_BIT_EXTENSIONS",
    "DecodedImage",
    "ImageMetadata",
    "ImageReadError",
    "decode_image_bytes",
    "describe",
    "is_encoded_image",
    "is_url",
    "load_image",
    "max_encoded_bytes",
    "metadata_of",
    "not_a_regular_file",
    "pillow_bomb_check_off",
    "rgb_to_gray",
    "save_image",
    "to_channels",
    "to_gray_or_rgb",
]
