"""Finding image files: the extensions read and written, folder listings and walks, globs, and the conventional
sub-folder names of image datasets. Walks never enter symlinked folders, so a link to a parent cannot loop.

This file ships with the pipeline to Hub folders (through `image_io`): it imports only the standard library.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator
from pathlib import Path

# Extensions of image files: what `ramit restore`, test sets and training data pick up in folders (and globs).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".tga")
# Formats that store pixels exactly; restored images keep these extensions, others (JPEG, WebP) are written as PNG.
LOSSLESS_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".tga")


def is_image_file(path: Path) -> bool:
    """A regular file with one of `IMAGE_EXTENSIONS` (any case)."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def walk_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every file under `root`, recursively, in a stable order. Symlinked folders are not entered (a link to a
    parent would loop for ever); symlinked files are listed."""
    for folder, subfolders, files in os.walk(os.fspath(root), followlinks=False):
        subfolders.sort()
        for name in sorted(files):
            yield Path(folder) / name


def glob_files(pattern: str) -> tuple[Path, list[Path]]:
    """(the pattern's fixed leading folder, the files matching it), `**` spanning folders as in `glob`, without
    entering symlinked folders (see `walk_files`)."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    wanted = [re.compile(fnmatch.translate(part)) for part in parts[fixed:]]
    if not base.is_dir():
        return base, []
    return base, [path for path in walk_files(base) if _match_parts(path.relative_to(base).parts, wanted)]


def _match_parts(parts: tuple[str, ...], pattern: list) -> bool:
    if not pattern:
        return not parts
    if pattern[0].pattern == fnmatch.translate("**"):
        return any(_match_parts(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and bool(pattern[0].match(parts[0])) and _match_parts(parts[1:], pattern[1:])


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (`is_image_file`) directly inside `folder`, sorted by name; possibly none."""
    return sorted(path for path in Path(folder).iterdir() if is_image_file(path))


def match_name(names, candidates) -> str | None:
    """The first of `candidates` that is among `names`, compared case-insensitively, spelled as in `names`.

    Finds the conventional folders (`HR/`, `LQ/`, ...) and columns (`hr`, `lq`, ...) of image datasets.
    """
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    return next((by_lower[c.lower()] for c in candidates if c.lower() in by_lower), None)


def find_subfolder(folder: str | os.PathLike, candidates) -> Path | None:
    """The sub-folder of `folder` named like the first of `candidates` that exists (case-insensitively), or None."""
    subfolders = {path.name: path for path in Path(folder).iterdir() if path.is_dir()}
    name = match_name(subfolders, candidates)
    return subfolders[name] if name is not None else None


# ----------------------------------------------------------------------------------------------
# pixel formats of decoded arrays


__all__ = [
    "IMAGE_EXTENSIONS",
    "LOSSLESS_EXTENSIONS",
    "find_subfolder",
    "glob_files",
    "is_image_file",
    "list_images",
    "match_name",
    "walk_files",
]
