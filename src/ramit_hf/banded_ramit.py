"""Banded inference for the fused (B, H, W, C) layout: each D-RAMiT block and each MobiVari computed piece by piece.

A piece is a few thousand pixels (64 windows, or the rows of the image that hold as many pixels), so every
intermediate tensor of a piece stays in a core's cache and is small enough for the allocator to reuse instead of
mapping fresh pages, which on a CPU costs as much as the arithmetic. The order of the operations per pixel is that
of the fused path; only the grouping into pieces differs:

- window attention: the pixels of a piece's windows are gathered in (shifted) window order and projected to q, k, v
  by one matrix product whose columns are reordered so that q and k are normalised in place and each head's
  windows are strided views that the batched products take without a copy;
- channel attention: its logits are sums over all pixels, so pieces accumulate q kᵀ and the squared norms (in
  float32 whatever the dtype) and keep v; the softmax of the logits then folds into the output projection, one
  (channels x channels) matrix applied to v piece by piece;
- MobiVari, LayerNorm and the feed-forward network run band by band (rows of the image); a band's depthwise
  convolution reads one row of halo above and below. The inputs of the Bottleneck's and H-RAMi's MobiVari (pixel
  shuffles concatenated) and of Downsizing's (2x2 neighbourhoods to channels, LayerNorm) are computed per band
  (`BandSource`), never as full-resolution tensors.

`modeling_ramit` runs it for the "banded" computation, which "auto" picks for CPU inference. A piece holds
`config.banded_piece_windows` windows (set per forward by `workspace`). Caches keyed by image size are bounded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

# input channels per group from which a grouped 1x1 convolution is computed group by group
_GROUP_WIDTH = 20
# Pixels per piece outside a forward's workspace (64 windows of 8 x 8), and the forward's own setting inside one.
_DEFAULT_PIECE_PIXELS = 4096
# The forward in progress on this thread: its piece size and the full-size buffers its blocks share, so that each
# is mapped once rather than once per block.
_WORKSPACE: ContextVar[dict | None] = ContextVar("ramit_banded_workspace", default=None)
# window orders of this many image sizes are kept: a server that sees every size holds a bounded number
WINDOW_ORDERS_KEPT = 32


@contextmanager
def workspace(pixels: int = _DEFAULT_PIECE_PIXELS) -> Iterator[None]:
    """One banded forward: pieces of `pixels` pixels (0 or less: whole images), and full-size scratch buffers shared
    by its blocks (per thread; released on exit)."""
    token = _WORKSPACE.set({"piece_pixels": pixels, "buffers": {}})
    try:
        yield
    finally:
        _WORKSPACE.reset(token)


def piece_pixels() -> int:
    space = _WORKSPACE.get()
    return _DEFAULT_PIECE_PIXELS if space is None else space["piece_pixels"]


def _scratch(name: str, like: torch.Tensor, avoid: torch.Tensor | None = None) -> torch.Tensor:
    """A buffer shaped like `like` from the workspace (fresh outside one), never the memory of `avoid`."""
    space = _WORKSPACE.get()
    if space is None:
        return torch.empty_like(like)
    buffers = space["buffers"]
    key = (name, like.shape, like.dtype, like.device)
    if key not in buffers:
        buffers[key] = torch.empty_like(like)
    if avoid is not None and buffers[key].data_ptr() == avoid.data_ptr():
        return _scratch(name + "'", like)
    return buffers[key]


def window_order(height: int, width: int, window_size: int, shift: int, device: torch.device) -> torch.Tensor:
    """For each position of the windowed sequence (windows in row-major order, then the pixels of a window), the
    flat index of its source pixel in the image rolled by `-shift`: one gather does the roll and the partition."""
    return _window_order(height, width, window_size, shift, str(device))


@functools.lru_cache(maxsize=WINDOW_ORDERS_KEPT)
def _window_order(height: int, width: int, window_size: int, shift: int, device: str) -> torch.Tensor:
    rows = (torch.arange(height) + shift) % height
    cols = (torch.arange(width) + shift) % width
    flat = (rows[:, None] * width + cols[None, :]).view(height // window_size, window_size, -1, window_size)
    return flat.permute(0, 2, 1, 3).reshape(-1).to(device)


def _version(tensor: torch.Tensor) -> int:
    """In-place updates count up a tensor's version; inference tensors (made under inference_mode) keep none, and
    cannot be updated in place outside it."""
    return -1 if tensor.is_inference() else tensor._version


def _cached(module: nn.Module, name: str, build):
    """`build()` kept on `module` until one of its parameters changes (new data, an in-place update, dtype)."""
    key = tuple((p.data_ptr(), _version(p), p.dtype) for p in module.parameters())
    cache = module.__dict__.setdefault("_banded_cache", {})
    if name not in cache or cache[name][0] != key:
        with torch.no_grad():
            cache[name] = (key, build())
    return cache[name][1]


def pointwise(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A 1x1 convolution as an (in, out) matrix and its bias. A grouped one with wide groups as (groups, in / groups,
    out / groups) matrices, each a product of its own: its dense block-diagonal matrix would multiply zeros (1.2x to
    1.6x slower for Bottleneck, H-RAMi and Downsizing, measured in docs/performance.md). Narrow groups (the 16
    channels of a block's MobiVari) keep the block-diagonal matrix, which one product computes as fast."""

    def build():
        weight = conv.weight.flatten(1)
        if conv.groups > 1:
            groups = weight.view(conv.groups, -1, weight.shape[1])
            if weight.shape[1] >= _GROUP_WIDTH:
                return groups.transpose(1, 2).contiguous(), conv.bias
            weight = torch.block_diag(*groups)
        return weight.t().contiguous(), conv.bias

    return _cached(conv, "pointwise", build)


