"""Checks of weight and checkpoint files before anything reads them for real: a damaged file is a named error, and
a pickle that would run code is refused without being run.

PyTorch's `weights_only=True` loader already refuses such pickles, but its message suggests retrying with
`weights_only=False`, which is exactly what must not be done with a file that holds code; the errors here say what
the file holds and that it was refused.
"""

from __future__ import annotations

import hashlib
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


class InvalidWeightsError(ValueError):
    """Weights that no network computes an image from: integer or boolean tensors, NaN or infinity, tensors with
    no element or no dimension; the message names the source and the first such tensor."""


# the floating-point dtypes weights are stored in (safetensors header names), and the names of others as torch says
_FLOAT_HEADER_DTYPES = ("F16", "BF16", "F32", "F64")
_HEADER_DTYPE_NAMES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}


def check_weight_values(weights, source: str) -> None:
    """The one check every loader runs on weights before a model uses them (the converter, spandrel, from_pretrained,
    `ramit restore`): each tensor floating point, with at least one dimension and one element, and finite.
    Raises `InvalidWeightsError` naming `source` and the tensor."""
    for key, tensor in weights.items():
        if not tensor.is_floating_point():
            raise InvalidWeightsError(
                f"{source}: {key} holds {str(tensor.dtype).removeprefix('torch.')} values; RAMiT's weights are "
                "floating point (a quantised or foreign file?)"
            )
        if tensor.ndim == 0 or tensor.numel() == 0:
            raise InvalidWeightsError(f"{source}: {key} has shape {tuple(tensor.shape)}, with no weights in it")
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise InvalidWeightsError(
                f"{source}: {key} holds {bad} non-finite values (NaN or infinity) of {tensor.numel()}: the weights "
                "are broken (a diverged training run or a damaged file); every image would come out NaN"
            )


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


# The `__metadata__` entry of the safetensors files the library writes: the SHA-256 of their tensor data, so that a
# file damaged after it was written (a bad disk, a broken transfer, an edit) is a named error rather than an image
# restored with broken weights.
DIGEST_KEY = "ramit_hf.sha256"


def _read_safetensors_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        if header_size > path.stat().st_size - 8:
            raise ValueError("header larger than the file")
        header = json.loads(file.read(header_size))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header_size, header


def _data_digest(path: Path, offset: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        file.seek(offset)
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def stamp_safetensors_digest(path: str | os.PathLike) -> None:
    """Record the SHA-256 of a `.safetensors` file's tensor data in its header (`DIGEST_KEY`), rewriting the file
    atomically; `check_safetensors_file` verifies it on every load."""
    path = Path(path)
    header_size, header = _read_safetensors_header(path)
    header.setdefault("__metadata__", {})[DIGEST_KEY] = _data_digest(path, 8 + header_size)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    with open(path, "rb") as file:
        file.seek(8 + header_size)
        data = file.read()
    temporary = path.with_name(f".{path.name}.digest")
    temporary.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    os.replace(temporary, path)


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Read the header of a `.safetensors` file and check that the file holds every byte it announces, that its
    tensors are floating point, and, where the library recorded one, that its data still has its digest."""
    path = Path(path)
    size = path.stat().st_size
    try:
        header_size, header = _read_safetensors_header(path)
        entries = {key: entry for key, entry in header.items() if key != "__metadata__"}
        ends = [entry["data_offsets"][1] for entry in entries.values()]
        dtypes = {key: entry["dtype"] for key, entry in entries.items()}
    except (struct.error, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as error:
        raise DamagedFileError(f"{path}: not a valid safetensors file ({error})") from None
    foreign = next(((key, dtype) for key, dtype in dtypes.items() if dtype not in _FLOAT_HEADER_DTYPES), None)
    if foreign is not None:
        raise InvalidWeightsError(
            f"{path}: {foreign[0]} holds {_HEADER_DTYPE_NAMES.get(foreign[1], foreign[1])} values; RAMiT's weights "
            "are floating point (a quantised or foreign file?)"
        )
    expected = 8 + header_size + max(ends, default=0)
    if size < expected:
        raise DamagedFileError(
            f"{path}: truncated safetensors file ({size:,} bytes of the {expected:,} its header announces)"
        )
    metadata = header.get("__metadata__")
    recorded = metadata.get(DIGEST_KEY) if isinstance(metadata, dict) else None
    if recorded is not None and recorded != _data_digest(path, 8 + header_size):
        raise DamagedFileError(
            f"{path}: the weights changed since ramit_hf wrote them (their SHA-256 differs from the one recorded in "
            "the file): the file was damaged on disk or in transfer, or edited; download or convert it again"
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


__all__ = [
    "DamagedFileError",
    "InvalidWeightsError",
    "UnsafeFileError",
    "check_safetensors_file",
    "check_weight_files",
    "check_weight_values",
    "load_torch_file",
    "stamp_safetensors_digest",
]
