"""Atomic writes: a file or a folder appears complete under its name, or not at all.

Everything is written beside its destination (same folder, so the same file system) under a hidden temporary name
and then renamed into place, so an interrupted run, a crash or a failing writer leaves nothing half-written, and a
reader never sees a partial file. Nothing existing is replaced without `overwrite=True`:

* files (:func:`write_file_atomic`, :func:`write_bytes_atomic`, :func:`write_text_atomic`): without `overwrite` the
  temporary file is hard-linked to the destination, which fails if something appeared there meanwhile (no window
  between the check and the write); where the file system has no hard links, it is checked and then renamed;
* folders (:func:`atomic_folder`): an existing non-empty folder (or a file) is replaced only with `overwrite`; an
  empty one is replaced.

Files and folders get the permissions plainly created ones get (the process umask), not the private ones of
`tempfile`. This file ships with the pipeline to Hub folders (`image_io` uses it), so it imports only the standard
library.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

# ".<name>.<host>-<pid>.<8 hex>.<kind>": hidden, unique to this process and call, and recognisable afterwards
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)\.[0-9a-f]{8}\.(tmp|staging|old)$")
_CLEANED: set[Path] = set()


def _temporary_path(destination: Path, kind: str) -> Path:
    """A hidden name beside `destination`, unique to this process and call."""
    _remove_stale_temporaries(destination.parent)
    return destination.with_name(f".{destination.name}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.{kind}")


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove what writers killed mid-write left in `folder` (once per folder and process): only files and folders
    named as this module names them, made on this host by a process that no longer runs."""
    folder = folder.resolve()
    if folder in _CLEANED or not folder.is_dir():
        return
    _CLEANED.add(folder)
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or match["host"] != _HOST or _is_running(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _is_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True
    return True


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _file_exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"{path} already exists (pass overwrite=True / --overwrite to replace it)")


def write_file_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None], overwrite: bool = False) -> Path:
    """Create `path` with the bytes `write(file)` writes into a binary file object, atomically.

    An existing `path` raises `FileExistsError` unless `overwrite`, checked before `write` is called and again,
    atomically, when the file is put in place. Parent folders are created.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise _file_exists_error(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_path(path, "tmp")
    try:
        with open(temporary, "xb") as file:  # "x": never another writer's file; mode from the umask
            write(file)
            file.flush()
            os.fsync(file.fileno())
        _move_file_into_place(temporary, path, overwrite)
    except OSError as error:
        if error.errno is None or error.filename not in (None, str(temporary), temporary):
            raise
        # a full disk, a quota, a file size limit: named by the destination, not by the temporary file (removed)
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _move_file_into_place(temporary: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails if path exists, with no window between the check and the write
    except FileExistsError:
        raise _file_exists_error(path) from None
    except OSError:
        # no hard links here (e.g. some network or FAT file systems): check, then rename
        if path.exists():
            raise _file_exists_error(path) from None
        os.replace(temporary, path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write `data` to `path` atomically; see :func:`write_file_atomic`."""

    def write(file: BinaryIO) -> None:
        file.write(data)

    return write_file_atomic(path, write, overwrite=overwrite)


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = False, encoding: str = "utf-8") -> Path:
    """Write `text` (encoded with `encoding`) to `path` atomically; see :func:`write_file_atomic`."""
    return write_bytes_atomic(path, text.encode(encoding), overwrite=overwrite)


def check_folder_free(destination: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise `FileExistsError` if `destination` is a file or a non-empty folder and not `overwrite`."""
    destination = Path(destination)
    if overwrite or not destination.exists():
        return
    if not destination.is_dir() or any(destination.iterdir()):
        raise FileExistsError(
            f"{destination} already exists and is not empty; replace it with overwrite=True (--overwrite)"
        )


@contextlib.contextmanager
def atomic_folder(destination: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Fill a staging folder beside `destination`; renamed to `destination` when the `with` block succeeds.

    `with atomic_folder(path) as staging: ...` writes into `staging`; if the block raises, the staging folder is
    removed and `destination` is left as it was. An existing file or non-empty folder at `destination` raises
    `FileExistsError` (before the block runs) unless `overwrite`; it is replaced only once the new folder is
    complete.
    """
    destination = Path(destination)
    check_folder_free(destination, overwrite)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_path(destination, "staging")
    os.mkdir(staging)  # mode 0o777 less the umask: the folder is meant to be shared, as a plain mkdir makes it
    try:
        yield staging
        # writers such as safetensors create private (0600) files; the folder's files get the mode of any other
        mode = _default_file_mode()
        for path in staging.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.chmod(mode)
        check_folder_free(destination, overwrite)  # something may have appeared while the block ran
        if destination.exists():
            old = _temporary_path(destination, "old")
            destination.rename(old)
            staging.rename(destination)
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        else:
            staging.rename(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


__all__ = [
    "atomic_folder",
    "check_folder_free",
    "write_bytes_atomic",
    "write_file_atomic",
    "write_text_atomic",
]
