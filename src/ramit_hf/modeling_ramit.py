"""RAMiT: Reciprocal Attention Mixing Transformer (Choi et al., CVPR 2024 Workshops, arXiv 2305.11474).

Modules are named after the paper: D-RAMiT blocks run windowed spatial self-attention (SP-SA) and channel
self-attention (CH-SA) side by side, mix them with MobiVari, and an H-RAMi layer mixes the attention outputs of
the four hierarchical stages.

Three computations of the same function, named by `config.computation` and chosen once per forward call by
`resolve_computation` (the one place that decides; `model.computation` says what the next call runs):

- "faithful", (B, C, H, W) tensors: the original code operation by operation, memory layouts included (the golden
  tests pin it to the original's outputs). "auto" never picks it: ask for it.
- "fused", (B, H, W, C) tensors: 1x1 convolutions as matrix products, window attention through
  `scaled_dot_product_attention`, a fixed number of operations per forward whatever the image size. "auto" picks it
  for training, under autocast and on every device but the CPU.
- "banded", (B, H, W, C) tensors: each D-RAMiT block and MobiVari a few thousand pixels at a time (`banded_ramit`),
  so intermediates stay in a core's cache. Its operation count grows with the image, which a CPU does not pay for
  and an accelerator does (a launch per operation). "auto" picks it for CPU inference.

Each module takes the computation as an argument and dispatches once; no module keeps a computation of its own.
The whole network is this file and `banded_ramit`, which ship to the Hub as they are (`trust_remote_code`), the way
transformers keeps each model in its own `modeling_*.py`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, ImageSuperResolutionOutput

from .banded_ramit import (
    ShuffledConcat,
    SpaceToDepth,
    block_banded,
    mobivari_banded,
    pixel_shuffle_nhwc,
    space_to_depth_nhwc,
    workspace,
)
from .configuration_ramit import COMPUTATIONS, RamitConfig
from .safe_files import InvalidWeightsError, check_weight_files, check_weight_values, stamp_safetensors_digest

# The original clamps the learnt logit scale of cosine attention at log(1 / 0.01).
_MAX_LOGIT_SCALE = math.log(100.0)


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the relative position bias table for every pair of positions inside a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return relative[..., 0] * (2 * window_size - 1) + relative[..., 1]


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, L, C, H, W) -> (B * windows, L, window_size**2, C), windows in row-major order."""
    b, heads, c, h, w = x.shape
    x = x.view(b, heads, c, h // window_size, window_size, w // window_size, window_size)
    x = x.permute(0, 3, 5, 1, 4, 6, 2)
    return x.reshape(-1, heads, window_size * window_size, c)


def window_unpartition(x: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """(B * windows, L, window_size**2, C) -> (B, L * C, H, W), the inverse of `window_partition` with heads merged."""
    _, heads, _, c = x.shape
    nh, nw = height // window_size, width // window_size
    x = x.view(-1, nh, nw, heads, window_size, window_size, c)
    x = x.permute(0, 3, 6, 1, 4, 2, 5)
    return x.reshape(-1, heads * c, height, width)


def cosine_logit_scale(logit_scale: torch.Tensor) -> torch.Tensor:
    return torch.clamp(logit_scale, max=_MAX_LOGIT_SCALE).exp()


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop whole samples of a residual branch."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def conv_nhwc(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply a Conv2d to a (B, H, W, C) tensor; a dense 1x1 convolution is a plain matrix product."""
    if conv.kernel_size == (1, 1) and conv.groups == 1:
        return F.linear(x, conv.weight.flatten(1), conv.bias)
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def max_pool_nhwc(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)


def resolve_computation(requested: str, device: torch.device | str, training: bool) -> str:
    """The computation a forward call runs: `requested` (a `config.computation`) for inputs on `device`, with
    `training` true when gradients are recorded, the model is in training mode or autocast is on for the device.

    "auto" gives "banded" for CPU inference and "fused" otherwise. "banded" asked for where it cannot run is an error
    rather than a silent substitute: it computes inference only (in-place updates, no autograd, no autocast), and on an
    accelerator its thousands of small operations per image would cost more in launches than in arithmetic."""
    device_type = torch.device(device).type
    if requested == "auto":
        return "banded" if device_type == "cpu" and not training else "fused"
    if requested not in COMPUTATIONS:
        raise ValueError(f"unknown computation {requested!r}; choose one of {', '.join(('auto', *COMPUTATIONS))}")
    if requested == "banded" and (training or device_type != "cpu"):
        where = "training, autocast or gradients" if training else f"a {device_type} device"
        raise ValueError(
            f"the 'banded' computation is for CPU inference only, not {where}; use 'auto' (the default) or 'fused'"
        )
    return requested


def is_training_call(module: nn.Module, device: torch.device | str) -> bool:
    """Whether a call of `module` now records gradients, trains or runs under autocast: what `resolve_computation`
    asks as `training`."""
    device_type = torch.device(device).type
    autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
    return module.training or torch.is_grad_enabled() or autocast


def channels_last(computation: str) -> bool:
    """Whether a computation works on (B, H, W, C) tensors between the stem and the head (every one but faithful)."""
    return computation != "faithful"


def apply_conv(conv: nn.Conv2d, x: torch.Tensor, computation: str) -> torch.Tensor:
    return conv_nhwc(conv, x) if channels_last(computation) else conv(x)


def cat_channels(tensors: list[torch.Tensor], computation: str) -> torch.Tensor:
    return torch.cat(tensors, dim=-1 if channels_last(computation) else 1)


def pixel_shuffle(x: torch.Tensor, factor: int, computation: str) -> torch.Tensor:
    if channels_last(computation):
        return pixel_shuffle_nhwc(x, factor)
    return F.pixel_shuffle(x, factor) if factor > 1 else x


class RamitLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels at every pixel."""

    def forward(self, x: torch.Tensor, computation: str) -> torch.Tensor:  # type: ignore[override]
        if channels_last(computation):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class RamitSpatialSelfAttention(nn.Module):
    """SP-SA: cosine self-attention inside (optionally shifted) windows, with a relative position bias.

    With the reciprocal helper, values are scaled by the previous block's CH-SA output averaged over its heads.
    Shifted windows wrap around the border without a mask, as in the original. The banded computation attends
    inside `banded_ramit.block_banded` instead, from this module's weights.
    """

    def __init__(self, config: RamitConfig, head_dim: int, num_heads: int, shift: int):
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.window_size = config.window_size
        self.shift = shift
        self.logit_scale = nn.Parameter(torch.empty(num_heads, 1, 1))
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * self.window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        self.attn_drop = nn.Dropout(config.attention_dropout)
        self.proj = nn.Conv2d(head_dim * num_heads, head_dim * num_heads, 1)
        self.proj_drop = nn.Dropout(config.projection_dropout)

    def logit_scales(self) -> torch.Tensor:
        return cosine_logit_scale(self.logit_scale)

    def relative_position_bias(self) -> torch.Tensor:
        area = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(area, area, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)

    def forward(self, qkv: torch.Tensor, helper: torch.Tensor | None, computation: str) -> torch.Tensor:
        """qkv: (B, heads, 3 * head_dim, H, W) for faithful, (B, H, W, heads, 3, head_dim) for fused;
        helper: the previous block's CH-SA output averaged over its heads, (B, head_dim, H, W) or (B, H, W, head_dim),
        or None. Returns the projected output in the same layout."""
        if channels_last(computation):
            return self._fused(qkv, helper)
        return self._faithful(qkv, helper)

    def _faithful(self, qkv: torch.Tensor, helper: torch.Tensor | None) -> torch.Tensor:
        height, width = qkv.shape[-2:]
        if self.shift:
            qkv = torch.roll(qkv, shifts=(-self.shift, -self.shift), dims=(-2, -1))
        q, k, v = window_partition(qkv, self.window_size).chunk(3, dim=-1)
        if helper is not None:
            if self.shift:
                helper = torch.roll(helper, shifts=(-self.shift, -self.shift), dims=(-2, -1))
            v = v * window_partition(helper.unsqueeze(1), self.window_size)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * self.logit_scales() + self.relative_position_bias()
        x = self.attn_drop(F.softmax(attn, dim=-1)) @ v
        x = self.proj_drop(self.proj(window_unpartition(x, self.window_size, height, width)))
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(-2, -1))
        return x

    def _fused(self, qkv: torch.Tensor, helper: torch.Tensor | None) -> torch.Tensor:
        b, height, width, heads, _, head_dim = qkv.shape
        ws, shift = self.window_size, self.shift
        if shift:
            qkv = torch.roll(qkv, shifts=(-shift, -shift), dims=(1, 2))
        # one copy: (3, B * windows, heads, window area, head_dim), head_dim contiguous
        q, k, v = windows_nhwc(qkv, ws).permute(3, 0, 2, 1, 4).unbind(0)
        if helper is not None:
            if shift:
                helper = torch.roll(helper, shifts=(-shift, -shift), dims=(1, 2))
            v = v * windows_nhwc(helper, ws).unsqueeze(1)
        x = F.scaled_dot_product_attention(
            F.normalize(q, dim=-1) * self.logit_scales(),
            F.normalize(k, dim=-1),
            v,
            attn_mask=self.relative_position_bias().to(q.dtype),
            dropout_p=self.attn_drop.p if self.training else 0.0,
            scale=1.0,
        )
        nh, nw = height // ws, width // ws
        x = x.view(b, nh, nw, heads, ws, ws, head_dim).permute(0, 1, 4, 2, 5, 3, 6)
        x = self.proj_drop(conv_nhwc(self.proj, x.reshape(b, height, width, heads * head_dim)))
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x


def windows_nhwc(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, *rest) -> (B * windows, window_size**2, *rest), windows in row-major order."""
    b, height, width, *rest = x.shape
    x = x.view(b, height // window_size, window_size, width // window_size, window_size, *rest)
    x = x.permute(0, 1, 3, 2, 4, *range(5, x.ndim))
    return x.reshape(-1, window_size * window_size, *rest)


class RamitChannelSelfAttention(nn.Module):
    """CH-SA: cosine self-attention between the channels of each head over the whole image.

    With the reciprocal helper, values are scaled by the previous block's SP-SA output averaged over its channels.
    """

    def __init__(self, config: RamitConfig, head_dim: int, num_heads: int):
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.logit_scale = nn.Parameter(torch.empty(num_heads, 1, 1))
        self.attn_drop = nn.Dropout(config.attention_dropout)
        self.proj = nn.Conv2d(head_dim * num_heads, head_dim * num_heads, 1)
        self.proj_drop = nn.Dropout(config.projection_dropout)

    def logit_scales(self) -> torch.Tensor:
        return cosine_logit_scale(self.logit_scale)

    def forward(self, qkv: torch.Tensor, helper: torch.Tensor | None, computation: str) -> torch.Tensor:
        """qkv: (B, heads, 3 * head_dim, H, W) for faithful, (B, H, W, heads, 3, head_dim) for fused;
        helper: the previous block's SP-SA output averaged over its channels, (B, 1, H, W) or (B, H, W, 1), or None.
        Returns the projected output in the same layout."""
        nhwc = channels_last(computation)
        if nhwc:
            b, height, width, heads, _, head_dim = qkv.shape
            # (B, heads, head_dim, H * W) views of q, k, v: no copy
            q, k, v = qkv.reshape(b, height * width, heads, 3, head_dim).permute(3, 0, 2, 4, 1).unbind(0)
        else:
            b, heads, _, height, width = qkv.shape
            q, k, v = qkv.flatten(3).chunk(3, dim=2)
        if helper is not None:
            v = v * helper.reshape(b, 1, 1, height * width)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = self.attn_drop(F.softmax(attn * self.logit_scales(), dim=-1))
        if nhwc:
            x = (v.transpose(-2, -1) @ attn.transpose(-2, -1)).transpose(1, 2)
            return self.proj_drop(conv_nhwc(self.proj, x.reshape(b, height, width, heads * self.head_dim)))
        x = (attn @ v).reshape(b, heads * self.head_dim, height, width)
        return self.proj_drop(self.proj(x))


class RamitMobiVari(nn.Module):
    """MobiVari: the MobileNet-style convolution that mixes features throughout RAMiT.

    Version 1: depthwise 3x3 (its input added after the activation), then pointwise. Version 2: grouped pointwise
    expansion, depthwise 3x3 (its input added before the activation), then pointwise. Both add the input back when
    the width is unchanged.
    """

    def __init__(self, config: RamitConfig, dim: int, out_dim: int | None = None, expansion_factor=None, groups=None):
        super().__init__()
        self.version = config.mobivari_version
        self.out_dim = out_dim or dim
        self.residual = self.out_dim == dim
        self.act = _mobivari_activation(config.mobivari_act)
        if self.version == 1:
            self.dw_conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
            self.pw_conv = nn.Conv2d(dim, self.out_dim, 1)
        else:
            expansion_factor = expansion_factor or config.mobivari_expansion_factor
            groups = groups or config.mobivari_expand_groups
            expand_dim = int(dim * expansion_factor)
            expand_dim += groups - expand_dim % groups
            self.exp_conv = nn.Conv2d(dim, expand_dim, 1, groups=groups)
            self.dw_conv = nn.Conv2d(expand_dim, expand_dim, 3, 1, 1, groups=expand_dim)
            self.pw_conv = nn.Conv2d(expand_dim, self.out_dim, 1)

    def forward(self, x: torch.Tensor, computation: str) -> torch.Tensor:
        if computation == "banded":
            return mobivari_banded(self, x)
        if self.version == 1:
            out = self.act(
                apply_conv(self.pw_conv, self.act(apply_conv(self.dw_conv, x, computation)) + x, computation)
            )
        else:
            expanded = self.act(apply_conv(self.exp_conv, x, computation))
            out = apply_conv(
                self.pw_conv, self.act(apply_conv(self.dw_conv, expanded, computation) + expanded), computation
            )
        return out + x if self.residual else out


def _mobivari_activation(name: str) -> nn.Module:
    return nn.LeakyReLU() if name == "leaky_relu" else ACT2FN[name]


class RamitFeedForward(nn.Module):
    def __init__(self, config: RamitConfig):
        super().__init__()
        hidden = int(config.embed_dim * config.mlp_ratio)
        self.fc1 = nn.Conv2d(config.embed_dim, hidden, 1)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Conv2d(hidden, config.embed_dim, 1)

    def forward(self, x: torch.Tensor, computation: str) -> torch.Tensor:
        return apply_conv(self.fc2, self.act(apply_conv(self.fc1, x, computation)), computation)


class RamitDRAMiTBlock(GradientCheckpointingLayer):
    """D-RAMiT block: SP-SA and CH-SA on one shared qkv projection, mixed by MobiVari, then a feed-forward network.

    Both sub-layers are post-normalised: x + LN(MobiVari([SP-SA, CH-SA])) and then y + LN(FFN(y)).
    """

    def __init__(
        self,
        config: RamitConfig,
        num_heads: int,
        num_channel_heads: int,
        shift: int,
        drop_path_rate: float,
        ends_stage: bool,
    ):
        super().__init__()
        dim = config.embed_dim
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.num_spatial_heads = num_heads - num_channel_heads
        self.head_dim = head_dim
        # the reciprocal helper needs both kinds of heads
        self.gives_helpers = config.reciprocal_helper and 0 < num_channel_heads < num_heads
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=config.qkv_bias)
        self.spatial_attention = (
            RamitSpatialSelfAttention(config, head_dim, self.num_spatial_heads, shift)
            if self.num_spatial_heads
            else None
        )
        self.channel_attention = (
            RamitChannelSelfAttention(config, head_dim, num_channel_heads) if num_channel_heads else None
        )
        self.mobivari = RamitMobiVari(config, dim)
        self.norm1 = RamitLayerNorm(dim, eps=config.layer_norm_eps)
        self.ffn = RamitFeedForward(config)
        self.norm2 = RamitLayerNorm(dim, eps=config.layer_norm_eps)
        self.drop_path_rate = drop_path_rate
        self.ends_stage = ends_stage  # the banded computation gives only a stage's last block an output of its own

    def forward(self, x, spatial_helper, channel_helper, computation: str):
        """Returns (output, SP-SA helper, CH-SA helper, mixed attention before the norm) in every computation.

        The helpers are what the next block takes from this one (None where the stage has no reciprocal helper):
        the SP-SA output averaged over its channels, (B, 1, H, W) or (B, H, W, 1), and the CH-SA output averaged over
        its heads, (B, head_dim, H, W) or (B, H, W, head_dim)."""
        if computation == "banded":
            out, spatial, channel, mixed = block_banded(self, x, spatial_helper, channel_helper)
            return (out, spatial, channel, mixed) if self.gives_helpers else (out, None, None, mixed)
        split, nhwc = self.num_spatial_heads, channels_last(computation)
        if nhwc:
            b, h, w, _ = x.shape
            qkv = conv_nhwc(self.qkv, x).view(b, h, w, self.num_heads, 3, self.head_dim)
            spatial_qkv, channel_qkv, empty = qkv[:, :, :, :split], qkv[:, :, :, split:], x[..., :0]
        else:
            b, _, h, w = x.shape
            qkv = self.qkv(x).view(b, self.num_heads, 3 * self.head_dim, h, w)
            spatial_qkv, channel_qkv, empty = qkv[:, :split], qkv[:, split:], x[:, :0]
        spatial = empty
        if self.spatial_attention is not None:
            spatial = self.spatial_attention(spatial_qkv, channel_helper, computation)
        channel = empty
        if self.channel_attention is not None:
            channel = self.channel_attention(channel_qkv, spatial_helper, computation)
        mixed = self.mobivari(cat_channels([spatial, channel], computation), computation)
        # normalised branch first, as the original: on (B, C, H, W) input the sum then takes the LayerNorm output's
        # memory layout, and the original's float results depend on the convolution kernels that layout selects
        x = drop_path(self.norm1(mixed, computation), self.drop_path_rate, self.training) + x
        x = drop_path(self.norm2(self.ffn(x, computation), computation), self.drop_path_rate, self.training) + x
        if not self.gives_helpers:
            return x, None, None, mixed
        # shapes from x's own (b, h, w): an ONNX trace keeps them symbolic
        if nhwc:
            return x, spatial.mean(dim=-1, keepdim=True), channel.view(b, h, w, -1, self.head_dim).mean(3), mixed
        return x, spatial.mean(dim=1, keepdim=True), channel.view(b, -1, self.head_dim, h, w).mean(1), mixed


class RamitStage(nn.Module):
    """A stage of D-RAMiT blocks; odd blocks shift their windows by half a window."""

    def __init__(self, config: RamitConfig, stage: int):
        super().__init__()
        depth = config.depths[stage]
        self.blocks = nn.ModuleList(
            RamitDRAMiTBlock(
                config,
                config.num_heads[stage],
                config.num_channel_heads[stage],
                shift=0 if index % 2 == 0 else config.window_size // 2,
                drop_path_rate=config.drop_path_rate,
                ends_stage=index == depth - 1,
            )
            for index in range(depth)
        )

    def forward(self, x: torch.Tensor, computation: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the stage output and the last block's mixed attention (the input of H-RAMi)."""
        spatial = channel = None
        for block in self.blocks:
            x, spatial, channel, mixed = block(x, spatial, channel, computation)
        return x, mixed


class RamitDownsizing(nn.Module):
    """Halves the resolution: 2x2 neighbourhoods to channels (4C), LayerNorm, then MobiVari back to C."""

    def __init__(self, config: RamitConfig):
        super().__init__()
        dim = config.embed_dim
        self.norm = RamitLayerNorm(4 * dim, eps=config.layer_norm_eps)
        self.reduction = RamitMobiVari(config, 4 * dim, out_dim=dim)

    def forward(self, x: torch.Tensor, computation: str) -> torch.Tensor:
        if computation == "banded":
            return mobivari_banded(self.reduction, SpaceToDepth(x, self.norm))
        if channels_last(computation):
            x = space_to_depth_nhwc(x)
        else:
            x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]], dim=1)
        return self.reduction(self.norm(x, computation), computation)


