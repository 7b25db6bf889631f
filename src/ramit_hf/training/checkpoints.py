"""Output folders, checkpoints and exact resume of a training run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..safe_files import DamagedFileError, InvalidWeightsError, UnsafeFileError, check_weight_files

RUN_FILE = "ramit_run.json"
TRAINER_STATE_FILE = "trainer_state.json"
# recipe fields that may change when a run is resumed (they do not change which patches or steps are trained)
RESUMABLE_CHANGES = (
    "max_steps",
    "dataloader_num_workers",
    "logging_steps",
    "image_cache_mb",
    "trace_data",
    "save_total_limit",
    "description",
)


class TrainingSetupError(ValueError):
    """A training run that cannot start (output folder, resume, model); the message says what to do."""


# --------------------------------------------------------------------------------------------------
# output folders and resuming


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-<step>` folders that were written to the end (they have `trainer_state.json`), oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = path.name.rpartition("-")[2]
        if path.is_dir() and step.isdigit() and (path / TRAINER_STATE_FILE).is_file():
            found.append((int(step), path))
    return [path for _, path in sorted(found)]


def incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint folders a killed run left half-written (no `trainer_state.json`)."""
    complete = set(complete_checkpoints(output_dir))
    return [p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir() and p not in complete]


def resolve_resume(output_dir: Path, resume: bool | str | os.PathLike | None) -> Path | None:
    """The checkpoint to resume from: `True` -> the latest complete one in `output_dir`; a path -> that folder."""
    if not resume:
        return None
    if resume is True:
        checkpoints = complete_checkpoints(output_dir)
        if not checkpoints:
            raise TrainingSetupError(f"nothing to resume: {output_dir} has no complete checkpoint-<step> folder")
        path = checkpoints[-1]
    else:
        path = Path(resume)
        if not (path / TRAINER_STATE_FILE).is_file():
            raise TrainingSetupError(
                f"cannot resume from {path}: it is not a complete checkpoint (no {TRAINER_STATE_FILE})"
            )
    try:
        check_weight_files(path)  # the Trainer unpickles optimizer.pt, rng_state.pth, ...: nothing that runs code
    except (UnsafeFileError, DamagedFileError, InvalidWeightsError) as error:
        raise TrainingSetupError(f"cannot resume from {path}: {error}") from None
    _read_json(path / TRAINER_STATE_FILE, f"cannot resume from {path}")
    return path


def _read_json(path: Path, context: str) -> dict:
    """A JSON object from `path`; a `TrainingSetupError` starting with `context` and naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainingSetupError(
            f"{context}: {path} is damaged ({type(error).__name__}: {error}); resume from an earlier checkpoint with "
            "--resume <its folder>, or start over with --overwrite"
        ) from None
    if not isinstance(data, dict):
        raise TrainingSetupError(f"{context}: {path} is damaged (a JSON {type(data).__name__}, not an object)")
    return data


def check_output_dir(output_dir: Path, resuming: bool, overwrite: bool) -> None:
    if resuming or overwrite or not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise TrainingSetupError(f"output path {output_dir} exists and is not a folder")
    if any(output_dir.iterdir()):
        raise TrainingSetupError(
            f"output folder {output_dir} is not empty: continue its run with --resume, or start over with --overwrite"
        )


def clear_folder(folder: Path) -> None:
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def check_resumable(output_dir: Path, run_info: dict) -> None:
    path = output_dir / RUN_FILE
    if not path.is_file():
        raise TrainingSetupError(f"cannot resume in {output_dir}: {RUN_FILE} is missing (not a ramit train run?)")
    saved = _read_json(path, f"cannot resume in {output_dir}")
    changes = []
    for key in ("train_images", "world_size", "gradient_accumulation_steps", "samples_per_epoch"):
        if saved.get(key) != run_info.get(key):
            changes.append(f"{key}: {saved.get(key)} -> {run_info.get(key)}")
    old, new = saved.get("recipe", {}), run_info["recipe"]
    for key in sorted(set(old) | set(new)):
        if key not in RESUMABLE_CHANGES and old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    if changes:
        raise TrainingSetupError(
            f"cannot resume {output_dir} exactly: the run differs from the one that wrote it ({'; '.join(changes)}); "
            "use the same data, recipe and number of processes, or start a new run"
        )
