"""An exponential moving average (EMA) of the weights, as BasicSR and traiNNer-redux keep one (`params_ema`).

After every optimizer step `ema = decay_t * ema + (1 - decay_t) * weights` for every parameter, in float32, with
`decay_t = min(decay, (1 + t) / (10 + t))` at step t when the warm-up is on (early averages forget the random
start quickly; the form TensorFlow's and timm's EMAs use). `RamitTrainer` evaluates the average, writes it into
every checkpoint (`ema.safetensors`, next to the raw weights the optimizer continues from) and delivers it as the
final weights; resuming reloads it, so a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

EMA_FILE = "ema.safetensors"


class WeightsEMA:
    """The moving average of a model's parameters (float32 copies keyed by parameter name)."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        if not 0 < decay < 1:
            raise ValueError(f"the EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.shadow = {n: p.detach().to(torch.float32).clone() for n, p in model.named_parameters()}

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step `step` (1-based)."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        weight = 1.0 - self.decay_at(step)
        for name, parameter in model.named_parameters():
            average = self.shadow[name]
            if average.device != parameter.device:
                self.shadow[name] = average = average.to(parameter.device)
            average.lerp_(parameter.detach().to(torch.float32), weight)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Write the averages into the model's parameters (the delivered weights)."""
        for name, parameter in model.named_parameters():
            parameter.copy_(self.shadow[name].to(parameter.device, parameter.dtype))

    @contextlib.contextmanager
    def applied_to(self, model: torch.nn.Module) -> Iterator[None]:
        """The model holds the averages inside the block, its own weights again after it."""
        backup = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    parameter.copy_(backup[name])

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / EMA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({n: t.detach().cpu().contiguous() for n, t in self.shadow.items()}, str(tmp))
        os.replace(tmp, path)  # a checkpoint never holds half an average
        return path

    def load(self, folder: str | os.PathLike) -> None:
        path = Path(folder) / EMA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {EMA_FILE}: it was not written by a run with ema_decay")
        loaded = load_file(str(path))
        if loaded.keys() != self.shadow.keys():
            raise ValueError(f"{path} does not hold the averages of this model's parameters")
        self.shadow = {n: loaded[n].to(self.shadow[n].device) for n in self.shadow}


class EMACallback(TrainerCallback):
    """Updates the average after every optimizer step (before the step's evaluation and checkpoint)."""

    def __init__(self, ema: WeightsEMA):
        self.ema = ema

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(model, state.global_step)
        return control
