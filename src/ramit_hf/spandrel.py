"""RAMiT as a spandrel architecture, for the apps that load upscalers through spandrel (ComfyUI, chaiNNer, ...).

    import ramit_hf.spandrel
    ramit_hf.spandrel.install()      # adds RAMiT to spandrel.MAIN_REGISTRY; `import ramit_hf` alone does not

After that, `spandrel.ModelLoader().load_from_file(path)` loads the original RAMiT `.pth` files and our
`model.safetensors`, plain, wrapped (`params`, `params_ema`, `state_dict`) or saved from DDP (`module.`). Detection is
`ramit_hf.convert.detect_checkpoint`, the converter's own: a state dict is claimed only when every parameter fits one
released setting, so a near-miss (a missing block, a wrong shape) falls through to spandrel's "unsupported model".
See docs/spandrel.md.
"""

from __future__ import annotations

try:
    from spandrel import (
        MAIN_REGISTRY,
        Architecture,
        ArchRegistry,
        ArchSupport,
        ImageModelDescriptor,
        ModelTiling,
        SizeRequirements,
        StateDict,
    )
except ImportError as error:  # spandrel missing, or spandrel 0.4 failing on its own torchvision import
    raise ImportError(
        f"ramit_hf.spandrel needs spandrel (pip install spandrel, beside a torchvision matching torch): {error}"
    ) from error
import torch

from .configuration_ramit import TASKS
from .convert import CheckpointError, DetectedCheckpoint, detect_checkpoint
from .forward import restore_padded
from .modeling_ramit import RamitForImageRestoration

ARCH_ID = "RAMiT"
# RAMiT's color denoising, low-light and deraining weights have one shape: such a state dict is loaded as this task
# unless `install(default_task=...)` names another.
DEFAULT_TASK = "color-dn"
# Measured by `python scripts/measure_half_precision.py` (CPU; table in docs/spandrel.md): on the 12 golden cases
# and 14 real-image runs every output is finite; float16 stays within 2.0e-3 relative L2 of float32 (59 dB or more),
# bfloat16 within 1.6e-2 (41 dB or more); against the ground truth PSNR moves by at most 0.007 dB (float16) and
# 0.17 dB (bfloat16). Supported means: finite everywhere and under 0.2 dB of PSNR moved.
SUPPORTS_HALF = True
SUPPORTS_BFLOAT16 = True


def _restore(model: RamitForImageRestoration, image: torch.Tensor) -> torch.Tensor:
    # spandrel's call: (B, C, H, W) in [0, 1] -> (B, C, H * scale, W * scale), padded symmetrically as `ramit restore`
    # pads (the model alone would zero-pad, which darkens the bottom and right borders)
    return restore_padded(model, image)


class RamitArch(Architecture[RamitForImageRestoration]):
    """The spandrel architecture of RAMiT: detects the released settings from a state dict and loads our model."""

    def __init__(self, default_task: str | None = None) -> None:
        if default_task is not None and default_task not in TASKS:
            raise ValueError(f"unknown default_task {default_task!r}; choose one of {', '.join(TASKS)}")
        super().__init__(id=ARCH_ID, name="RAMiT", detect=self._claims)
        self.default_task = default_task or DEFAULT_TASK

    def detect_checkpoint(self, state_dict: StateDict) -> DetectedCheckpoint:
        """The converter's detection, with this architecture's task for weights that could serve several."""
        return detect_checkpoint(state_dict, source="the state dict", default_task=self.default_task)

    def _claims(self, state_dict: StateDict) -> bool:
        # a state dict of RAMiT's shapes is claimed; `load` then names broken values (NaN, integer tensors) rather
        # than spandrel calling the file an unsupported model
        try:
            detect_checkpoint(state_dict, source="the state dict", default_task=self.default_task, check_values=False)
        except CheckpointError:
            return False
        return True

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[RamitForImageRestoration]:
        detected = self.detect_checkpoint(state_dict)
        config = detected.config
        model = RamitForImageRestoration(config).eval()
        return ImageModelDescriptor(
            model,
            detected.weights,  # loaded strictly by the descriptor
            architecture=self,
            purpose="SR" if config.upscale > 1 else "Restoration",
            tags=[config.variant, config.task, f"{config.embed_dim}nf"],
            supports_half=SUPPORTS_HALF,
            supports_bfloat16=SUPPORTS_BFLOAT16,
            scale=config.upscale,
            input_channels=config.num_channels,
            output_channels=config.num_channels,
            # the call pads symmetrically to a multiple of 32 and crops: any size works, nothing to pad outside
            size_requirements=SizeRequirements(minimum=1),
            # channel attention sees the whole (tile) image: tiles differ slightly from whole-image output, with
            # equal quality and no seams with overlap (docs/inference.md)
            tiling=ModelTiling.SUPPORTED,
            call_fn=_restore,
        )


def install(
    *, default_task: str | None = None, registry: ArchRegistry | None = None, ignore_duplicates: bool = False
) -> list[ArchSupport]:
    """Add RAMiT to spandrel's main registry (or `registry`) and return what was added, as
    `spandrel_extra_arches.install()` does.

    `default_task` is the task of RAMiT weights that could serve several (see `DEFAULT_TASK`). A second call raises
    spandrel's `DuplicateArchitectureError` unless `ignore_duplicates=True` (the first stays).
    """
    target = MAIN_REGISTRY if registry is None else registry
    return target.add(ArchSupport.from_architecture(RamitArch(default_task)), ignore_duplicates=ignore_duplicates)


__all__ = ["ARCH_ID", "DEFAULT_TASK", "SUPPORTS_BFLOAT16", "SUPPORTS_HALF", "RamitArch", "install"]
