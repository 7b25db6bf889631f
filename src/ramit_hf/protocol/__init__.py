"""The paper's benchmark protocol: MATLAB-exact bicubic, the field's PSNR/SSIM, test sets, the evaluation loop and
its JSON results.

| module | holds |
|---|---|
| `resize` | MATLAB-compatible `imresize` (numpy and torch) and `modcrop` |
| `metrics` | PSNR / SSIM as the field computes them (+ the `evaluate` module in `metrics_evaluate/`) |
| `task_protocol` | `Protocol`: what each task is scored on; the seeded noise of denoising |
| `samples` | 8-bit test images, their degradation, `Sample` and `TestSet` |
| `test_sets`, `hf_test_sets` | `load_test_set` from folders and from `datasets` |
| `evaluation`, `results` | `evaluate_model` and its `EvaluationResult` (schema `ramit-hf/evaluation`) |
"""

from .evaluation import evaluate_model, model_id_from_source
from .metrics import load_evaluate_metric, psnr, ssim, to_uint8
from .resize import imresize, imresize_torch, modcrop
from .results import SCHEMA, SCHEMA_VERSION, EvaluationResult, ImageResult, load_result
from .samples import Sample, TestSet, TestSetError, prepare_sample, read_image, rgb_to_gray_opencv
from .task_protocol import Protocol, add_gaussian_noise
from .test_sets import load_test_set

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "EvaluationResult",
    "ImageResult",
    "Protocol",
    "Sample",
    "TestSet",
    "TestSetError",
    "add_gaussian_noise",
    "evaluate_model",
    "imresize",
    "imresize_torch",
    "load_evaluate_metric",
    "load_result",
    "load_test_set",
    "modcrop",
    "model_id_from_source",
    "prepare_sample",
    "psnr",
    "read_image",
    "rgb_to_gray_opencv",
    "ssim",
    "to_uint8",
]
