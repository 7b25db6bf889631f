"""The result of one evaluation and its JSON form (schema ``ramit-hf/evaluation``, version 1), from which model
cards are generated.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic

SCHEMA = "ramit-hf/evaluation"
SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------------------------
# evaluation


@dataclass
class ImageResult:
    """PSNR (dB) and SSIM of one image; sizes are `[height, width]` of the model input and output."""

    name: str
    psnr: float
    ssim: float
    input_size: list[int]
    output_size: list[int]


@dataclass
class EvaluationResult:
    """One model on one test set under one protocol; :meth:`to_dict` is the stable JSON schema.

    Schema `ramit-hf/evaluation`, version 1 (keys in order)::

        schema, schema_version
        model:       id, source, variant, task, scale, num_channels, parameters
        dataset:     name, source, split, num_images, input {kind, source}
                     (kind: lr-folder | lr-column | imresize | gaussian-noise | lq-folder | lq-column)
        protocol:    task, scale, metric_channel (Y | RGB | gray), test_y_channel, crop_border, sigma, noise_seed,
                     noise, quantization, padding, tile_size, tile_overlap
        mean:        psnr (dB), ssim (arithmetic means over the images)
        images:      [{name, psnr, ssim, input_size [h, w], output_size [h, w]}, ...] in test-set order
        environment: ramit_hf, torch, transformers, numpy, python, platform, device, dtype, computation
        date:        ISO 8601 UTC time the run finished
        elapsed_s:   wall time of the run in seconds

    A PSNR of identical images (infinite) is written as null.
    """

    model: dict
    dataset: dict
    protocol: dict
    images: list[ImageResult]
    environment: dict = field(default_factory=dict)
    date: str = ""
    elapsed_s: float = 0.0

    @property
    def mean_psnr(self) -> float:
        return float(np.mean([image.psnr for image in self.images]))

    @property
    def mean_ssim(self) -> float:
        return float(np.mean([image.ssim for image in self.images]))

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "model": dict(self.model),
            "dataset": dict(self.dataset),
            "protocol": dict(self.protocol),
            "mean": {"psnr": _finite(self.mean_psnr), "ssim": _finite(self.mean_ssim)},
            "images": [
                {**asdict(image), "psnr": _finite(image.psnr), "ssim": _finite(image.ssim)} for image in self.images
            ],
            "environment": dict(self.environment),
            "date": self.date,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationResult:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema {data.get('schema')!r})")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported {SCHEMA} schema_version {data.get('schema_version')!r} (expected 1)")
        images = [
            ImageResult(
                name=i["name"],
                psnr=math.inf if i["psnr"] is None else i["psnr"],
                ssim=i["ssim"],
                input_size=list(i["input_size"]),
                output_size=list(i["output_size"]),
            )
            for i in data["images"]
        ]
        return cls(
            model=data["model"],
            dataset=data["dataset"],
            protocol=data["protocol"],
            images=images,
            environment=data.get("environment", {}),
            date=data.get("date", ""),
            elapsed_s=data.get("elapsed_s", 0.0),
        )

    def title(self) -> str:
        model, protocol = self.model, self.protocol
        sigma = f", sigma {protocol['sigma']}" if protocol.get("sigma") is not None else ""
        return f"{model['id']} ({model['variant']}, {model['task']}) on {self.dataset['name']}{sigma}"

    def to_markdown(self) -> str:
        """A per-image table with the mean in the last row, under a line naming the model, set and protocol."""
        protocol = self.protocol
        channel = protocol["metric_channel"]
        what = f"{channel}-channel" if channel == "Y" else channel
        lines = [
            f"**{self.title()}**: {what} PSNR/SSIM, crop border {protocol['crop_border']}",
            "",
            "| image | PSNR (dB) | SSIM |",
            "| --- | ---: | ---: |",
        ]
        for image in self.images:
            lines.append(f"| {image.name} | {image.psnr:.3f} | {image.ssim:.4f} |")
        lines.append(f"| **mean ({len(self.images)})** | **{self.mean_psnr:.3f}** | **{self.mean_ssim:.4f}** |")
        return "\n".join(lines) + "\n"

    def save_json(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Writes :meth:`to_json` atomically (temporary file + rename); refuses to replace a file unless `overwrite`."""
        return write_text_atomic(path, self.to_json(), overwrite=overwrite)


def load_result(path: str | os.PathLike) -> EvaluationResult:
    """An :class:`EvaluationResult` from a JSON file written by `ramit evaluate` or `scripts/make_results.py`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the evaluation result {path}: {error}") from None
    try:
        return EvaluationResult.from_dict(data)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a valid {SCHEMA} document: missing or bad field {error}") from None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
