"""Rows per second of `ramit restore --dataset` for 1 and more torchrun processes (gloo) on this machine.

A dataset of --rows random RGB images of --size x --size pixels (the network's cost does not depend on the content)
is written as parquet, then restored once per process count, each run in fresh processes: 1 process with every core,
N processes (`torchrun --standalone --nproc_per_node N`) with cores / N threads each. The table gives the wall time
of the whole command (starting Python, loading the model and the dataset included), the restoring rate the command
reports (the slowest process' time spent restoring), and the scaling against 1 process. Every run's shards are
compared with the 1-process run's: the same bytes whatever the process count.

    python scripts/benchmark_dataset.py --model ../shared/reference/checkpoints/RAMiT-slimSR_X2.pth --rows 300
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_dataset(folder: Path, rows: int, size: int) -> None:
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    images = []
    for index in range(rows):
        buffer = io.BytesIO()
        PILImage.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": f"{index:06d}.png"})
    features = Features(id=Value("int64"), image=Image())
    Dataset.from_dict({"id": list(range(rows)), "image": images}, features=features).to_parquet(
        folder / "data" / "train-00000-of-00001.parquet"
    )


def run(processes: int, dataset: Path, out: Path, args) -> tuple[float, float]:
    """One restoring run -> (wall seconds, rows per second the command reports)."""
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "ramit_hf.cli", "restore"]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        command += ["-m", "ramit_hf.cli", "restore"]
    command += ["--dataset", str(dataset), "--model", args.model, "-o", str(out), "--quiet"]
    command += ["--shard-rows", str(args.shard_rows)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{processes} processes: exit status {result.returncode}\n{result.stderr[-3000:]}")
    rate = re.search(r"restored [\d,]+ rows .* ([\d.]+) rows/s", result.stdout)
    if rate is None:
        sys.exit(f"no rate in the output of {processes} processes:\n{result.stdout}")
    return wall, float(rate.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="../shared/reference/checkpoints/RAMiT-slimSR_X2.pth")
    parser.add_argument("--rows", type=int, default=300, help="images in the dataset (default 300)")
    parser.add_argument("--size", type=int, default=256, help="side of the images in pixels (default 256)")
    parser.add_argument("--shard-rows", type=int, default=8, help="rows per output shard (default 8)")
    parser.add_argument("--processes", default="1,2", help="process counts, comma-separated (default 1,2)")
    args = parser.parse_args()

    counts = [int(count) for count in args.processes.split(",")]
    with tempfile.TemporaryDirectory(prefix="ramit-dataset-benchmark-") as folder:
        root = Path(folder)
        make_dataset(root / "input", args.rows, args.size)
        results, first = {}, None
        for processes in counts:
            out = root / f"out-{processes}"
            results[processes] = run(processes, root / "input", out, args)
            shards = {path.name: path.read_bytes() for path in sorted((out / "data").glob("*.parquet"))}
            if first is None:
                first = shards
            elif shards != first:
                sys.exit(f"{processes} processes wrote other shards than {counts[0]}")
    cores = os.cpu_count()
    print(f"{args.rows} images of {args.size}x{args.size}, {Path(args.model).name}, {cores} cores, CPU, gloo")
    print("| processes | threads each | wall time (s) | restoring (rows/s) | scaling |")
    print("|---:|---:|---:|---:|---:|")
    base = results[counts[0]][1]
    for processes, (wall, rate) in results.items():
        threads = max(1, (cores or 1) // processes)
        print(f"| {processes} | {threads} | {wall:.1f} | {rate:.3f} | {rate / base:.2f}x |")
    print("shards identical for every process count")


if __name__ == "__main__":
    main()
