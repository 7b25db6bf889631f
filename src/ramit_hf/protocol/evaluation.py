"""The evaluation loop: a model over a `TestSet` with the paper's protocol, giving an `EvaluationResult`."""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ..image_io import save_image
from ..inference import restore_tensor
from ..modeling_ramit import resolve_computation
from .metrics import psnr, ssim, to_uint8
from .results import EvaluationResult, ImageResult
from .samples import TestSet


def model_id_from_source(source) -> str:
    """A short id for reports: the file stem of a checkpoint (`RAMiT-1_X4`), a folder's name, or a Hub id."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        return path.stem
    if path.is_dir():
        return path.resolve().name
    return text


def _environment(model) -> dict:
    import transformers

    from .. import __version__

    parameter = next(model.parameters())
    return {
        "ramit_hf": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "device": str(parameter.device),
        "dtype": str(parameter.dtype).removeprefix("torch."),
        "computation": _computation(model, parameter.device),
    }


def _computation(model, device: torch.device) -> str | None:
    """The computation the model's restorations ran (inference on `device`); None for an ONNX graph."""
    requested = getattr(model.config, "computation", None)
    return None if requested is None else resolve_computation(requested, device, training=False)


def _check_fits(model, test_set: TestSet) -> None:
    config, protocol = model.config, test_set.protocol
    if config.upscale != protocol.scale:
        raise ValueError(
            f"the model upscales x{config.upscale} but the {protocol.task} protocol needs x{protocol.scale}"
        )
    if config.num_channels != protocol.num_channels:
        raise ValueError(
            f"the model takes {config.num_channels}-channel images but the {protocol.task} protocol "
            f"uses {protocol.num_channels}"
        )


def _safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


def _image_folder(save_images, overwrite: bool) -> Path | None:
    """The folder restored images are written to: new, or empty unless `overwrite`."""
    if save_images is None:
        return None
    output_dir = Path(save_images)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} is not empty; pass overwrite to write into it")
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def _model_info(model, model_id: str | None, model_source: str | None) -> dict:
    config = model.config
    model_info = {
        "id": model_id or model_id_from_source(model_source or getattr(config, "_name_or_path", "") or "model"),
        "source": model_source or getattr(config, "_name_or_path", None) or None,
        "variant": config.variant,
        "task": config.task,
        "scale": config.upscale,
        "num_channels": config.num_channels,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model_info


@torch.no_grad()
def evaluate_model(
    model,
    test_set: TestSet,
    *,
    model_id: str | None = None,
    model_source: str | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    save_images: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> EvaluationResult:
    """Runs `model` over `test_set` with the paper's protocol and measures every image.

    Each input goes through :func:`ramit_hf.inference.restore_tensor` (symmetric padding to 32, forward, crop;
    tiled when `tile_size` is given, which changes the numbers slightly); the output is rounded to 8 bits as
    :func:`ramit_hf.protocol.metrics.to_uint8` and compared with the ground truth by
    :func:`~ramit_hf.protocol.metrics.psnr` and :func:`~ramit_hf.protocol.metrics.ssim` under `test_set.protocol`. With
    `save_images`, each restored image is written as `<name>.png` to that folder (which must be empty or new unless
    `overwrite`). A tqdm bar on stderr shows progress unless `progress=False`.
    """
    _check_fits(model, test_set)
    protocol = test_set.protocol
    output_dir = _image_folder(save_images, overwrite)

    from tqdm.auto import tqdm

    model.eval()
    started = time.perf_counter()
    results: list[ImageResult] = []
    bar = tqdm(
        total=len(test_set),
        desc=f"{test_set.name} {protocol.task}",
        unit="image",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        for index in range(len(test_set)):
            sample = test_set[index]
            restored = restore_tensor(model, sample.pixel_values[None], tile_size, tile_overlap)[0]
            prediction = to_uint8(restored.permute(1, 2, 0).numpy())
            if prediction.shape != sample.target.shape:
                raise RuntimeError(
                    f"{sample.name}: the output {prediction.shape} does not match the ground truth "
                    f"{sample.target.shape}"
                )
            value_psnr = psnr(prediction, sample.target, protocol.crop_border, protocol.test_y_channel)
            value_ssim = ssim(prediction, sample.target, protocol.crop_border, protocol.test_y_channel)
            results.append(
                ImageResult(
                    name=sample.name,
                    psnr=value_psnr,
                    ssim=value_ssim,
                    input_size=list(sample.pixel_values.shape[-2:]),
                    output_size=list(prediction.shape[:2]),
                )
            )
            if output_dir is not None:
                save_image(prediction, output_dir / f"{_safe_file_name(sample.name)}.png", overwrite=True)
            bar.set_postfix_str(f"{sample.name}: {value_psnr:.2f} dB")
            bar.update()
    finally:
        bar.close()
    elapsed = time.perf_counter() - started

    protocol_info = {**protocol.to_dict(), "tile_size": tile_size, "tile_overlap": tile_overlap}
    return EvaluationResult(
        model=_model_info(model, model_id, model_source),
        dataset=test_set.describe(),
        protocol=protocol_info,
        images=results,
        environment=_environment(model),
        date=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        elapsed_s=elapsed,
    )
