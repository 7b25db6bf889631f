"""Checks of weight and checkpoint files before anything reads them for real: a damaged file is a named error, and
a pickle that would run code is refused without being run.

PyTorch's `weights_only=True` loader already refuses such pickles, but its message suggests retrying with
`weights_only=False`, which is exactly what must not be done with a file that holds code; the errors here say what
the file holds and that it was refused.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch


class UnsafeFileError(ValueError):
    """A file that holds code (a pickle calling functions when loaded): refused, never loaded."""


class DamagedFileError(ValueError):
    """A weight or checkpoint file that is truncated, corrupt or not of its kind; the message names it."""


# what the Trainer's own checkpoint files pickle besides tensors: numpy's random state in rng_state.pth
_NUMPY_GLOBALS = [np.ndarray, np.dtype, np.random.RandomState, np.dtypes.UInt32DType]
_RECONSTRUCT = getattr(np, "_core", np).multiarray._reconstruct


def load_torch_file(path: str | os.PathLike, what: str = "the file"):
    """`torch.load(path, weights_only=True)` on the CPU, with named errors (`UnsafeFileError`, `DamagedFileError`)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals([*_NUMPY_GLOBALS, _RECONSTRUCT]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        imports = _pickle_imports(path)
        if imports is None:
            raise DamagedFileError(
                f"{path}: {what} is not a PyTorch file (neither torch.save's zip format nor a pickle)"
            ) from None
        if not imports:
            raise DamagedFileError(
                f"{path}: {what} is a pickle that imports nothing, in a form PyTorch's safe loader does not read "
                "(save it with torch.save)"
            ) from None
        # the loader allows tensors' and random states' own types, all from these modules: the first import outside
        # them is what the file would call
        culprit = next((name for name in imports if not name.startswith(("torch.", "collections.", "numpy."))), None)
        raise UnsafeFileError(
            f"{path}: refused: {what} holds code, not only tensors and plain data"
            + (f" (it would call {culprit} when loaded)" if culprit else "")
            + "; it was not loaded. Use a file from a source you trust, or one saved as .safetensors"
        ) from None
    except FileNotFoundError:
        raise DamagedFileError(f"{path}: no such file") from None
    except Exception as error:  # zip, EOF and format errors of truncated or foreign files
        raise DamagedFileError(
            f"{path}: {what} is truncated, corrupt or not a PyTorch file ({type(error).__name__})"
        ) from None


def _pickle_imports(path: Path) -> list[str] | None:
    """What the pickle in a file would import, read from its opcodes without running them (torch.save's zip format:
    its data.pkl); None when the file does not start as a pickle at all (an image, random bytes, ...)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return None
                with archive.open(member) as stream:
                    return _scan_pickles(stream)
        with open(path, "rb") as stream:
            return _scan_pickles(stream)
    except (OSError, zipfile.BadZipFile, EOFError):
        return None


def _scan_pickles(stream) -> list[str] | None:
    imports: list[str] = []
    strings: list[str] = []
    parsed = False
    # a legacy torch file is several pickles in a row, then raw storage bytes: read pickles until one does not parse
    # (or the file ends)
    while True:
        try:
            for opcode, argument, _ in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    imports.append(str(argument).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL":
                    imports.append(".".join(strings[-2:]) if len(strings) >= 2 else "a function")
                elif isinstance(argument, str):
                    strings.append(argument)
        except Exception:  # not (or no longer) a pickle stream
            return imports if parsed else None
        parsed = True


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Read the header of a `.safetensors` file and check that the file holds every byte it announces."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as file:
            (header_size,) = struct.unpack("<Q", file.read(8))
            if header_size > size - 8:
                raise ValueError("header larger than the file")
            header = json.loads(file.read(header_size))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (struct.error, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as error:
        raise DamagedFileError(f"{path}: not a valid safetensors file ({error})") from None
    expected = 8 + header_size + max(ends, default=0)
    if size < expected:
        raise DamagedFileError(
            f"{path}: truncated safetensors file ({size:,} bytes of the {expected:,} its header announces)"
        )


# Written by transformers' Trainer beside checkpoints as a record, and never loaded by it or by us (it pickles the
# TrainingArguments object, so it would not pass the check).
NEVER_LOADED = ("training_args.bin",)


def check_weight_files(folder: str | os.PathLike) -> None:
    """Check every weight and checkpoint file in `folder` (`*.safetensors`, `*.bin`, `*.pt`, `*.pth`) but
    `NEVER_LOADED`."""
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.name in NEVER_LOADED:
            continue
        if path.suffix.lower() == ".safetensors":
            check_safetensors_file(path)
        elif path.suffix.lower() in (".bin", ".pt", ".pth"):
            load_torch_file(path, f"the checkpoint file {path.name}")


__all__ = ["DamagedFileError", "UnsafeFileError", "check_safetensors_file", "check_weight_files", "load_torch_file"]
