"""Original RAMiT checkpoints -> `RamitForImageRestoration`.

Detection (which variant and task a checkpoint holds) is kept apart from the architecture: the architecture is read
from the weights' shapes, the task from the file name or the caller, and the two are checked against each other.
`detect_checkpoint` is the one detection path: the converter and the spandrel architecture (`ramit_hf.spandrel`)
both use it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from .atomic import atomic_folder
from .configuration_ramit import PRESETS, TASK_UPSCALE, TASKS, VARIANTS, RamitConfig, preset_name
from .image_processing_ramit import RamitImageProcessor
from .modeling_ramit import RamitForImageRestoration
from .safe_files import DamagedFileError, InvalidWeightsError, UnsafeFileError, check_weight_values, load_torch_file

# File names of the original release: <variant>_<task code>.pth, e.g. RAMiT-1_X2.pth, RAMiT_GDN.pth.
FILE_TASKS = {
    "X2": "sr-x2",
    "X3": "sr-x3",
    "X4": "sr-x4",
    "CDN": "color-dn",
    "GDN": "gray-dn",
    "LLE": "lle",
    "DR": "derain",
}
# The original code's `--target_mode` values (its training and test scripts) -> our tasks.
TARGET_MODES = {
    "light_x2": "sr-x2",
    "light_x3": "sr-x3",
    "light_x4": "sr-x4",
    "light_dn": "color-dn",
    "light_graydn": "gray-dn",
    "light_lle": "lle",
    "light_dr": "derain",
}
_FILE_NAME = re.compile(r"(RAMiT(?:-1|-slimSR|-slimLLE)?)_(X2|X3|X4|CDN|GDN|LLE|DR)\b", re.IGNORECASE)

# Original parameter names -> ours, applied in order to each key.
_KEY_RULES: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"^shallow\.conv\."), "ramit.shallow."),
    (re.compile(r"^stage(\d)\.blocks\.block(\d+)\."), lambda m: f"ramit.stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (re.compile(r"\.qkv_proj\.qkv\."), ".qkv."),
    (re.compile(r"\.sp_attn\."), ".spatial_attention."),
    (re.compile(r"\.ch_attn\."), ".channel_attention."),
    (re.compile(r"\.ffn\.hidden\."), ".ffn.fc1."),
    (re.compile(r"\.ffn\.out\."), ".ffn.fc2."),
    (re.compile(r"^down(\d)\."), lambda m: f"ramit.downsizings.{int(m[1]) - 1}."),
    (re.compile(r"^bottleneck\."), "ramit.bottleneck."),
    (re.compile(r"^attn_mix\."), "ramit.hrami."),
    (re.compile(r"^to_target\.mobivari\.mobivari(\d+)\."), lambda m: f"reconstruction.mobivari.{m[1]}."),
    (re.compile(r"^to_target\."), "reconstruction."),
    (re.compile(r"\.norm(\d?)\.norm\."), lambda m: f".norm{m[1]}."),
]
# Buffers the original saved with its weights; ours are rebuilt from the config.
_DERIVED_BUFFERS = re.compile(r"\.relative_position_index$")


class CheckpointError(ValueError):
    """An original checkpoint that cannot be converted; the message names the file and the problem."""


def convert_key(original_key: str) -> str:
    key = original_key
    for pattern, replacement in _KEY_RULES:
        key = pattern.sub(replacement, key)
    return key


def infer_from_file_name(name: str | os.PathLike) -> tuple[str | None, str | None]:
    """(variant, task) from an original file name such as `RAMiT-slimSR_X3.pth`; None where the name does not tell."""
    match = _FILE_NAME.search(Path(name).name)
    if not match:
        return None, None
    variant = next(v for v in VARIANTS if v.lower() == match[1].lower())
    return variant, FILE_TASKS[match[2].upper()]


def load_original_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an original `.pth` file safely (`weights_only=True`) and return its parameter dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        loaded = load_torch_file(path, "the checkpoint")
    except DamagedFileError:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or not a .pth file)"
        ) from None
    except UnsafeFileError as error:
        raise CheckpointError(str(error)) from None
    return _unwrap(loaded, source=str(path))


def _unwrap(loaded, source: str) -> dict[str, torch.Tensor]:
    # BasicSR-style files hold the raw weights (`params`) and their moving average (`params_ema`): the average is
    # what BasicSR tests and releases, so it wins when both are there
    for wrapper in ("state_dict", "model", "params_ema", "params"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{source} does not hold a state dict of tensors (found {type(loaded).__name__})")
    state_dict = {k.removeprefix("module."): v for k, v in loaded.items()}
    # a crafted or damaged file: what has no element or no dimension has no shape to detect a setting from
    empty = next((k for k, v in state_dict.items() if v.ndim == 0 or v.numel() == 0), None)
    if empty is not None:
        raise CheckpointError(f"{source}: {empty} has shape {tuple(state_dict[empty].shape)}, with no weights in it")
    # the original names, or ours (a `model.safetensors` saved by this library)
    if not any(all(k in state_dict for k in pair) for pair in (_ORIGINAL_IO_KEYS, _OUR_IO_KEYS)):
        some = ", ".join(list(state_dict)[:5]) or "none"
        raise CheckpointError(
            f"{source} is not an original RAMiT checkpoint: 'shallow.conv.weight' and 'to_target.conv.weight' are "
            f"missing (first keys: {some})"
        )
    return state_dict


_ORIGINAL_IO_KEYS = ("shallow.conv.weight", "to_target.conv.weight")
_OUR_IO_KEYS = ("ramit.shallow.weight", "reconstruction.conv.weight")


def infer_io(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(input channels, upscale) of a checkpoint (original or our names), read from its first and last convolutions."""
    first, last = _OUR_IO_KEYS if _OUR_IO_KEYS[0] in state_dict else _ORIGINAL_IO_KEYS
    if state_dict[first].ndim != 4 or state_dict[last].ndim != 4:
        raise CheckpointError(f"{first} and {last} are not convolution weights (4 dimensions each)")
    in_chans = state_dict[first].shape[1]
    out = state_dict[last].shape[0] // in_chans
    upscale = round(out**0.5)
    if upscale * upscale != out:
        raise CheckpointError(f"the reconstruction conv's {out} output channels per image channel are not a square")
    return in_chans, upscale


