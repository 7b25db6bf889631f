"""Which Hub repository each model goes to: preset names, the released checkpoints, repository ids.

Every original setting has a preset name (`ramit_hf.PRESETS`, e.g. `ramit1-sr-x2`); its Hub repository is
`<namespace>/<preset>` with the namespace `HUB_NAMESPACE` (`ramit-hf`) unless one is given. `RELEASED_CHECKPOINTS`
maps the original file names (`RAMiT-1_X2`) to presets and `PUBLISHED_PRESETS` lists the checkpoints this project
has and publishes. This module is the one place that mapping lives.
"""

from __future__ import annotations

import re

from ..configuration_ramit import PRESETS, RamitConfig, preset_name
from ..convert import FILE_TASKS

HUB_NAMESPACE = "ramit-hf"

# task -> the code the original release uses in its file names (RAMiT-1_X2.pth, RAMiT_CDN.pth, RAMiT-slimLLE_LLE.pth)
_FILE_CODES = {task: code for code, task in FILE_TASKS.items()}

# original checkpoint name (file name without .pth) -> preset, for every setting the authors released
RELEASED_CHECKPOINTS: dict[str, str] = {
    f"{variant}_{_FILE_CODES[task]}": name for name, (variant, task) in PRESETS.items()
}

# the released checkpoints this project has (the shared reference folder) and publishes, with a model card each
PUBLISHED_PRESETS: tuple[str, ...] = (
    "ramit1-sr-x2",
    "ramit1-sr-x3",
    "ramit1-sr-x4",
    "ramit1-color-dn",
    "ramit-slimsr-x2",
    "ramit-slimsr-x3",
    "ramit-slimsr-x4",
    "ramit-slimlle",
)

ORIGINAL_REPOSITORY = "https://github.com/rami0205/RAMiT"
PAPER_URL = "https://arxiv.org/abs/2305.11474"


_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class HubError(RuntimeError):
    """Publishing cannot go ahead (no token, no connection, a bad repository id); nothing was uploaded."""


# ----------------------------------------------------------------------------------------------
# repository ids


def original_checkpoint_name(preset: str) -> str:
    """The original release's file name (without `.pth`) of a preset, e.g. `ramit1-sr-x2` -> `RAMiT-1_X2`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown RAMiT preset {preset!r}; choose one of {', '.join(PRESETS)}")
    variant, task = PRESETS[preset]
    return f"{variant}_{_FILE_CODES[task]}"


def repo_id_for(name: str, namespace: str | None = None) -> str:
    """The Hub repository id of a preset (or of any repository name): `<namespace>/<name>`, `ramit-hf` by default."""
    namespace = HUB_NAMESPACE if namespace is None else namespace
    for part, what in ((namespace, "namespace"), (name, "repository name")):
        if not _REPO_NAME.match(part) or ".." in part or part.endswith((".git", ".")):
            raise ValueError(
                f"{part!r} is not a valid Hub {what}: use letters, digits, '-', '_' and '.', at most 96 characters"
            )
    return f"{namespace}/{name}"


def validate_repo_id(repo_id: str) -> str:
    """`repo_id` if it has the form `namespace/name` with valid parts; a ValueError naming the problem otherwise."""
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise ValueError(
            f"{repo_id!r} is not a Hub repository id: expected 'namespace/name', e.g. 'ramit-hf/ramit1-sr-x2'"
        )
    return repo_id_for(parts[1], parts[0])


def hub_models(namespace: str | None = None) -> dict[str, str]:
    """Every published preset and its repository id."""
    return {preset: repo_id_for(preset, namespace) for preset in PUBLISHED_PRESETS}


def preset_of(config: RamitConfig) -> str | None:
    """The preset a config's (variant, task) is, or None for a setting the authors never released."""
    if config.variant is None or config.task is None:
        return None
    try:
        return preset_name(config.variant, config.task)
    except ValueError:
        return None
