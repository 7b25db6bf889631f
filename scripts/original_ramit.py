"""The original RAMiT code (github.com/rami0205/RAMiT) as a benchmark baseline, loaded from a checkout of it.

Nothing of that repository is part of this one: `load_original(folder, preset)` imports `my_model/ramit.py` from the
folder given, with stand-ins for the few helpers it imports from torchvision, timm and its own `utils` package
(torchvision does not import beside the torch this project pins, and timm is not installed). The stand-ins compute
what those helpers compute for this model: zero padding at the right and bottom, per-channel (de)normalisation and
the weight initialiser.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import torch
from torch import nn

# presets of this package -> (original spec file under my_model/specs/, original target_mode)
ORIGINAL_SPECS = {
    "ramit-sr-x2": ("lightweight_sr/RAMiT.yml", "light_x2"),
    "ramit-sr-x3": ("lightweight_sr/RAMiT.yml", "light_x3"),
    "ramit-sr-x4": ("lightweight_sr/RAMiT.yml", "light_x4"),
    "ramit1-sr-x2": ("lightweight_sr/RAMiT-1.yml", "light_x2"),
    "ramit-color-dn": ("lightweight_dn/RAMiT.yml", "light_dn"),
}


def _pad(x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    left, top, right, bottom = padding
    return nn.functional.pad(x, (left, right, top, bottom))


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def _denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return x * std + mean


def _install_stand_ins(extra: dict[str, dict] | None = None, folder: Path | None = None) -> list[str]:
    """Put the stand-in modules (and `extra` ones: name -> attributes) in `sys.modules`; returns their names
    (removed again once the original is imported, so that other libraries never mistake them for the real
    packages). A module of the original's own `utils` package that `folder` holds is imported, not replaced."""
    modules: dict[str, dict] = {
        "torchvision": {},
        "torchvision.transforms": {},
        "torchvision.transforms.functional": {"pad": _pad, "normalize": _normalize},
        "timm": {},
        "timm.models": {},
        "timm.models.fx_features": {"register_notrace_function": lambda function: function},
        "timm.models.layers": {
            "trunc_normal_": nn.init.trunc_normal_,
            "to_2tuple": lambda value: tuple(value) if isinstance(value, (tuple, list)) else (value, value),
        },
        "utils": {},
        "utils.etc_utils": {"denormalize": _denormalize},
    }
    for name, attributes in (extra or {}).items():
        modules[name] = {**modules.get(name, {}), **attributes}
    if folder is not None and (folder / "utils").is_dir():
        modules = {
            name: attributes
            for name, attributes in modules.items()
            if name != "utils"
            and not (name.startswith("utils.") and (folder / f"{name.replace('.', '/')}.py").is_file())
        }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
    for name in modules:  # parents expose their stand-in children as attributes, as packages do
        parent, _, child = name.rpartition(".")
        if parent in modules:
            setattr(sys.modules[parent], child, sys.modules[name])
    return list(modules)


def import_original(folder: str | Path, names: list[str], stand_ins: dict[str, dict] | None = None) -> list:
    """The modules `names` (e.g. `my_model.ramit`, `ddp_builder`) of the original code in `folder`, imported with
    the stand-ins above and `stand_ins` (module name -> attributes) in place."""
    folder = Path(folder).resolve()
    if not (folder / "my_model" / "ramit.py").is_file():
        raise FileNotFoundError(f"{folder} is not a checkout of the original RAMiT code (no my_model/ramit.py)")
    installed = _install_stand_ins(stand_ins, folder)
    sys.path.insert(0, str(folder))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(folder))
        for name in installed:
            sys.modules.pop(name, None)


def _activation(name):
    if not isinstance(name, str) or not name.startswith("nn"):
        return name
    lowered = name.lower()
    return nn.GELU if "gelu" in lowered else nn.LeakyReLU if "leaky" in lowered else nn.ReLU


def load_original(folder: str | Path, preset: str, seed: int = 0) -> nn.Module:
    """The original RAMiT of `preset`, randomly initialised with `seed`, in eval mode."""
    import yaml

    if preset not in ORIGINAL_SPECS:
        raise ValueError(f"no original spec known for preset {preset!r}; choose one of {', '.join(ORIGINAL_SPECS)}")
    spec_file, target_mode = ORIGINAL_SPECS[preset]
    (ramit,) = import_original(folder, ["my_model.ramit"])
    options = yaml.safe_load((Path(folder) / "my_model" / "specs" / spec_file).read_text())
    options = {key: _activation(value) for key, value in options.items()}
    options.pop("name", None)
    options.pop("hrami", None)
    torch.manual_seed(seed)
    model = ramit.RAMiT(target_mode=target_mode, img_norm=True, **options)
    return model.eval()


__all__ = ["ORIGINAL_SPECS", "import_original", "load_original"]
