"""Training RAMiT with the Hugging Face `Trainer`: `RamitTrainer` and the paper's recipes end to end.

`RamitTrainer` is a `transformers.Trainer` for image restoration:

* loss: L1 (default), MSE or Charbonnier between the reconstruction and the target, a per-micro-batch mean that
  the Trainer divides by the gradient accumulation steps (so accumulating 2 x b patches equals one batch of 2b);
* optimizer: Adam (the paper's; no weight decay by default) and, with a `lr_lambda`, a per-step learning-rate
  schedule (the paper's warm-up and halvings, see `paper_learning_rate`);
* `head_only_steps`: the first steps update only the reconstruction head, and the optimizer starts afresh after
  them (the x3/x4 warm start from an x2 model);
* evaluation: whole images, one at a time, through `inference.restore_tensor` (the paper's padding), measured with
  `metrics.batch_psnr_ssim` and the task's protocol (SR: luma, `scale` pixels cropped). `prediction_step` returns
  per-image rows `[psnr, ssim, l1]` instead of images, so processes of different image sizes gather cheaply;
  metrics are aggregated per batch (`batch_eval_metrics=True`) and reported as `eval_psnr`, `eval_ssim`, `eval_l1`;
* every checkpoint is a `save_pretrained` folder with the image processor beside the model.

`prepare_training` / `train` run a `Recipe` (see `ramit_hf.recipes`) on image folders or datasets: data, schedule,
model (from scratch, or `init_from` any source `inference.load_model` takes), checkpoints every `eval_every_epochs`,
the best one kept, exact resume, a model card at the end. Multi-process runs (`torchrun`, `accelerate launch`) use
the same code: each process builds the same schedule and takes its share of the micro-batches.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .atomic import write_text_atomic
from .configuration_ramit import PRESETS, RamitConfig
from .convert import processor_for
from .data import (
    ProgressiveSchedule,
    RestorationPatchDataset,
    check_sizes,
    collate_batches,
    eval_protocol,
    load_source,
    validation_dataset,
)
from .inference import load_model, restore_tensor
from .metrics import batch_psnr_ssim
from .modeling_ramit import RamitForImageRestoration
from .recipes import Recipe, RecipeError, load_recipe

logger = logging.get_logger(__name__)

HEAD_PREFIX = "reconstruction."
RUN_FILE = "ramit_run.json"
TRAINER_STATE_FILE = "trainer_state.json"
# recipe fields that may change when a run is resumed (they do not change which patches or steps are trained)
RESUMABLE_CHANGES = ("max_steps", "dataloader_num_workers", "logging_steps", "image_cache_mb", "trace_data",
                     "save_total_limit", "description")


class TrainingSetupError(ValueError):
    """A training run that cannot start (output folder, resume, model); the message says what to do."""


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

    # ---- evaluation

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


# --------------------------------------------------------------------------------------------------
# the paper's learning rate


def peak_learning_rate(recipe: Recipe, total_batch: int, first_total_batch: int) -> float:
    """The learning rate before warm-up and halvings for a total batch: `lr_per_64 * total / 64`, or
    `learning_rate` scaled by the batch relative to the first phase's."""
    if recipe.learning_rate is not None:
        return recipe.learning_rate * total_batch / first_total_batch
    return recipe.lr_per_64 * total_batch / 64


def paper_learning_rate(recipe: Recipe, schedule: ProgressiveSchedule) -> Callable[[int], float]:
    """step -> learning rate, as the original's `half_learning_rate` sets it at the start of each step.

    With `warm_start_epochs` W: the first W epochs use the peak rate (head only). From then on, with e the
    fractional epoch counted from W: `peak * e / warmup_epochs` during warm-up, then `peak * 0.5 ** (number of
    milestones < e)`. The peak follows the current phase's total batch.
    """
    first = schedule.phases[0].total_batch
    milestones = sorted(recipe.milestones)

    def lr(step: int) -> float:
        step = min(max(step, 0), schedule.total_steps - 1)
        peak = peak_learning_rate(recipe, schedule.phase_at(step).total_batch, first)
        epoch = schedule.epoch_at(step)
        if epoch < recipe.warm_start_epochs:
            return peak
        epoch -= recipe.warm_start_epochs
        if epoch < recipe.warmup_epochs:
            return peak * epoch / recipe.warmup_epochs
        return peak * 0.5 ** sum(m < epoch for m in milestones)

    return lr


# --------------------------------------------------------------------------------------------------
# the model


