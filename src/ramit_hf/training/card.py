"""The model card written at the end of a training run: recipe, data and final metrics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .validation import eval_protocol

if TYPE_CHECKING:
    from .run import TrainingRun


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
