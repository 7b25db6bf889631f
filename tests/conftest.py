import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ramit_hf.convert import TARGET_MODES as GOLDEN_TASKS  # the golden cases name tasks as the original code does

# tests never reach the Hub: a missing local model must fail at once, not after network retries
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAMIT_SHARED", REPO_ROOT.parent / "shared")).resolve()


# The start of a subprocess script in which `import ramit_hf` (or any of its modules) fails, as where only what a Hub
# folder or the Space ships is installed: such code must run on transformers and the files it carries alone.
BLOCK_RAMIT_HF = textwrap.dedent(
    """
    import importlib.abc, sys
    class BlockRamitHf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "ramit_hf":
                raise ImportError("ramit_hf must not be needed")
    sys.meta_path.insert(0, BlockRamitHf())
    """
)


def run_without_ramit_hf(script: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the Python `script` (dedented) in a fresh interpreter in which `import ramit_hf` fails; output captured
    as text, 300 s timeout (keyword arguments go to `subprocess.run` and override these)."""
    options = {"capture_output": True, "text": True, "timeout": 300, **kwargs}
    return subprocess.run([sys.executable, "-c", BLOCK_RAMIT_HF + textwrap.dedent(script)], **options)


def shared_path(*parts: str) -> Path:
    """A path inside the shared reference folder; fails (never skips) when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference data missing: {path} (set RAMIT_SHARED to the folder holding reference/ and testsets/)")
    return path


@functools.cache
def golden_index() -> dict:
    return json.loads(shared_path("reference", "golden", "index.json").read_text())


@functools.cache
def golden_case(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(shared_path("reference", "golden", f"{name}.safetensors"))


def golden_model(name: str):
    """The model of a golden case: the released checkpoint converted, or the stored random weights."""
    from ramit_hf import convert_original_checkpoint

    info = golden_index()[name]
    if info["checkpoint"]:
        return convert_original_checkpoint(shared_path("reference", "checkpoints", info["checkpoint"]))
    weights = {k.removeprefix("weights."): v for k, v in golden_case(name).items() if k.startswith("weights.")}
    return convert_original_checkpoint(weights, variant=info["model_name"], task=GOLDEN_TASKS[info["target_mode"]])


@functools.cache
def checkpoint(name: str) -> Path:
    return shared_path("reference", "checkpoints", name)


def small_config(**overrides):
    """A tiny RAMiT for fast tests of behaviour that does not depend on size."""
    from ramit_hf import RamitConfig

    fields = dict(embed_dim=16, depths=(1, 1, 1, 2), num_heads=(4, 4, 4, 4), upscale=2, fusion_expand_groups=1)
    fields.update(overrides)
    return RamitConfig(**fields)
