"""How many ATen operators one RAMiT forward issues in each computation, at several image sizes.

On an accelerator every eager operator is a kernel launch of a few microseconds, so a computation whose count grows
with the image (banded) pays for it there, while one whose count is fixed (fused, faithful) does not. Counted on the
CPU with a `TorchDispatchMode`, inference without gradients, random weights, batch 1; prints a Markdown table.

    python scripts/count_operators.py --sizes 128 256 512
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ramit_hf import RamitConfig, RamitForImageRestoration
from ramit_hf.modeling_ramit import resolve_computation


class OperatorCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def operators(model: RamitForImageRestoration, computation: str, size: int) -> int:
    model.set_computation(computation)
    x = torch.rand(1, model.config.num_channels, size, size)
    with torch.no_grad(), OperatorCounter() as counter:
        model(x)
    return counter.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ramit-sr-x2")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--computations", nargs="+", default=["banded", "fused", "faithful"])
    args = parser.parse_args()
    torch.manual_seed(0)
    model = RamitForImageRestoration(RamitConfig.from_preset(args.preset)).eval()
    cases = {"CPU inference": ("cpu", False), "CPU training": ("cpu", True), "GPU inference": ("cuda", False)}
    print(f"{args.preset}, batch 1, inference; operators counted on the CPU (torch {torch.__version__})")
    print()
    print("| computation | 'auto' picks it for | " + " | ".join(f"{s}x{s}" for s in args.sizes) + " |")
    print("|---|---|" + "---:|" * len(args.sizes))
    for name in args.computations:
        picked = [
            case for case, (device, training) in cases.items() if resolve_computation("auto", device, training) == name
        ]
        where = ", ".join(picked) or "-"
        counts = [f"{operators(model, name, size):,}" for size in args.sizes]
        print(f"| {name} | {where} | " + " | ".join(counts) + " |")


if __name__ == "__main__":
    main()
