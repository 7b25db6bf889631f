"""Module paths of earlier releases, kept importable: each old name imports its new module on first use and says
where it went (a `FutureWarning`)."""

from __future__ import annotations

import importlib
import sys
import types
import warnings

# old module -> the module that holds its names now
MOVED_MODULES = {
    "ramit_hf.evaluation": "ramit_hf.protocol",
    "ramit_hf.metrics": "ramit_hf.protocol.metrics",
    "ramit_hf.imresize": "ramit_hf.protocol.resize",
    "ramit_hf.trainer": "ramit_hf.training",
    "ramit_hf.recipes": "ramit_hf.training.recipes",
}


class _MovedModule(types.ModuleType):
    """Stands in `sys.modules` for an old path; attribute access loads the new module and warns once."""

    def __init__(self, old: str, new: str):
        super().__init__(old, f"Moved to {new}.")
        self.__dict__["_target_name"] = new

    def _target(self) -> types.ModuleType:
        new = self.__dict__["_target_name"]
        if "_warned" not in self.__dict__:
            self.__dict__["_warned"] = True
            warnings.warn(f"{self.__name__} has moved to {new}; import from there", FutureWarning, stacklevel=3)
        return importlib.import_module(new)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        try:
            return getattr(self._target(), name)
        except AttributeError:
            raise AttributeError(
                f"{self.__name__} has moved to {self.__dict__['_target_name']}, which has no attribute {name!r}"
            ) from None

    def __dir__(self) -> list[str]:
        return dir(self._target())


def install() -> None:
    for old, new in MOVED_MODULES.items():
        sys.modules.setdefault(old, _MovedModule(old, new))
