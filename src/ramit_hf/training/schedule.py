"""The schedule of a run: which patch and batch size each step trains on (the paper's progressive phases)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .pixels import DataError

# --------------------------------------------------------------------------------------------------
# the schedule: which patches each step trains on


@dataclass(frozen=True)
class Phase:
    """One phase of a progressive schedule: epochs [start_epoch, end_epoch), steps [start_step, end_step)."""

    index: int
    start_epoch: int
    end_epoch: int
    patch_size: int
    batch_size: int
    total_batch: int
    steps_per_epoch: int
    start_step: int
    end_step: int


@dataclass(frozen=True)
class ItemPlan:
    """What item `i` of a `RestorationPatchDataset` holds: `positions` of epoch `epoch`'s shuffled samples."""

    step: int
    epoch: int
    patch_size: int
    positions: range


class ProgressiveSchedule:
    """The paper's epochs laid out as optimizer steps, with patch and batch sizes changing between phases.

    An epoch has `samples_per_epoch` patches; in phase p an optimizer step takes `total_batch = batch_size[p] x
    world_size x gradient_accumulation_steps` of them, so an epoch has `samples_per_epoch // total_batch` steps
    (the remainder is dropped, as a data loader with `drop_last` would). Step `s` is made of `world_size x
    gradient_accumulation_steps` consecutive micro-batch items; the data loader of process r takes items r, r + N,
    ... (the order `accelerate` shards a sequential sampler in).
    """

    def __init__(
        self,
        samples_per_epoch: int,
        epochs: int,
        phase_epochs: Sequence[int] = (0,),
        patch_sizes: Sequence[int] = (64,),
        batch_sizes: Sequence[int] = (32,),
        world_size: int = 1,
        gradient_accumulation_steps: int = 1,
        max_steps: int | None = None,
    ):
        if not len(phase_epochs) == len(patch_sizes) == len(batch_sizes):
            raise ValueError("phase_epochs, patch_sizes and batch_sizes need one entry per phase")
        self.samples_per_epoch = int(samples_per_epoch)
        self.epochs = int(epochs)
        self.world_size = int(world_size)
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self.micro_per_step = self.world_size * self.gradient_accumulation_steps
        phases, step = [], 0
        bounds = [e for e in phase_epochs if e < epochs] + [epochs]
        for index, (start, end) in enumerate(itertools.pairwise(bounds)):
            total = batch_sizes[index] * self.micro_per_step
            per_epoch = self.samples_per_epoch // total
            if per_epoch < 1:
                raise DataError(
                    f"an epoch of {self.samples_per_epoch} patches does not fill one step of {total} patches "
                    f"(phase {index + 1}); raise dataset_repeat or add images"
                )
            steps = per_epoch * (end - start)
            phases.append(
                Phase(index, start, end, patch_sizes[index], batch_sizes[index], total, per_epoch, step, step + steps)
            )
            step += steps
        self.phases = phases
        self.total_steps = step
        if max_steps is not None and max_steps > self.total_steps:
            raise DataError(f"max_steps {max_steps} is beyond the schedule's {self.total_steps} steps")
        self.num_steps = self.total_steps if max_steps is None else int(max_steps)
        self._phase_starts = [p.start_step for p in phases]

    def __repr__(self) -> str:
        phases = ", ".join(
            f"epochs {p.start_epoch}-{p.end_epoch}: patch {p.patch_size} x {p.total_batch} ({p.steps_per_epoch} "
            "steps/epoch)"
            for p in self.phases
        )
        return f"ProgressiveSchedule({self.num_steps} of {self.total_steps} steps; {phases})"

    @property
    def num_items(self) -> int:
        return self.num_steps * self.micro_per_step

    def phase_at(self, step: int) -> Phase:
        return self.phases[bisect.bisect_right(self._phase_starts, step) - 1]

    def position(self, step: int) -> tuple[Phase, int, int]:
        """(phase, epoch, step within the epoch) of optimizer step `step` (0-based)."""
        phase = self.phase_at(step)
        epochs_in, step_in = divmod(step - phase.start_step, phase.steps_per_epoch)
        return phase, phase.start_epoch + epochs_in, step_in

    def epoch_at(self, step: int) -> float:
        """Fractional epoch at the start of `step`, as the original's learning-rate schedule counts it."""
        phase, epoch, step_in = self.position(step)
        return epoch + step_in / phase.steps_per_epoch

    def step_at_epoch(self, epoch: float) -> int:
        """The first step of epoch `epoch` (the number of steps before it)."""
        if epoch >= self.epochs:
            return self.total_steps
        for phase in self.phases:
            if epoch < phase.end_epoch:
                return phase.start_step + math.ceil((epoch - phase.start_epoch) * phase.steps_per_epoch)
        return self.total_steps

    def epoch_end_steps(self, every: int) -> list[int]:
        """Steps (counted as `global_step` after them) that end epochs `every`, 2 x `every`, ..."""
        return [self.step_at_epoch(e) for e in range(every, self.epochs + 1, every)]

    def max_patch_size(self) -> int:
        """The largest patch the run reaches (phases past `num_steps` are never trained)."""
        return max(p.patch_size for p in self.phases if p.start_step < self.num_steps)

    def item(self, index: int) -> ItemPlan:
        step, slot = divmod(index, self.micro_per_step)
        if not 0 <= step < self.num_steps:
            raise IndexError(f"item {index} is outside the schedule's {self.num_items} items")
        phase, epoch, step_in = self.position(step)
        start = step_in * phase.total_batch + slot * phase.batch_size
        return ItemPlan(step, epoch, phase.patch_size, range(start, start + phase.batch_size))
