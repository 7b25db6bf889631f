"""The model card written at the end of a training run: recipe, data and final metrics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .validation import eval_protocol

if TYPE_CHECKING:
    from .run import TrainingRun


# --------------------------------------------------------------------------------------------------
# model card


MEASURES = ("psnr", "ssim", "l1")


def final_metrics(state, keep_best: bool = False) -> tuple[int | None, dict[str, dict[str, float]]]:
    """(step, {validation set: {psnr, ssim, l1}}) of the delivered model: the last evaluation, or the best
    checkpoint's with `keep_best`. Sets are named as logged (`eval_<set>_psnr`; `""` for a plain `eval_psnr`)."""
    evaluated = [e for e in state.log_history if any(_split(k) for k in e)]
    if not evaluated:
        return None, {}
    step = evaluated[-1].get("step")
    if keep_best and state.best_global_step:
        step = state.best_global_step
    table: dict[str, dict[str, float]] = {}
    for entry in evaluated:
        if entry.get("step") == step:
            for key, value in entry.items():
                if (parts := _split(key)) is not None:
                    table.setdefault(parts[0], {})[parts[1]] = value
    return step, table


def _split(key: str) -> tuple[str, str] | None:
    if not key.startswith("eval_"):
        return None
    name = key.removeprefix("eval_")
    if name in MEASURES:
        return "", name
    head, _, measure = name.rpartition("_")
    return (head, measure) if head and measure in MEASURES else None


def _selection_lines(run: TrainingRun, step: int | None) -> list[str]:
    recipe = run.recipe
    if run.best_metric is not None:
        chosen = f"the checkpoint of step {step}, the best by `{run.best_metric}` (keep_best)"
    else:
        chosen = f"the final weights (step {run.trainer.state.global_step}), as the original delivers its last epoch"
    if recipe.ema_decay is not None:
        warmup = ", decay warm-up" if recipe.ema_warmup else ""
        chosen = f"the exponential moving average (decay {recipe.ema_decay:g}{warmup}) of {chosen}"
    lines = [f"- Delivered weights: {chosen}."]
    if run.benchmarks:
        names = ", ".join(run.benchmarks)
        if run.best_metric is not None:
            lines.append(
                f"- Note: the validation data includes the published benchmark(s) {names} and the checkpoint was "
                "selected on it: results on those sets are optimistic."
            )
        else:
            lines.append(
                f"- Note: the validation data includes the published benchmark(s) {names}; it was only logged, not "
                "used to select the weights."
            )
    return lines


def _inputs(recipe) -> str:
    if recipe.degradation is not None and recipe.task.startswith("sr-"):
        return "; inputs with the recipe's real-world degradation, seed 0 (`ramit evaluate --degradation`)"
    return ""


def _metrics_table(table: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| validation set | PSNR | SSIM |", "|---|---|---|"]
    for name, values in table.items():
        lines.append(
            f"| {name or 'validation'} | {values.get('psnr', float('nan')):.4f} | "
            f"{values.get('ssim', float('nan')):.4f} |"
        )
    return lines


def write_model_card(run: TrainingRun) -> Path:
    """A short README.md in the output folder: what was trained, on what, how long, and how well."""
    import yaml

    recipe, state, config = run.recipe, run.trainer.state, run.model.config
    step, table = final_metrics(state, run.best_metric is not None)
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
    lines += _selection_lines(run, step)
    if table:
        lines += [
            f"- Validation ({run.val_description}; {measured}, {border} px border{_inputs(recipe)}) at step {step}:",
            "",
            *_metrics_table(table),
        ]
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
