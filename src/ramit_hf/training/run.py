"""Putting a run together: `prepare_training` and `train` run a `Recipe` on image folders or datasets.

Data, schedule, model (from scratch, or `init_from` any source `inference.load_model` takes), checkpoints every
`eval_every_epochs`, validation on one or several sets (and noise levels), the final weights delivered (or the best
checkpoint with `keep_best`; the EMA of the weights with `ema_decay`), exact resume, a model card at the end.
Multi-process runs (`torchrun`, `accelerate launch`) use the same code: each process builds the same schedule and
takes its share of the micro-batches.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainingArguments
from transformers.utils import logging

from ..atomic import write_text_atomic
from ..modeling_ramit import RamitForImageRestoration
from .card import write_model_card
from .checkpoints import (
    RUN_FILE,
    TrainingSetupError,
    check_output_dir,
    check_resumable,
    clear_folder,
    incomplete_checkpoints,
    resolve_resume,
)
from .ema import WeightsEMA
from .learning_rate import paper_learning_rate, peak_learning_rate
from .models import build_model
from .patches import RestorationPatchDataset
from .pixels import DataError
from .recipes import Recipe, load_recipe
from .schedule import ProgressiveSchedule
from .selection import best_metric_key, check_disjoint, set_name, unique_names, warn_benchmarks
from .sources import ImageSource, check_sizes, load_source
from .trainer import CadenceCallback, RamitTrainer, WeightsDigestCallback
from .validation import eval_protocol, validation_dataset

logger = logging.get_logger(__name__)


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
    eval_keys: list[str]
    benchmarks: list[str]
    best_metric: str | None

    @property
    def ema(self) -> WeightsEMA | None:
        return self.trainer.ema

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
        """Train (or continue), save the delivered model with its processor and a model card; returns the metrics.

        The delivered weights are the final ones (the best checkpoint's with `keep_best`), their EMA when the
        recipe has `ema_decay`."""
        if self.ema is not None and self.resume_from is not None:
            self.ema.load(self.resume_from)
        result = self.trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        if self.ema is not None:
            best = self.trainer.state.best_model_checkpoint
            if self.recipe.keep_best and best:
                self.ema.load(best)
            self.ema.copy_to(self.model)
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
    _check_warm_start(recipe)
    if recipe.keep_best and val_data is None:
        raise TrainingSetupError("keep_best selects a checkpoint by validation: pass --val-data (or drop keep_best)")
    output_dir = Path(output_dir or f"ramit-{recipe.name}")
    resume_from = resolve_resume(output_dir, resume)
    check_output_dir(output_dir, resume_from is not None, overwrite)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    sources = dict(split=train_split, hq_column=hq_column, lq_column=lq_column, by_position=recipe.pair_by_position)
    data = _prepare_data(recipe, train_data, train_lq, val_data, val_lq, val_split, sources, output_dir, world_size)
    model, init_note = build_model(recipe)

    schedule = data.schedule
    lr = paper_learning_rate(recipe, schedule)
    base_lr = peak_learning_rate(recipe, schedule.phases[0].total_batch, schedule.phases[0].total_batch)
    has_eval = data.eval_dataset is not None
    best = best_metric_key(recipe.best_metric, list(data.eval_dataset)) if recipe.keep_best and has_eval else None
    arguments = _training_arguments(recipe, schedule, output_dir, best, has_eval, world_size, base_lr, report_to)
    arguments.update(training_arguments)
    args = TrainingArguments(**arguments)
    if args.world_size != world_size:
        raise TrainingSetupError(f"WORLD_SIZE says {world_size} processes but the Trainer sees {args.world_size}")

    run_info = {
        "recipe": recipe.to_dict(),
        "train_data": data.train_source.description,
        "train_images": len(data.train_source),
        "samples_per_epoch": schedule.samples_per_epoch,
        "world_size": world_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "val_data": data.val_description,
        "init_note": init_note,
    }
    if resume_from is not None:
        check_resumable(output_dir, run_info)
    _prepare_output_dir(args, output_dir, run_info, fresh=overwrite and resume_from is None)

    all_callbacks = [CadenceCallback(_cadence(recipe, schedule), evaluate=has_eval), *list(callbacks or [])]
    if data.trace_dir is not None:
        all_callbacks.append(WeightsDigestCallback(data.trace_dir))
    trainer = RamitTrainer(
        model=model,
        args=args,
        train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset,
        loss=recipe.loss,
        charbonnier_eps=recipe.charbonnier_eps,
        lr_lambda=lambda step: lr(step) / base_lr,
        head_only_steps=schedule.step_at_epoch(recipe.warm_start_epochs) if recipe.warm_start_epochs else 0,
        schedule=schedule,
        eval_protocol=eval_protocol(recipe.task),
        ema=WeightsEMA(model, recipe.ema_decay, recipe.ema_warmup) if recipe.ema_decay is not None else None,
        callbacks=all_callbacks,
    )
    return TrainingRun(
        recipe=recipe,
        trainer=trainer,
        schedule=schedule,
        output_dir=output_dir,
        resume_from=resume_from,
        init_note=init_note,
        train_description=data.train_source.description,
        val_description=data.val_description,
        eval_keys=list(data.eval_dataset or {}),
        benchmarks=data.benchmarks,
        best_metric=best[0] if best else None,
    )


def _check_warm_start(recipe: Recipe) -> None:
    if recipe.warm_start_epochs and recipe.init_from is None:
        raise TrainingSetupError(
            f"recipe {recipe.name} warm-starts from a trained model for {recipe.warm_start_epochs} epochs: pass "
            "--init-from (e.g. an sr-x2 model folder or RAMiT_X2.pth), or --set warm_start_epochs=0 to train from "
            "scratch"
        )


@dataclass
class _RunData:
    train_source: ImageSource
    schedule: ProgressiveSchedule
    train_dataset: RestorationPatchDataset
    eval_dataset: dict | None
    val_description: str | None
    benchmarks: list[str]
    trace_dir: Path | None


def _prepare_data(recipe, train_data, train_lq, val_data, val_lq, val_split, sources, output_dir, world_size):
    """The training patches laid out by the schedule, and the validation images (checked before any training)."""
    train_source = load_source(train_data, train_lq, task=recipe.task, **sources)
    check_sizes(train_source, recipe.task)  # pairs first: the patch size is checked once the schedule is known
    samples_per_epoch = int(len(train_source) * recipe.dataset_repeat)
    schedule = ProgressiveSchedule(
        samples_per_epoch,
        recipe.epochs,
        recipe.phase_epochs,
        recipe.patch_sizes,
        recipe.batch_sizes,
        world_size=world_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        max_steps=recipe.max_steps,
    )
    trace_dir = output_dir / "data_trace" if recipe.trace_data else None
    train_dataset = RestorationPatchDataset(
        train_source,
        schedule,
        recipe.task,
        seed=recipe.seed,
        noise_sigma=recipe.noise_sigma,
        augment=recipe.augment,
        image_cache_mb=recipe.image_cache_mb,
        trace_dir=trace_dir,
        degradation=recipe.degradation,
    )
    if val_data is None:
        return _RunData(train_source, schedule, train_dataset, None, None, [], trace_dir)
    eval_dataset, descriptions, names = _validation_sets(recipe, train_source, val_data, val_lq, val_split, sources)
    benchmarks = warn_benchmarks(names, recipe.keep_best)
    return _RunData(train_source, schedule, train_dataset, eval_dataset, ", ".join(descriptions), benchmarks, trace_dir)


def _validation_sets(recipe, train_source, val_data, val_lq, val_split, sources):
    """{metric name: validation pairs} of every set (and, for denoising, every noise level), each checked to share
    no image with the training data; the sets' descriptions and names."""
    many = isinstance(val_data, (list, tuple))
    items = list(val_data) if many else [val_data]
    if val_lq is not None and len(items) > 1:
        raise DataError("--val-lq names the low-quality folder of one validation set; give each set its LQ/ folder")
    names = unique_names([set_name(item) for item in items])
    denoising = recipe.task in ("color-dn", "gray-dn")
    eval_dataset, descriptions = {}, []
    for name, item in zip(names, items, strict=True):
        source = load_source(item, val_lq, task=recipe.task, **{**sources, "split": val_split})
        check_disjoint(train_source, source)
        descriptions.append(f"{name} ({source.description})" if many or name != "val" else source.description)
        for sigma in recipe.val_noise_sigma if denoising else [None]:
            key = f"{name}_s{sigma:g}" if sigma is not None else name
            noise = sigma if sigma is not None else recipe.val_noise_sigma[0]
            degradation = recipe.degradation
            eval_dataset[key] = validation_dataset(source, recipe.task, noise, recipe.max_val_images, degradation)
    return eval_dataset, descriptions, names


def _cadence(recipe: Recipe, schedule: ProgressiveSchedule) -> list[int]:
    """The steps after which a checkpoint is saved (and the model validated)."""
    if recipe.eval_steps is not None:
        return list(range(recipe.eval_steps, schedule.num_steps + 1, recipe.eval_steps))
    return [s for s in schedule.epoch_end_steps(recipe.eval_every_epochs) if s <= schedule.num_steps]


def _training_arguments(recipe, schedule, output_dir: Path, best, has_eval: bool, world_size: int, base_lr, report_to):
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
        # the original delivers the last epoch's weights; the best checkpoint only when asked (keep_best)
        load_best_model_at_end=best is not None,
        metric_for_best_model=best[0] if best else None,
        greater_is_better=best[1] if best else None,
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
    return arguments


def _prepare_output_dir(args: TrainingArguments, output_dir: Path, run_info: dict, fresh: bool) -> None:
    """Clear (`fresh`) or tidy the output folder and write the run's description, on the first process only."""
    # every process has checked the folder before the first one writes to it
    args.distributed_state.wait_for_everyone()
    if args.process_index == 0:
        if fresh and output_dir.is_dir():
            clear_folder(output_dir)
        for stale in incomplete_checkpoints(output_dir) if output_dir.is_dir() else []:
            logger.warning(f"removing {stale}: a run was interrupted while writing it")
            shutil.rmtree(stale)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / RUN_FILE, json.dumps(run_info, indent=2, default=str), overwrite=True)
    args.distributed_state.wait_for_everyone()


def train(recipe: Recipe | str, train_data, val_data=None, output_dir=None, **kwargs) -> TrainingRun:
    """Prepare and run a recipe (see `prepare_training`); returns the finished `TrainingRun`."""
    run = prepare_training(recipe, train_data, val_data, output_dir, **kwargs)
    run.train()
    return run