class _Fusion(nn.Module):
    """Bottleneck and H-RAMi: MobiVari over the channel concatenation of features from several resolutions, each
    brought to full resolution by pixel shuffle."""

    mobivari: RamitMobiVari

    def mix(self, parts: list[tuple[torch.Tensor, int]], computation: str) -> torch.Tensor:
        """MobiVari of the concatenation of `parts`, (tensor, pixel-shuffle factor) pairs; banded, it reads the
        concatenation a band of rows at a time instead of materialising it."""
        if computation == "banded":
            return mobivari_banded(self.mobivari, ShuffledConcat(parts))
        shuffled = [pixel_shuffle(t, factor, computation) for t, factor in parts]
        return self.mobivari(cat_channels(shuffled, computation), computation)


class RamitBottleneck(_Fusion):
    """Fuses the outputs of stages 1-3 (each plus the max-pooled shallow features) at full resolution.

    Coarser stages are brought up by pixel shuffle, so they contribute C/4 and C/16 channels.
    """

    def __init__(self, config: RamitConfig):
        super().__init__()
        dim = config.embed_dim
        self.num_inputs = len(config.depths) - 1
        cat_dim = sum(dim // 4**i for i in range(self.num_inputs))
        self.mobivari = RamitMobiVari(config, cat_dim, dim, config.fusion_expansion_factor, config.fusion_expand_groups)
        self.norm = RamitLayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, shallow: torch.Tensor, stage_outputs: list[torch.Tensor], computation: str) -> torch.Tensor:
        parts = []
        pooled = shallow
        for level, stage_output in enumerate(stage_outputs):
            if level:
                pooled = max_pool_nhwc(pooled) if channels_last(computation) else F.max_pool2d(pooled, 2)
            parts.append((stage_output + F.leaky_relu(pooled), 2**level))
        return self.norm(self.mix(parts, computation), computation)


