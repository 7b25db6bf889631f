"""RamitImageProcessor: images in, the paper's padded batch out; model output back to images."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.utils import logging

logger = logging.get_logger(__name__)

# ITU-R BT.601 luma, as OpenCV's RGB2GRAY (the original's gray test data).
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def symmetric_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the last two dims on the bottom/right to a multiple of `multiple`, as numpy's 'symmetric' mode does.

    Mirrors including the edge pixel (a b c | c b a), and keeps mirroring for pads longer than the image. Written
    without branches on the sizes, so that an ONNX trace pads every size, not only the traced one.
    """
    height, width = x.shape[-2:]
    x = x.index_select(-2, _symmetric_index(height, height + (-height % multiple), x.device))
    return x.index_select(-1, _symmetric_index(width, width + (-width % multiple), x.device))


def _symmetric_index(size: int, padded: int, device) -> torch.Tensor:
    period = torch.arange(padded, device=device) % (2 * size)
    return torch.where(period < size, period, 2 * size - 1 - period)


def image_to_array(image, input_data_format: str | None = None, do_rescale: bool = True, rescale_factor=None):
    """One image (PIL, numpy or torch) -> float32 numpy array (channels, height, width) in [0, 1].

    When `do_rescale`, integer data are scaled by their white level (255 for 8-bit, 65535 for 16-bit); float data
    follow the rule of float image files (`stored_float_to_unit`: values within [0, 1] as they are, within [0, 255]
    as 8-bit levels, others an error naming their range), or are multiplied by a `rescale_factor` other than the
    default 1/255. Without `do_rescale`, float data must lie in [0, 1]. Raises ValueError naming the problem.
    """
    if isinstance(image, Image.Image):
        image = _pil_to_numpy(image)
        input_data_format = "channels_last"
        if image.dtype == np.float32:  # mode "F", already brought to [0, 1] by `stored_float_to_unit`
            do_rescale = False
    if isinstance(image, torch.Tensor):
        tensor_input = True
        image = image.detach().cpu()
        image = image.float().numpy() if image.dtype == torch.bfloat16 else image.numpy()
    else:
        tensor_input = False
        image = np.asarray(image)
    if image.size == 0:
        raise ValueError(f"empty image (shape {image.shape})")
    if image.ndim == 2:
        image = image[None]
    elif image.ndim == 3:
        image = _to_channels_first(image, input_data_format, tensor_input)
    else:
        raise ValueError(f"an image must have 2 or 3 dimensions, got shape {image.shape}")
    if image.shape[0] not in (1, 3, 4):
        raise ValueError(f"an image must have 1, 3 or 4 channels, got {image.shape[0]} (shape {image.shape})")

    if np.issubdtype(image.dtype, np.integer):
        maximum = _integer_range(image)
        image = image.astype(np.float32) / maximum if do_rescale else image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.floating):
        if not do_rescale:
            image = stored_float_to_unit(image, rescale_factor=1.0)
        elif rescale_factor is None or rescale_factor == 1 / 255:
            image = stored_float_to_unit(image)
        else:
            image = stored_float_to_unit(image, rescale_factor=rescale_factor)
    else:
        raise ValueError(f"unsupported image dtype {image.dtype}")
    return image


def stored_float_to_unit(pixels: np.ndarray, rescale_factor: float | None = None) -> np.ndarray:
    """Float pixels (an image file, a PIL image of mode "F", a float array or tensor) -> float32 in [0, 1].

    Float images carry no white level: values within [0, 1] are taken as they are (the convention of float TIFF,
    PFM and EXR files), values within [0, 255] as 8-bit levels; anything else (negative values, values above 255,
    NaN or infinity) raises ValueError naming the range, rather than guessing. With `rescale_factor` (1: already in
    [0, 1]) the values are multiplied by it instead, and must then lie in [0, 1].
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if rescale_factor is None:
        white = float_white_level(pixels)
        return pixels if white == 1 else pixels / np.float32(white)
    if not np.isfinite(pixels).all():
        raise ValueError("image contains NaN or infinite values")
    low, high = float(pixels.min(initial=np.inf)), float(pixels.max(initial=-np.inf))
    if low * rescale_factor < 0 or high * rescale_factor > 1:
        which = "with do_rescale=False" if rescale_factor == 1 else f"times the rescale factor {rescale_factor:g}"
        raise ValueError(f"float image values {which} must lie in [0, 1], got [{low:g}, {high:g}]")
    return pixels if rescale_factor == 1 else pixels * np.float32(rescale_factor)


def float_white_level(pixels) -> float:
    """The white of float pixels by the rule of `stored_float_to_unit`: 1.0 for values within [0, 1], 255.0 for
    values within [0, 255]; ValueError naming the range for anything else (and for NaN or infinity)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise ValueError("image contains NaN or infinite values")
    low, high = float(pixels.min(initial=np.inf)), float(pixels.max(initial=-np.inf))
    if low < 0 or high > 255:
        raise ValueError(f"float image values must lie in [0, 1] or in [0, 255], got [{low:g}, {high:g}]")
    return 1.0 if high <= 1 else 255.0


