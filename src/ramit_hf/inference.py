"""Loading a model from any source, and the one path every wrapper restores an image tensor through."""

from __future__ import annotations

import ctypes
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .configuration_ramit import RamitConfig
from .errors import ModelLoadError
from .forward import model_placement, restore_whole
from .modeling_ramit import RamitForImageRestoration, resolve_computation
from .safe_files import DamagedFileError, InvalidWeightsError, UnsafeFileError, check_weight_files
from .tiling import restore_tiled

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


RUNTIMES = ("torch", "onnxruntime")


def load_model(
    source: str | os.PathLike | RamitForImageRestoration,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    task: str | None = None,
    runtime: str | None = None,
) -> RamitForImageRestoration:
    """A RAMiT model in eval mode from a model folder, a Hub id, an original `.pth` checkpoint, or a model.

    `task` is only needed for an original checkpoint whose name and weights do not tell it. An `.onnx` file from
    `ramit_hf.export_onnx` gives an `OnnxRamitModel` (ONNX Runtime), which the restoration path takes as well;
    `runtime` ("torch" or "onnxruntime"; default: from the source) insists on one.
    """
    if runtime not in (None, *RUNTIMES):
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if isinstance(source, (str, os.PathLike)):
        is_onnx = Path(source).suffix.lower() == ".onnx"
        model = _load_onnx(Path(source)) if is_onnx and runtime != "torch" else None
    elif isinstance(source, RamitForImageRestoration):
        is_onnx, model = False, source
    else:
        if not isinstance(source, _onnx_runtime().OnnxRamitModel):
            raise ModelLoadError(f"{type(source).__name__} is not a RAMiT model")
        is_onnx, model = True, source
    if runtime is not None and is_onnx != (runtime == "onnxruntime"):
        need = "a PyTorch model" if is_onnx else "an .onnx file (export one with `ramit export MODEL -o OUT.onnx`)"
        raise ModelLoadError(f"runtime {runtime!r} needs {need}; {source} is not one")
    if model is None:
        model = _load_from(str(source), task)
    if dtype is not None:
        model = model.to(resolve_dtype(dtype))
    if device is not None:
        model = model.to(device)
    return model.eval()


def _load_from(source: str, task: str | None) -> RamitForImageRestoration:
    path = Path(source)
    if path.suffix.lower() in (".pth", ".pt", ".ckpt") and path.is_file():
        from .convert import convert_original_checkpoint

        return convert_original_checkpoint(path, task=task)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"{source} is not a model folder: it has no config.json")
        try:
            config_data = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelLoadError(f"{config_file} is not valid JSON: {error}") from None
        if not isinstance(config_data, dict):
            raise ModelLoadError(f"{config_file} is not a configuration: it holds a JSON {type(config_data).__name__}")
        model_type = config_data.get("model_type")
        if model_type != RamitConfig.model_type:
            raise ModelLoadError(f"{source} is not a RAMiT model (its config.json has model_type {model_type!r})")
        try:
            check_weight_files(path)
        except (DamagedFileError, InvalidWeightsError, UnsafeFileError) as error:
            raise ModelLoadError(str(error)) from None
    elif path.exists():
        raise ModelLoadError(f"{source} is neither a model folder nor an original .pth checkpoint")
    elif _looks_local(source):
        raise ModelLoadError(f"model not found: {source}")
    try:
        config = RamitConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load a RAMiT model from {source!r}: {error}") from None
    if config.model_type != RamitConfig.model_type:
        raise ModelLoadError(f"{source} is not a RAMiT model (model_type {config.model_type!r})")
    try:
        return RamitForImageRestoration.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load a RAMiT model from {source!r}: {error}") from None


