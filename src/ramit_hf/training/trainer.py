"""`RamitTrainer`: a `transformers.Trainer` for image restoration.

* loss: L1 (default), MSE or Charbonnier between the reconstruction and the target, a per-micro-batch mean that
  the Trainer divides by the gradient accumulation steps (so accumulating 2 x b patches equals one batch of 2b);
* optimizer: Adam (the paper's; no weight decay by default) and, with a `lr_lambda`, a per-step learning-rate
  schedule (the paper's warm-up and halvings, see `ramit_hf.training.schedule.paper_learning_rate`);
* `head_only_steps`: the first steps update only the reconstruction head, and the optimizer starts afresh after
  them (the x3/x4 warm start from an x2 model);
* evaluation: whole images, one at a time, through `inference.restore_tensor` (the paper's padding), measured with
  `protocol.metrics.batch_psnr_ssim` and the task's protocol (SR: luma, `scale` pixels cropped). `prediction_step`
  returns per-image rows `[psnr, ssim, l1]` instead of images, so processes of different image sizes gather
  cheaply; metrics are aggregated per batch (`batch_eval_metrics=True`) and reported as `eval_psnr`, `eval_ssim`,
  `eval_l1` (`eval_<set>_psnr`, ... for a dict of validation sets);
* `ema`: a `WeightsEMA` updated after every step, evaluated instead of the raw weights and saved in every
  checkpoint (`ema.safetensors`);
* every checkpoint is a `save_pretrained` folder with the image processor beside the model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..configuration_ramit import RamitConfig
from ..convert import processor_for
from ..inference import restore_tensor
from ..modeling_ramit import RamitForImageRestoration
from ..protocol.metrics import batch_psnr_ssim
from .ema import EMACallback, WeightsEMA
from .patches import RestorationPatchDataset, collate_batches
from .schedule import ProgressiveSchedule
from .validation import eval_protocol

HEAD_PREFIX = "reconstruction."


# --------------------------------------------------------------------------------------------------
# losses and metrics


def restoration_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "l1", eps: float = 1e-3):
    """Mean L1, MSE or Charbonnier (`sqrt(d^2 + eps^2)`, the original's) loss, computed in float32."""
    diff = prediction.float() - target.float()
    if kind == "l1":
        return diff.abs().mean()
    if kind == "mse":
        return diff.pow(2).mean()
    if kind == "charbonnier":
        return torch.sqrt(diff * diff + eps * eps).mean()
    raise ValueError(f"unknown loss {kind!r}; choose l1, mse or charbonnier")


class QualityMetrics:
    """`compute_metrics` for `batch_eval_metrics=True`: averages the per-image `[psnr, ssim, l1]` rows that
    `RamitTrainer.prediction_step` returns, over the whole evaluation set."""

    names = ("psnr", "ssim", "l1")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.names), dtype=torch.float64)
        self.count = 0

    def __call__(self, eval_prediction, compute_result: bool = False) -> dict[str, float] | None:
        predictions = torch.as_tensor(eval_prediction.predictions).detach()
        rows = predictions.to("cpu", torch.float64).reshape(-1, len(self.names))
        self.sums += rows.sum(dim=0)
        self.count += rows.shape[0]
        if not compute_result:
            return None
        result = {name: (self.sums[i] / max(self.count, 1)).item() for i, name in enumerate(self.names)}
        self.reset()
        return result


# --------------------------------------------------------------------------------------------------
# the trainer


