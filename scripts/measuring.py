"""How the benchmark scripts measure time and peak memory: one definition of each, so that their tables compare.

Time: `timed(function, device)` is one call's wall-clock seconds (`time.perf_counter`), with the device
synchronised (`torch.cuda.synchronize` on CUDA) before the clock starts and before it stops, so the time covers the
work the call queued and nothing queued before it. `time_calls` repeats that for several functions, interleaved round
by round (every function sees the same state of a noisy machine), after untimed warm-up calls; the scripts report
the median of its rounds.

Peak memory: `peak_memory(device)` measures the block it encloses, in bytes, as
  * CUDA: the caching allocator's high-water mark, `torch.cuda.max_memory_allocated` after
    `torch.cuda.reset_peak_memory_stats` at the start; the baseline is `torch.cuda.memory_allocated` at the start;
  * CPU: the process' resident-set high-water mark, `VmHWM` of /proc/self/status after resetting it to the current
    resident set by writing "5" to /proc/self/clear_refs at the start; the baseline is `VmRSS` at the start. Linux
    only. A process killed before the end is read the same way from outside (`resident_peak(pid)`).
`Peak.peak` is the high-water mark, `Peak.increase` how far the block raised it above the baseline. Whatever ran
before the block (loading a model, an earlier case) does not count in either, but shares the process: scripts that
compare cases run each in a fresh process.

The scripts import this file by name (`from measuring import ...`): Python puts a script's folder on `sys.path`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: str | torch.device) -> None:
    """Wait for the work queued on `device` (CUDA); nothing to wait for on the CPU."""
    if is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


def timed(function: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[float, Any]:
    """(seconds, result) of one call of `function`, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


@dataclass
class Timings:
    """What `time_calls` measured: seconds per call of each function, one entry per round, and the result of each
    function's last call."""

    seconds: dict[str, list[float]]
    results: dict[str, Any]


def time_calls(
    functions: Mapping[str, Callable[[], Any]],
    device: str | torch.device = "cpu",
    repeats: int = 5,
    warmup: int = 0,
    calls: int = 1,
) -> Timings:
    """Time each function over `repeats` rounds, the functions interleaved within each round, after `warmup` untimed
    calls of each. A round times `calls` consecutive calls of a function as one (see `timed`) and records seconds per
    call: many calls for functions of microseconds."""
    results: dict[str, Any] = {}
    for name, function in functions.items():
        for _ in range(warmup):
            results[name] = function()
    seconds: dict[str, list[float]] = {name: [] for name in functions}

    def repeated(function: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            for _ in range(calls - 1):
                function()
            return function()

        return run

    for _ in range(repeats):
        for name, function in functions.items():
            elapsed, results[name] = timed(repeated(function), device)
            seconds[name].append(elapsed / calls)
    return Timings(seconds, results)


@dataclass
class Peak:
    """Memory in bytes: what was held when the measurement started (`baseline`) and the high-water mark since
    (`peak`, set when the measured block ends)."""

    baseline: int
    peak: int

    @property
    def increase(self) -> int:
        return self.peak - self.baseline


@contextmanager
def peak_memory(device: str | torch.device) -> Iterator[Peak]:
    """Measure the peak memory of the enclosed block on `device` (see the module's docstring for the definition)."""
    synchronize(device)
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats(torch.device(device))
        measured = Peak(torch.cuda.memory_allocated(torch.device(device)), 0)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        measured = Peak(_status_bytes("self", "VmRSS"), 0)
    measured.peak = measured.baseline
    yield measured
    synchronize(device)
    if is_cuda(device):
        measured.peak = torch.cuda.max_memory_allocated(torch.device(device))
    else:
        measured.peak = _status_bytes("self", "VmHWM")


def resident_peak(pid: int | str = "self") -> int | None:
    """A process' resident-set high-water mark (VmHWM) in bytes, None when it cannot be read (the process ended)."""
    try:
        return _status_bytes(pid, "VmHWM")
    except (OSError, StopIteration):
        return None


def _status_bytes(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) * 1024


__all__ = ["Peak", "Timings", "is_cuda", "peak_memory", "resident_peak", "synchronize", "time_calls", "timed"]