def _onnx_runtime():
    """`ramit_hf.export.onnxruntime`, imported by name: this file ships to Hub folders, which carry only the files
    it imports relatively (transformers copies them), and the ONNX Runtime path is not one of them."""
    import importlib

    try:
        return importlib.import_module(".export.onnxruntime", __package__)
    except ModuleNotFoundError as error:
        if error.name and error.name.endswith("export"):
            raise ModelLoadError("ONNX files need the ramit_hf library (pip install ramit-hf[onnx])") from None
        raise


def _load_onnx(path: Path):
    return _onnx_runtime().OnnxRamitModel(path)  # which names a missing file, a FIFO or a device


def _looks_local(source: str) -> bool:
    """A missing path that cannot be a Hub id (`owner/name`)."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or Path(source).suffix.lower() in (".pth", ".pt")


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process (glibc malloc) instead of returning every large block to the system.

    PyTorch's CPU tensors come straight from malloc, and glibc maps large blocks afresh on every allocation, so each
    large intermediate tensor costs page faults. For RAMiT on CPU that is a large share of the time (measured in
    docs/performance.md). This changes the whole process; the `ramit` command calls it, libraries embedding ramit_hf
    may choose to. Returns False where it does not apply (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bfloat16 inference is faster than
    float32; elsewhere PyTorch emulates it and it is slower."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX", "AVX512_AMX"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Compute:
    """How a model restores images on a device: its precision, the computation its forward runs there
    (`RamitConfig.computation`, resolved for inference), and why."""

    dtype: torch.dtype
    computation: str
    reason: str

    def apply(self, model: RamitForImageRestoration) -> RamitForImageRestoration:
        """Put `model` in this precision (bfloat16: `to_bfloat16_body`); its computation follows from its config."""
        if self.dtype == torch.bfloat16:
            model.to_bfloat16_body()
        else:
            model.to(self.dtype)
        return model

    def describe(self) -> str:
        return f"{str(self.dtype).removeprefix('torch.')} ({self.reason}), {self.computation} computation"


def choose_compute(
    device: str | torch.device = "cpu", dtype: str | torch.dtype | None = "auto", computation: str = "auto"
) -> Compute:
    """The fastest precision within the accuracy bounds of docs/performance.md on this machine, and the computation
    that `computation` (a model's `config.computation`) runs there in inference.

    `dtype="auto"`: bfloat16 on CPUs with native bfloat16 (relative L2 error under 1e-2, Set5 PSNR within 0.05 dB
    of float32), float32 elsewhere (GPUs included: bfloat16 there is not measured yet). Any other dtype is taken
    as asked. The CLI, the pipeline and the Space all decide through this function.
    """
    runs = resolve_computation(computation, device, training=False)
    if dtype not in (None, "auto"):
        return Compute(resolve_dtype(dtype), runs, "as requested")
    if torch.device(device).type != "cpu":
        return Compute(torch.float32, runs, "auto: float32 on accelerators")
    if cpu_has_native_bfloat16():
        return Compute(torch.bfloat16, runs, "auto: this CPU has native bfloat16")
    return Compute(torch.float32, runs, "auto: no native bfloat16 on this CPU (AVX512-BF16/AMX), so float32")


@torch.no_grad()
def restore_tensor(
    model: RamitForImageRestoration,
    pixel_values: torch.Tensor,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] -> (B, C, H * s, W * s) restored, unclamped, on the input's device.

    The paper's protocol (`ramit_hf.forward.restore_whole`): symmetric padding to the model's multiple, forward, crop.
    With `tile_size`, the image is restored in overlapping tiles (each through this same protocol) and blended; see
    `ramit_hf.tiling`.
    """
    if tile_size is not None:
        return restore_tiled(model, pixel_values, tile_size, tile_overlap)
    return restore_whole(model, pixel_values)


__all__ = [
    "DTYPES",
    "RUNTIMES",
    "Compute",
    "ModelLoadError",
    "choose_compute",
    "cpu_has_native_bfloat16",
    "load_model",
    "model_placement",
    "resolve_dtype",
    "restore_tensor",
    "tune_cpu_allocator",
]