class RamitHRAMi(_Fusion):
    """H-RAMi: mixes the attention outputs of all four stages into one full-resolution modulation map."""

    def __init__(self, config: RamitConfig):
        super().__init__()
        dim = config.embed_dim
        in_dim = dim + dim // 4 + dim // 16 + dim
        self.mobivari = RamitMobiVari(config, in_dim, dim, config.fusion_expansion_factor, config.fusion_expand_groups)

    def forward(self, attention_maps: list[torch.Tensor], computation: str) -> torch.Tensor:
        *encoder_maps, last = attention_maps
        return self.mix([*((attn, 2**level) for level, attn in enumerate(encoder_maps)), (last, 1)], computation)


class RamitReconstruction(nn.Module):
    """MobiVari layers, a 3x3 conv to out_channels * upscale**2, pixel shuffle, and a final 3x3 conv."""

    def __init__(self, config: RamitConfig):
        super().__init__()
        dim, out_chans, upscale = config.embed_dim, config.num_channels, config.upscale
        self.mobivari = nn.ModuleList(RamitMobiVari(config, dim) for _ in range(config.num_reconstruction_mobivari))
        self.conv = nn.Conv2d(dim, out_chans * upscale**2, 3, 1, 1)
        self.upscale = upscale
        self.final_conv = nn.Conv2d(out_chans, out_chans, 3, 1, 1)

    def forward(self, x: torch.Tensor, computation: str) -> torch.Tensor:
        """Features (in the computation's layout) -> the image, always (B, C, H, W)."""
        for layer in self.mobivari:
            x = layer(x.to(next(layer.parameters()).dtype), computation)
        x = apply_conv(self.conv, x.to(self.conv.weight.dtype), computation)
        x = pixel_shuffle(x, self.upscale, computation)
        return self.final_conv(x.permute(0, 3, 1, 2) if channels_last(computation) else x)