@functools.cache
def _preset_shapes(name: str) -> MappingProxyType:
    """Shapes of every parameter of a preset's model (built on the meta device: no memory, no initialisation)."""
    with torch.device("meta"):
        model = RamitForImageRestoration(RamitConfig.from_preset(name))
    return MappingProxyType({k: tuple(v.shape) for k, v in model.state_dict().items()})


@functools.cache
def _body_shapes(variant: str) -> MappingProxyType:
    """Shapes of the task-independent parameters (stages, Downsizing, Bottleneck, H-RAMi) of a variant."""
    name = next(n for n, (v, _) in PRESETS.items() if v == variant)
    return MappingProxyType({k: shape for k, shape in _preset_shapes(name).items() if _is_body(k)})


def _is_body(key: str) -> bool:
    return key.startswith("ramit.") and not key.startswith("ramit.shallow.")


def matching_variants(weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Variants whose parameters have the shapes of the converted `weights` wherever both have a parameter,
    the closest (fewest keys on one side only) first; a damaged checkpoint still finds its variant."""
    shapes = {k: tuple(v.shape) for k, v in weights.items() if _is_body(k)}
    scored = []
    for variant in VARIANTS:
        body = _body_shapes(variant)
        shared = body.keys() & shapes.keys()
        if shared and all(body[k] == shapes[k] for k in shared):
            scored.append((len(body.keys() ^ shapes.keys()), variant))
    return [variant for _, variant in sorted(scored)]


def detect_setting(
    state_dict, variant: str | None, task: str | None, source: str, default_task: str | None = None
) -> tuple[str, str]:
    """The (variant, task) of an original checkpoint: given or inferred, and checked against its weights.

    `default_task` is taken where the weights could serve several released tasks (RAMiT's color denoising, low-light
    and deraining weights share one shape) and no task is given; without it that is an error.
    """
    return _detect_setting(convert_state_dict(state_dict), variant, task, source, default_task)


def _detect_setting(weights, variant: str | None, task: str | None, source: str, default_task: str | None):
    matching = matching_variants(weights)
    width = weights["ramit.shallow.weight"].shape[0]
    blocks = [re.match(r"ramit\.stages\.(\d+)\.blocks\.(\d+)\.", k) for k in weights]
    depths = [len({m[2] for m in blocks if m and m[1] == str(i)}) for i in range(4)]
    described = f"embed_dim {width}, depths {depths}" + (f" ({matching[0]})" if matching else "")
    if variant is not None:
        if variant not in VARIANTS:
            raise CheckpointError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if variant not in matching:
            raise CheckpointError(f"{source} does not hold {variant} weights: its weights have {described}")
    elif matching:
        variant = matching[0]
    else:
        raise CheckpointError(f"{source} matches no RAMiT variant: its weights have {described}")

    in_chans, upscale = infer_io(weights)
    fitting = [t for t in TASKS if TASK_UPSCALE.get(t, 1) == upscale and (t == "gray-dn") == (in_chans == 1)]
    if task is not None:
        if task not in TASKS:
            raise CheckpointError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        if task not in fitting:
            raise CheckpointError(
                f"{source} cannot serve task {task!r}: its weights take {in_chans}-channel input with upscale "
                f"{upscale} (they fit {', '.join(fitting) or 'no task'})"
            )
    else:
        released = [t for t in fitting if (variant, t) in PRESETS.values()]
        if len(released) > 1 and default_task in released:
            released = [default_task]
        if len(released) != 1:
            raise CheckpointError(
                f"cannot tell the task of {source} from its weights (it could be {', '.join(released or fitting)}): "
                "pass task=... or keep the original file name (e.g. RAMiT_LLE.pth)"
            )
        task = released[0]
    try:
        preset_name(variant, task)
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None
    return variant, task


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename original parameters to ours (as float32), dropping the buffers our model rebuilds."""
    return {convert_key(k): v.float() for k, v in state_dict.items() if not _DERIVED_BUFFERS.search(k)}


def convert_original_checkpoint(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    variant: str | None = None,
    task: str | None = None,
) -> RamitForImageRestoration:
    """Build a `RamitForImageRestoration` from an original RAMiT checkpoint.

    Args:
        path_or_state_dict: a `.pth` file of the original release (read with `weights_only=True`) or its state dict.
        variant: `RAMiT`, `RAMiT-1`, `RAMiT-slimSR` or `RAMiT-slimLLE`; inferred from the file name or the weights.
        task: `sr-x2`, `sr-x3`, `sr-x4`, `color-dn`, `gray-dn`, `lle` or `derain`; inferred from the file name, or
            from the weights where they tell (super-resolution, grayscale denoising).

    Raises `CheckpointError` (a `ValueError`) naming the file and the problem: an unreadable file, weights of another
    variant or task, or missing / unexpected / mis-shaped parameters.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "the given state dict"
        state_dict = _unwrap(path_or_state_dict, source)
        name_variant = name_task = None
    else:
        source = str(path_or_state_dict)
        state_dict = load_original_state_dict(path_or_state_dict)
        name_variant, name_task = infer_from_file_name(path_or_state_dict)
    for given, from_name, what in ((variant, name_variant, "variant"), (task, name_task, "task")):
        if given is not None and from_name is not None and given != from_name:
            raise CheckpointError(f"{source} is named as {what} {from_name!r} but {what} {given!r} was requested")
    detected = detect_checkpoint(state_dict, variant or name_variant, task or name_task, source)
    model = RamitForImageRestoration(detected.config)
    model.load_state_dict(detected.weights, strict=True)
    model.eval()
    return model


@dataclass(frozen=True)
class DetectedCheckpoint:
    """What a state dict holds: the configuration of its model, and its weights under our names (float32)."""

    config: RamitConfig
    weights: dict[str, torch.Tensor]


def detect_checkpoint(
    state_dict: Mapping,
    variant: str | None = None,
    task: str | None = None,
    source: str = "the given state dict",
    default_task: str | None = None,
    check_values: bool = True,
) -> DetectedCheckpoint:
    """Detect the model a RAMiT state dict holds, and check that every one of its parameters fits that model.

    Takes an original state dict or one with our names (`ramit.` / `reconstruction.`), also wrapped (`state_dict`,
    `model`, `params_ema`, `params`; the average `params_ema` wins when both are there) or saved from DDP
    (`module.`). The variant is read from the weights' shapes, the task from the caller, the weights or
    `default_task` (see `detect_setting`). Raises `CheckpointError` naming
    `source` and the problem, e.g. a missing, unexpected or mis-shaped parameter: nothing is half-detected.
    `check_values` also refuses weights no image can be computed from (`safe_files.check_weight_values`: integer
    tensors, NaN or infinity); spandrel's detection leaves it to the load, whose error then names the problem.
    """
    state_dict = _unwrap(state_dict, source)
    weights = convert_state_dict(state_dict)
    variant, task = _detect_setting(weights, variant, task, source, default_task)
    name = preset_name(variant, task)
    problems = _fit_problems(_preset_shapes(name), weights)
    if problems:
        raise CheckpointError(f"{source} does not fit {variant} {task}: {problems}")
    if check_values:
        try:  # before the float32 cast of `convert_state_dict`, which would hide integer tensors
            check_weight_values({k: v for k, v in state_dict.items() if not _DERIVED_BUFFERS.search(k)}, source)
        except InvalidWeightsError as error:
            raise CheckpointError(str(error)) from None
    return DetectedCheckpoint(RamitConfig.from_preset(name), weights)


def _fit_problems(expected: Mapping[str, tuple[int, ...]], weights: Mapping[str, torch.Tensor]) -> str:
    """Every missing, unexpected or mis-shaped parameter of `weights` against `expected` shapes; "" when they fit."""
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {expected[k]}"
        for k, v in weights.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    parts = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            parts.append(f"{title} ({len(items)}): " + ", ".join(items[:10]) + (" ..." if len(items) > 10 else ""))
    return "; ".join(parts)


def processor_for(config: RamitConfig) -> RamitImageProcessor:
    """The image processor that goes with a model: the paper's padding multiple and the model's channels."""
    return RamitImageProcessor(size_divisor=config.pad_multiple, num_channels=config.num_channels)


def save_model_folder(model, output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a `from_pretrained` folder (config, model.safetensors, preprocessor config, code) atomically.

    The folder is assembled beside its destination and renamed into place (`ramit_hf.atomic.atomic_folder`), so an
    interrupted run leaves nothing half-written. An existing non-empty folder is replaced only with `overwrite=True`.
    """
    with atomic_folder(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        processor_for(model.config).save_pretrained(staging)
    return Path(output_dir)


__all__ = [
    "FILE_TASKS",
    "TARGET_MODES",
    "CheckpointError",
    "DetectedCheckpoint",
    "convert_original_checkpoint",
    "convert_state_dict",
    "detect_checkpoint",
    "detect_setting",
    "infer_from_file_name",
    "infer_io",
    "load_original_state_dict",
    "matching_variants",
    "processor_for",
    "save_model_folder",
]
