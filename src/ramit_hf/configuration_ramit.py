"""RAMiT configuration and the named presets of the original paper."""

from __future__ import annotations

import copy
import json
import math
import os

from transformers import PreTrainedConfig

# Per-task input normalisation of the original implementation (statistics of each task's training data).
TASK_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "sr-x2": ((0.4485, 0.4375, 0.4045), (0.2397, 0.2290, 0.2389)),
    "sr-x3": ((0.4485, 0.4375, 0.4045), (0.2373, 0.2265, 0.2367)),
    "sr-x4": ((0.4485, 0.4375, 0.4045), (0.2352, 0.2244, 0.2349)),
    "color-dn": ((0.4775, 0.4515, 0.4047), (0.2442, 0.2367, 0.2457)),
    "gray-dn": ((0.4539,), (0.2326,)),
    "lle": ((0.1687, 0.1599, 0.1526), (0.1142, 0.1094, 0.1094)),
    "derain": ((0.5110, 0.5105, 0.4877), (0.2313, 0.2317, 0.2397)),
}
TASKS = tuple(TASK_STATS)
TASK_UPSCALE = {"sr-x2": 2, "sr-x3": 3, "sr-x4": 4}
# The reciprocal helper is switched off for these tasks in the original settings.
_TASKS_WITHOUT_HELPER = ("color-dn", "gray-dn", "derain")

VARIANTS = ("RAMiT", "RAMiT-1", "RAMiT-slimSR", "RAMiT-slimLLE")
# the computations of the same function (modeling_ramit's header says where "auto" picks each)
COMPUTATIONS = ("faithful", "fused", "banded")
_VARIANT_ARCHITECTURE = {
    "RAMiT": dict(embed_dim=64, depths=(6, 4, 4, 6), mobivari_version=2),
    "RAMiT-1": dict(embed_dim=64, depths=(6, 4, 4, 6), mobivari_version=1),
    "RAMiT-slimSR": dict(
        embed_dim=48, depths=(8, 2, 2, 8), mobivari_version=2, fusion_expansion_factor=2.0, fusion_expand_groups=1
    ),
    "RAMiT-slimLLE": dict(embed_dim=48, depths=(4, 2, 2, 4), mobivari_version=2, fusion_expand_groups=3),
}

# The 15 settings the original authors trained: preset name -> (variant, task).
PRESETS: dict[str, tuple[str, str]] = {
    "ramit-sr-x2": ("RAMiT", "sr-x2"),
    "ramit-sr-x3": ("RAMiT", "sr-x3"),
    "ramit-sr-x4": ("RAMiT", "sr-x4"),
    "ramit-color-dn": ("RAMiT", "color-dn"),
    "ramit-gray-dn": ("RAMiT", "gray-dn"),
    "ramit-lle": ("RAMiT", "lle"),
    "ramit-derain": ("RAMiT", "derain"),
    "ramit1-sr-x2": ("RAMiT-1", "sr-x2"),
    "ramit1-sr-x3": ("RAMiT-1", "sr-x3"),
    "ramit1-sr-x4": ("RAMiT-1", "sr-x4"),
    "ramit1-color-dn": ("RAMiT-1", "color-dn"),
    "ramit-slimsr-x2": ("RAMiT-slimSR", "sr-x2"),
    "ramit-slimsr-x3": ("RAMiT-slimSR", "sr-x3"),
    "ramit-slimsr-x4": ("RAMiT-slimSR", "sr-x4"),
    "ramit-slimlle": ("RAMiT-slimLLE", "lle"),
}


def preset_name(variant: str, task: str) -> str:
    """The preset name of an original (variant, task) setting; raises ValueError for a setting never released."""
    for name, setting in PRESETS.items():
        if setting == (variant, task):
            return name
    released = ", ".join(f"{v} {t}" for v, t in PRESETS.values())
    raise ValueError(
        f"no original RAMiT setting for variant {variant!r} and task {task!r}; the settings are: {released}"
    )


def _integer(low: int, high: int):
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"{name} must be an integer from {low} to {high}, got {value!r}"
        return None

    return check


