"""The "image-restoration" pipeline: images in (PIL, paths, URLs, arrays), restored images out.

`pipeline("image-restoration", model=...)` builds it once `ramit_hf` is imported. `pipe.save_pretrained(folder)` writes
this file (and the files it imports) into the folder and `custom_pipelines` into its config, so
`pipeline("image-restoration", model=folder, trust_remote_code=True)` works where `ramit_hf` is not installed.
Hence only single-dot relative imports of files that ship with it (transformers copies them recursively) and no
`ramit_hf` imports.
"""

from __future__ import annotations

import os
import types
from dataclasses import replace

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline
from transformers.utils import logging

from .image_io import describe, is_encoded_image, load_image
from .image_metadata import ImageMetadata
from .image_processing_ramit import (
    RamitImageProcessor,
    convert_channels,
    float_white_level,
    image_to_array,
    stored_float_to_unit,
    to_integer_image,
)
from .inference import choose_compute, restore_tensor
from .pixel_budget import check_max_pixels, max_pixels_for
from .tiling import resolve_tile_size

logger = logging.get_logger(__name__)

_MODE_OF_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}


class ImageRestorationPipeline(Pipeline):
    r"""
    Restores images with a RAMiT model (super-resolution, denoising, low-light enhancement, deraining): the paper's
    protocol (symmetric padding, forward, crop) through `ramit_hf.inference.restore_tensor`, optionally in tiles.

    Inputs: a PIL image, a path, an http(s) URL, the bytes of an image file (bytes, bytearray, BytesIO, an open binary
    file), a numpy array or torch tensor (HW, HWC or CHW; uint8, uint16 or float), or a list of these (a 4-D array is
    a batch). Float images (arrays, tensors, float TIFFs, PIL mode "F")
    carry no white level: one rule for all, values within [0, 1] are taken as they are, values within [0, 255] as
    8-bit levels, others are an error naming the range (`do_rescale=False`: in [0, 1] already). Paths, URLs and PIL
    images are turned upright by their EXIF orientation; 16-bit PNG, TIFF and PNM files keep all 16 bits.

    Output: per input, a PIL image (or an HWC array with `output_type="np"`) in the input's mode. A PIL image keeps
    what the input file said about itself in `image.info` (ICC profile, EXIF with the orientation reset and the pixel
    sizes updated, DPI scaled with the image, PNG colour and text chunks), which `ramit_hf.image_io.save_image` writes
    (Pillow's own `save` takes only some of it from `info`). Gray input to a color model is restored as RGB and
    returned as L (BT.601 luma); color input to a gray model is restored as its luma and returned with that luma in
    every channel. An alpha channel (RGBA, LA) is kept; for super-resolution it
    is resized with PIL's bicubic filter (Keys, a = -0.5) on float32 values.

    Call arguments (also accepted when building the pipeline):
        tile_size (`int` or `"auto"`, defaults to `"auto"`): restore in tiles of this many input pixels; `"auto"`
            tiles images above 512 x 512 pixels in equal tiles of at most 512 pixels (see `ramit_hf.tiling`),
            `0` never tiles.
        tile_overlap (`int`, *optional*): pixels shared by neighbouring tiles (default 32).
        batch_size (`int`, defaults to 1): consecutive inputs of the same size are restored together.
        output_type (`str`, defaults to `"pil"`): `"pil"` or `"np"` (uint8/uint16 HWC array, HW for gray).
        bit_depth (`int` or `"auto"`, defaults to 8): 8 or 16 bits per channel; `"auto"` follows the input (16 for
            16-bit images; float32 on the input's scale, [0, 1] or [0, 255], for float images and float TIFFs). PIL
            holds 16 bits and float only for gray images (modes I;16 and F): use `output_type="np"` otherwise.
        do_rescale (`bool`, *optional*): the image processor's `do_rescale`, for float arrays already in [0, 1].
        with_metadata (`bool`, defaults to False): return `(image, metadata)` pairs, `metadata` an
            `image_metadata.ImageMetadata` for the restored image (what `save_image(..., metadata=)` writes), for
            arrays.
        timeout (`float`, defaults to 10): seconds to wait for a URL.

    `device` and `dtype` (`torch.float32`, `torch.bfloat16`; `torch.float16` for GPUs) are the usual pipeline
    arguments. `precision="auto"` instead picks the fastest precision within the accuracy bounds for the device
    (`ramit_hf.inference.choose_compute`: bfloat16 on CPUs with native bfloat16, else float32); `pipe.compute`
    says which, and which computation the model runs there (`RamitConfig.computation`). Images and outputs stay
    on the CPU; only the model's input (or one batch of tiles) is moved to the device, so a large image never has to
    fit on the accelerator.
    """

    _load_processor = False
    _load_image_processor = None
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def __init__(self, model, image_processor=None, precision: str | None = None, **kwargs):
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if getattr(model.config, "model_type", None) != "ramit":
            name = getattr(model, "name_or_path", "") or type(model).__name__
            raise ValueError(
                f"the image-restoration pipeline needs a RAMiT model, but {name} is a "
                f"{getattr(model.config, 'model_type', None)!r} model"
            )
        super().__init__(model=model, image_processor=image_processor, **kwargs)
        if self.image_processor is None:
            config = self.model.config
            self.image_processor = RamitImageProcessor(
                num_channels=config.num_channels, size_divisor=config.pad_multiple
            )
        if dtype not in (None, "auto"):
            # a model object passed in keeps its dtype otherwise (pipeline() applies dtype only when it loads)
            dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
            if self.model.dtype != dtype:
                self.model.to(dtype)
        # precision="auto" (or a dtype name): the precision `inference.choose_compute` picks for this device, and the
        # computation the model's config runs there
        self.compute = None
        if precision is not None:
            self.compute = choose_compute(self.device, precision, self.model.config.computation)
            self.compute.apply(self.model)  # type: ignore[arg-type]
        self.model.eval()

    def _sanitize_parameters(
        self,
        tile_size=None,
        tile_overlap=None,
        output_type=None,
        bit_depth=None,
        with_metadata=None,
        do_rescale=None,
        input_data_format=None,
        timeout=None,
        max_pixels=None,
        **unknown,
    ):
        if unknown:
            raise TypeError(f"image-restoration pipeline got unexpected arguments: {', '.join(sorted(unknown))}")
        preprocess, forward, postprocess = {}, {}, {}
        for params, key, value in (
            (preprocess, "do_rescale", do_rescale),
            (preprocess, "input_data_format", input_data_format),
            (preprocess, "timeout", timeout),
            (preprocess, "max_pixels", max_pixels),
            (forward, "tile_size", tile_size),
            (forward, "tile_overlap", tile_overlap),
            (postprocess, "output_type", output_type),
            (postprocess, "bit_depth", bit_depth),
            (postprocess, "with_metadata", with_metadata),
        ):
            if value is not None:
                params[key] = value
        if output_type is not None and output_type not in ("pil", "np"):
            raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}")
        if bit_depth is not None and bit_depth not in (8, 16, "auto"):
            raise ValueError(f"bit_depth must be 8, 16 or 'auto', got {bit_depth!r}")
        if tile_size is not None:
            resolve_tile_size(tile_size, 1, 1)  # validates
        if max_pixels is not None:
            check_max_pixels(max_pixels)
        return preprocess, forward, postprocess

    def __call__(self, images, **kwargs):
        """Restore one image (returns one output) or a list of them (returns a list); other iterables stream."""
        if _is_single(images):
            if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
                return [output for _, output in self.iter_outputs(list(images), **kwargs)]
            return next(self.iter_outputs([images], _single=True, **kwargs))[1]
        if isinstance(images, (list, tuple)):
            return [output for _, output in self.iter_outputs(list(images), **kwargs)]
        return (output for _, output in self.iter_outputs(images, **kwargs))

    def iter_outputs(self, images, batch_size=None, return_errors=False, num_workers=None, _single=False, **kwargs):
        """Restore an iterable of inputs lazily, yielding `(index, output)` in input order.

        Consecutive inputs of the same size are restored `batch_size` at a time. With `return_errors`, an input that
        fails yields `(index, exception)` and the others go on; otherwise the first failure raises, its message
        naming the input. (`num_workers` is accepted for compatibility and unused: inputs are read in this process.)
        """
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        forward_params = {**self._forward_params, **forward_params}
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        batch_size = batch_size or self._batch_size or 1
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

        pending: list[tuple[int, dict]] = []
        for index, image in enumerate(images):
            try:
                model_inputs = self.preprocess(image, **preprocess_params)
            except Exception as error:
                error = _named(error, None if _single else index)
                if not return_errors:
                    raise error from None
                yield from self._flush(pending, forward_params, postprocess_params, return_errors)
                pending = []
                yield index, error
                continue
            if pending and (
                len(pending) == batch_size or pending[0][1]["pixel_values"].shape != model_inputs["pixel_values"].shape
            ):
                yield from self._flush(pending, forward_params, postprocess_params, return_errors)
                pending = []
            pending.append((index, model_inputs))
        yield from self._flush(pending, forward_params, postprocess_params, return_errors)

    def _flush(self, pending, forward_params, postprocess_params, return_errors):
        if not pending:
            return
        indices = [index for index, _ in pending]
        try:
            batch = {"pixel_values": torch.cat([inputs["pixel_values"] for _, inputs in pending])}
            restored = self.forward(batch, **forward_params)["reconstruction"]
        except Exception as error:
            if not return_errors:
                raise
            for index, (_, inputs) in zip(indices, pending, strict=True):
                yield index, _named(error, index, inputs["source"])
            return
        for row, (index, inputs) in enumerate(pending):
            outputs = {"reconstruction": restored[row : row + 1], **inputs}
            try:
                yield index, self.postprocess(outputs, **postprocess_params)
            except Exception as error:
                if not return_errors:
                    raise _named(error, None, inputs["source"]) from None
                yield index, _named(error, index, inputs["source"])

    def preprocess(self, image, do_rescale=None, input_data_format=None, timeout=10.0, max_pixels=None):
        """One input -> {"pixel_values": (1, C, H, W) float32 in [0, 1] (unpadded), and what postprocess needs}.

        `max_pixels` bounds width x height (default: what this machine can hold with the restored output,
        `pixel_budget.max_pixels_for`; 0: no limit), checked before a file is decoded.
        """
        processor = self.image_processor
        if max_pixels is None:
            max_pixels = max_pixels_for(self.model.config.upscale)
        max_pixels = check_max_pixels(max_pixels)
        do_rescale = processor.do_rescale if do_rescale is None else do_rescale
        if isinstance(image, (str, os.PathLike, Image.Image)) or is_encoded_image(image):
            decoded = load_image(image, timeout=timeout, max_pixels=max_pixels)
            source, pixels, mode, bit_depth = decoded.source, decoded.pixels, decoded.mode, decoded.bit_depth
            metadata = decoded.metadata
            layout = "channels_last" if pixels.ndim == 3 else None
            alpha, white = None, 1.0
            try:
                stored_float = pixels.dtype.kind == "f"
                if stored_float:
                    white = float_white_level(pixels)
                    pixels = stored_float_to_unit(pixels)
                if mode in ("LA", "RGBA"):
                    pixels, alpha = pixels[..., :-1], pixels[..., -1]
                    alpha = image_to_array(alpha, None, not stored_float, processor.rescale_factor)
                color = image_to_array(pixels, layout, not stored_float, processor.rescale_factor)
            except ValueError as error:
                raise ValueError(f"{source}: {error}") from None
        elif isinstance(image, (np.ndarray, torch.Tensor)):
            source, metadata = describe(image), ImageMetadata()
            try:
                array = image_to_array(image, input_data_format, do_rescale, processor.rescale_factor)
            except ValueError as error:
                raise ValueError(f"{source}: {error}") from None
            bit_depth, white = 16 if str(image.dtype) in ("uint16", "torch.uint16") else 8, 1.0
            if image.dtype.is_floating_point if isinstance(image, torch.Tensor) else image.dtype.kind == "f":
                bit_depth = 32  # float out on the input's scale: [0, 1], or [0, 255] under the rule of float files
                if do_rescale and processor.rescale_factor == 1 / 255:
                    white = float_white_level(
                        image.detach().float().cpu() if isinstance(image, torch.Tensor) else image
                    )
                elif do_rescale:
                    white = 1 / processor.rescale_factor
            height, width = array.shape[-2:]
            if max_pixels and height * width > max_pixels:
                raise ValueError(
                    f"{source}: {width}x{height} = {width * height:,} pixels is more than the pixel budget of "
                    f"{max_pixels:,}; pass max_pixels (0 for no limit) if there is memory for it"
                )
            mode = _MODE_OF_CHANNELS[array.shape[0]]
            color, alpha = (array[:3], array[3:]) if mode == "RGBA" else (array, None)
        else:
            raise TypeError(
                f"cannot restore a {type(image).__name__}: pass a PIL image, a path, an http(s) URL, the bytes of an "
                "image file (bytes, BytesIO), a numpy array or a torch tensor"
            )
        if mode in ("RGB", "RGBA") and self.model.config.num_channels == 1:
            logger.warning_once("a gray model restores the luma of color images; their color is not kept")
        batch = processor.preprocess(
            color, do_rescale=False, do_pad=False, input_data_format="channels_first", return_tensors="pt"
        )
        return {
            "pixel_values": batch["pixel_values"],
            "source": source,
            "mode": mode,
            "alpha": alpha,
            "input_bit_depth": bit_depth,
            "metadata": replace(metadata, float_white=white),
        }

    def forward(self, model_inputs, **forward_params):
        # Unlike the base class, inputs are not moved to the device here: `restore_tensor` moves the image (or each
        # batch of tiles) to the model's device and brings the result back, so large images stay in CPU memory.
        with self.device_placement():
            return self._forward(model_inputs, **forward_params)

    def _forward(self, model_inputs, tile_size="auto", tile_overlap=None):
        pixel_values = model_inputs["pixel_values"]
        tile = resolve_tile_size(tile_size, *pixel_values.shape[-2:])
        restored = restore_tensor(self.model, pixel_values, tile_size=tile, tile_overlap=tile_overlap if tile else None)
        return {"reconstruction": restored}

    def postprocess(self, model_outputs, output_type="pil", bit_depth=8, with_metadata=False):
        restored = model_outputs["reconstruction"]
        height, width = model_outputs["pixel_values"].shape[-2:]
        image = self.image_processor.postprocess(restored, [(height, width)], output_type="pt")[0].cpu()
        mode = model_outputs["mode"]
        channels = 1 if mode in ("L", "LA") else 3
        if image.shape[0] != channels:
            image = torch.from_numpy(convert_channels(image.numpy(), channels))
        if model_outputs["alpha"] is not None:
            alpha = _resize_alpha(model_outputs["alpha"], image.shape[-2:])
            image = torch.cat([image, alpha])
        bits = model_outputs["input_bit_depth"] if bit_depth == "auto" else bit_depth
        if bits == 32:  # float in, float out, on the input's scale ([0, 1], or [0, 255] for 8-bit levels)
            array = (image.clamp(0, 1) * model_outputs["metadata"].float_white).numpy().transpose(1, 2, 0)
            array = np.ascontiguousarray(array[..., 0] if array.shape[-1] == 1 else array)
        else:
            array = to_integer_image(image, bits, as_pil=False)
        metadata = model_outputs["metadata"].for_output(array.shape[1], array.shape[0], array.shape[1] / width)
        if output_type == "np":
            return (array, metadata) if with_metadata else array
        if bits > 8 and array.ndim == 3:
            kind = "float" if bits == 32 else "16-bit"
            raise ValueError(
                f"PIL cannot hold {kind} {mode} images; use output_type='np' (or bit_depth=8) for this input"
            )
        result = Image.fromarray(array)
        result.info.update(metadata.pil_info())
        return (result, metadata) if with_metadata else result


def _resize_alpha(alpha: np.ndarray, size) -> torch.Tensor:
    """(1, h, w) alpha in [0, 1] -> (1, H, W), resized with PIL's bicubic filter on float32 values."""
    plane = alpha[0].astype(np.float32)
    height, width = int(size[0]), int(size[1])
    if plane.shape != (height, width):
        plane = np.asarray(Image.fromarray(plane).resize((width, height), Image.Resampling.BICUBIC))
    return torch.from_numpy(np.clip(plane, 0, 1).copy())[None]


def _is_single(images) -> bool:
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor)) or is_encoded_image(images):
        return True
    return not isinstance(images, (list, tuple, types.GeneratorType)) and not hasattr(images, "__iter__")


def _named(error: Exception, index: int | None, source: str | None = None) -> Exception:
    """The same kind of exception, its message naming the input (by list index and, where known, by source)."""
    message = str(error)
    if source is not None and not message.startswith(source):
        message = f"{source}: {message}"
    if index is not None:
        message = f"input {index}: {message}"
    try:
        named = type(error)(message)
    except Exception:
        named = RuntimeError(message)
    return named


__all__ = ["ImageRestorationPipeline"]