class RamitTrainer(Trainer):
    """A `Trainer` for RAMiT image restoration (see the module docstring).

    Args (besides the `Trainer`'s):
        loss: `"l1"` (default), `"mse"` or `"charbonnier"`.
        charbonnier_eps: epsilon of the Charbonnier loss.
        lr_lambda: step -> learning-rate factor (times `args.learning_rate`), or None for the Trainer's scheduler.
        head_only_steps: optimizer steps at the start that update only the reconstruction head; the optimizer
            state is cleared when they end (a fresh Adam, as the original warm start rebuilds it).
        schedule: the run's `ProgressiveSchedule`, for logging the paper epoch and patch size.
        eval_protocol: `(crop_border, test_y_channel)`; by default the model's task's (`data.eval_protocol`).
        ema: a `WeightsEMA` of the model: updated after every optimizer step, evaluated, and saved in checkpoints.

    `processing_class` defaults to the model's image processor (saved in every checkpoint), `data_collator` to
    `data.collate_batches`, `compute_metrics` to `QualityMetrics` (which needs `args.batch_eval_metrics=True`).
    A `RestorationPatchDataset` is read in order with a data-loader batch size of 1 (each item is a micro-batch).
    """

    # the loss is a per-micro-batch mean: the Trainer divides it by the accumulation steps (our forward takes no
    # **kwargs, so transformers would decide the same; stating it keeps that true if the model ever changes)
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: RamitForImageRestoration,
        args: TrainingArguments,
        train_dataset=None,
        eval_dataset=None,
        *,
        loss: str = "l1",
        charbonnier_eps: float = 1e-3,
        lr_lambda: Callable[[int], float] | None = None,
        head_only_steps: int = 0,
        schedule: ProgressiveSchedule | None = None,
        eval_protocol: tuple[int, bool] | None = None,
        ema: WeightsEMA | None = None,
        processing_class=None,
        data_collator=None,
        compute_metrics=None,
        optimizer_cls_and_kwargs=None,
        **kwargs,
    ):
        restoration_loss(torch.zeros(1), torch.zeros(1), loss, charbonnier_eps)  # validates `loss`
        if compute_metrics is None and eval_dataset is not None:
            if not args.batch_eval_metrics:
                raise ValueError(
                    "RamitTrainer evaluates images of different sizes one batch at a time: set "
                    "TrainingArguments(batch_eval_metrics=True) or pass your own compute_metrics"
                )
            compute_metrics = QualityMetrics()
        if isinstance(train_dataset, RestorationPatchDataset) and args.per_device_train_batch_size != 1:
            raise ValueError(
                "a RestorationPatchDataset item is a whole micro-batch: use per_device_train_batch_size=1 (the patch "
                f"batch comes from the schedule), got {args.per_device_train_batch_size}"
            )
        if optimizer_cls_and_kwargs is None and kwargs.get("optimizers", (None, None))[0] is None:
            optimizer_cls_and_kwargs = (
                torch.optim.Adam,
                {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon},
            )
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class if processing_class is not None else processor_for(model.config),
            data_collator=data_collator if data_collator is not None else collate_batches,
            compute_metrics=compute_metrics,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            **kwargs,
        )
        self.loss_type = loss
        self.charbonnier_eps = charbonnier_eps
        self.lr_lambda = lr_lambda
        self.head_only_steps = int(head_only_steps)
        self.schedule = schedule
        self.eval_protocol = eval_protocol if eval_protocol is not None else _protocol_of(model.config)
        self.ema = ema
        self._evaluating_ema = False
        if ema is not None:
            self.add_callback(EMACallback(ema))

    # ---- data

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, RestorationPatchDataset):
            # the dataset shuffles itself (seeded per epoch); reading it in order is what makes items reproducible
            return torch.utils.data.SequentialSampler(dataset)
        return super()._get_train_sampler(train_dataset)

    # ---- optimisation

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_lambda is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.lr_lambda)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(pixel_values=inputs["pixel_values"])
        loss = restoration_loss(outputs.reconstruction, inputs["labels"], self.loss_type, self.charbonnier_eps)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        head_only = self.state.global_step < self.head_only_steps
        if self.head_only_steps and self.state.global_step == self.head_only_steps:
            # the first step of full training starts with a fresh optimizer state, as the original rebuilds Adam
            _unwrap_optimizer(self.optimizer).state.clear()
        loss = super().training_step(model, inputs, num_items_in_batch)
        if head_only:
            # the body keeps its initial weights: Adam skips parameters without gradients
            for name, parameter in self.model.named_parameters():
                if not name.startswith(HEAD_PREFIX):
                    parameter.grad = None
        return loss

    # ---- evaluation and saving

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """The Trainer's evaluation, of the EMA weights when there is an EMA."""
        if self.ema is None or self._evaluating_ema:  # (a dict of sets evaluates each through this method)
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        self._evaluating_ema = True
        try:
            with self.ema.applied_to(self.model):
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._evaluating_ema = False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        folder = Path(output_dir or self.args.output_dir)
        if self.args.should_save and (folder / "training_args.bin").is_file():
            # the Trainer pickles its arguments (a file that runs code when loaded, which `load_model` and resuming
            # refuse); the same settings are kept as JSON
            (folder / "training_args.json").write_text(self.args.to_json_string())
            (folder / "training_args.bin").unlink()
        # a checkpoint (an internal save) carries the average; it is written before trainer_state.json, which
        # marks the checkpoint complete
        if self.ema is not None and _internal_call and self.args.should_save:
            self.ema.save(output_dir or self.args.output_dir)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Restore each image with the paper's protocol; return (loss, per-image [psnr, ssim, l1], dummy labels)."""
        # the core model: evaluation needs no gradient sync, and a compiled wrapper would recompile per image size
        core = self.model
        was_training = core.training
        core.eval()
        pixel_values = inputs["pixel_values"].to(self.args.device)
        labels = inputs["labels"].to(self.args.device)
        with torch.no_grad():
            restored = restore_tensor(core, pixel_values)
        core.train(was_training)
        if restored.shape != labels.shape:
            raise ValueError(f"restored images {tuple(restored.shape)} do not match the targets {tuple(labels.shape)}")
        loss = restoration_loss(restored, labels, self.loss_type, self.charbonnier_eps).detach()
        if prediction_loss_only:
            return loss, None, None
        crop_border, test_y = self.eval_protocol
        psnr, ssim = batch_psnr_ssim(restored, labels, crop_border=crop_border, test_y_channel=test_y)
        l1 = (restored - labels).abs().mean(dim=(1, 2, 3)).double()
        rows = torch.stack([psnr, ssim, l1], dim=1).float()
        return loss, rows, torch.zeros(rows.shape[0], 1, device=rows.device)

    # ---- logging

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.schedule is not None and self.state.global_step < self.schedule.total_steps:
            step = self.state.global_step
            logs["recipe_epoch"] = round(self.schedule.epoch_at(step), 4)
            logs["patch_size"] = self.schedule.phase_at(step).patch_size
        super().log(logs, start_time)


def _unwrap_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)


def _protocol_of(config: RamitConfig) -> tuple[int, bool]:
    if config.task is not None:
        return eval_protocol(config.task)
    return config.upscale, config.upscale > 1


class CadenceCallback(TrainerCallback):
    """Validate and save at given steps (the ends of every `eval_every_epochs` epochs, whose lengths in steps change
    with the phase), in addition to the Trainer's own end-of-training evaluation and save."""

    def __init__(self, steps, evaluate: bool):
        self.steps = set(steps)
        self.evaluate = evaluate

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            control.should_save = True
            control.should_evaluate = self.evaluate
        return control


class WeightsDigestCallback(TrainerCallback):
    """At the end of training, every process writes a digest of its weights to `<dir>/final-rank<r>.json` (for
    checking that data-parallel processes end identical)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"rank": args.process_index, "step": state.global_step, "sha256": digest.hexdigest()}
        (self.directory / f"final-rank{args.process_index}.json").write_text(json.dumps(record))
