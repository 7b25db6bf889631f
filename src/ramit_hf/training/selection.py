"""Validation sets and model selection: the sets' names, published benchmarks, overlap with the training data,
and the metric a kept-best run selects on.

The original keeps the last epoch's weights and only logs validation; so does `ramit train` by default. Keeping the
best checkpoint is an explicit choice (`keep_best`), and choosing it on a published test set makes that set's
numbers optimistic: such sets are recognised by name, warned about, and named in the model card.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

from .pixels import DataError
from .sources import HQ_FOLDER_NAMES, ImageSource

# published test sets of super-resolution, denoising, low-light enhancement and deraining (lower-case, no
# punctuation); a validation set of one of these names is a benchmark
BENCHMARKS = {
    "set5": "Set5",
    "set14": "Set14",
    "bsd100": "BSD100",
    "b100": "B100",
    "urban100": "Urban100",
    "manga109": "Manga109",
    "mcmaster": "McMaster",
    "mcmaster18": "McMaster",
    "cbsd68": "CBSD68",
    "kodak24": "Kodak24",
    "kodak": "Kodak",
    "lol": "LOL",
    "rain100h": "Rain100H",
    "rain100l": "Rain100L",
    "test100": "Test100",
}
METRICS = {"psnr": True, "ssim": True, "l1": False, "loss": False}  # name -> greater is better


class BenchmarkValidationWarning(UserWarning):
    """Validation on a published benchmark: selecting a model on it makes its numbers there optimistic."""


def set_name(data) -> str:
    """A short metric-friendly name of a validation source: the folder's name (its parent's for `HR/`, `HQ/`, ...)
    or a dataset id's last part, lower case (`../testsets/Set5/HR` -> `set5`)."""
    if not isinstance(data, (str, os.PathLike)):
        return "val"
    path = Path(os.fspath(data).rstrip("/"))
    name = path.name
    if name.lower() in HQ_FOLDER_NAMES and path.parent.name:
        name = path.parent.name
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "val"


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def benchmark_of(name: str) -> str | None:
    """The published benchmark a set name is, or None (`set5` -> `Set5`, `urban100_2` -> `Urban100`)."""
    key = re.sub(r"[^a-z0-9]", "", re.sub(r"_\d+$", "", name.lower()))
    return BENCHMARKS.get(key)


def warn_benchmarks(names: list[str], keep_best: bool) -> list[str]:
    """Warn about validation sets that are published benchmarks; returns their benchmark names."""
    found = sorted({b for b in map(benchmark_of, names) if b is not None})
    if found:
        consequence = (
            "the kept checkpoint is chosen on it, so its numbers there are optimistic"
            if keep_best
            else "it is only logged (the final weights are delivered); keep it out of model selection"
        )
        warnings.warn(
            f"validating on the benchmark test set(s) {', '.join(found)}: {consequence}; report benchmark results "
            "on sets the run never saw",
            BenchmarkValidationWarning,
            stacklevel=3,
        )
    return found


def best_metric_key(metric: str, set_keys: list[str]) -> tuple[str, bool]:
    """(`eval_...` metric name, greater is better) of `keep_best`'s metric: `psnr` / `ssim` / `l1` / `loss` on the
    first validation set, or a full name such as `set12_s25_psnr`."""
    name = metric.removeprefix("eval_")
    if name in METRICS:
        return f"eval_{set_keys[0]}_{name}", METRICS[name]
    for key in set_keys:
        for measure, greater in METRICS.items():
            if name == f"{key}_{measure}":
                return f"eval_{name}", greater
    choices = [f"{k}_{m}" for k in set_keys for m in METRICS]
    raise DataError(f"best_metric {metric!r} is not a validation metric; choose {', '.join([*METRICS, *choices])}")


# --------------------------------------------------------------------------------------------------
# overlap between training and validation data


def _raw_images(source: ImageSource, column: str = "hq") -> list:
    import datasets

    dataset: datasets.Dataset = source.dataset
    return list(dataset.cast_column(column, datasets.Image(decode=False))[column])


def _size(value) -> int:
    if value.get("bytes") is not None:
        return len(value["bytes"])
    return os.path.getsize(value["path"])


def _digest(value) -> str:
    if value.get("bytes") is not None:
        return hashlib.sha256(value["bytes"]).hexdigest()
    digest = hashlib.sha256()
    with open(value["path"], "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _label(value) -> str:
    return str(value.get("path") or "an image held in the dataset")


def check_disjoint(train: ImageSource, val: ImageSource) -> None:
    """Raise `DataError` when a validation image is also a training image (the same file content).

    File sizes are compared first, so only training files as large as some validation file are read."""
    val_images = _raw_images(val)
    by_size: dict[int, list] = {}
    for value in val_images:
        by_size.setdefault(_size(value), []).append(value)
    candidates = [value for value in _raw_images(train) if _size(value) in by_size]
    if not candidates:
        return
    val_digests = {_digest(v): v for size in {_size(c) for c in candidates} for v in by_size[size]}
    shared = [(c, val_digests[d]) for c in candidates if (d := _digest(c)) in val_digests]
    if shared:
        listing = "; ".join(f"{_label(t)} = {_label(v)}" for t, v in shared[:5])
        more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
        raise DataError(
            f"{len(shared)} validation image(s) of {val.description} are also training images of "
            f"{train.description} (same file content): {listing}{more}; validate on images the run does not train on"
        )
