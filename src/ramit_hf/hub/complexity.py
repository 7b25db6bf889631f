"""Parameters and FLOPs of a model, measured with `torch.utils.flop_counter` at the size papers report."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ..configuration_ramit import RamitConfig

# Sizes the complexity is measured at: the convention of lightweight super-resolution papers (an output of
# 1280 x 720, so the LR input is 1280 x 720 divided by the scale, rounded up) and 1280 x 720 for restoration.
COMPLEXITY_OUTPUT_SIZE = (720, 1280)  # (height, width)


@dataclass(frozen=True)
class Complexity:
    """Parameters and FLOPs of one forward pass.

    `flops` counts what `torch.utils.flop_counter.FlopCounterMode` counts: matrix multiplications, convolutions and
    attention, a multiply-add as 2 FLOPs (so `macs = flops / 2`); element-wise operations (norms, activations,
    softmax) are not counted; attention is counted as the matmuls of the faithful path. Sizes are (height, width):
    the input, the size the model pads it to (a multiple of 32; the padded size is what is computed), and the output.
    """

    parameters: int
    flops: int
    input_size: tuple[int, int]
    padded_size: tuple[int, int]
    output_size: tuple[int, int]

    @property
    def macs(self) -> int:
        return self.flops // 2


def complexity_input_size(config: RamitConfig) -> tuple[int, int]:
    """The input (height, width) complexity is measured at: one whose output is `COMPLEXITY_OUTPUT_SIZE`."""
    height, width = COMPLEXITY_OUTPUT_SIZE
    return math.ceil(height / config.upscale), math.ceil(width / config.upscale)


def measure_complexity(config: RamitConfig, input_size: tuple[int, int] | None = None) -> Complexity:
    """Count the parameters and FLOPs of a model with this config on one `input_size` image (default:
    :func:`complexity_input_size`). The model is built on the meta device: shapes only, no memory, no weights."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..modeling_ramit import RamitForImageRestoration

    height, width = input_size or complexity_input_size(config)
    multiple = config.pad_multiple
    # The faithful path computes attention with explicit matmuls, which the counter sees on every device (the fused
    # path's SDPA kernels are not all counted, e.g. not the CPU flash kernel); both compute the same function.
    config = copy.deepcopy(config)
    config.computation = "faithful"
    with torch.device("meta"):
        model = RamitForImageRestoration(config).eval()
        pixel_values = torch.empty(1, config.num_channels, height, width)
    parameters = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = model(pixel_values=pixel_values).reconstruction
    return Complexity(
        parameters=parameters,
        flops=int(counter.get_total_flops()),
        input_size=(height, width),
        padded_size=(-(-height // multiple) * multiple, -(-width // multiple) * multiple),
        output_size=tuple(output.shape[-2:]),
    )


# ----------------------------------------------------------------------------------------------
