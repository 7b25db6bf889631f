"""The paper's test-time protocol for one batch, the step every restoration path shares: symmetric padding to the
model's multiple, forward, crop. Whole images (`inference.restore_tensor`) and each tile (`tiling.restore_tiled`) go
through it.
"""

from __future__ import annotations

import torch

from .image_processing_ramit import symmetric_pad


def restore_padded(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The protocol itself, on the model's device and dtype: symmetric padding to the model's multiple, forward, crop
    -> (B, C, H * s, W * s). Every way of running RAMiT on a whole image goes through it (`restore_whole`, spandrel's
    call, the exported ONNX graph), so every app gets the pixels `ramit restore` writes."""
    height, width = pixel_values.shape[-2:]
    out = model(pixel_values=symmetric_pad(pixel_values, model.config.pad_multiple)).reconstruction
    scale = model.config.upscale
    return out[..., : height * scale, : width * scale]


@torch.no_grad()
def restore_whole(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] -> (B, C, H * s, W * s) restored, unclamped, float32 on the input's device."""
    device, dtype = model_placement(model)
    out = restore_padded(model, pixel_values.to(device, dtype))
    if not bool(torch.isfinite(out).all()):
        # broken weights (or an input of absurd values) give NaN or infinity, which would be written as black
        bad = int((~torch.isfinite(out)).sum())
        raise NonFiniteOutputError(
            f"the model's output has {bad} non-finite values (NaN or infinity) of {out.numel()}: its weights are "
            "broken or do not belong to this configuration; nothing was written"
        )
    return out.to(pixel_values.device, torch.float32)


def model_placement(model) -> tuple[torch.device, torch.dtype]:
    """The device and dtype a model takes its inputs in: its parameters', or what a stand-in such as
    `OnnxRamitModel` states."""
    if isinstance(model, torch.nn.Module):
        parameter = next(model.parameters())
        return parameter.device, parameter.dtype
    return model.device, model.dtype


class NonFiniteOutputError(ValueError):
    """The model produced NaN or infinity: a result that must never be written as an image."""


__all__ = ["NonFiniteOutputError", "model_placement", "restore_padded", "restore_whole"]