def _number(low: float, high: float, low_open: bool = False, optional: bool = False):
    def check(name, value):
        if value is None and optional:
            return None
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if ok and (value > high or value < low or (low_open and value == low)):
            ok = False
        if not ok:
            interval = f"{'(' if low_open else '['}{low}, {high}]"
            return f"{name} must be a number in {interval}{' or null' if optional else ''}, got {value!r}"
        return None

    return check


def _choice(*options, named: bool = False):
    def check(name, value):
        if value not in options or isinstance(value, bool) != any(isinstance(o, bool) for o in options):
            if named:
                return f"unknown {name} {value!r}; choose one of {', '.join(map(str, options))}"
            listed = [repr(o) if isinstance(o, str) else str(o) for o in options]
            return f"{name} must be {', '.join(listed[:-1])} or {listed[-1]}, got {value!r}"
        return None

    return check


def _stages(low: int, high: int):
    def check(name, value):
        if not isinstance(value, list) or len(value) != 4:
            return f"{name} needs 4 stages, got {value!r}"
        for entry in value:
            if isinstance(entry, bool) or not isinstance(entry, int) or not low <= entry <= high:
                return f"every entry of {name} must be an integer from {low} to {high}, got {value!r}"
        return None

    return check


def _statistics(positive: bool):
    def check(name, value):
        if not isinstance(value, list) or not value:
            return f"{name} must be a list of numbers, got {value!r}"
        for entry in value:
            if isinstance(entry, bool) or not isinstance(entry, (int, float)) or not math.isfinite(entry):
                return f"{name} must hold finite numbers, got {value!r}"
            if positive and entry <= 0:
                return f"{name} must hold positive numbers, got {value!r}"
        return None

    return check


def _optional(rule):
    def check(name, value):
        return None if value is None else rule(name, value)

    return check