def _integer_range(image: np.ndarray) -> int:
    """The white level of integer image data: 255 for 8-bit, 65535 for 16-bit (wider types by their values)."""
    if image.dtype == np.uint8:
        return 255
    if image.dtype == np.uint16:
        return 65535
    low, high = int(image.min()), int(image.max())
    if low < 0 or high > 65535:
        raise ValueError(f"integer image values must lie in [0, 65535], got [{low}, {high}]")
    return 255 if high <= 255 else 65535


def _pil_to_numpy(image: Image.Image) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"empty image ({image.width}x{image.height})")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.uint16)
    if image.mode == "I":
        # 16-bit PNGs often open as 32-bit "I"; their values still fit 16 bits
        array = np.asarray(image)
        if array.min() < 0 or array.max() > 65535:
            raise ValueError(f"32-bit integer image values must lie in [0, 65535], got [{array.min()}, {array.max()}]")
        return array.astype(np.uint16)
    if image.mode == "F":
        return stored_float_to_unit(np.asarray(image, dtype=np.float32))
    if image.mode in ("L", "RGB", "RGBA"):
        return np.asarray(image)
    if image.mode == "LA":
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB"))


def _to_channels_first(image: np.ndarray, input_data_format: str | None, tensor_input: bool) -> np.ndarray:
    if input_data_format in ("channels_first", "channels_last"):
        return image if input_data_format == "channels_first" else image.transpose(2, 0, 1)
    if input_data_format is not None:
        raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', got {input_data_format!r}")
    first, last = image.shape[0] in (1, 3, 4), image.shape[-1] in (1, 3, 4)
    if first and last:
        # ambiguous (e.g. 3x3x3): follow each library's convention
        return image if tensor_input else image.transpose(2, 0, 1)
    if last:
        return image.transpose(2, 0, 1)
    if first:
        return image
    raise ValueError(
        f"cannot find the channel axis of an image of shape {image.shape}: images need 1, 3 or 4 channels "
        "(pass input_data_format for unusual layouts)"
    )


def convert_channels(image: np.ndarray, num_channels: int) -> np.ndarray:
    """(C, H, W) -> (num_channels, H, W): alpha is dropped, gray is repeated to RGB, RGB becomes BT.601 luma."""
    if image.shape[0] == 4:
        image = image[:3]
    if image.shape[0] == num_channels:
        return image
    if num_channels == 3:
        return np.repeat(image, 3, axis=0)
    weights = np.asarray(_GRAY_WEIGHTS, dtype=np.float32).reshape(3, 1, 1)
    return (image * weights).sum(axis=0, keepdims=True)


