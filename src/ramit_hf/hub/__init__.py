"""The Hugging Face Hub side: repository ids, model cards, and publishing.

| module | holds |
|---|---|
| `repos` | preset -> repository id, the released checkpoints, `HubError` |
| `complexity` | parameters and FLOPs as papers report them |
| `cards` | model cards from the template and the evaluation JSON files |
| `publish` | `push_to_hub`: the model folder (with its code, so it loads with `trust_remote_code`) and the upload |
"""

from .cards import CardInfo, card_for_preset, load_results, render_model_card
from .complexity import Complexity, complexity_input_size, measure_complexity
from .publish import (
    PushResult,
    check_hub_access,
    prepare_model,
    push_to_hub,
    released_checkpoints,
    write_model_folder,
)
from .repos import (
    HUB_NAMESPACE,
    PUBLISHED_PRESETS,
    RELEASED_CHECKPOINTS,
    HubError,
    hub_models,
    original_checkpoint_name,
    preset_of,
    repo_id_for,
    validate_repo_id,
)

__all__ = [
    "HUB_NAMESPACE",
    "PUBLISHED_PRESETS",
    "RELEASED_CHECKPOINTS",
    "CardInfo",
    "Complexity",
    "HubError",
    "PushResult",
    "card_for_preset",
    "check_hub_access",
    "complexity_input_size",
    "hub_models",
    "load_results",
    "measure_complexity",
    "original_checkpoint_name",
    "prepare_model",
    "preset_of",
    "push_to_hub",
    "released_checkpoints",
    "render_model_card",
    "repo_id_for",
    "validate_repo_id",
    "write_model_folder",
]
