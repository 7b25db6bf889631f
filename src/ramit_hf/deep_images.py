"""Reading and writing images of more than 8 bits per sample: 16-bit PNG, TIFF of 16-bit or float samples, 16-bit
PGM / PPM, which Pillow would cut to 8 bits (or cannot open).

Pillow decodes 16-bit RGB(A) and gray+alpha PNGs to 8 bits, so 16-bit PNGs are decoded with `pypng` (pure Python,
no compiled code, ~80 kB; imageio reads PNGs through Pillow and has the same limit, OpenCV would add ~60 MB). pypng
unfilters in Python: about 1 s per megapixel for the slowest PNG filter, small next to restoring the image.
Pillow also decodes 16-bit RGB(A) TIFFs to 8 bits and cannot open float RGB TIFFs, so TIFFs of more than 8 bits per
sample or of float samples are read (and 16-bit and float images written as TIFF) with `tifffile` (pure Python on
numpy), imported only when such a file is read or written; 16-bit PPM files, which Pillow also cuts to 8 bits, are
read and written here (a header and raw samples). `image_io` reads and writes every other image with Pillow.

This file ships with the pipeline to Hub folders (through `image_io`), so it imports nothing from the rest of the
package but `decoded_image` and `image_metadata`.
"""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from .decoded_image import (
    MODE_OF_CHANNELS,
    DecodedImage,
    ImageReadError,
    check_budget,
    check_frames,
    pillow_bomb_check_off,
)
from .image_metadata import PNG_SIGNATURE, ImageMetadata, metadata_of, tiff_dpi, upright, write_png

_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF
# where `image_io.save_image` writes 16-bit pixels (as they are) and float32 pixels (other formats take 8 bits)
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff", ".ppm", ".pgm", ".pnm")
FLOAT_EXTENSIONS = (".tif", ".tiff")
_PNM_NUMBER = re.compile(rb"(?:\s|#[^\r\n]*[\r\n])+(\d+)")


def decode_deep_image(data: bytes, name: str, max_pixels: int | None) -> DecodedImage | None:
    """The image file in `data` decoded at its depth where it is a 16-bit PNG, a TIFF of more than 8 bits per sample
    or of float samples, or a PGM / PPM of more than 8 bits; None for other files (Pillow reads them)."""
    if data.startswith(PNG_SIGNATURE) and len(data) > 24 and data[12:16] == b"IHDR" and data[24] == 16:
        width, height = struct.unpack(">II", data[16:24])
        check_budget(width, height, name, max_pixels)
        return _decode_png16(data, name)
    if data.startswith(_TIFF_SIGNATURES):
        return _decode_deep_tiff(data, name, max_pixels)
    if data.startswith((b"P5", b"P6")):
        return _decode_deep_pnm(data, name, max_pixels)
    return None


def check_pillow_depth(image: Image.Image, name: str) -> None:
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
    pixels = upright(pixels, orientation)
    return DecodedImage(np.ascontiguousarray(pixels), MODE_OF_CHANNELS[planes], name, metadata)


def _header_metadata(data: bytes) -> tuple[ImageMetadata, int]:
    """`metadata_of` the file in `data` as Pillow opens it (its header, not its pixels), for the files decoded by
    other means; none where Pillow cannot open it."""
    try:
        with pillow_bomb_check_off():
            return metadata_of(Image.open(io.BytesIO(data)))
    except Exception:
        return ImageMetadata(), 1


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
            check_budget(page.imagewidth, page.imagelength, name, max_pixels)
            check_frames(len(tif.pages), name)
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
            dpi = tiff_dpi(tags)
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
    if channels not in MODE_OF_CHANNELS:
        raise ImageReadError(f"{name}: {what} with {channels} samples per pixel (only 1 to 4 are read)")
    if pixels.dtype.kind == "f":
        pixels = pixels.astype(np.float32)
    elif pixels.dtype != np.uint16 or bits < 16:
        pixels = _integers_to_uint16(pixels, bits, name, what)
    pixels = upright(pixels, orientation)
    metadata, _ = _header_metadata(data)  # Pillow opens 16-bit TIFFs (not float RGB ones) without decoding them
    metadata.icc_profile = metadata.icc_profile or icc_profile
    metadata.dpi = metadata.dpi or dpi
    return DecodedImage(np.ascontiguousarray(pixels), MODE_OF_CHANNELS[channels], name, metadata)


def _integers_to_uint16(pixels: np.ndarray, bits: int, name: str, what: str) -> np.ndarray:
    """Integer samples of `bits` bits -> uint16 at full scale: 12-bit samples are scaled to 16 bits (so their white
    stays white); 32-bit ones are kept where their values fit 16 bits, as PIL's mode "I" is."""
    low, high = int(pixels.min()), int(pixels.max())
    if bits < 16 and low >= 0:
        return _scale_to_16_bits(pixels, (1 << bits) - 1)
    if low < 0 or high > 65535:
        raise ImageReadError(f"{name}: {what} with values in [{low}, {high}], outside 0..65535")
    return pixels.astype(np.uint16)


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
    check_budget(width, height, name, max_pixels)
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
    return DecodedImage(np.ascontiguousarray(_scale_to_16_bits(pixels, top)), MODE_OF_CHANNELS[channels], name)


def _scale_to_16_bits(pixels: np.ndarray, top: int) -> np.ndarray:
    """Integer samples whose white is `top` -> uint16 whose white is 65535 (rounded), so that white stays white."""
    if top == 65535:
        return pixels.astype(np.uint16)
    return ((np.minimum(pixels, top).astype(np.uint32) * 65535 + top // 2) // top).astype(np.uint16)


def deep_writer(array: np.ndarray, path: Path):
    """The writer of 16-bit or float32 pixels for `path`'s format; ValueError where the format cannot hold them."""
    suffix = path.suffix.lower()
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    planes = 1 if array.ndim == 2 else array.shape[-1]
    if array.ndim not in (2, 3) or planes not in MODE_OF_CHANNELS:
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
            raise ValueError(f"{path}: PGM / PPM files hold gray or RGB, not {MODE_OF_CHANNELS[planes]}; use .png")
        return _write_pnm16
    return lambda array, file, metadata: write_png(lambda buffer: _write_png16(array, buffer), file, metadata)


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


def _write_png16(array: np.ndarray, file) -> None:
    import png  # pypng

    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    planes = 1 if array.ndim == 2 else array.shape[-1]
    if planes not in MODE_OF_CHANNELS:
        raise ValueError(f"cannot write 16-bit pixels of shape {array.shape} (expected H x W [x 2, 3 or 4])")
    height, width = array.shape[:2]
    writer = png.Writer(width, height, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16, compression=6)
    writer.write_array(file, np.ascontiguousarray(array).reshape(-1))


__all__ = [
    "FLOAT_EXTENSIONS",
    "SIXTEEN_BIT_EXTENSIONS",
    "check_pillow_depth",
    "decode_deep_image",
    "deep_writer",
]