def linear(x: torch.Tensor, weight_bias: tuple[torch.Tensor, torch.Tensor | None], out=None) -> torch.Tensor:
    """x (N, in) times a `pointwise` weight, plus its bias -> (N, out), written to `out` when given."""
    weight, bias = weight_bias
    if weight.ndim == 3:
        groups, width_in, width_out = weight.shape
        out = x.new_empty(x.shape[0], groups * width_out) if out is None else out
        for g in range(groups):
            # each group's product written straight into its columns of the output (a strided view, no copy)
            part = out[:, g * width_out : (g + 1) * width_out]
            part.addmm_(x[:, g * width_in : (g + 1) * width_in], weight[g], beta=0)
        return out if bias is None else out.add_(bias)
    if bias is None:
        return torch.mm(x, weight, out=out)
    return torch.addmm(bias, x, weight, out=out)


def depthwise(conv: nn.Conv2d, rows: torch.Tensor) -> torch.Tensor:
    """The depthwise 3x3 convolution of (rows, W, C) image rows, zero-padded on every side -> (rows, W, C)."""
    return conv(rows.unsqueeze(0).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)[0]


def _in_place(act: nn.Module):
    if isinstance(act, nn.LeakyReLU):
        return lambda t: F.leaky_relu_(t, act.negative_slope)
    return act


