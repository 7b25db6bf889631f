"""RAMiT image restoration for the Hugging Face ecosystem.

Importing the package registers RAMiT with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForImageToImage`, `AutoImageProcessor`).
"""

__version__ = "0.3.0"  # the one place the version is written: pyproject.toml reads it

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageToImage

from . import _compat
from .configuration_ramit import PRESETS, TASKS, VARIANTS, RamitConfig
from .convert import CheckpointError, convert_original_checkpoint
from .image_processing_ramit import RamitImageProcessor
from .inference import ModelLoadError, load_model, restore_tensor
from .modeling_ramit import RamitForImageRestoration, RamitModel, RamitPreTrainedModel, RamitWeightsError
from .pipeline_image_restoration import ImageRestorationPipeline
from .protocol.resize import imresize


def _register() -> None:
    AutoConfig.register(RamitConfig.model_type, RamitConfig, exist_ok=True)
    AutoModel.register(RamitConfig, RamitModel, exist_ok=True)
    AutoModelForImageToImage.register(RamitConfig, RamitForImageRestoration, exist_ok=True)
    AutoImageProcessor.register(RamitConfig, image_processor_classes={"pil": RamitImageProcessor}, exist_ok=True)
    # saved folders carry the code and an auto_map, so they load with trust_remote_code where ramit_hf is absent
    RamitConfig.register_for_auto_class()
    RamitModel.register_for_auto_class("AutoModel")
    RamitForImageRestoration.register_for_auto_class("AutoModelForImageToImage")
    RamitImageProcessor.register_for_auto_class("AutoImageProcessor")
    # pipeline("image-restoration", ...); transformers 5 has no image-to-image pipeline of its own
    from transformers.pipelines import PIPELINE_REGISTRY

    if PIPELINE_REGISTRY.supported_tasks.get("image-restoration", {}).get("impl") is not ImageRestorationPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            "image-restoration",
            pipeline_class=ImageRestorationPipeline,
            pt_model=AutoModelForImageToImage,
            type="image",
        )


_register()

# moved module paths of earlier releases keep working (ramit_hf.evaluation, ramit_hf.metrics, ...)
_compat.install()

# the training modules (the Trainer, `datasets`), dataset restoration and the ONNX export load on first use, not
# at `import ramit_hf`
_LAZY = {
    "RamitTrainer": "training",
    "prepare_training": "training",
    "load_recipe": "training",
    "export_onnx": "export",
    "restore_dataset": "dataset_restoration",
    "restore_video": "video",
    "VideoEncoding": "video",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in ("evaluation", "metrics", "trainer", "recipes"):  # old submodules, see _compat
        import sys

        return sys.modules[f"{__name__}.{name}"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# what the README's "Python API" section documents (tests/test_public_api.py checks that the two agree)
__all__ = [
    "PRESETS",
    "TASKS",
    "VARIANTS",
    "CheckpointError",
    "ImageRestorationPipeline",
    "ModelLoadError",
    "RamitConfig",
    "RamitForImageRestoration",
    "RamitImageProcessor",
    "RamitModel",
    "RamitPreTrainedModel",
    "RamitTrainer",
    "RamitWeightsError",
    "VideoEncoding",
    "convert_original_checkpoint",
    "export_onnx",
    "imresize",
    "load_model",
    "load_recipe",
    "prepare_training",
    "restore_dataset",
    "restore_tensor",
    "restore_video",
]
