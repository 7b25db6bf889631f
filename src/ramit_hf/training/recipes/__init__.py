"""Training recipes: the paper's settings for each task, as YAML files, and the `Recipe` they load into.

A recipe is a flat set of named fields (see `Recipe`). Built-in recipes live beside this file (`sr-x2.yaml`, ...,
`derain.yaml`); a recipe file of your own (YAML or JSON) may start from one with `base: <name>` and change any field.
Every field can also be overridden from the command line (`--set field=value`, `--set model.embed_dim=32`, or the
per-field flag `--field-name value`); values are read as YAML, so `[64, 96]`, `64,96`, `true`, `null` and `4e-4` work.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPE_DIR = Path(__file__).resolve().parent
RECIPE_NAMES = ("sr-x2", "sr-x3", "sr-x4", "color-dn", "gray-dn", "lle", "derain")
LOSSES = ("l1", "mse", "charbonnier")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the recipe, the field and the problem."""


def _field(default, kind: str, doc: str, **kwargs):
    factory = kwargs.pop("default_factory", None)
    metadata = {"kind": kind, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Recipe:
    """Everything a training run needs besides its data and output folder.

    Epoch-based fields count epochs as the original does: one epoch is `int(number of training images *
    dataset_repeat)` patches. The learning rate is `lr_per_64 * total_batch / 64` (the paper's 4e-4 for 2 GPUs x 32
    patches), where total_batch = batch per device x processes x gradient accumulation, and it follows the batch size
    from phase to phase of a progressive schedule.
    """

    name: str = _field("custom", "str", "recipe name, recorded in checkpoints and the model card")
    task: str = _field("sr-x2", "str", "one of sr-x2, sr-x3, sr-x4, color-dn, gray-dn, lle, derain")
    description: str = _field("", "str", "one line for the model card")
    # model
    preset: str | None = _field(None, "opt_str", "architecture of a RamitConfig preset (default: ramit-<task>)")
    variant: str | None = _field(
        None, "opt_str", "architecture by variant name: RAMiT, RAMiT-1, RAMiT-slimSR, RAMiT-slimLLE"
    )
    model: dict = _field(None, "dict", "RamitConfig field overrides, e.g. {drop_path_rate: 0.1}", default_factory=dict)
    init_from: str | None = _field(None, "opt_str", "start from this model: a folder, a Hub id or an original .pth")
    warm_start_epochs: int = _field(0, "int", "first epochs that train only the reconstruction head (x3/x4: 50)")
    # schedule
    epochs: int = _field(500, "int", "length of the schedule in epochs")
    warmup_epochs: float = _field(20, "float", "linear learning-rate warm-up from 0, in epochs (after the warm start)")
    milestones: list = _field(
        None, "float_list", "epochs (after the warm start) at which the learning rate halves", default_factory=list
    )
    lr_per_64: float = _field(4e-4, "float", "learning rate for a total batch of 64 patches, scaled linearly")
    learning_rate: float | None = _field(
        None, "opt_float", "peak learning rate of the first phase, instead of lr_per_64"
    )
    patch_sizes: list = _field(None, "int_list", "low-quality patch side per phase", default_factory=lambda: [64])
    batch_sizes: list = _field(None, "int_list", "patches per device per phase", default_factory=lambda: [32])
    phase_epochs: list = _field(
        None, "int_list", "epoch at which each phase starts (the first is 0)", default_factory=lambda: [0]
    )
    dataset_repeat: float = _field(1.0, "float", "patches per training image per epoch")
    max_steps: int | None = _field(None, "opt_int", "stop after this many optimizer steps (the schedule is unchanged)")
    gradient_accumulation_steps: int = _field(1, "int", "micro-batches per optimizer step")
    # data
    noise_sigma: list | None = _field(
        None,
        "opt_float_list",
        "[low, high]: Gaussian noise sigma (0-255 scale) drawn uniformly per patch and added to the input",
    )
    val_noise_sigma: list = _field(
        None,
        "float_list",
        "noise sigmas of the validation inputs of denoising tasks, each scored separately (the paper: 15, 25, 50)",
        default_factory=lambda: [25.0],
    )
    pair_by_position: bool = _field(
        False, "bool", "pair low/high-quality files by their position in name order (for pairs whose names differ)"
    )
    degradation: dict | None = _field(
        None,
        "opt_degradation",
        "real-world degradations of SR inputs: realesrgan, a YAML file, or a mapping of settings (null: bicubic)",
    )
    augment: bool = _field(True, "bool", "random horizontal flip and 90-degree rotation of each patch pair")
    max_val_images: int | None = _field(None, "opt_int", "use only the first N validation images")
    image_cache_mb: int = _field(1024, "int", "decoded training images kept in memory per data-loading process (MiB)")
    dataloader_num_workers: int = _field(4, "int", "data-loading processes per device")
    # objective
    loss: str = _field("l1", "str", "l1, mse or charbonnier")
    charbonnier_eps: float = _field(1e-3, "float", "epsilon of the Charbonnier loss")
    weight_decay: float = _field(0.0, "float", "Adam weight decay (the paper uses none)")
    max_grad_norm: float = _field(0.0, "float", "gradient-norm clipping; 0 disables it (the paper does not clip)")
    # evaluation and checkpoints
    eval_every_epochs: int = _field(20, "int", "validate and save a checkpoint every N epochs (and at the end)")
    eval_steps: int | None = _field(None, "opt_int", "validate and save every N steps instead of every N epochs")
    save_total_limit: int | None = _field(3, "opt_int", "checkpoints kept (besides the best one with keep_best)")
    keep_best: bool = _field(
        False, "bool", "deliver the checkpoint with the best best_metric instead of the final weights"
    )
    best_metric: str = _field(
        "psnr", "str", "metric of keep_best: psnr, ssim, l1 or loss on the first validation set, or e.g. set12_s25_psnr"
    )
    ema_decay: float | None = _field(
        None, "opt_float", "exponential moving average of the weights with this decay (e.g. 0.999); null: none"
    )
    ema_warmup: bool = _field(True, "bool", "ramp the EMA decay up as min(decay, (1 + step) / (10 + step))")
    logging_steps: int = _field(50, "int", "log the training loss every N steps")
    # precision and speed
    bf16: bool = _field(False, "bool", "bfloat16 autocast")
    torch_compile: bool = _field(False, "bool", "compile the model with torch.compile")
    gradient_checkpointing: bool = _field(False, "bool", "recompute D-RAMiT blocks in the backward pass to save memory")
    computation: str | None = _field(
        None, "opt_str", "auto, fused or faithful (default: the model's, auto); banded computes inference only"
    )
    seed: int = _field(9725, "int", "seed of the model initialisation and of every random patch")
    trace_data: bool = _field(False, "bool", "write which images each process trained on to <output>/data_trace")

    # ----------------------------------------------------------------------------------------------

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def field_kind(cls, name: str) -> str:
        return {f.name: f.metadata["kind"] for f in dataclasses.fields(cls)}[name]

    @classmethod
    def field_doc(cls, name: str) -> str:
        return {f.name: f.metadata["doc"] for f in dataclasses.fields(cls)}[name]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> Recipe:
        return from_dict({**self.to_dict(), **changes}, source=f"recipe {self.name!r}")

    def validate(self) -> None:
        from ...configuration_ramit import PRESETS, TASKS, VARIANTS

        problems = []
        if self.task not in TASKS:
            problems.append(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.preset is not None and self.preset not in PRESETS:
            problems.append(f"preset {self.preset!r} is not one of {', '.join(PRESETS)}")
        if self.variant is not None and self.variant not in VARIANTS:
            problems.append(f"variant {self.variant!r} is not one of {', '.join(VARIANTS)}")
        if self.preset is not None and self.variant is not None:
            problems.append("give preset or variant, not both")
        if not (len(self.patch_sizes) == len(self.batch_sizes) == len(self.phase_epochs) >= 1):
            problems.append(
                f"patch_sizes {self.patch_sizes}, batch_sizes {self.batch_sizes} and phase_epochs {self.phase_epochs} "
                "need one entry per phase"
            )
        elif self.phase_epochs[0] != 0 or any(b <= a for a, b in itertools.pairwise(self.phase_epochs)):
            problems.append(f"phase_epochs must start at 0 and increase, got {self.phase_epochs}")
        if any(p < 8 for p in self.patch_sizes) or any(b < 1 for b in self.batch_sizes):
            problems.append(
                f"patch sizes must be >= 8 and batch sizes >= 1, got {self.patch_sizes} / {self.batch_sizes}"
            )
        for name in ("epochs", "gradient_accumulation_steps", "eval_every_epochs", "logging_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_steps", "max_val_images"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 or null, got {getattr(self, name)}")
        if not 0 <= self.warm_start_epochs < self.epochs:
            problems.append(f"warm_start_epochs must be in [0, epochs), got {self.warm_start_epochs}")
        if self.warmup_epochs < 0 or self.dataset_repeat <= 0:
            problems.append("warmup_epochs must be >= 0 and dataset_repeat > 0")
        if self.lr_per_64 <= 0 or (self.learning_rate is not None and self.learning_rate <= 0):
            problems.append("learning rates must be positive")
        if self.loss not in LOSSES:
            problems.append(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.noise_sigma is not None and (
            len(self.noise_sigma) != 2 or not 0 <= self.noise_sigma[0] <= self.noise_sigma[1]
        ):
            problems.append(f"noise_sigma must be [low, high] with 0 <= low <= high, got {self.noise_sigma}")
        if self.computation not in (None, "auto", "faithful", "fused"):
            problems.append(f"computation must be auto, fused or faithful, got {self.computation!r}")
        if self.image_cache_mb < 0 or self.dataloader_num_workers < 0:
            problems.append("image_cache_mb and dataloader_num_workers must be >= 0")
        if not isinstance(self.model, dict):
            problems.append(f"model must be a mapping of RamitConfig fields, got {self.model!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            problems.append(f"ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if any(s <= 0 for s in self.val_noise_sigma) or not self.val_noise_sigma:
            problems.append(f"val_noise_sigma must be positive sigmas, got {self.val_noise_sigma}")
        if self.degradation is not None:
            from ..degradations import settings_problems

            problems += [f"degradation: {p}" for p in settings_problems(self.degradation, self.task)]
        if problems:
            raise RecipeError(f"recipe {self.name!r}: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------------
# reading recipes


def _coerce(name: str, value: Any, source: str) -> Any:
    """A recipe value of the field's kind; strings from the command line are accepted where they parse."""
    kind = Recipe.field_kind(name)
    optional = kind.startswith("opt_")
    base = kind.removeprefix("opt_")
    if value is None:
        if optional:
            return None
        raise RecipeError(f"{source}: field {name!r} cannot be null")

    def fail(expected: str):
        raise RecipeError(f"{source}: field {name!r} must be {expected}, got {value!r}")

    if base == "str":
        return value if isinstance(value, str) else fail("a string")
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        return fail("true or false")
    if base == "int":
        return _number(value, int) if _number(value, int) is not None else fail("an integer")
    if base == "float":
        return _number(value, float) if _number(value, float) is not None else fail("a number")
    if base in ("int_list", "float_list"):
        items = value
        if isinstance(items, str):
            items = [part for part in items.replace("[", "").replace("]", "").split(",") if part.strip()]
        elif not isinstance(items, (list, tuple)):
            items = [items]
        cast = int if base == "int_list" else float
        converted = [_number(v, cast) for v in items]
        if any(v is None for v in converted):
            fail(f"a list of {'integers' if cast is int else 'numbers'}")
        return converted
    if base == "dict":
        return dict(value) if isinstance(value, dict) else fail("a mapping")
    if base == "degradation":
        from ..degradations import DegradationError, resolve_settings

        try:
            return resolve_settings(value)
        except DegradationError as error:
            raise RecipeError(f"{source}: field 'degradation': {error}") from None
    raise AssertionError(kind)


def _number(value, cast):
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)):
        if cast is int:
            return int(value) if float(value).is_integer() else None
        return float(value)
    return None


def from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """A `Recipe` from a mapping; unknown fields are an error that suggests the closest field name."""
    names = Recipe.field_names()
    unknown = [k for k in data if k not in names]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise RecipeError(f"{source}: unknown field(s) {', '.join(hints)}; the fields are: {', '.join(names)}")
    return Recipe(**{k: _coerce(k, v, source) for k, v in data.items()})


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a YAML or JSON recipe file, with its `base:` recipe merged in."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # yaml and json raise many error types
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise RecipeError(f"{path} is not valid {kind}: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path} must hold a mapping of recipe fields, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        merged = _resolve_raw(str(base), seen=(str(path),))
        merged.update(data)
        data = merged
    return data


def _resolve_raw(name_or_path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name_or_path in seen:
        raise RecipeError(f"recipe {name_or_path!r} includes itself through 'base'")
    if name_or_path in RECIPE_NAMES:
        return read_recipe_file(RECIPE_DIR / f"{name_or_path}.yaml")
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        return read_recipe_file(path)
    close = difflib.get_close_matches(name_or_path, RECIPE_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise RecipeError(
        f"unknown recipe {name_or_path!r}{hint}: give one of {', '.join(RECIPE_NAMES)} or a .yaml/.json file"
    )


def parse_override(text: str) -> tuple[str, Any]:
    """`'field=value'` -> (field, value) with the value read as YAML (`model.x=...` sets a model field)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} must look like field=value")
    key, _, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    import yaml

    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Merge overrides (a mapping, or `field=value` strings) into raw recipe data; `model.<field>` keys go into
    the `model` mapping."""
    data = dict(data)
    data["model"] = dict(data.get("model") or {})
    if overrides is None:
        return data
    items = [parse_override(o) for o in overrides] if isinstance(overrides, list) else list(overrides.items())
    # `degradation.<setting>` changes the degradation model however it was chosen (--degradation comes later)
    items.sort(key=lambda item: item[0].startswith("degradation."))
    for key, value in items:
        if key.startswith("model."):
            data["model"][key.removeprefix("model.")] = value
        elif key.startswith("degradation."):
            current = data.get("degradation")
            data["degradation"] = dict(current) if isinstance(current, dict) else {"base": current or "realesrgan"}
            data["degradation"][key.removeprefix("degradation.")] = value
        else:
            data[key] = value
    return data


def load_recipe(
    name_or_path: str | os.PathLike = "sr-x2", overrides: dict[str, Any] | list[str] | None = None
) -> Recipe:
    """A built-in recipe (`"sr-x2"`, ..., `"derain"`) or a recipe file, with overrides applied.

    Raises `RecipeError` naming the recipe and the field for unknown fields and invalid values.
    """
    source = str(name_or_path)
    data = apply_overrides(_resolve_raw(source), overrides)
    return from_dict(data, source=f"recipe {source!r}")


__all__ = [
    "LOSSES",
    "RECIPE_NAMES",
    "Recipe",
    "RecipeError",
    "apply_overrides",
    "from_dict",
    "load_recipe",
    "parse_override",
    "read_recipe_file",
]
