"""Training RAMiT: data sources, patches and degradations, the schedule, `RamitTrainer`, runs and the paper's
recipes.

| module | holds |
|---|---|
| `recipes/` | `Recipe` and the paper's settings per task (YAML) |
| `sources`, `pixels` | image folders / `datasets` as an `ImageSource`; pixel helpers |
| `schedule`, `patches`, `validation` | the progressive schedule, the seeded patch dataset, validation pairs |
| `trainer`, `learning_rate` | `RamitTrainer` (loss, optimizer, evaluation) and the paper's learning rate |
| `models`, `checkpoints`, `run`, `card` | the model of a run, output folders and resume, `prepare_training`, the card |

Names load on first use, so `import ramit_hf.training.recipes` does not import the `Trainer`.
"""

import importlib

_NAMES = {
    "RECIPE_NAMES": "recipes",
    "Recipe": "recipes",
    "RecipeError": "recipes",
    "load_recipe": "recipes",
    "DataError": "pixels",
    "ImageSource": "sources",
    "load_source": "sources",
    "ProgressiveSchedule": "schedule",
    "RestorationPatchDataset": "patches",
    "RamitTrainer": "trainer",
    "restoration_loss": "trainer",
    "TrainingSetupError": "checkpoints",
    "TrainingRun": "run",
    "prepare_training": "run",
    "train": "run",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
