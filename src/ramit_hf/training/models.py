"""The model a run trains: a recipe's configuration, from scratch or initialised from any model source."""

from __future__ import annotations

import inspect

import torch

from ..configuration_ramit import PRESETS, RamitConfig
from ..inference import load_model
from ..modeling_ramit import RamitForImageRestoration
from .checkpoints import TrainingSetupError
from .recipes import Recipe, RecipeError
from .trainer import HEAD_PREFIX

# --------------------------------------------------------------------------------------------------
# the model


_CONFIG_FIELDS = tuple(p for p in inspect.signature(RamitConfig.__init__).parameters if p not in ("self", "kwargs"))
_TASK_FIELDS = ("num_channels", "upscale", "image_mean", "image_std", "reciprocal_helper", "task")


def model_config(recipe: Recipe, base: RamitConfig | None = None) -> RamitConfig:
    """The configuration a recipe trains: the architecture of `preset`, `variant`, `base` (an initial model) or the
    task's RAMiT preset, the task's fields (channels, scale, normalisation, reciprocal helper), then `model`."""
    if recipe.preset is not None:
        architecture = RamitConfig.from_preset(recipe.preset)
    elif recipe.variant is not None:
        architecture = RamitConfig.from_preset(next(n for n, (v, _) in PRESETS.items() if v == recipe.variant))
    elif base is not None:
        architecture = base
    else:
        architecture = RamitConfig.from_preset(f"ramit-{recipe.task}")
    task_config = RamitConfig.from_preset(f"ramit-{recipe.task}")
    fields = {name: getattr(architecture, name) for name in _CONFIG_FIELDS}
    fields.update({name: getattr(task_config, name) for name in _TASK_FIELDS})
    unknown = [k for k in recipe.model if k not in _CONFIG_FIELDS]
    if unknown:
        raise RecipeError(
            f"recipe {recipe.name!r}: unknown model field(s) {', '.join(unknown)}; RamitConfig has "
            f"{', '.join(_CONFIG_FIELDS)}"
        )
    fields.update(recipe.model)
    if recipe.computation is not None:
        fields["computation"] = recipe.computation
    try:
        return RamitConfig(**fields)
    except ValueError as error:
        raise RecipeError(f"recipe {recipe.name!r}: {error}") from None


def build_model(recipe: Recipe) -> tuple[RamitForImageRestoration, str]:
    """The model a recipe starts from, and a note on where its weights came from.

    From scratch: initialised under `recipe.seed`. With `init_from`: every parameter is copied from that model
    (folder, Hub id or original .pth); for another task (e.g. an x3 model from an x2 one) the reconstruction head
    starts fresh, as the paper's warm start does. Body parameters that are missing or shaped differently are an
    error.
    """
    torch.manual_seed(recipe.seed)
    if recipe.init_from is None:
        return RamitForImageRestoration(model_config(recipe)), "initialised from scratch"
    source = load_model(recipe.init_from)
    config = model_config(recipe, base=source.config)
    model = RamitForImageRestoration(config)
    same_task = source.config.task == config.task and source.config.upscale == config.upscale
    own, given = model.state_dict(), source.state_dict()
    problems, copied = [], {}
    for key, value in own.items():
        if key.startswith(HEAD_PREFIX) and not same_task:
            continue
        if key not in given:
            problems.append(f"missing {key}")
        elif given[key].shape != value.shape:
            problems.append(f"{key}: {tuple(given[key].shape)} vs {tuple(value.shape)}")
        else:
            copied[key] = given[key]
    if problems:
        raise TrainingSetupError(
            f"cannot initialise a {config.variant or 'RAMiT'} {config.task} model from {recipe.init_from} "
            f"({source.config.variant} {source.config.task}): {len(problems)} parameters do not fit: "
            + ", ".join(problems[:6])
            + (" ..." if len(problems) > 6 else "")
        )
    model.load_state_dict(copied, strict=False)
    head = "its weights" if same_task else "its weights except the reconstruction head (fresh)"
    return model.train(), f"{head} from {recipe.init_from} ({source.config.variant} {source.config.task})"
