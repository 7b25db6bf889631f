"""What a restored file keeps of its input: bit depth (16-bit and float files are restored at their depth, never cut
to 8 bits without a word), and what the file says about itself (ICC profile, EXIF, DPI, PNG text)."""

import numpy as np
import pytest
import tifffile
import torch
from conftest import small_config
from PIL import Image, ImageCms, PngImagePlugin

from ramit_hf import RamitForImageRestoration
from ramit_hf.cli import main
from ramit_hf.convert import save_model_folder
from ramit_hf.image_io import ImageReadError, load_image, save_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    return save_model_folder(RamitForImageRestoration(small_config()), tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def deep_rgb() -> np.ndarray:
    """16-bit RGB pixels with detail below the 8-bit levels (a smooth ramp and noise)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 60000, 24 * 20, dtype=np.float64).reshape(20, 24, 1)
    return np.clip(ramp + rng.normal(0, 300, (20, 24, 3)), 0, 65535).astype(np.uint16)


def _restore(*args) -> int:
    return main(["restore", *map(str, args), "--quiet"])


@pytest.mark.parametrize("layout", ["rgb", "gray", "rgba", "planar"])
def test_16_bit_tiffs_are_restored_at_16_bits_as_16_bit_pngs_are(tmp_path, tiny, deep_rgb, layout):
    pixels = {"rgb": deep_rgb, "gray": deep_rgb[..., 0], "rgba": np.dstack([deep_rgb, deep_rgb[..., :1]])}.get(
        layout, deep_rgb
    )
    (tmp_path / "in").mkdir()
    if layout == "planar":  # one plane per sample
        tifffile.imwrite(
            tmp_path / "in" / "photo.tif", np.moveaxis(pixels, -1, 0), photometric="rgb", planarconfig="separate"
        )
    else:
        photometric = "minisblack" if pixels.ndim == 2 else "rgb"
        tifffile.imwrite(tmp_path / "in" / "photo.tif", pixels, photometric=photometric, compression="zlib")
    save_image(pixels, tmp_path / "png" / "photo.png")
    assert load_image(tmp_path / "in" / "photo.tif").bit_depth == 16
    assert _restore(tmp_path / "in" / "photo.tif", "-o", tmp_path / "out", "--model", tiny) == 0
    assert _restore(tmp_path / "png" / "photo.png", "-o", tmp_path / "out", "--model", tiny) == 0
    restored = tifffile.imread(tmp_path / "out" / "photo.tif")
    assert restored.dtype == np.uint16 and restored.shape[:2] == (40, 48)
    assert np.array_equal(restored, load_image(tmp_path / "out" / "photo.png").pixels)


def test_float_tiffs_are_read_and_restored_as_float(tmp_path, tiny, deep_rgb):
    unit = deep_rgb.astype(np.float32) / 65535
    tifffile.imwrite(tmp_path / "float.tif", unit, photometric="rgb")  # float RGB: Pillow cannot open it
    tifffile.imwrite(tmp_path / "gray.tif", unit[..., 0])
    decoded = load_image(tmp_path / "float.tif")
    assert decoded.pixels.dtype == np.float32 and decoded.mode == "RGB" and np.array_equal(decoded.pixels, unit)
    assert _restore(tmp_path / "float.tif", tmp_path / "gray.tif", "-o", tmp_path / "out", "--model", tiny) == 0
    for name, shape in (("float.tif", (40, 48, 3)), ("gray.tif", (40, 48))):
        restored = tifffile.imread(tmp_path / "out" / name)
        assert restored.dtype == np.float32 and restored.shape == shape
        assert restored.min() >= 0 and restored.max() <= 1
    # the same image as 16-bit PNG gives the same result to 16-bit precision
    save_image(deep_rgb, tmp_path / "png" / "float.png")
    assert _restore(tmp_path / "png" / "float.png", "-o", tmp_path / "out", "--model", tiny) == 0
    sixteen = load_image(tmp_path / "out" / "float.png").pixels / 65535
    assert np.abs(tifffile.imread(tmp_path / "out" / "float.tif") - sixteen).max() < 2e-4
    # a float TIFF of 8-bit levels (values in [0, 255]) is restored on that scale, also when written as 16-bit PNG
    (tmp_path / "levels").mkdir()
    tifffile.imwrite(tmp_path / "levels" / "float.tif", unit * 255, photometric="rgb")
    assert _restore(tmp_path / "levels" / "float.tif", "-o", tmp_path / "levels-out", "--model", tiny) == 0
    levels = tifffile.imread(tmp_path / "levels-out" / "float.tif")
    assert np.abs(levels / 255 - tifffile.imread(tmp_path / "out" / "float.tif")).max() < 1e-5
    assert _restore(tmp_path / "levels" / "float.tif", "-o", tmp_path / "as16.png", "--model", tiny) == 0
    assert (
        np.abs(
            load_image(tmp_path / "as16.png").pixels.astype(int) - load_image(tmp_path / "out" / "float.png").pixels
        ).max()
        <= 1
    )


def test_deep_ppm_and_pgm_files_keep_their_depth_and_white(tmp_path, tiny, deep_rgb):
    # a 16-bit PPM, which Pillow reads at 8 bits
    (tmp_path / "photo.ppm").write_bytes(b"P6\n24 20\n65535\n" + deep_rgb.astype(">u2").tobytes())
    assert np.array_equal(load_image(tmp_path / "photo.ppm").pixels, deep_rgb)
    assert _restore(tmp_path / "photo.ppm", "-o", tmp_path / "out", "--model", tiny) == 0
    assert load_image(tmp_path / "out" / "photo.ppm").pixels.dtype == np.uint16
    # 12-bit samples (maxval 4095): white stays white at 16 bits
    twelve = (deep_rgb >> 4).astype(np.uint16)
    (tmp_path / "twelve.pgm").write_bytes(b"P5\n24 20\n4095\n" + twelve[..., 0].astype(">u2").tobytes())
    decoded = load_image(tmp_path / "twelve.pgm").pixels
    assert decoded.dtype == np.uint16 and np.abs(decoded.astype(int) - deep_rgb[..., 0]).max() <= 17


def test_deep_files_that_cannot_be_read_whole_are_refused_by_name(tmp_path, deep_rgb):
    tifffile.imwrite(tmp_path / "cmyk.tif", np.dstack([deep_rgb, deep_rgb[..., :1]]), photometric="separated")
    with pytest.raises(ImageReadError, match=r"cmyk.tif: a 16-bit TIFF in SEPARATED colour, which is not read"):
        load_image(tmp_path / "cmyk.tif")
    data = (tmp_path / "cmyk.tif").read_bytes()
    # LZW without the imagecodecs package: 16-bit gray is read by Pillow at 16 bits, 16-bit RGB is refused by name
    Image.fromarray(deep_rgb[..., 0]).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    assert np.array_equal(load_image(tmp_path / "lzw.tif").pixels, deep_rgb[..., 0])
    tifffile.imwrite(tmp_path / "cut.tif", deep_rgb, photometric="rgb", compression="zlib")
    (tmp_path / "cut.tif").write_bytes((tmp_path / "cut.tif").read_bytes()[:-300])
    with pytest.raises(ImageReadError, match=r"cut.tif: corrupt or truncated TIFF"):
        load_image(tmp_path / "cut.tif")
    (tmp_path / "cut.ppm").write_bytes(b"P6\n24 20\n65535\n" + deep_rgb.astype(">u2").tobytes()[:100])
    with pytest.raises(ImageReadError, match=r"cut.ppm: corrupt or truncated image \(a PNM header"):
        load_image(tmp_path / "cut.ppm")
    assert data  # the CMYK file exists and is a TIFF
    # a 16-bit output to a format that holds 8 bits is refused by save_image, not cut
    with pytest.raises(ValueError, match=r"16-bit images can only be written as .png, .tif"):
        save_image(deep_rgb, tmp_path / "x.bmp")
    with pytest.raises(ValueError, match=r"float images can only be written as .tif"):
        save_image(deep_rgb.astype(np.float32), tmp_path / "x.png")


def test_the_pipeline_returns_float_and_16_bit_images_at_their_depth(tmp_path, tiny, deep_rgb):
    from transformers import pipeline

    pipe = pipeline("image-restoration", model=str(tiny))
    tifffile.imwrite(tmp_path / "deep.tif", deep_rgb, photometric="rgb")
    assert pipe(str(tmp_path / "deep.tif"), output_type="np", bit_depth="auto").dtype == np.uint16
    unit = deep_rgb.astype(np.float32) / 65535
    restored = pipe(unit, output_type="np", bit_depth="auto", do_rescale=False)
    assert restored.dtype == np.float32 and restored.shape == (40, 48, 3)
    assert pipe(unit[..., 0], bit_depth="auto", do_rescale=False).mode == "F"
    levels = pipe(unit * 255, output_type="np", bit_depth="auto")  # 8-bit levels as float: out on the same scale
    assert np.abs(levels / 255 - restored).max() < 1e-5


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    b'tiff:Orientation="6"><dc:rights>CC BY 4.0</dc:rights></rdf:Description></rdf:RDF></x:xmpmeta>'
)


def _xmp(image: Image.Image) -> bytes:
    value = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
    return value.encode() if isinstance(value, str) else value


def _exif(orientation: int, width: int, height: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = orientation, "TestCam"
    exif.get_ifd(0x8769).update({0xA002: width, 0xA003: height})
    return exif


def _tagged_inputs(folder, deep_rgb):
    """A PNG (with text), a JPEG and a 16-bit PNG, each with an sRGB profile, EXIF (orientation 6: stored 24x20, shown
    20x24) and 300 dpi."""
    folder.mkdir()
    pixels = (deep_rgb >> 8).astype(np.uint8)
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "scanned 1987")
    text.add_itxt("Title", "Grand-m\u00e8re \u2713")
    options = dict(icc_profile=SRGB, exif=_exif(6, 24, 20), dpi=(300, 300))
    Image.fromarray(pixels).save(folder / "tagged.png", pnginfo=text, **options)
    Image.fromarray(pixels).save(folder / "photo.jpg", quality=95, xmp=XMP, **options)
    save_image(deep_rgb, folder / "deep.png", metadata=load_image(folder / "tagged.png").metadata)
    return folder


def test_restored_files_keep_profile_exif_dpi_and_text(tmp_path, tiny, deep_rgb):
    inputs = _tagged_inputs(tmp_path / "in", deep_rgb)
    assert _restore(inputs, "-o", tmp_path / "out", "--model", tiny) == 0
    # the 8-bit files are stored 24x20 and shown 20x24 (orientation 6); deep.png was written upright
    for name, size in (("tagged.png", (40, 48)), ("photo.png", (40, 48)), ("deep.png", (48, 40))):
        out = Image.open(tmp_path / "out" / name)  # the JPEG is written as PNG
        assert out.size == size, name
        assert out.info.get("icc_profile") == SRGB, name
        assert out.info["dpi"] == pytest.approx((600, 600), abs=0.01), name  # the printed size stays
        exif = out.getexif()
        assert exif[0x010F] == "TestCam" and exif.get(0x0112, 1) == 1, name  # already applied: reset
        assert dict(exif.get_ifd(0x8769)) == {0xA002: size[0], 0xA003: size[1]}, name
    out = Image.open(tmp_path / "out" / "tagged.png")
    assert out.text == {"Comment": "scanned 1987", "Title": "Grand-m\u00e8re \u2713"}
    # XMP is kept, its orientation reset as the EXIF one is
    assert _xmp(Image.open(tmp_path / "out" / "photo.png")) == XMP.replace(b'Orientation="6"', b'Orientation="1"')
    # the same through --format: JPEG with the chosen quality, WebP, TIFF
    for format, suffix in (("jpeg", ".jpg"), ("webp", ".webp"), ("tiff", ".tif")):
        extra = ("--quality", "70") if format == "jpeg" else ()
        assert _restore(inputs / "photo.jpg", "-o", tmp_path / format, "--model", tiny, "--format", format, *extra) == 0
        out = Image.open(tmp_path / format / f"photo{suffix}")
        assert out.format == format.upper() and out.info.get("icc_profile") == SRGB, format
        if format != "tiff":
            assert out.getexif()[0x010F] == "TestCam" and out.getexif().get(0x0112, 1) == 1, format
            assert b"<dc:rights>CC BY 4.0</dc:rights>" in _xmp(out) and b'Orientation="1"' in _xmp(out), format
        if format != "webp":
            assert out.info["dpi"] == pytest.approx((600, 600), abs=0.01), format
    lenient = Image.open(tmp_path / "jpeg" / "photo.jpg").quantization[0][0]
    assert _restore(inputs / "photo.jpg", "-o", tmp_path / "q95", "--model", tiny, "--format", "jpeg") == 0
    assert Image.open(tmp_path / "q95" / "photo.jpg").quantization[0][0] < lenient  # 95 by default, 70 asked
    assert _restore(inputs / "photo.jpg", "-o", tmp_path / "bad", "--model", tiny, "--quality", "70") == 2
    # a 16-bit TIFF keeps its profile and resolution too
    tifffile.imwrite(inputs / "deep.tif", deep_rgb, photometric="rgb", iccprofile=SRGB, resolution=(300, 300))
    assert _restore(inputs / "deep.tif", "-o", tmp_path / "tif", "--model", tiny) == 0
    with tifffile.TiffFile(tmp_path / "tif" / "deep.tif") as tif:
        page = tif.pages.first
        assert page.dtype == np.uint16 and bytes(page.tags[34675].value) == SRGB
        assert page.tags[282].value == (600, 1) or page.tags[282].value[0] / page.tags[282].value[1] == 600


def test_pipeline_pil_outputs_carry_the_input_metadata(tmp_path, tiny, deep_rgb):
    from transformers import pipeline

    inputs = _tagged_inputs(tmp_path / "in", deep_rgb)
    restored = pipeline("image-restoration", model=str(tiny))(str(inputs / "photo.jpg"))
    assert restored.info["icc_profile"] == SRGB and restored.info["dpi"] == pytest.approx((600, 600))
    save_image(restored, tmp_path / "saved.png")
    saved = Image.open(tmp_path / "saved.png")
    assert saved.info["icc_profile"] == SRGB and saved.getexif()[0x010F] == "TestCam"
