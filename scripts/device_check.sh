#!/usr/bin/env bash
# Every GPU measurement the project needs, in one run on the GPU machine (from the repository root, ../shared beside
# it). Prints Markdown tables; copy them into docs/performance.md and docs/training.md with the card's name.
#   bash scripts/device_check.sh            (about 6-8 minutes on an H100)
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
if ! $python -c "import ramit_hf" 2>/dev/null; then
  $python -m pip install --quiet -e ".[train]" 2>&1 | tail -2
fi
$python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
echo "## Inference (RAMiT x2, batch 1)"
timeout 300 $python scripts/benchmark.py --device cuda --sizes 128 256 512 --repeats 20 --warmup 3 \
  --paths faithful fused fused-bf16 fused-compile fused-cudagraph
echo "## Training step (RAMiT x2, batch 32, 64x64 LR patches, 200 steps)"
timeout 240 $python scripts/benchmark.py --device cuda --train --steps 200 --paths faithful fused fused-bf16
if [ -f scripts/gpu_training_check.py ]; then
  echo "## Training run with the paper's patch and batch"
  timeout 300 $python scripts/gpu_training_check.py
fi
