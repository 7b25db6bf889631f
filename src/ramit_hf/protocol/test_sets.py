"""Benchmark sets from image folders: `TestSet` and `load_test_set`.

A folder holds ``HR/`` (or ``HQ/``, ``GT/``) with an optional ``LR*/X<s>/`` or ``LQ/`` beside it, or is itself a
folder of images; `datasets` datasets (a ``save_to_disk`` folder or a Hub id) are read by
:mod:`ramit_hf.protocol.hf_test_sets`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..image_files import IMAGE_EXTENSIONS, find_subfolder, list_images
from .hf_test_sets import load_hf_test_set
from .samples import ImageEntry, TestSet, TestSetError, read_image
from .task_protocol import NOISE, Protocol

# Sub-folder names of a test-set folder, matched case-insensitively, in order of preference.
TARGET_FOLDERS = ("HR", "HQ", "GT", "target", "clean")
PAIRED_INPUT_FOLDERS = ("LQ", "LR", "input", "degraded")
# Column names of a `datasets` dataset, matched case-insensitively.


def load_test_set(
    source: str | os.PathLike,
    protocol: Protocol,
    *,
    name: str | None = None,
    lr_dir: str | os.PathLike | None = None,
    make_lr: bool = False,
    split: str | None = None,
    hr_column: str | None = None,
    lr_column: str | None = None,
    name_column: str | None = None,
) -> TestSet:
    """A test set for `protocol` from a folder, a `datasets` folder (`save_to_disk`) or a Hub dataset id.

    Folders: `source` holds `HR/` (or `HQ/`, `GT/`, ...) or is itself a folder of images. The degraded inputs:

    * super-resolution: `lr_dir` if given; else the single `LR*/X<s>/` folder beside `HR/` (e.g.
      `Set5/LR_bicubic/X4/`); else (or with `make_lr`) bicubic downscaling of the mod-cropped HR. LR files are
      matched by name: `<name>x<s>.<ext>` or `<name>.<ext>`;
    * denoising: none are read (noise is added to the clean image);
    * low-light / deraining: `lr_dir` or the `LQ/` (or `LR/`, `input/`) folder beside `HQ/`, matched by name.

    `datasets` datasets: `split` picks a split (default: the only one, else `test`); `hr_column`, `lr_column` and
    `name_column` name the columns where the defaults (see `TARGET_COLUMNS`, `INPUT_COLUMNS`, `NAME_COLUMNS`, and
    `lr_x<s>` for super-resolution) do not find them. `name` overrides the set's name (default: the folder or
    dataset name). Raises :class:`TestSetError` naming the problem.
    """
    if not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a Protocol, got {type(protocol).__name__}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return load_hf_test_set(text, protocol, name, split, hr_column, lr_column, name_column, make_lr)
        if any(v is not None for v in (split, hr_column, lr_column, name_column)):
            raise TestSetError(f"{text} is an image folder; split and column options apply to `datasets` datasets only")
        return _load_folder(path, text, protocol, name, lr_dir, make_lr)
    if path.exists():
        raise TestSetError(f"{text} is not a folder of images or a `datasets` folder")
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise TestSetError(f"dataset not found: {text}")
    if lr_dir is not None:
        raise TestSetError("lr_dir applies to image folders only; use lr_column for a Hub dataset")
    return load_hf_test_set(text, protocol, name, split, hr_column, lr_column, name_column, make_lr)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _load_folder(path: Path, source: str, protocol: Protocol, name: str | None, lr_dir, make_lr: bool) -> TestSet:
    if list_images(path):
        target_dir, root = path, path
        set_name = path.resolve().parent.name if path.name.lower() in (t.lower() for t in TARGET_FOLDERS) else path.name
    else:
        target_dir = find_subfolder(path, TARGET_FOLDERS)
        if target_dir is None:
            raise TestSetError(
                f"{source} has no images and no ground-truth folder (one of {', '.join(TARGET_FOLDERS)})"
            )
        root, set_name = path, path.resolve().name
    targets = list_images(target_dir)
    if not targets:
        raise TestSetError(f"{target_dir} has no images ({', '.join(IMAGE_EXTENSIONS)})")

    input_dir = _find_input_folder(root, target_dir, protocol, lr_dir, make_lr)
    if input_dir is None:
        entries = [ImageEntry(p.stem, _folder_loader(p, None)) for p in targets]
        kind = "gaussian-noise" if protocol.degradation == "gaussian-noise" else "imresize"
        input_source = NOISE if kind == "gaussian-noise" else "MATLAB bicubic (ramit_hf.imresize) of the HR mod-cropped"
    else:
        inputs = _index_by_stem(input_dir)
        entries = []
        for target in targets:
            match = _match_input(target.stem, inputs, protocol)
            if match is None:
                expected = f"{target.stem}x{protocol.scale} or {target.stem}" if protocol.scale > 1 else target.stem
                raise TestSetError(f"no input image for {target.name} in {input_dir} (looked for {expected}.*)")
            entries.append(ImageEntry(target.stem, _folder_loader(target, match)))
        kind = "lr-folder" if protocol.degradation == "bicubic" else "lq-folder"
        input_source = _relative(input_dir, root)
    return TestSet(name or set_name, source, entries, protocol, kind, input_source)


def _find_input_folder(root: Path, target_dir: Path, protocol: Protocol, lr_dir, make_lr: bool) -> Path | None:
    if protocol.degradation == "gaussian-noise":
        if lr_dir is not None:
            raise TestSetError("denoising adds noise to the clean images; lr_dir does not apply")
        return None
    if lr_dir is not None:
        if make_lr:
            raise TestSetError("choose either lr_dir or make_lr, not both")
        folder = Path(lr_dir).expanduser()
        if not folder.is_dir():
            raise TestSetError(f"input folder not found: {lr_dir}")
        return folder
    if protocol.degradation == "bicubic":
        if make_lr or root == target_dir:
            return None
        scale = protocol.scale
        found = sorted(
            p
            for p in root.glob("*/*")
            if p.is_dir() and p.parent.name.lower().startswith("lr") and p.name.lower() == f"x{scale}"
        )
        if len(found) > 1:
            listed = ", ".join(_relative(p, root) for p in found)
            raise TestSetError(f"{root} has several LR folders for x{scale} ({listed}); choose one with lr_dir")
        return found[0] if found else None
    if make_lr:
        raise TestSetError(f"make_lr applies to super-resolution only, not to the task {protocol.task!r}")
    folder = find_subfolder(root, PAIRED_INPUT_FOLDERS) if root != target_dir else None
    if folder is None:
        raise TestSetError(
            f"the {protocol.task} protocol needs degraded images: {root} has no "
            f"{'/'.join(PAIRED_INPUT_FOLDERS)} folder beside {target_dir.name}/ (or pass lr_dir)"
        )
    return folder


def _index_by_stem(folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in list_images(folder):
        index.setdefault(path.stem, path)
    return index


def _match_input(stem: str, inputs: dict[str, Path], protocol: Protocol) -> Path | None:
    if protocol.scale > 1:
        for candidate in (f"{stem}x{protocol.scale}", f"{stem}X{protocol.scale}"):
            if candidate in inputs:
                return inputs[candidate]
    return inputs.get(stem)


def _folder_loader(target: Path, degraded: Path | None):
    def load():
        return read_image(target), (read_image(degraded) if degraded is not None else None)

    return load


# `datasets` datasets
