"""Training and validation images: folders or `datasets` datasets as one `ImageSource`.

Sources are image folders or `datasets` datasets (a Hub id, a `save_to_disk` folder, or a `datasets.Dataset`) with
image columns. They become a `datasets.Dataset` whose rows hold the high-quality image (`hq`), optionally the
low-quality one (`lq`), a `name` and an `index`; images are decoded on the fly through `with_transform`, nothing is
pre-extracted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..decoded_image import pillow_bomb_check_off
from ..image_files import IMAGE_EXTENSIONS, find_subfolder, list_images, match_name
from ..image_io import ImageReadError, decode_image_bytes, load_image, to_channels
from ..pixel_budget import MAX_PIXELS_ENV, max_pixels_for
from .pixels import DataError, pil_to_array, task_scale

# sub-folder names of paired datasets (matched case-insensitively)
HQ_FOLDER_NAMES = ("hq", "hr", "gt", "high", "target", "clean", "groundtruth")
LQ_FOLDER_NAMES = ("lq", "input", "low", "rainy", "noisy", "degraded")
# column names of paired `datasets` datasets, in order of preference
HQ_COLUMNS = ("hq", "hr", "gt", "high", "target", "clean", "image")
LQ_COLUMNS = ("lq", "lr", "input", "low", "rainy", "noisy", "degraded")


# --------------------------------------------------------------------------------------------------
# sources


@dataclass
class ImageSource:
    """Images for one split: `dataset` has columns `hq`, optionally `lq` (both `datasets.Image`), `name` and `index`;
    `sizes[i]` is ((hq height, width), (lq height, width) or None)."""

    dataset: object
    sizes: list
    description: str

    @property
    def has_lq(self) -> bool:
        return "lq" in self.dataset.column_names

    def __len__(self) -> int:
        return len(self.dataset)


def require_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (`image_files.list_images`), but a `DataError` naming the
    folder when it does not exist or holds no image, where `list_images` returns an empty list."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = list_images(folder)
    if not files:
        raise DataError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def folder_layout(folder: str | os.PathLike, task: str) -> tuple[Path, Path | None]:
    """(high-quality folder, low-quality folder or None) of a dataset folder.

    Recognised layouts: `HQ/` + `LQ/` (also GT/target/high + input/low/...); for super-resolution `HR/` +
    `LR_bicubic/X<s>/` (any `LR*/X<s>/`); otherwise the folder itself holds the high-quality images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}")
    hq = find_subfolder(folder, HQ_FOLDER_NAMES)
    if hq is None:
        return folder, None
    scale = task_scale(task)
    if scale > 1:
        candidates = sorted(p for p in folder.glob(f"LR*/X{scale}") if p.is_dir())
        preferred = [p for p in candidates if p.parent.name == "LR_bicubic"]
        if len(candidates) > 1 and not preferred:
            raise DataError(
                f"{folder} has several low-resolution x{scale} folders ({', '.join(str(p) for p in candidates)}); "
                "name one with --train-lq / --val-lq"
            )
        return hq, (preferred or candidates or [None])[0]
    return hq, find_subfolder(folder, LQ_FOLDER_NAMES)


def pair_files(hq_files: Sequence[Path], lq_files: Sequence[Path], scale: int) -> list[tuple[Path, Path]]:
    """Match low-quality to high-quality files by name: the same stem, or `<stem>x<scale>` for super-resolution
    (the DIV2K / benchmark convention). Every file must find its partner."""
    lq_by_stem = {p.stem: p for p in lq_files}
    pairs, missing = [], []
    for hq in hq_files:
        match = lq_by_stem.pop(hq.stem, None)
        if match is None and scale > 1:
            match = lq_by_stem.pop(f"{hq.stem}x{scale}", None)
        if match is None:
            missing.append(hq.name)
        else:
            pairs.append((hq, match))
    if missing or lq_by_stem:
        parts = []
        if missing:
            parts.append(f"no low-quality image for {_listing(missing)}")
        if lq_by_stem:
            parts.append(f"no high-quality image for {_listing([p.name for p in lq_by_stem.values()])}")
        where = f"{hq_files[0].parent} and {lq_files[0].parent}" if hq_files and lq_files else "the pair folders"
        raise DataError(f"low/high-quality names do not match in {where}: " + "; ".join(parts))
    return pairs


