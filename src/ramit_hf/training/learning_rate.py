"""The paper's learning rate: linear scaling with the total batch, warm-up, and halvings at milestones."""

from __future__ import annotations

from collections.abc import Callable

from .recipes import Recipe
from .schedule import ProgressiveSchedule

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
