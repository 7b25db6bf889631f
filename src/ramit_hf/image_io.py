"""Reading and writing image files: paths, http(s) URLs and encoded images in memory, bounded as they are read,
decoded upright; atomic writes in the format of the file's extension.

The public entry points (`load_image`, `decode_image_bytes`, `save_image`) and the modules behind them:
`decoded_image` (what a reader gives, `DecodedImage`, and how it fails, `ImageReadError`, with the pixel layout),
`image_metadata` (EXIF, XMP, ICC profile, DPI and PNG chunks, read and written), `deep_images` (16-bit PNG, TIFF and
PNM files and float TIFFs, which Pillow would cut to 8 bits); Pillow reads and writes every other image here. Their
public names are importable from here as well.

Also here, for every part of the package that reads image files (benchmarks, training data, `ramit restore`): the
pixel-format conversions on decoded arrays (`to_gray_or_rgb`, `rgb_to_gray` exactly as OpenCV, `to_channels`).
Finding image files is `image_files`; the pixel budget every reader checks is `pixel_budget`.

This file ships with the pipeline to Hub folders, so it imports nothing from the rest of the package but `atomic`,
`decoded_image`, `deep_images`, `image_metadata` and `pixel_budget` (`atomic` and `pixel_budget` import only the
standard library).
"""

from __future__ import annotations

import io
import os
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .atomic import write_file_atomic
from .decoded_image import (
    MODE_OF_CHANNELS,
    DecodedImage,
    ImageReadError,
    check_budget,
    check_single_frame,
    pillow_bomb_check_off,
)
from .deep_images import FLOAT_EXTENSIONS, SIXTEEN_BIT_EXTENSIONS, check_pillow_depth, decode_deep_image, deep_writer
from .image_metadata import PNG_SIGNATURE, ImageMetadata, metadata_of, pillow_save_options, write_png
from .pixel_budget import MAX_PIXELS_ENV, max_pixels_for

# headers of common formats: a file that has one but that Pillow cannot identify is damaged, not a non-image
_SIGNATURES = (
    (PNG_SIGNATURE, "PNG"),
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
        check_budget(source.width, source.height, name, max_pixels)
        check_single_frame(source, name)
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
    deep = decode_deep_image(data, name, max_pixels)
    if deep is not None:
        return deep
    try:
        with pillow_bomb_check_off():  # the budget above is the check, from the header and before decoding
            image = Image.open(io.BytesIO(data))
            check_budget(image.width, image.height, name, max_pixels)
            check_single_frame(image, name)
            check_pillow_depth(image, name)
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
        write_deep = deep_writer(image, path)

        def write(file) -> None:
            write_deep(image, file, metadata)
    else:
        format = Image.registered_extensions().get(suffix)
        if format is None:
            raise ValueError(f"{path}: unknown image extension {suffix!r}")
        if isinstance(image, np.ndarray):
            image = _array_to_pil(image, path)
        if format == "JPEG" and image.mode not in ("L", "RGB"):
            raise ValueError(f"{path}: JPEG cannot store mode {image.mode}; use .png")
        options = pillow_save_options(format, metadata, quality)

        def write(file) -> None:
            if format == "PNG":
                write_png(lambda buffer: image.save(buffer, format="PNG", **options), file, metadata)
            else:
                image.save(file, format=format, **options)

    return write_file_atomic(path, write, overwrite=overwrite)


def png_bytes(array: np.ndarray) -> bytes:
    """The PNG file `save_image` writes for (H, W[, C]) uint8 or uint16 pixels without metadata, as bytes (a
    dataset's Image feature stores them)."""
    buffer = io.BytesIO()
    if array.dtype == np.uint16:
        deep_writer(array, Path("image.png"))(array, buffer, ImageMetadata())
    else:
        _array_to_pil(array, Path("image.png")).save(buffer, format="PNG")
    return buffer.getvalue()


def _array_to_pil(array: np.ndarray, path: Path) -> Image.Image:
    if array.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 or uint16 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in MODE_OF_CHANNELS):
        return Image.fromarray(array)
    raise ValueError(f"{path}: cannot write pixels of shape {array.shape} (expected H x W [x 1, 2, 3 or 4])")


# ----------------------------------------------------------------------------------------------
# pixel formats of decoded arrays


def to_gray_or_rgb(pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels (see `decoded_image` for the layout) -> (H, W, 1) gray or (H, W, 3) RGB; alpha is dropped (not
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
