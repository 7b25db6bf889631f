"""CPU inference time of this checkout's default computation against another checkout's, in one process.

The other checkout's `src/ramit_hf` (e.g. a `git worktree` of an earlier commit) is imported under another name, both
models get the same random weights, and their forwards are timed interleaved round by round in alternating order
(machines are noisy: compare the ratio). Prints a Markdown table with the ratio and the largest output difference.

    git worktree add /tmp/ramit-before <commit>
    python scripts/compare_revisions.py /tmp/ramit-before --sizes 128 256 --threads 2
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from measuring import time_calls

from ramit_hf import RamitConfig, RamitForImageRestoration


def import_as(source: Path, name: str):
    """The package at `source/src/ramit_hf`, imported as `name` (its imports are relative)."""
    folder = Path(tempfile.mkdtemp(prefix="ramit-baseline-"))
    shutil.copytree(source / "src" / "ramit_hf", folder / name)
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{name}.modeling_ramit"), importlib.import_module(f"{name}.configuration_ramit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path, help="another checkout of this repository")
    parser.add_argument("--preset", default="ramit-sr-x2")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modeling, configuration = import_as(args.baseline.resolve(), "ramit_hf_baseline")
    torch.manual_seed(0)
    current = RamitForImageRestoration(RamitConfig.from_preset(args.preset)).eval()
    baseline = modeling.RamitForImageRestoration(configuration.RamitConfig.from_preset(args.preset)).eval()
    baseline.load_state_dict(current.state_dict())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.preset}, batch 1, no gradients")
    print("| size | baseline ms | this checkout ms | this / baseline | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for size in args.sizes:
        x = torch.rand(1, current.config.num_channels, size, size)
        calls = {"baseline": lambda x=x: baseline(x).reconstruction, "current": lambda x=x: current(x).reconstruction}
        seconds: dict[str, list[float]] = {name: [] for name in calls}
        with torch.no_grad():
            for round_ in range(args.repeats + 1):  # rounds in alternating order; the first is a warm-up
                order = list(calls) if round_ % 2 else list(reversed(calls))
                timing = time_calls({name: calls[name] for name in order}, repeats=1)
                for name in calls:
                    seconds[name] += timing.seconds[name] if round_ else []
        times = {name: statistics.median(values) * 1e3 for name, values in seconds.items()}
        difference = (timing.results["baseline"] - timing.results["current"]).abs().max().item()
        ratio = times["current"] / times["baseline"]
        print(f"| {size} | {times['baseline']:.1f} | {times['current']:.1f} | {ratio:.3f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
