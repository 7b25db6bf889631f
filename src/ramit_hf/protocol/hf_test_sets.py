"""Benchmark sets from Hugging Face `datasets` (a ``save_to_disk`` folder or a Hub id) with image columns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..image_files import match_name
from .samples import ImageEntry, TestSet, TestSetError, as_uint8_image
from .task_protocol import NOISE

# Column names of a `datasets` dataset, matched case-insensitively.
TARGET_COLUMNS = ("hr", "hq", "gt", "target", "clean", "ground_truth", "image")
INPUT_COLUMNS = ("lr", "lq", "input", "degraded", "noisy", "low")
NAME_COLUMNS = ("name", "file_name", "filename", "image_name", "id")


def load_hf_test_set(source, protocol, name, split, hr_column, lr_column, name_column, make_lr) -> TestSet:
    try:
        import datasets
    except ImportError:
        raise TestSetError(
            f"reading the dataset {source} needs the `datasets` package: pip install 'ramit-hf[eval]'"
        ) from None
    dataset, split = _pick_split(_load_dataset(datasets, source, split), split, source, datasets)

    features = dataset.features
    image_columns = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    for given in (hr_column, lr_column, name_column):
        if given is not None and given not in features:
            raise TestSetError(f"the dataset {source} has no column {given!r} (columns: {', '.join(features)})")
    target_column = hr_column or _pick_column(image_columns, TARGET_COLUMNS, single_ok=True)
    if target_column is None:
        raise TestSetError(
            f"cannot tell which column of {source} holds the ground truth (image columns: "
            f"{', '.join(image_columns) or 'none'}); name it with hr_column"
        )
    input_column = None
    if protocol.degradation != "gaussian-noise" and not make_lr:
        candidates = [c for c in image_columns if c != target_column]
        names = INPUT_COLUMNS
        if protocol.degradation == "bicubic":
            s = protocol.scale
            names = (f"lr_x{s}", f"lq_x{s}", f"lr_{s}x", f"x{s}", *INPUT_COLUMNS)
        input_column = lr_column or _pick_column(candidates, names, single_ok=False)
    if make_lr and (protocol.degradation != "bicubic" or lr_column is not None):
        raise TestSetError("make_lr applies to super-resolution without an LR column")
    if protocol.degradation == "paired" and input_column is None:
        raise TestSetError(
            f"the {protocol.task} protocol needs degraded images, but no column of {source} is recognised as them "
            f"(image columns: {', '.join(image_columns)}); name it with lr_column"
        )
    if name_column is None:
        name_column = next((c for c in features if c.lower() in NAME_COLUMNS and _is_string(features[c])), None)

    columns = [c for c in (target_column, input_column) if c is not None]
    images = dataset.select_columns(columns)
    names = [str(n) for n in dataset[name_column]] if name_column else [f"{i:04d}" for i in range(len(dataset))]
    names = [Path(n).stem if "." in Path(n).name else n for n in names]

    def loader(index: int):
        def load():
            row = images[index]
            what = f"{source}[{index}]"
            target = as_uint8_image(row[target_column], f"{what}[{target_column!r}]")
            degraded = as_uint8_image(row[input_column], f"{what}[{input_column!r}]") if input_column else None
            return target, degraded

        return load

    entries = [ImageEntry(n, loader(i)) for i, n in enumerate(names)]
    if protocol.degradation == "gaussian-noise":
        kind, input_source = "gaussian-noise", NOISE
    elif input_column is None:
        kind, input_source = "imresize", "MATLAB bicubic (ramit_hf.imresize) of the HR mod-cropped"
    else:
        kind = "lr-column" if protocol.degradation == "bicubic" else "lq-column"
        input_source = input_column
    set_name = name or Path(source.rstrip("/")).name
    return TestSet(set_name, source, entries, protocol, kind, input_source, split=split)


def _load_dataset(datasets, source, split):
    try:
        if Path(source).expanduser().is_dir():
            return datasets.load_from_disk(str(Path(source).expanduser()))
        return datasets.load_dataset(source, split=split)
    except Exception as error:  # datasets raises many kinds (ConnectionError offline, DatasetNotFoundError, ...)
        raise TestSetError(f"cannot load the dataset {source!r}: {type(error).__name__}: {error}") from None


def _pick_split(loaded, split, source, datasets):
    if isinstance(loaded, datasets.Dataset):
        if split is not None and loaded.split is not None and str(loaded.split) != split:
            raise TestSetError(f"the dataset {source} holds the split {loaded.split}, not {split!r}")
        return loaded, (str(loaded.split) if loaded.split is not None else split)
    if not isinstance(loaded, datasets.DatasetDict):
        raise TestSetError(f"{source} is a {type(loaded).__name__}, not a dataset of images")
    splits = list(loaded)
    if split is None:
        if len(splits) == 1:
            split = splits[0]
        elif "test" in loaded:
            split = "test"
        else:
            raise TestSetError(f"the dataset {source} has several splits ({', '.join(splits)}); choose one with split")
    if split not in loaded:
        raise TestSetError(f"the dataset {source} has no split {split!r} (splits: {', '.join(splits)})")
    return loaded[split], split


def _pick_column(columns: list[str], names: Sequence[str], single_ok: bool) -> str | None:
    found = match_name(columns, names)
    if found is None and single_ok and len(columns) == 1:
        return columns[0]
    return found


def _is_string(feature) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")