def pair_by_position(hq_files: Sequence[Path], lq_files: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Pair the i-th low-quality file with the i-th high-quality one, both in name order (for pairs whose names
    differ, such as LOL + VE-LOL); both folders must hold the same number of images."""
    if len(hq_files) != len(lq_files):
        raise DataError(
            f"position-paired folders differ in length: {hq_files[0].parent} has {len(hq_files)} images, "
            f"{lq_files[0].parent} has {len(lq_files)}; pairing by position needs one low-quality image per "
            "high-quality one"
        )
    return list(zip(hq_files, lq_files, strict=True))


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _image_size(value) -> tuple[int, int]:
    """(height, width) of an undecoded `datasets.Image` value or a PIL image, reading only the header."""
    if isinstance(value, Image.Image):
        return value.height, value.width
    source = value.get("bytes") or value.get("path")
    import io

    with pillow_bomb_check_off(), Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return image.height, image.width  # the header only: check_sizes applies the pixel budget


def _from_files(hq_files, lq_files, names) -> object:
    import datasets

    columns = {"hq": [str(p) for p in hq_files]}
    features = {"hq": datasets.Image()}
    if lq_files is not None:
        columns["lq"] = [str(p) for p in lq_files]
        features["lq"] = datasets.Image()
    columns["name"] = list(names)
    columns["index"] = list(range(len(names)))
    features.update(name=datasets.Value("string"), index=datasets.Value("int64"))
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], source: str):
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{source} has no column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    return match_name(columns, candidates)


def _from_datasets(dataset, source: str, hq_column, lq_column):
    import datasets

    columns = dataset.column_names
    hq = _pick_column(columns, hq_column, HQ_COLUMNS, source)
    if hq is None:
        raise DataError(
            f"{source} has no high-quality image column (looked for {', '.join(HQ_COLUMNS)}; columns: "
            f"{', '.join(columns)}): pass --hq-column"
        )
    lq = _pick_column(columns, lq_column, LQ_COLUMNS, source)
    for column in filter(None, (hq, lq)):
        if not isinstance(dataset.features[column], datasets.Image):
            raise DataError(f"column {column!r} of {source} is not an image column ({dataset.features[column]})")
    keep = [hq] + ([lq] if lq else [])
    names = [str(i) for i in range(len(dataset))]
    out = dataset.select_columns(keep).rename_columns({hq: "hq", **({lq: "lq"} if lq else {})})
    out = out.add_column("name", names).add_column("index", list(range(len(dataset))))
    return out


def load_source(
    data,
    lq: str | os.PathLike | None = None,
    *,
    task: str,
    split: str = "train",
    hq_column: str | None = None,
    lq_column: str | None = None,
    by_position: bool = False,
) -> ImageSource:
    """The images of `data`: a folder (see `folder_layout`), a `datasets` dataset, a `save_to_disk` folder or a Hub
    dataset id, with low-quality images from `lq` (a folder) or the dataset's low-quality column when given.
    Folder pairs match by name, or with `by_position` by their position in name order (`pair_by_position`).

    Raises `DataError` for an empty folder, names that do not pair up, or a missing image column.
    """
    import datasets

    scale = task_scale(task)
    description = str(data)
    if isinstance(data, datasets.DatasetDict):
        data = data[split]
    if isinstance(data, datasets.Dataset):
        dataset = _from_datasets(data, "the given dataset", hq_column, lq_column)
        description = "a datasets.Dataset"
    elif (
        Path(data).is_dir()
        and not (Path(data) / "dataset_info.json").is_file()
        and not (Path(data) / "dataset_dict.json").is_file()
    ):
        hq_dir, lq_dir = folder_layout(data, task)
        lq_dir = Path(lq) if lq is not None else lq_dir
        hq_files = require_images(hq_dir)
        if lq_dir is not None:
            lq_files = require_images(lq_dir)
            pairs = pair_by_position(hq_files, lq_files) if by_position else pair_files(hq_files, lq_files, scale)
            dataset = _from_files([h for h, _ in pairs], [lq for _, lq in pairs], [h.stem for h, _ in pairs])
            description = f"{hq_dir} + {lq_dir}"
        else:
            dataset = _from_files(hq_files, None, [p.stem for p in hq_files])
            description = str(hq_dir)
    else:
        path = Path(data)
        try:
            if path.is_dir():
                loaded = datasets.load_from_disk(str(path))
            elif _looks_local(str(data)):
                raise DataError(f"data not found: {data}")
            else:
                loaded = datasets.load_dataset(str(data), split=split)
        except DataError:
            raise
        except Exception as error:  # datasets raises many error types for missing / malformed sources
            raise DataError(f"cannot load the dataset {data!r}: {error}") from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{data} has no split {split!r} (splits: {', '.join(loaded)})")
            loaded = loaded[split]
        dataset = _from_datasets(loaded, str(data), hq_column, lq_column)
        if lq is not None:
            raise DataError("--train-lq/--val-lq take folders; for a dataset name its low-quality column instead")
    if len(dataset) == 0:
        raise DataError(f"{description} holds no images")
    return ImageSource(dataset=dataset, sizes=_scan_sizes(dataset, description), description=description)


def _looks_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.count("/") > 1


def _scan_sizes(dataset, description: str = "the data") -> list:
    """[(HQ (height, width), LQ (height, width) or None)] from the images' headers; every image within the pixel
    budget is also decoded once, as training decodes it, so that a damaged one stops the run before its first step
    with its name (images above the budget are left undecoded for `check_sizes` to refuse)."""
    import datasets

    raw = dataset.cast_column("hq", datasets.Image(decode=False))
    if "lq" in dataset.column_names:
        raw = raw.cast_column("lq", datasets.Image(decode=False))
    budget = max_pixels_for()
    sizes, broken = [], []
    for row in raw:
        try:
            hq = _image_size(row["hq"])
            lq = _image_size(row["lq"]) if "lq" in row else None
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read image {row['name']!r}: {error}") from None
        sizes.append((hq, lq))
        for key, size in (("hq", hq), ("lq", lq)):
            if size is not None and not (budget and size[0] * size[1] > budget):
                problem = _decode_problem(row[key], row["name"])
                if problem is not None:
                    broken.append(problem)
    if broken:
        raise DataError(
            f"images that cannot be decoded in {description}: {_listing(broken, 10)}; remove or replace them (nothing "
            "was trained)"
        )
    return sizes


def _decode_problem(value, name: str) -> str | None:
    """Why an undecoded `datasets.Image` value cannot be decoded by `image_io` (naming its file), or None."""
    try:
        if value.get("bytes"):
            decode_image_bytes(value["bytes"], value.get("path") or name, max_pixels=0)
        else:
            load_image(value["path"], max_pixels=0)
    except ImageReadError as error:
        return str(error)
    return None


def check_sizes(source: ImageSource, task: str, patch_size: int | None = None) -> None:
    """Raise `DataError` for images above the pixel budget, pairs whose sizes do not fit together, or images smaller
    than `patch_size` (an input patch side), naming every offending image (up to 10)."""
    scale = task_scale(task)
    mismatched, small, huge = [], [], []
    budget = max_pixels_for()
    names = source.dataset["name"]
    for name, (hq, lq) in zip(names, source.sizes, strict=True):
        if budget and hq[0] * hq[1] > budget:
            huge.append(f"{name} ({hq[1]}x{hq[0]})")
        if lq is not None:
            if scale == 1 and lq != hq:
                mismatched.append(f"{name} (HQ {hq[1]}x{hq[0]}, LQ {lq[1]}x{lq[0]})")
            elif scale > 1 and any(
                side_lr not in (side // scale, math.ceil(side / scale)) for side, side_lr in zip(hq, lq, strict=True)
            ):
                mismatched.append(
                    f"{name} (HR {hq[1]}x{hq[0]}, LR {lq[1]}x{lq[0]}; expected {hq[1] // scale}x{hq[0] // scale})"
                )
        input_side = min(hq) // scale
        if patch_size is not None and input_side < patch_size:
            small.append(f"{name} ({hq[1]}x{hq[0]})")
    if huge:
        raise DataError(
            f"images above the pixel budget of {budget:,} in {source.description}: {_listing(huge, 10)} (read from "
            f"their headers; nothing was decoded); raise it with {MAX_PIXELS_ENV} (0 for no limit) if there is memory"
        )
    if mismatched:
        raise DataError(f"image sizes do not match in {source.description}: {_listing(mismatched, 10)}")
    if small:
        need = f"{patch_size * scale} px" + (f" (input patches of {patch_size} px at x{scale})" if scale > 1 else "")
        raise DataError(
            f"images smaller than the training patch in {source.description}: {_listing(small, 10)}; every side must "
            f"be at least {need} (drop them, or lower patch_sizes)"
        )


class DecodeImages:
    """`with_transform` function: decoded HWC uint8/uint16 arrays with the task's channels (`hq`, `lq`)."""

    def __init__(self, num_channels: int):
        self.num_channels = num_channels

    def __call__(self, batch: dict) -> dict:
        out = {key: value for key, value in batch.items() if key not in ("hq", "lq")}
        for key in ("hq", "lq"):
            if key in batch:
                out[key] = [to_channels(pil_to_array(image), self.num_channels) for image in batch[key]]
        return out