_CONFIG_FIELDS = tuple(p for p in inspect.signature(RamitConfig.__init__).parameters if p not in ("self", "kwargs"))
_TASK_FIELDS = ("num_channels", "upscale", "image_mean", "image_std", "reciprocal_helper", "task")


def model_config(recipe: Recipe, base: RamitConfig | None = None) -> RamitConfig:
    """The configuration a recipe trains: the architecture of `preset`, `variant`, `base` (an initial model) or the
    task's RAMiT preset, the task's fields (channels, scale, normalisation, reciprocal helper), then `model`."""
    if recipe.preset is not None:
        architecture = RamitConfig.from_preset(recipe.preset)
    elif recipe.variant is not None:
        architecture = RamitConfig.from_preset(next(n for n, (v, _) in PRESETS.items() if v == recipe.variant))
    elif base is not None:
        architecture = base
    else:
        architecture = RamitConfig.from_preset(f"ramit-{recipe.task}")
    task_config = RamitConfig.from_preset(f"ramit-{recipe.task}")
    fields = {name: getattr(architecture, name) for name in _CONFIG_FIELDS}
    fields.update({name: getattr(task_config, name) for name in _TASK_FIELDS})
    unknown = [k for k in recipe.model if k not in _CONFIG_FIELDS]
    if unknown:
        raise RecipeError(f"recipe {recipe.name!r}: unknown model field(s) {', '.join(unknown)}; RamitConfig has "
                          f"{', '.join(_CONFIG_FIELDS)}")
    fields.update(recipe.model)
    if recipe.attention_backend is not None:
        fields["attention_backend"] = recipe.attention_backend
    try:
        return RamitConfig(**fields)
    except ValueError as error:
        raise RecipeError(f"recipe {recipe.name!r}: {error}") from None


def build_model(recipe: Recipe) -> tuple[RamitForImageRestoration, str]:
    """The model a recipe starts from, and a note on where its weights came from.

    From scratch: initialised under `recipe.seed`. With `init_from`: every parameter is copied from that model
    (folder, Hub id or original .pth); for another task (e.g. an x3 model from an x2 one) the reconstruction head
    starts fresh, as the paper's warm start does. Body parameters that are missing or shaped differently are an
    error.
    """
    torch.manual_seed(recipe.seed)
    if recipe.init_from is None:
        return RamitForImageRestoration(model_config(recipe)), "initialised from scratch"
    source = load_model(recipe.init_from)
    config = model_config(recipe, base=source.config)
    model = RamitForImageRestoration(config)
    same_task = source.config.task == config.task and source.config.upscale == config.upscale
    own, given = model.state_dict(), source.state_dict()
    problems, copied = [], {}
    for key, value in own.items():
        if key.startswith(HEAD_PREFIX) and not same_task:
            continue
        if key not in given:
            problems.append(f"missing {key}")
        elif given[key].shape != value.shape:
            problems.append(f"{key}: {tuple(given[key].shape)} vs {tuple(value.shape)}")
        else:
            copied[key] = given[key]
    if problems:
        raise TrainingSetupError(
            f"cannot initialise a {config.variant or 'RAMiT'} {config.task} model from {recipe.init_from} "
            f"({source.config.variant} {source.config.task}): {len(problems)} parameters do not fit: "
            + ", ".join(problems[:6]) + (" ..." if len(problems) > 6 else "")
        )
    model.load_state_dict(copied, strict=False)
    head = "its weights" if same_task else "its weights except the reconstruction head (fresh)"
    return model.train(), f"{head} from {recipe.init_from} ({source.config.variant} {source.config.task})"