class RamitPreTrainedModel(PreTrainedModel):
    config_class = RamitConfig
    base_model_prefix = "ramit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["RamitDRAMiTBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's own defaults, which the original relies on (transformers' generic init would redraw the convs),
        # and the non-persistent buffers, which from_pretrained leaves unfilled.
        if isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight.shape[1] * module.weight[0, 0].numel()
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, RamitSpatialSelfAttention):
            init.constant_(module.logit_scale, math.log(10.0))
            init.zeros_(module.relative_position_bias_table)
            init.copy_(module.relative_position_index, relative_position_index(module.window_size))
        elif isinstance(module, RamitChannelSelfAttention):
            init.constant_(module.logit_scale, math.log(10.0))
        elif isinstance(module, RamitModel):
            init.copy_(module.image_mean, _channel_stats(module.config.image_mean))
            init.copy_(module.image_std, _channel_stats(module.config.image_std))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict_weights: bool = True, **kwargs):
        """`PreTrainedModel.from_pretrained`, refusing weights that do not fit the configuration.

        A missing, unexpected or (with `ignore_mismatched_sizes=True`) reshaped key would otherwise leave layers
        freshly initialised and restore images wrongly without a word: it raises `RamitWeightsError` naming the keys.
        `strict_weights=False` loads anyway, e.g. to fine-tune a new head. Local weight files are checked first
        (`safe_files.check_weight_files`): a truncated file or a pickle holding code is a named error.
        """
        if isinstance(pretrained_model_name_or_path, (str, os.PathLike)) and os.path.isdir(
            pretrained_model_name_or_path
        ):
            check_weight_files(pretrained_model_name_or_path)  # damaged files and pickled code: named errors
        want_info = kwargs.pop("output_loading_info", False)
        loaded: Any = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        model, info = loaded
        try:
            check_weight_values(dict(model.named_parameters()), str(pretrained_model_name_or_path))
        except InvalidWeightsError as error:
            raise RamitWeightsError(str(error)) from None
        if strict_weights:
            problems = [
                f"{len(keys)} {kind} ({_listing(keys)})"
                for kind, keys in (
                    ("missing from the weights", info.get("missing_keys") or []),
                    ("not in the model", info.get("unexpected_keys") or []),
                    (
                        "of another shape",
                        [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys") or []],
                    ),
                )
                if keys
            ]
            if problems:
                raise RamitWeightsError(
                    f"{pretrained_model_name_or_path}: the weights do not match its configuration: keys "
                    + "; keys ".join(problems)
                    + ". Its config.json and weights come from different models, or the file is incomplete; pass "
                    "strict_weights=False to load anyway with those layers freshly initialised"
                )
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, recording the SHA-256 of each weight file's data in its header, which
        every load through the library verifies (`safe_files.check_safetensors_file`)."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        for path in Path(save_directory).glob("*.safetensors"):
            stamp_safetensors_digest(path)
        return result

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @device.setter
    def device(self, value: str | torch.device) -> None:
        """Apps that manage where models live (ComfyUI's model patcher) assign `model.device` after moving a model;
        transformers makes it read-only, which broke them. The parameters move there if they are elsewhere."""
        if torch.device(value) != self.device:
            self.to(value)

    @property
    def computation(self) -> str:
        """The computation the next forward call runs for inputs on the model's device, under the current grad mode,
        training mode and autocast (see `resolve_computation`)."""
        return resolve_computation(self.config.computation, self.device, is_training_call(self, self.device))

    def set_computation(self, computation: str) -> None:
        """Choose the computation (`RamitConfig.computation`): "auto", "faithful", "fused" or "banded"."""
        if computation not in ("auto", *COMPUTATIONS):
            raise ValueError(f"unknown computation {computation!r}; choose one of {', '.join(('auto', *COMPUTATIONS))}")
        self.config.computation = computation

    def to_bfloat16_body(self):
        """bfloat16 weights and activations everywhere except the first convolution, the global skip and the last two
        convolutions, which stay float32: in bfloat16 (8 mantissa bits) the input and the output pixels themselves
        would be rounded to about one 8-bit level, a visible loss; inside the body the rounding averages out."""
        self.to(torch.bfloat16)
        body = self.ramit if isinstance(self, RamitForImageRestoration) else self
        assert isinstance(body, RamitModel)
        body.shallow.float()
        body.image_mean.data, body.image_std.data = body.image_mean.float(), body.image_std.float()
        head = getattr(self, "reconstruction", None)
        if isinstance(head, RamitReconstruction):
            head.conv.float()
            head.final_conv.float()
        return self


class RamitWeightsError(ValueError):
    """Weights that do not fit the model's configuration; the message names the keys."""


def _listing(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _channel_stats(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


class RamitModel(RamitPreTrainedModel):
    """The RAMiT body: input padding and normalisation, shallow conv, four stages, Bottleneck and H-RAMi.

    Returns the features fed to the Reconstruction head (stage 4 modulated by H-RAMi, plus the shallow features),
    at the padded resolution.
    """

    def __init__(self, config: RamitConfig):
        super().__init__(config)
        self.register_buffer("image_mean", _channel_stats(config.image_mean), persistent=False)
        self.register_buffer("image_std", _channel_stats(config.image_std), persistent=False)
        self.shallow = nn.Conv2d(config.num_channels, config.embed_dim, 3, 1, 1)
        self.stages = nn.ModuleList(RamitStage(config, stage) for stage in range(len(config.depths)))
        self.downsizings = nn.ModuleList(RamitDownsizing(config) for _ in range(len(config.depths) - 2))
        self.bottleneck = RamitBottleneck(config)
        self.hrami = RamitHRAMi(config)
        self.post_init()

    def pad_and_normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Zero-pad bottom/right to a multiple of `config.pad_multiple`, then apply the task normalisation."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        multiple = self.config.pad_multiple
        height, width = pixel_values.shape[-2:]
        x = F.pad(pixel_values, (0, -width % multiple, 0, -height % multiple))
        if self.config.normalize_input:
            x = (x - self.image_mean.to(x.dtype)) / self.image_std.to(x.dtype)
        return x

    def _stages(self, body: torch.Tensor, computation: str) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Stages 1-3 (the encoder), the Bottleneck, stage 4 and H-RAMi -> (encoder outputs, stage 4 output,
        H-RAMi's modulation map)."""
        encoder_outputs, attention_maps = [], []
        hidden = body
        for level, stage in enumerate(self.stages[:-1]):
            if level:
                hidden = self.downsizings[level - 1](hidden, computation)
            hidden, attention = stage(hidden, computation)
            encoder_outputs.append(hidden)
            attention_maps.append(attention)
        last, attention = self.stages[-1](self.bottleneck(body, encoder_outputs, computation), computation)
        attention_maps.append(attention)
        return encoder_outputs, last, self.hrami(attention_maps, computation)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        computation: str | None = None,
    ) -> BaseModelOutput | tuple:
        """`computation`: a resolved computation from the caller (the restoration model); by default the one
        `config.computation` gives for this call."""
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if computation is None:
            device = pixel_values.device
            computation = resolve_computation(self.config.computation, device, is_training_call(self, device))
        x = self.pad_and_normalize(pixel_values)

        shallow = self.shallow(x.to(self.shallow.weight.dtype))
        if channels_last(computation):
            shallow = shallow.permute(0, 2, 3, 1).contiguous()
        # the body may run in a lower precision than the stem and the global skip (see `to_bfloat16_body`)
        body = shallow.to(next(self.stages.parameters()).dtype)
        with workspace(self.config.banded_piece_windows * self.config.window_size**2):
            encoder_outputs, last, modulation = self._stages(body, computation)
        features = (last * modulation).to(shallow.dtype) + shallow

        hidden_states = (shallow, *encoder_outputs, last) if output_hidden_states else None
        if channels_last(computation):  # the outputs are (B, C, H, W) views either way
            features = features.permute(0, 3, 1, 2)
            hidden_states = tuple(h.permute(0, 3, 1, 2) for h in hidden_states) if hidden_states else None
        if not return_dict:
            return tuple(v for v in (features, hidden_states) if v is not None)
        return BaseModelOutput(last_hidden_state=features, hidden_states=hidden_states)


class RamitForImageRestoration(RamitPreTrainedModel):
    """RAMiT with its Reconstruction head: super-resolution (pixel shuffle) or restoration (global residual).

    Takes images in [0, 1] of any size (padded inside, as the original does, and cropped back) and returns
    `reconstruction` of size (height * upscale, width * upscale). With `labels`, also returns the L1 `loss`.
    """

    def __init__(self, config: RamitConfig):
        super().__init__(config)
        self.ramit = RamitModel(config)
        self.reconstruction = RamitReconstruction(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageSuperResolutionOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        height, width = pixel_values.shape[-2:]
        device = pixel_values.device
        computation = resolve_computation(self.config.computation, device, is_training_call(self, device))
        outputs = self.ramit(
            pixel_values, output_hidden_states=output_hidden_states, return_dict=True, computation=computation
        )
        features = outputs.last_hidden_state
        out = self.reconstruction(features.permute(0, 2, 3, 1) if channels_last(computation) else features, computation)
        if self.config.upscale == 1:
            out = out + self.ramit.pad_and_normalize(pixel_values).to(out.dtype)
        if self.config.normalize_input:
            out = out * self.ramit.image_std.to(out.dtype) + self.ramit.image_mean.to(out.dtype)
        scale = self.config.upscale
        reconstruction = out[:, :, : height * scale, : width * scale]

        loss = None
        if labels is not None:
            if labels.shape != reconstruction.shape:
                raise ValueError(
                    f"labels must match the reconstruction's shape {tuple(reconstruction.shape)}, "
                    f"got {tuple(labels.shape)}"
                )
            loss = F.l1_loss(reconstruction, labels.to(reconstruction.dtype))

        if not return_dict:
            output = (reconstruction,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss, *output)) if loss is not None else output
        return ImageSuperResolutionOutput(loss=loss, reconstruction=reconstruction, hidden_states=outputs.hidden_states)


__all__ = ["RamitForImageRestoration", "RamitModel", "RamitPreTrainedModel", "RamitWeightsError", "resolve_computation"]