def band_rows(pixels: int, height: int, width: int) -> int:
    return height if pixels <= 0 else max(1, min(height, pixels // width))


def mobivari_weights(mobivari) -> dict:
    return {name: pointwise(getattr(mobivari, name)) for name in ("exp_conv", "pw_conv") if hasattr(mobivari, name)}


def _halo(top: int, bottom: int, height: int) -> tuple[int, int, slice]:
    """The rows a band top:bottom reads (one more above and below, inside the image) and where the band lies in them."""
    low, high = max(top - 1, 0), min(bottom + 1, height)
    return low, high, slice(top - low, bottom - low)


def mobivari_rows(mobivari, weights: dict, src: torch.Tensor, top: int, bottom: int, out=None) -> torch.Tensor:
    """Rows top:bottom of MobiVari(src) for one image `src` (H, W, C_in) -> (rows * W, C_out), written to `out`
    ((rows * W, C_out), contiguous) when given; `weights`: `mobivari_weights(mobivari)`."""
    low, high, inner = _halo(top, bottom, src.shape[0])
    return _mobivari_window(mobivari, weights, src[low:high], inner, out)


def _mobivari_window(mobivari, weights: dict, window: torch.Tensor, inner: slice, out=None) -> torch.Tensor:
    """MobiVari of the rows `inner` of `window` (rows, W, C_in), which holds their neighbouring rows above and below
    wherever the image has them (beyond its edges the depthwise convolution pads with zeros)."""
    width, dim = window.shape[1:]
    act = _in_place(mobivari.act)
    if mobivari.version == 1:
        h = act(depthwise(mobivari.dw_conv, window)[inner]).add_(window[inner])
        result = act(linear(h.reshape(-1, dim), weights["pw_conv"], out))
    else:
        expanded = act(linear(window.reshape(-1, dim), weights["exp_conv"])).view(window.shape[0], width, -1)
        h = act(depthwise(mobivari.dw_conv, expanded)[inner].add_(expanded[inner]))
        result = linear(h.reshape(-1, h.shape[-1]), weights["pw_conv"], out)
    return result.add_(window[inner].reshape(-1, dim)) if mobivari.residual else result


def pixel_shuffle_nhwc(x: torch.Tensor, factor: int) -> torch.Tensor:
    """`F.pixel_shuffle` for (B, H, W, C * factor**2) tensors (the fused path's layout)."""
    if factor == 1:
        return x
    b, h, w, c = x.shape
    x = x.view(b, h, w, c // factor**2, factor, factor).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * factor, w * factor, c // factor**2)


def space_to_depth_nhwc(x: torch.Tensor) -> torch.Tensor:
    """Each 2x2 neighbourhood of (..., H, W, C) as the 4C channels of one pixel of (..., H / 2, W / 2, 4C)."""
    return torch.cat([x[..., 0::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 0::2, :], x[..., 1::2, 1::2, :]], -1)


class BandSource:
    """A (B, H, W, C) input that MobiVari reads a band of rows at a time, computed per band instead of whole.
    `like` is a tensor with the output's dtype and device."""

    shape: tuple[int, int, int, int]
    like: torch.Tensor

    def rows(self, i: int, low: int, high: int) -> torch.Tensor:
        """Rows low:high of image i, (rows, W, C)."""
        raise NotImplementedError


class TensorRows(BandSource):
    """A whole tensor's rows, as views."""

    def __init__(self, x: torch.Tensor):
        self.like = x.contiguous()
        b, h, w, c = x.shape
        self.shape = (b, h, w, c)

    def rows(self, i: int, low: int, high: int) -> torch.Tensor:
        return self.like[i, low:high]


class ShuffledConcat(BandSource):
    """The channel concatenation of (B, H / f, W / f, C * f²) tensors, each pixel-shuffled by its own factor f to
    (B, H, W, C): the full-resolution concatenation (148 channels for H-RAMi) is never materialised."""

    def __init__(self, parts: list[tuple[torch.Tensor, int]]):
        self.parts, self.like = parts, parts[0][0]
        b, h, w, _ = parts[0][0].shape
        factor = parts[0][1]
        self.shape = (b, h * factor, w * factor, sum(t.shape[-1] // f**2 for t, f in parts))

    def rows(self, i: int, low: int, high: int) -> torch.Tensor:
        pieces = []
        for tensor, f in self.parts:
            # the coarse rows that cover rows low:high once shuffled
            first, last = low // f, -(-high // f)
            pieces.append(pixel_shuffle_nhwc(tensor[i : i + 1, first:last], f)[0, low - first * f : high - first * f])
        return torch.cat(pieces, dim=-1)


class SpaceToDepth(BandSource):
    """Downsizing's input: each 2x2 neighbourhood of (B, H, W, C) as the 4C channels of a (B, H / 2, W / 2, 4C)
    pixel, then LayerNorm."""

    def __init__(self, x: torch.Tensor, norm: nn.LayerNorm):
        self.like, self.norm = x, norm
        b, h, w, c = x.shape
        self.shape = (b, h // 2, w // 2, 4 * c)

    def rows(self, i: int, low: int, high: int) -> torch.Tensor:
        norm = self.norm
        return F.layer_norm(
            space_to_depth_nhwc(self.like[i, 2 * low : 2 * high]),
            norm.normalized_shape,
            norm.weight,
            norm.bias,
            norm.eps,
        )


def mobivari_banded(mobivari, x: torch.Tensor | BandSource) -> torch.Tensor:
    """MobiVari of (B, H, W, C_in) -> (B, H, W, C_out), band by band."""
    source = x if isinstance(x, BandSource) else TensorRows(x)
    b, height, width, _ = source.shape
    out = source.like.new_empty(b, height, width, mobivari.out_dim)
    step, weights = band_rows(piece_pixels(), height, width), mobivari_weights(mobivari)
    for i in range(b):
        for top in range(0, height, step):
            bottom = min(top + step, height)
            low, high, inner = _halo(top, bottom, height)
            target = out[i, top:bottom].view(-1, mobivari.out_dim)
            _mobivari_window(mobivari, weights, source.rows(i, low, high), inner, target)
    return out


def _block_weights(block) -> dict:
    """A block's weights as the banded path uses them, kept until its parameters change."""

    def build():
        attention, heads, head_dim = block.spatial_attention, block.num_spatial_heads, block.head_dim
        # the qkv columns reordered from (heads, q/k/v, head_dim) to spatial q, k, v (each heads x head_dim), then
        # channel q, k, v: q and k of the spatial heads are one block, normalised together, and each head's
        # windows are strided views
        index = torch.arange(3 * block.num_heads * head_dim).view(block.num_heads, 3, head_dim)
        order = torch.cat([index[:heads].transpose(0, 1).reshape(-1), index[heads:].transpose(0, 1).reshape(-1)])
        weight, bias = block.qkv.weight.flatten(1).t()[:, order].contiguous(), block.qkv.bias
        weights = {
            "qkv": (weight, None if bias is None else bias[order].contiguous()),
            "fc1": pointwise(block.ffn.fc1),
            "fc2": pointwise(block.ffn.fc2),
            "mobivari": mobivari_weights(block.mobivari),
        }
        if attention is not None:
            # the logit scale folded into q's normalisation factor, k's factor 1
            factor = torch.ones(2 * heads, 1, dtype=weight.dtype, device=weight.device)
            factor[:heads] = attention.logit_scales().view(heads, 1)
            weights["qk_factor"] = factor
            weights["position_bias"] = attention.relative_position_bias()[0]
            weights["spatial_proj"] = pointwise(attention.proj)
        if block.channel_attention is not None:
            weights["channel_scales"] = block.channel_attention.logit_scales().float()
            weights["channel_proj"] = pointwise(block.channel_attention.proj)
        return weights

    return _cached(block, "weights", build)


def block_banded(block, x: torch.Tensor, spatial_helper, channel_helper):
    """A D-RAMiT block in inference, (B, H, W, C) -> (output, SP-SA helper, CH-SA helper, mixed attention before the
    norm), the contract of `RamitDRAMiTBlock.forward`. The helpers are what the next block takes from this one's
    outputs, averaged: SP-SA's over its channels (B, H, W, 1) and CH-SA's over its heads (B, H, W, head_dim); the
    previous block's, or None, come in.
    Only the output of a stage's last block (`ends_stage`) and its mixed attention are tensors of their own; the
    others live in the workspace."""
    x = x.contiguous()
    b, height, width, _ = x.shape
    last = block.ends_stage
    out = torch.empty_like(x) if last else _scratch("block output", x, avoid=x)
    mixed = torch.empty_like(x) if last else _scratch("mixed", x)
    both = _scratch("attention", x)
    means = x.new_empty(b, height, width, 1 + block.head_dim)
    weights = _block_weights(block)
    for i in range(b):
        sp = None if spatial_helper is None else spatial_helper[i].reshape(-1)
        ch = None if channel_helper is None else channel_helper[i].reshape(-1, block.head_dim)
        _attend(block, weights, x[i], sp, ch, both[i], means[i].view(height * width, -1))
        _mix_and_feed_forward(block, weights, x[i], both[i], mixed[i], out[i])
    return out, means[..., :1], means[..., 1:], mixed


def _attend(
    block, weights: dict, x: torch.Tensor, spatial_helper, channel_helper, both: torch.Tensor, means: torch.Tensor
) -> None:
    """SP-SA and CH-SA of one image x (H, W, C), projected, into `both` (H, W, C), spatial channels first; their
    means for the next block's helpers into `means` (H * W, 1 + head_dim)."""
    attention = block.spatial_attention
    height, width, dim = x.shape
    n, head_dim = height * width, block.head_dim
    heads, channel_heads = block.num_spatial_heads, block.num_heads - block.num_spatial_heads
    sw, cw = heads * head_dim, channel_heads * head_dim
    if heads:
        area = attention.window_size**2
        order = window_order(height, width, attention.window_size, attention.shift, x.device)
        qk_factor, bias = weights["qk_factor"].to(x.dtype), weights["position_bias"].to(x.dtype)
        proj_weight, proj_bias = weights["spatial_proj"]
    else:  # channel attention alone sums over the pixels in any order
        area, order = 1, torch.arange(n, device=x.device)
    pixels = piece_pixels()
    piece = n if pixels <= 0 else max(area, pixels // area * area)
    flat, out = x.view(n, dim), both.view(n, dim)
    if channel_heads:
        gram = x.new_zeros(channel_heads, head_dim, head_dim, dtype=torch.float32)
        squares = x.new_zeros(2, channel_heads, head_dim, dtype=torch.float32)
        values = x.new_empty(n, cw)
    for start in range(0, n, piece):
        index = order[start : start + piece]
        rows = index.numel()
        qkv = linear(flat.index_select(0, index), weights["qkv"])
        if heads:
            qk = qkv[:, : 2 * sw].view(rows, 2 * heads, head_dim)
            qk.mul_(qk_factor / torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min_(1e-12))
            q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, 2 * sw : 3 * sw].view(rows, heads, head_dim)
            if channel_helper is not None:
                v.mul_(channel_helper.index_select(0, index).unsqueeze(1))
            windows = (rows // area, area, head_dim)
            projected = None
            for head in range(heads):
                logits = torch.baddbmm(bias[head], q[:, head].view(windows), k[:, head].view(windows).transpose(1, 2))
                o = torch.bmm(torch.softmax(logits, dim=-1), v[:, head].view(windows)).view(rows, head_dim)
                part = proj_weight[head * head_dim : (head + 1) * head_dim]
                projected = linear(o, (part, proj_bias)) if projected is None else projected.addmm_(o, part)
            assert projected is not None
            out[:, :sw].index_copy_(0, index, projected)
            means[:, 0].index_copy_(0, index, projected.mean(dim=-1))
        if channel_heads:
            cq, ck = (qkv[:, 3 * sw + j * cw : 3 * sw + (j + 1) * cw].float().view(rows, -1, head_dim) for j in (0, 1))
            gram.baddbmm_(cq.permute(1, 2, 0), ck.transpose(0, 1))
            squares[0].add_(cq.square().sum(0))
            squares[1].add_(ck.square().sum(0))
            cv = qkv[:, 3 * sw + 2 * cw :]
            values.index_copy_(0, index, cv if spatial_helper is None else cv * spatial_helper[index, None])
    if channel_heads:
        norms = squares[0].sqrt()[:, :, None] * squares[1].sqrt()[:, None, :]
        logits = gram.div_(norms.clamp_min_(1e-24)).mul_(weights["channel_scales"])
        # channel head h's output is softmax(logits_h) v_h: folded into the projection, one matrix on v
        proj_weight, proj_bias = weights["channel_proj"]
        mixing = torch.bmm(
            torch.softmax(logits, dim=-1).transpose(1, 2), proj_weight.float().view(channel_heads, head_dim, -1)
        )
        mixing = mixing.reshape(cw, cw).to(x.dtype)
        for start in range(0, n, piece):
            projected = linear(values[start : start + piece], (mixing, proj_bias))
            out[start : start + piece, sw:] = projected
            means[start : start + piece, 1:] = projected.view(-1, channel_heads, head_dim).mean(dim=1)


def _mix_and_feed_forward(
    block, weights: dict, x: torch.Tensor, both: torch.Tensor, mixed: torch.Tensor, out: torch.Tensor
) -> None:
    """out = y + LN2(FFN(y)) with y = x + LN1(MobiVari(both)), band by band; MobiVari's output kept in `mixed`."""
    height, width, dim = x.shape
    norm1, norm2, ffn = block.norm1, block.norm2, block.ffn
    step = band_rows(piece_pixels(), height, width)
    for top in range(0, height, step):
        bottom = min(top + step, height)
        m = mobivari_rows(block.mobivari, weights["mobivari"], both, top, bottom, out=mixed[top:bottom].view(-1, dim))
        y = F.layer_norm(m, (dim,), norm1.weight, norm1.bias, norm1.eps).add_(x[top:bottom].view(-1, dim))
        z = linear(ffn.act(linear(y, weights["fc1"])), weights["fc2"])
        torch.add(F.layer_norm(z, (dim,), norm2.weight, norm2.bias, norm2.eps), y, out=out[top:bottom].view(-1, dim))