# --------------------------------------------------------------------------------------------------
# output folders and resuming


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-<step>` folders that were written to the end (they have `trainer_state.json`), oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = path.name.rpartition("-")[2]
        if path.is_dir() and step.isdigit() and (path / TRAINER_STATE_FILE).is_file():
            found.append((int(step), path))
    return [path for _, path in sorted(found)]


def incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint folders a killed run left half-written (no `trainer_state.json`)."""
    complete = set(complete_checkpoints(output_dir))
    return [p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir() and p not in complete]


def resolve_resume(output_dir: Path, resume: bool | str | os.PathLike | None) -> Path | None:
    """The checkpoint to resume from: `True` -> the latest complete one in `output_dir`; a path -> that folder."""
    if not resume:
        return None
    if resume is True:
        checkpoints = complete_checkpoints(output_dir)
        if not checkpoints:
            raise TrainingSetupError(f"nothing to resume: {output_dir} has no complete checkpoint-<step> folder")
        return checkpoints[-1]
    path = Path(resume)
    if not (path / TRAINER_STATE_FILE).is_file():
        raise TrainingSetupError(
            f"cannot resume from {path}: it is not a complete checkpoint (no {TRAINER_STATE_FILE})"
        )
    return path


def _check_output_dir(output_dir: Path, resuming: bool, overwrite: bool) -> None:
    if resuming or overwrite or not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise TrainingSetupError(f"output path {output_dir} exists and is not a folder")
    if any(output_dir.iterdir()):
        raise TrainingSetupError(
            f"output folder {output_dir} is not empty: continue its run with --resume, or start over with --overwrite"
        )


def _clear_folder(folder: Path) -> None:
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _check_resumable(output_dir: Path, run_info: dict) -> None:
    path = output_dir / RUN_FILE
    if not path.is_file():
        raise TrainingSetupError(f"cannot resume in {output_dir}: {RUN_FILE} is missing (not a ramit train run?)")
    saved = json.loads(path.read_text())
    changes = []
    for key in ("train_images", "world_size", "gradient_accumulation_steps", "samples_per_epoch"):
        if saved.get(key) != run_info.get(key):
            changes.append(f"{key}: {saved.get(key)} -> {run_info.get(key)}")
    old, new = saved.get("recipe", {}), run_info["recipe"]
    for key in sorted(set(old) | set(new)):
        if key not in RESUMABLE_CHANGES and old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    if changes:
        raise TrainingSetupError(
            f"cannot resume {output_dir} exactly: the run differs from the one that wrote it ({'; '.join(changes)}); "
            "use the same data, recipe and number of processes, or start a new run"
        )


# --------------------------------------------------------------------------------------------------
# putting a run together


@dataclass
class TrainingRun:
    """A prepared run: call `train()`; `trainer.evaluate()` works before and after."""

    recipe: Recipe
    trainer: RamitTrainer
    schedule: ProgressiveSchedule
    output_dir: Path
    resume_from: Path | None
    init_note: str
    train_description: str
    val_description: str | None

    @property
    def model(self) -> RamitForImageRestoration:
        return self.trainer.model

    def summary(self) -> str:
        r, s = self.recipe, self.schedule
        phases = "; ".join(
            f"epochs {p.start_epoch}-{p.end_epoch}: {p.patch_size} px x {p.batch_size}/device ({p.total_batch} "
            f"total), {p.steps_per_epoch} steps/epoch"
            for p in s.phases
        )
        lr = paper_learning_rate(r, s)
        params = sum(p.numel() for p in self.model.parameters())
        return "\n".join(
            [
                (
                    f"recipe {r.name}: {r.task}, {self.model.config.variant or 'custom'} ({params:,} parameters), "
                    f"{self.init_note}"
                ),
                f"train data: {self.train_description} ({s.samples_per_epoch} patches/epoch)",
                f"validation: {self.val_description or 'none'}",
                f"schedule: {s.num_steps} of {s.total_steps} steps; {phases}",
                f"learning rate: peak {lr(s.step_at_epoch(r.warm_start_epochs + r.warmup_epochs)):.3g}"
                + (f", head only for {s.step_at_epoch(r.warm_start_epochs)} steps" if r.warm_start_epochs else ""),
                f"output: {self.output_dir}"
                + (f" (resuming from {self.resume_from.name})" if self.resume_from else ""),
            ]
        )

    def train(self) -> dict:
        """Train (or continue), save the final model with its processor and a model card; returns the metrics."""
        result = self.trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        self.trainer.save_model(str(self.output_dir))
        if self.trainer.is_world_process_zero():
            write_model_card(self)
        return dict(result.metrics)


def prepare_training(
    recipe: Recipe | str,
    train_data,
    val_data=None,
    output_dir: str | os.PathLike | None = None,
    *,
    train_lq: str | os.PathLike | None = None,
    val_lq: str | os.PathLike | None = None,
    hq_column: str | None = None,
    lq_column: str | None = None,
    train_split: str = "train",
    val_split: str = "validation",
    resume: bool | str | os.PathLike | None = None,
    overwrite: bool = False,
    report_to: str | list[str] = "none",
    callbacks: list[TrainerCallback] | None = None,
    **training_arguments,
) -> TrainingRun:
    """Everything for a recipe run, checked before anything is trained or written.

    Raises `DataError` (empty folders, unmatched names, sizes, images smaller than the patch), `RecipeError`,
    `TrainingSetupError` (a non-empty output folder without `resume`/`overwrite`, nothing to resume, a resumed run
    that differs) or `ModelLoadError` / `CheckpointError` for `init_from`. Extra keyword arguments go to
    `TrainingArguments` (e.g. `disable_tqdm=True`).
    """
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    if recipe.warm_start_epochs and recipe.init_from is None:
        raise TrainingSetupError(
            f"recipe {recipe.name} warm-starts from a trained model for {recipe.warm_start_epochs} epochs: pass "
            "--init-from (e.g. an sr-x2 model folder or RAMiT_X2.pth), or --set warm_start_epochs=0 to train from "
            "scratch"
        )
    output_dir = Path(output_dir or f"ramit-{recipe.name}")
    resume_from = resolve_resume(output_dir, resume)
    _check_output_dir(output_dir, resume_from is not None, overwrite)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))

    train_source = load_source(train_data, train_lq, task=recipe.task, split=train_split, hq_column=hq_column,
                               lq_column=lq_column)
    check_sizes(train_source, recipe.task)  # pairs first: the patch size is checked once the schedule is known
    samples_per_epoch = int(len(train_source) * recipe.dataset_repeat)
    schedule = ProgressiveSchedule(
        samples_per_epoch, recipe.epochs, recipe.phase_epochs, recipe.patch_sizes, recipe.batch_sizes,
        world_size=world_size, gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        max_steps=recipe.max_steps,
    )
    trace_dir = output_dir / "data_trace" if recipe.trace_data else None
    train_dataset = RestorationPatchDataset(
        train_source, schedule, recipe.task, seed=recipe.seed, noise_sigma=recipe.noise_sigma,
        augment=recipe.augment, image_cache_mb=recipe.image_cache_mb, trace_dir=trace_dir,
    )
    eval_dataset = val_source = None
    if val_data is not None:
        val_source = load_source(val_data, val_lq, task=recipe.task, split=val_split, hq_column=hq_column,
                                 lq_column=lq_column)
        eval_dataset = validation_dataset(val_source, recipe.task, recipe.val_noise_sigma, recipe.max_val_images)

    model, init_note = build_model(recipe)

    lr = paper_learning_rate(recipe, schedule)
    base_lr = peak_learning_rate(recipe, schedule.phases[0].total_batch, schedule.phases[0].total_batch)
    if recipe.eval_steps is not None:
        cadence = list(range(recipe.eval_steps, schedule.num_steps + 1, recipe.eval_steps))
    else:
        cadence = [s for s in schedule.epoch_end_steps(recipe.eval_every_epochs) if s <= schedule.num_steps]
    has_eval = eval_dataset is not None
    arguments = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        max_steps=schedule.num_steps,
        learning_rate=base_lr,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        lr_scheduler_type="constant",
        eval_strategy="steps" if has_eval else "no",
        eval_steps=schedule.num_steps if has_eval else None,
        save_strategy="steps",
        save_steps=schedule.num_steps,
        save_total_limit=recipe.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model="psnr" if has_eval else None,
        greater_is_better=True if has_eval else None,
        batch_eval_metrics=True,
        remove_unused_columns=False,
        logging_steps=recipe.logging_steps,
        logging_first_step=True,
        report_to=report_to,
        seed=recipe.seed,
        bf16=recipe.bf16,
        torch_compile=recipe.torch_compile,
        activation_checkpointing=recipe.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if recipe.gradient_checkpointing else None,
        dataloader_num_workers=recipe.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
    )
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        # on a CPU-only machine, say so: accelerate then runs a multi-process launch as data-parallel CPU training
        # (gloo) and allows bf16 autocast on CPU
        arguments.update(use_cpu=True, ddp_backend="gloo" if world_size > 1 else None)
    arguments.update(training_arguments)
    args = TrainingArguments(**arguments)
    if args.world_size != world_size:
        raise TrainingSetupError(f"WORLD_SIZE says {world_size} processes but the Trainer sees {args.world_size}")

    run_info = {
        "recipe": recipe.to_dict(),
        "train_data": train_source.description,
        "train_images": len(train_source),
        "samples_per_epoch": samples_per_epoch,
        "world_size": world_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "val_data": val_source.description if val_source is not None else None,
        "init_note": init_note,
    }
    if resume_from is not None:
        _check_resumable(output_dir, run_info)
    # every process has checked the folder before the first one writes to it
    args.distributed_state.wait_for_everyone()
    if args.process_index == 0:
        if overwrite and resume_from is None and output_dir.is_dir():
            _clear_folder(output_dir)
        for stale in incomplete_checkpoints(output_dir) if output_dir.is_dir() else []:
            logger.warning(f"removing {stale}: a run was interrupted while writing it")
            shutil.rmtree(stale)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / RUN_FILE, json.dumps(run_info, indent=2, default=str), overwrite=True)
    args.distributed_state.wait_for_everyone()

    all_callbacks = [CadenceCallback(cadence, evaluate=has_eval)] + list(callbacks or [])
    if trace_dir is not None:
        all_callbacks.append(WeightsDigestCallback(trace_dir))
    trainer = RamitTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        loss=recipe.loss,
        charbonnier_eps=recipe.charbonnier_eps,
        lr_lambda=lambda step: lr(step) / base_lr,
        head_only_steps=schedule.step_at_epoch(recipe.warm_start_epochs) if recipe.warm_start_epochs else 0,
        schedule=schedule,
        eval_protocol=eval_protocol(recipe.task),
        callbacks=all_callbacks,
    )
    return TrainingRun(
        recipe=recipe,
        trainer=trainer,
        schedule=schedule,
        output_dir=output_dir,
        resume_from=resume_from,
        init_note=init_note,
        train_description=train_source.description,
        val_description=val_source.description if val_source is not None else None,
    )


def train(recipe: Recipe | str, train_data, val_data=None, output_dir=None, **kwargs) -> TrainingRun:
    """Prepare and run a recipe (see `prepare_training`); returns the finished `TrainingRun`."""
    run = prepare_training(recipe, train_data, val_data, output_dir, **kwargs)
    run.train()
    return run


# --------------------------------------------------------------------------------------------------
# model card


def final_metrics(state) -> tuple[int | None, dict[str, float]]:
    """(step, eval metrics) of the kept model: the best checkpoint's evaluation, or the last evaluation."""
    evaluations = [entry for entry in state.log_history if "eval_psnr" in entry]
    if not evaluations:
        return None, {}
    chosen = evaluations[-1]
    if state.best_global_step:
        chosen = next((e for e in evaluations if e.get("step") == state.best_global_step), chosen)
    metrics = {k.removeprefix("eval_"): v for k, v in chosen.items() if k in ("eval_psnr", "eval_ssim", "eval_l1")}
    return chosen.get("step"), metrics


def write_model_card(run: TrainingRun) -> Path:
    """A short README.md in the output folder: what was trained, on what, how long, and how well."""
    import yaml

    recipe, state, config = run.recipe, run.trainer.state, run.model.config
    step, metrics = final_metrics(state)
    border, y = eval_protocol(recipe.task)
    measured = "Y channel" if y else "all channels"
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-to-image",
        "tags:",
        "- image-restoration",
        "- ramit",
        f"- {recipe.task}",
        "---",
        "",
        f"# {config.variant or 'RAMiT'} for {recipe.task}",
        "",
        (
            "RAMiT (Reciprocal Attention Mixing Transformer, Choi et al., CVPR 2024 Workshops) trained with "
            f"`ramit train`, recipe `{recipe.name}` (all settings below)."
        ),
        "",
        (
            f"- Model: {config.variant or 'custom'} ({sum(p.numel() for p in run.model.parameters()):,} "
            f"parameters), {run.init_note}."
        ),
        f"- Training data: {run.train_description}.",
        (
            f"- Steps: {state.global_step} of the recipe's {run.schedule.total_steps} "
            f"(epoch {run.schedule.epoch_at(min(state.global_step, run.schedule.total_steps - 1)):.2f} of "
            f"{recipe.epochs}), {run.trainer.args.world_size} process(es)."
        ),
    ]
    if metrics:
        lines.append(
            f"- Validation ({run.val_description}, {measured}, {border} px border) at step {step}: "
            + ", ".join(f"{k.upper() if k != 'l1' else 'L1'} {v:.4f}" for k, v in metrics.items())
            + "."
        )
    else:
        lines.append("- Validation: none.")
    lines += [
        "",
        "```python",
        "from ramit_hf import RamitForImageRestoration, RamitImageProcessor",
        "",
        f'model = RamitForImageRestoration.from_pretrained("{run.output_dir}")',
        f'processor = RamitImageProcessor.from_pretrained("{run.output_dir}")',
        "```",
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None).rstrip(),
        "```",
        "",
    ]
    path = run.output_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


__all__ = [
    "CadenceCallback",
    "QualityMetrics",
    "RamitTrainer",
    "TrainingRun",
    "TrainingSetupError",
    "WeightsDigestCallback",
    "build_model",
    "complete_checkpoints",
    "model_config",
    "paper_learning_rate",
    "peak_learning_rate",
    "prepare_training",
    "resolve_resume",
    "restoration_loss",
    "train",
    "write_model_card",
]
