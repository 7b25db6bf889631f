"""Import spandrel where torchvision is absent (this test environment's torch has no matching torchvision).

spandrel 0.4 imports every architecture at `import spandrel`, and two of them (LaMa, RestoreFormer) import functions
from `torchvision.transforms.functional` at module level, used only when those models run. Where torchvision is
not installed, the import is given a stand-in module whose functions raise, and the stand-in is removed from
`sys.modules` again as soon as spandrel is imported, so nothing else sees a torchvision. RAMiT, ESRGAN, Compact and
SwinIR never touch it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_STAND_IN = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


def _unavailable(*args, **kwargs):
    raise RuntimeError("torchvision is not installed in this test environment")


def import_spandrel() -> types.ModuleType:
    if "spandrel" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("spandrel")
    modules = {name: types.ModuleType(name) for name in _STAND_IN}
    functional = modules["torchvision.transforms.functional"]
    functional.rotate = functional.normalize = _unavailable
    functional.InterpolationMode = type("InterpolationMode", (), {})
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision.transforms"].functional = functional
    sys.modules.update(modules)
    try:
        return importlib.import_module("spandrel")
    finally:
        for name in _STAND_IN:
            sys.modules.pop(name, None)