class RamitImageProcessor(BaseImageProcessor):
    r"""
    Prepares images for RAMiT with the paper's test protocol, and turns model outputs back into images.

    Args:
        do_rescale (`bool`, defaults to `True`):
            Scale integer images to [0, 1] by their white level (255 for 8-bit, 65535 for 16-bit), and float images
            by `rescale_factor`. Pass `False` for float input already in [0, 1].
        rescale_factor (`float`, defaults to 1/255):
            The factor for float images when `do_rescale`.
        do_pad (`bool`, defaults to `True`):
            Pad bottom/right to a multiple of `size_divisor` in numpy's 'symmetric' mode (the paper's protocol; the
            model would otherwise zero-pad).
        size_divisor (`int`, defaults to 32):
            The multiple for padding: `window_size * 2 ** (stages - 2)` of the model.
        num_channels (`int`, defaults to 3):
            Channels the model takes: gray input is repeated to RGB for 3, RGB is converted to BT.601 luma for 1;
            an alpha channel is dropped.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_pad: bool = True,
        size_divisor: int = 32,
        num_channels: int = 3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_pad = do_pad
        self.size_divisor = size_divisor
        self.num_channels = num_channels

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(
        self,
        images,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_pad: bool | None = None,
        size_divisor: int | None = None,
        return_tensors: str | None = None,
        input_data_format: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Images -> `BatchFeature` with `pixel_values` (B, C, H', W') float32 and `original_sizes` [(H, W), ...].

        `images`: a PIL image, a numpy array or torch tensor (HW, HWC or CHW; a 4-D array or tensor is a batch), or
        a list of these. Images of different sizes can only be batched without `return_tensors` (a list of
        tensors comes back), because padding them to one size would change what the model sees.
        """
        if kwargs:
            raise TypeError(f"RamitImageProcessor.preprocess got unexpected arguments: {', '.join(kwargs)}")
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        do_pad = self.do_pad if do_pad is None else do_pad
        size_divisor = self.size_divisor if size_divisor is None else size_divisor
        if return_tensors not in (None, "pt"):
            raise ValueError(
                f"RamitImageProcessor returns torch tensors only (return_tensors='pt'), got {return_tensors!r}"
            )

        tensors, sizes = [], []
        for index, image in enumerate(_as_image_list(images)):
            try:
                array = image_to_array(image, input_data_format, do_rescale, rescale_factor)
            except ValueError as error:
                raise ValueError(f"image {index}: {error}") from None
            tensor = torch.from_numpy(np.ascontiguousarray(convert_channels(array, self.num_channels)))
            sizes.append(tuple(tensor.shape[-2:]))
            tensors.append(symmetric_pad(tensor, size_divisor) if do_pad else tensor)
        if not tensors:
            raise ValueError("no images given")

        if return_tensors == "pt" or len({t.shape for t in tensors}) == 1:
            if len({t.shape for t in tensors}) != 1:
                raise ValueError(
                    f"images of different sizes cannot form one batch ({sorted(set(sizes))}); process them one by one"
                )
            pixel_values = torch.stack(tensors)
        else:
            pixel_values = tensors
        return BatchFeature(data={"pixel_values": pixel_values, "original_sizes": sizes})

    def postprocess(self, reconstruction, original_sizes, output_type: str = "pil", bit_depth: int = 8):
        """Model output -> images: crop the padding (original size x upscale), clamp to [0, 1] and quantise.

        Args:
            reconstruction: (B, C, H, W) tensor (or a model output holding `reconstruction`) for padded inputs.
            original_sizes: the `original_sizes` that `preprocess` returned.
            output_type: `"pil"` (PIL images, mode L or RGB), `"np"` (HWC uint8/uint16 arrays) or `"pt"` (cropped
                and clamped float tensors in [0, 1], unquantised).
            bit_depth: 8 or 16 for `"pil"` / `"np"`; 16-bit images round to 65535 levels (PIL mode I;16 for gray).
        """
        if hasattr(reconstruction, "reconstruction"):
            reconstruction = reconstruction.reconstruction
        if isinstance(reconstruction, torch.Tensor) and reconstruction.ndim == 3:
            reconstruction = reconstruction[None]
        if len(reconstruction) != len(original_sizes):
            raise ValueError(f"{len(reconstruction)} outputs but {len(original_sizes)} original sizes")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
        results = []
        for output, (height, width) in zip(reconstruction, original_sizes, strict=True):
            scale = self._output_scale(output.shape[-2:], (height, width))
            image = output[:, : height * scale, : width * scale].detach().float().clamp(0, 1)
            if output_type == "pt":
                results.append(image)
                continue
            results.append(to_integer_image(image, bit_depth, as_pil=output_type == "pil"))
        return results

    def _output_scale(self, output_size, original_size) -> int:
        """The upscale that maps the (padded or unpadded) input size onto the output size."""
        padded = tuple(-(-size // self.size_divisor) * self.size_divisor for size in original_size)
        for base in (padded, tuple(original_size)):
            scale = output_size[0] // base[0]
            if scale >= 1 and tuple(output_size) == (base[0] * scale, base[1] * scale):
                return scale
        raise ValueError(f"an output of size {tuple(output_size)} does not fit an input of size {tuple(original_size)}")


def to_integer_image(image: torch.Tensor, bit_depth: int = 8, as_pil: bool = True):
    """(C, H, W) float in [0, 1] -> HWC (HW for gray) uint8/uint16 array, or a PIL image; rounds half to even."""
    maximum = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    array = (image.clamp(0, 1) * maximum).round().cpu().numpy().astype(dtype).transpose(1, 2, 0)
    if array.shape[-1] == 1:
        array = array[..., 0]
    if not as_pil:
        return array
    if bit_depth == 16 and array.ndim == 3:
        raise ValueError("PIL cannot hold 16-bit RGB images; use output_type='np' for 16-bit color output")
    return Image.fromarray(array)


def _as_image_list(images) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


__all__ = [
    "RamitImageProcessor",
    "convert_channels",
    "float_white_level",
    "image_to_array",
    "stored_float_to_unit",
    "symmetric_pad",
    "to_integer_image",
]