# Every field and what it may hold. The upper bounds are far above the paper's settings (embed_dim 64, depths of
# at most 6, 4 heads, 8-pixel windows) yet keep a configuration file from building a model of hundreds of millions of
# parameters, which no RAMiT checkpoint is.
_FIELD_RULES = {
    "num_channels": _choice(1, 3),
    "embed_dim": _integer(16, 512),
    "depths": _stages(1, 32),
    "num_heads": _stages(1, 64),
    "channel_head_ratio": _number(0.0, 1.0),
    "window_size": _integer(1, 64),
    "mlp_ratio": _number(0.0, 16.0, low_open=True),
    "qkv_bias": _choice(True, False),
    "mobivari_version": _choice(1, 2),
    "mobivari_expansion_factor": _number(0.0, 16.0, low_open=True),
    "mobivari_expand_groups": _integer(1, 512),
    "fusion_expansion_factor": _number(0.0, 16.0, low_open=True, optional=True),
    "fusion_expand_groups": _optional(_integer(1, 512)),
    "num_reconstruction_mobivari": _integer(0, 16),
    "reciprocal_helper": _choice(True, False),
    "upscale": _choice(1, 2, 3, 4),
    "image_mean": _statistics(positive=False),
    "image_std": _statistics(positive=True),
    "normalize_input": _choice(True, False),
    "hidden_act": _choice("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "leaky_relu"),
    "mobivari_act": _choice("leaky_relu", "gelu", "relu", "silu"),
    "layer_norm_eps": _number(0.0, 0.1, low_open=True),
    "attention_dropout": _number(0.0, 0.99),
    "projection_dropout": _number(0.0, 0.99),
    "drop_path_rate": _number(0.0, 0.99),
    "task": _optional(_choice(*TASKS, named=True)),
    "variant": _optional(_choice(*VARIANTS, named=True)),
    "computation": _choice("auto", *COMPUTATIONS),
    "banded_piece_windows": _integer(0, 1 << 20),
}


class RamitConfig(PreTrainedConfig):
    r"""
    Configuration of a RAMiT model (Choi et al., "Reciprocal Attention Mixing Transformer for Lightweight Image
    Restoration", CVPR 2024 Workshops). The defaults build RAMiT for x2 super-resolution.
    `RamitConfig.from_preset(name)` gives each of the 15 settings of the paper (see `PRESETS`).

    Args:
        num_channels (`int`, defaults to 3):
            Channels of the input and of the output image: 3 (RGB) or 1 (grayscale denoising).
        embed_dim (`int`, defaults to 64):
            Feature channels of every stage.
        depths (`tuple[int]`, defaults to `(6, 4, 4, 6)`):
            Number of D-RAMiT blocks in each of the four stages. Stages 1-3 work at full, 1/2 and 1/4 resolution;
            stage 4 works at full resolution after the Bottleneck.
        num_heads (`tuple[int]`, defaults to `(4, 4, 4, 4)`):
            Attention heads of each stage, shared between spatial (SP-SA) and channel (CH-SA) self-attention.
            `embed_dim` must be divisible by each entry.
        channel_head_ratio (`float`, defaults to 0.25):
            Fraction of each stage's heads that do channel self-attention; the rest do windowed spatial
            self-attention (`int(num_heads * channel_head_ratio)` channel heads).
        window_size (`int`, defaults to 8):
            Side of the square windows of SP-SA; every other block shifts its windows by half a window. Inputs are
            padded to a multiple of `window_size * 2 ** (len(depths) - 2)` (32 by default).
        mlp_ratio (`float`, defaults to 2.0):
            Hidden channels of the feed-forward network as a multiple of `embed_dim`.
        qkv_bias (`bool`, defaults to `True`):
            Whether the query/key/value projection has a bias.
        mobivari_version (`int`, defaults to 2):
            MobiVari mixing layer: 1 (MobileNet-v1 style: depthwise + pointwise) or 2 (MobileNet-v2 style: grouped
            expansion, depthwise, pointwise).
        mobivari_expansion_factor (`float`, defaults to 1.2):
            Expansion of MobiVari v2 in the blocks, Downsizing and Reconstruction. The expanded width is
            `int(dim * factor)` rounded up to the next multiple of `mobivari_expand_groups` (always adding at least one
            step, as the original code does).
        mobivari_expand_groups (`int`, defaults to 4):
            Groups of the MobiVari v2 expansion convolution in the blocks, Downsizing and Reconstruction.
        fusion_expansion_factor (`float`, *optional*):
            Expansion of MobiVari v2 in the Bottleneck and H-RAMi (RAMiT-slimSR: 2.0). Defaults to
            `mobivari_expansion_factor`.
        fusion_expand_groups (`int`, *optional*):
            Expansion groups of MobiVari v2 in the Bottleneck and H-RAMi (RAMiT-slimSR: 1, RAMiT-slimLLE: 3).
            Defaults to `mobivari_expand_groups`.
        num_reconstruction_mobivari (`int`, defaults to 2):
            MobiVari layers at the start of the Reconstruction head.
        reciprocal_helper (`bool`, defaults to `True`):
            Whether SP-SA and CH-SA help each other: each block scales its spatial values by the previous block's
            channel-attention output (averaged over heads) and its channel values by the previous block's
            spatial-attention output (averaged over channels).
        upscale (`int`, defaults to 2):
            Super-resolution factor (2, 3 or 4), or 1 for restoration tasks, which add the input to the output.
        image_mean (`tuple[float]`, defaults to the x2 super-resolution statistics):
            Per-channel mean subtracted from the input (and added back to the output) when `normalize_input`.
        image_std (`tuple[float]`, defaults to the x2 super-resolution statistics):
            Per-channel standard deviation the input is divided by (and the output multiplied by).
        normalize_input (`bool`, defaults to `True`):
            Whether to normalise with `image_mean` / `image_std` inside the model.
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the feed-forward network.
        mobivari_act (`str`, defaults to `"leaky_relu"`):
            Activation inside MobiVari (LeakyReLU with slope 0.01 in the original).
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of the LayerNorms (which normalise over channels at every pixel).
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention probabilities of SP-SA and CH-SA.
        projection_dropout (`float`, defaults to 0.0):
            Dropout after the output projections of SP-SA and CH-SA.
        drop_path_rate (`float`, defaults to 0.0):
            Stochastic-depth rate, the same for every block (as in the original code).
        task (`str`, *optional*):
            The task the weights serve, one of `TASKS` (`sr-x2`, `sr-x3`, `sr-x4`, `color-dn`, `gray-dn`, `lle`,
            `derain`); used by the pipeline, evaluation and model cards.
        variant (`str`, *optional*):
            The named architecture, one of `VARIANTS` (`RAMiT`, `RAMiT-1`, `RAMiT-slimSR`, `RAMiT-slimLLE`), for
            model cards; the architecture itself is given by the fields above.
        computation (`str`, defaults to `"auto"`):
            How the network is computed; every computation gives the same function. `"faithful"` follows the original
            code operation by operation, memory layouts included (the golden tests pin it to the original's outputs
            at 1e-5). `"fused"` works on (B, H, W, C) tensors with 1x1 convolutions as matrix products and window
            attention through `scaled_dot_product_attention`, a fixed number of operations per forward (to 1e-4).
            `"banded"` computes each block a few thousand pixels at a time so intermediates stay in cache, for CPU
            inference only. `"auto"` is resolved at every call: banded for CPU inference, fused for training,
            autocast and every other device. `model.computation` says what the next call runs;
            `model.set_computation(...)` changes it. Configurations saved with the earlier `attention_backend`
            field load as `"faithful"` or `"auto"`.
        banded_piece_windows (`int`, defaults to 64):
            Windows per piece of the banded computation (64 windows of 8 x 8 pixels keep a piece's intermediates in
            a core's cache); 0 computes whole images at once.
    """

    model_type = "ramit"
    attribute_map = {"hidden_size": "embed_dim", "num_attention_heads": "num_heads"}

    def __init__(
        self,
        num_channels: int = 3,
        embed_dim: int = 64,
        depths: tuple[int, ...] = (6, 4, 4, 6),
        num_heads: tuple[int, ...] = (4, 4, 4, 4),
        channel_head_ratio: float = 0.25,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        mobivari_version: int = 2,
        mobivari_expansion_factor: float = 1.2,
        mobivari_expand_groups: int = 4,
        fusion_expansion_factor: float | None = None,
        fusion_expand_groups: int | None = None,
        num_reconstruction_mobivari: int = 2,
        reciprocal_helper: bool = True,
        upscale: int = 2,
        image_mean: tuple[float, ...] = TASK_STATS["sr-x2"][0],
        image_std: tuple[float, ...] = TASK_STATS["sr-x2"][1],
        normalize_input: bool = True,
        hidden_act: str = "gelu",
        mobivari_act: str = "leaky_relu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        projection_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        task: str | None = None,
        variant: str | None = None,
        computation: str = "auto",
        banded_piece_windows: int = 64,
        **kwargs,
    ):
        self.num_channels = num_channels
        self.embed_dim = embed_dim
        self.depths = list(depths) if isinstance(depths, (list, tuple)) else depths
        self.num_heads = list(num_heads) if isinstance(num_heads, (list, tuple)) else num_heads
        self.channel_head_ratio = channel_head_ratio
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.mobivari_version = mobivari_version
        self.mobivari_expansion_factor = mobivari_expansion_factor
        self.mobivari_expand_groups = mobivari_expand_groups
        self.fusion_expansion_factor = fusion_expansion_factor
        self.fusion_expand_groups = fusion_expand_groups
        self.num_reconstruction_mobivari = num_reconstruction_mobivari
        self.reciprocal_helper = reciprocal_helper
        self.upscale = upscale
        self.image_mean = list(image_mean) if isinstance(image_mean, (list, tuple)) else image_mean
        self.image_std = list(image_std) if isinstance(image_std, (list, tuple)) else image_std
        self.normalize_input = normalize_input
        self.hidden_act = hidden_act
        self.mobivari_act = mobivari_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.projection_dropout = projection_dropout
        self.drop_path_rate = drop_path_rate
        self.task = task
        self.variant = variant
        legacy = kwargs.pop("attention_backend", None)  # configurations saved before `computation` existed
        if legacy is not None and computation == "auto":
            computation = "faithful" if legacy == "faithful" else "auto"
        self.computation = computation
        self.banded_piece_windows = banded_piece_windows
        if type(self).__module__.split(".")[0] == "ramit_hf":
            # Saved folders name their pipeline for loaders without ramit_hf (trust_remote_code). Where ramit_hf is
            # installed, pipeline("image-restoration", ...) uses its registered pipeline without remote code.
            kwargs.pop("custom_pipelines", None)
        super().__init__(**kwargs)
        self._validate()

    @classmethod
    def _dict_from_json_file(cls, json_file):
        try:
            data = super()._dict_from_json_file(json_file)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{json_file} is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{json_file} is not a configuration: it holds a JSON {type(data).__name__}, not an object"
            )
        if data.get("model_type", cls.model_type) != cls.model_type:  # another model's folder
            raise ValueError(
                f"{os.path.dirname(json_file) or '.'} is not a RAMiT model: its config.json has model_type "
                f"{data['model_type']!r}, not 'ramit'"
            )
        return data

    def _validate(self) -> None:
        problems = [problem for name, rule in _FIELD_RULES.items() if (problem := rule(name, getattr(self, name)))]
        if problems:  # the rest assumes well-typed fields
            raise ValueError("invalid RamitConfig: " + "; ".join(problems))
        if self.embed_dim % 16 != 0:
            problems.append(f"embed_dim must be divisible by 16 (H-RAMi pixel-shuffles by 4), got {self.embed_dim}")
        for heads in self.num_heads:
            if self.embed_dim % heads != 0:
                problems.append(f"embed_dim {self.embed_dim} is not divisible by {heads} heads")
        if self.mobivari_version == 2:
            dim = self.embed_dim
            fusion_groups = self.fusion_expand_groups or self.mobivari_expand_groups
            for width, groups, where in (
                (dim, self.mobivari_expand_groups, "MobiVari"),
                (dim + dim // 4 + dim // 16, fusion_groups, "Bottleneck"),
                (2 * dim + dim // 4 + dim // 16, fusion_groups, "H-RAMi"),
            ):
                if width % groups:
                    problems.append(f"the {where} input width {width} is not divisible by {groups} expansion groups")
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            problems.append(
                f"image_mean/image_std need {self.num_channels} values, got {self.image_mean} / {self.image_std}"
            )
        if self.task is not None and TASK_UPSCALE.get(self.task, 1) != self.upscale:
            problems.append(f"task {self.task!r} needs upscale {TASK_UPSCALE.get(self.task, 1)}, got {self.upscale}")
        if problems:
            raise ValueError("invalid RamitConfig: " + "; ".join(problems))

    @property
    def pad_multiple(self) -> int:
        """Height and width are padded to a multiple of this (the coarsest stage must hold whole windows)."""
        return self.window_size * 2 ** (len(self.depths) - 2)

    @property
    def num_channel_heads(self) -> list[int]:
        return [int(heads * self.channel_head_ratio) for heads in self.num_heads]

    @classmethod
    def from_preset(cls, name: str, **overrides) -> RamitConfig:
        """The configuration of one of the paper's 15 settings, e.g. `"ramit-sr-x2"` or `"ramit-slimlle"`.

        Keyword arguments override single fields (e.g. `drop_path_rate=0.1` for training).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown RAMiT preset {name!r}; choose one of {', '.join(PRESETS)}")
        variant, task = PRESETS[name]
        mean, std = TASK_STATS[task]
        fields = dict(
            copy.deepcopy(_VARIANT_ARCHITECTURE[variant]),
            num_channels=len(mean),
            upscale=TASK_UPSCALE.get(task, 1),
            image_mean=mean,
            image_std=std,
            reciprocal_helper=task not in _TASKS_WITHOUT_HELPER,
            task=task,
            variant=variant,
        )
        fields.update(overrides)
        return cls(**fields)


__all__ = ["COMPUTATIONS", "PRESETS", "TASKS", "TASK_STATS", "VARIANTS", "RamitConfig", "preset_name"]
